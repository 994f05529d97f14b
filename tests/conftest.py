"""Test-wide settings: offline hubs and a headless plotting backend, set before any import
of datasets/huggingface_hub/matplotlib (no hub is reachable on the machines tests run on)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """Pin torch to one thread for a module: on 2-core machines a second busy process makes
    multi-threaded torch stall for seconds per step."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory):
    """One smoke world for the whole session (read-only for the tests that use it)."""
    from banana.world import WORLD_PRESETS, build_world

    out = tmp_path_factory.mktemp("world") / "smoke"
    build_world(out, WORLD_PRESETS["smoke"], progress=False)
    return out


@pytest.fixture(scope="session")
def split(world_dir):
    from banana.world import load_world

    return load_world(world_dir)["train"]

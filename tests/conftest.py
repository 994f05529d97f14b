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
def simulated_kill():
    """``simulated_kill(at=N)``: a Lightning callback that raises ``RuntimeError("simulated kill")``
    at the start of step ``N``, standing in for a kill in the middle of a run."""
    from lightning.pytorch.callbacks import Callback

    class SimulatedKill(Callback):
        def __init__(self, at: int):
            self.at = at

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == self.at:
                raise RuntimeError("simulated kill")

    return SimulatedKill


@pytest.fixture(scope="session")
def fit_steps():
    """``fit_steps(module, batch, steps)``: ``steps`` optimiser steps of ``module.training_step`` on
    one fixed batch (the "can learn" tests' loop); returns the losses."""
    def fit(module, batch, steps):
        optimizer = module.configure_optimizers()["optimizer"]
        losses = []
        for step in range(steps):
            loss = module.training_step(batch, step)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    return fit


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


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """``banana reproduce --profile smoke`` end to end (notebooks 01-07, the ablations over their
    smoke grids) in a temporary folder; shared by every test that executes notebooks
    (``test_notebooks.py``, ``test_solutions.py``), so the session builds it once."""
    from banana.cli import main
    from banana.reproduce import GRIDS, PIPELINE

    root = tmp_path_factory.mktemp("smoke")
    code = main(["reproduce", "--profile", "smoke", "--seed", "0", "--reports-dir", str(root / "reports"),
                 "--runs-dir", str(root / "runs"), "--world-dir", str(root / "world"), "--no-progress"])
    assert code == 0
    executed = {name: root / "reports" / "notebooks" / f"{name}.ipynb" for name in PIPELINE if name not in GRIDS}
    for name, grid in GRIDS.items():      # one executed point per ablation notebook is enough for nbval
        point = sorted((root / "reports" / grid / "notebooks").glob("*.ipynb"))[0]
        executed[f"{name}/{point.stem}"] = point
    return root, executed

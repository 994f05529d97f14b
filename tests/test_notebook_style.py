"""The notebooks narrate, the library computes: short code cells, no committed outputs, and the
one setup call (``banana.profiles.notebook_setup``) resolving what the setup cells used to.

Fast (no kernel, no world is built): the executed notebooks are tested in ``test_notebooks.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from banana.paths import NOTEBOOK_DIR

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: The longest code cell a notebook may have (the parameters cell included): past this, the logic
#: belongs in a ``banana`` function the cell calls.
MAX_CELL_LINES = 15


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_code_cell_is_longer_than_the_limit(path):
    long = {i: len("".join(c["source"]).splitlines()) for i, c in enumerate(_code_cells(path))}
    long = {i: n for i, n in long.items() if n > MAX_CELL_LINES}
    assert not long, f"{path.name}: code cells (index among code cells: lines) over {MAX_CELL_LINES} lines: {long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_carries_no_outputs(path):
    dirty = [i for i, c in enumerate(_code_cells(path)) if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs or an execution count: strip them before committing"


# ------------------------------------------------------------------ notebook_setup
@pytest.fixture()
def in_notebooks(tmp_path, monkeypatch):
    """cwd = a ``notebooks/`` folder (as papermill runs them); worlds are not built but recorded."""
    import banana.world

    calls = []
    monkeypatch.setattr(banana.world, "build_world", lambda path, config: calls.append(("build", path, config)) or "built")
    monkeypatch.setattr(banana.world, "load_world", lambda path: calls.append(("load", path)) or "loaded")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    return tmp_path, calls


def test_setup_defaults_resolve_as_the_setup_cells_did(in_notebooks):
    from banana.profiles import base_generator_dir, notebook_setup

    root, calls = in_notebooks
    setup = notebook_setup("05_evaluate", "smoke", tuning="lora", mixing_ratio=0.5, reports_dir=str(root / "reports"),
                           n_eval=None, sampling_steps=3, n_retention=None, tune_run_dir=None, baseline_dir=None)
    assert (setup.settings.n_eval, setup.settings.sampling_steps, setup.settings.n_retention) == (8, 3, 4)
    assert setup.world_dir == Path("../data/world") / "smoke"
    assert setup.tune_run_dir == Path("../runs") / "tune-smoke-best-lora-r0.5"
    assert setup.baseline_dir == Path("../runs") / "baselines-smoke-best-lora-r0.5"
    assert setup.base_dir == base_generator_dir("smoke")
    assert setup.figures.is_dir() and setup.tables.is_dir() and setup.figures == root / "reports" / "figures"
    assert setup.world == "loaded" and calls == [("load", setup.world_dir)]


def test_setup_builds_then_loads_for_notebook_04_and_takes_given_paths(in_notebooks):
    from banana.profiles import notebook_setup

    root, calls = in_notebooks
    (root / "base").mkdir()
    setup = notebook_setup("04_instruction_tune", "smoke", world_seed=3, tuning="full", mixing_ratio=0.25,
                           world_dir=str(root / "w"), base_dir=str(root / "base"), run_dir=None,
                           reports_dir=str(root / "reports"), max_steps=7, n_eval=None, sampling_steps=None)
    assert setup.run_dir == Path("../runs") / "tune-smoke-best-full-r0.25" and setup.base_dir == root / "base"
    assert setup.settings.max_steps == 7 and setup.world_config.seed == 3
    assert [c[0] for c in calls] == ["build", "load"] and calls[0][1] == root / "w" and calls[0][2].seed == 3
    with pytest.raises(FileNotFoundError, match="run notebook 03"):
        notebook_setup("04_instruction_tune", "smoke", base_dir=str(root / "missing"), reports_dir=str(root / "r"))


def test_setup_of_a_grid_point_needs_and_creates_its_output_dir(in_notebooks):
    from banana.profiles import notebook_setup

    root, calls = in_notebooks
    setup = notebook_setup("06_ablate_mixing_ratio", "smoke", world_seed=1, output_dir=str(root / "point"),
                           max_steps=None, n_eval=2, n_retention=None, sampling_steps=None)
    assert setup.output_dir.is_dir() and setup.world == "built" and setup.settings.n_eval == 2
    assert not hasattr(setup, "figures")
    with pytest.raises(ValueError, match="output_dir"):
        notebook_setup("07_ablate_decoding", "smoke")
    with pytest.raises(ValueError, match="no size parameter"):
        notebook_setup("01_task_as_image", "smoke", reports_dir=str(root / "r"), n_eval=3)


def test_decoding_run_is_notebook_04s_unless_another_depth_codec():
    from banana.profiles import decoding_run, tuned_run_dir, tuning_config

    config, run_dir, shipped = decoding_run("smoke")          # no smoke study model is shipped
    assert config == tuning_config("smoke", mixing_ratio=0.5, seed=0) and run_dir == tuned_run_dir("smoke")
    assert not shipped and config.vision_timesteps == "terminal" and config.tuning == "full"
    config, run_dir, shipped = decoding_run("smoke", "affine-gray", 2, runs_dir="/tmp/r")
    assert config.depth_codec == "affine-gray" and config.seed == 2 and not shipped
    assert run_dir == Path("/tmp/r") / f"{tuned_run_dir('smoke').name}-affine-gray"


def test_tuning_config_takes_a_named_recipe_and_explicit_levers():
    from banana.profiles import tuning_config
    from banana.training.recipe import BEST_RECIPE

    best = tuning_config("smoke")
    assert all(getattr(best, k) == v for k, v in BEST_RECIPE.items())
    paper = tuning_config("smoke", recipe="paper")
    assert (paper.tuning, paper.learning_rate, paper.vision_timesteps, paper.random_palette_prob) == ("lora", 1e-3, "uniform", 0.5)
    assert tuning_config("smoke", "lora", learning_rate=2e-4).tuning == "lora"
    with pytest.raises(ValueError, match="unknown recipe"):
        tuning_config("smoke", recipe="magic")


def test_a_shipped_study_run_stands_in_only_for_its_own_recipe(tmp_path, monkeypatch):
    import dataclasses
    import json

    import banana.training.publish as publish
    from banana.profiles import tuning_config

    config = tuning_config("cpu", mixing_ratio=0.5, seed=0)
    folder = tmp_path / "generalist-cpu"
    folder.mkdir()
    shipped = dataclasses.replace(config, max_steps=600, labeled_scenes=2000, world_dir="data/world/cpu")
    (folder / "config.json").write_text(json.dumps({"train": shipped.to_dict(), "generator": {}}))
    monkeypatch.setattr(publish, "study_model_dir", lambda name, profile: tmp_path / f"{name}-{profile}")
    assert publish.shipped_study_run("cpu", config) == folder          # longer, same recipe: it stands in
    for other in ({"mixing_ratio": 0.05}, {"seed": 1}, {"tuning": "lora"}, {"labeled_scenes": 32},
                  {"vision_timesteps": "uniform"}):
        assert publish.shipped_study_run("cpu", dataclasses.replace(config, **other)) is None, other
    assert publish.shipped_study_run("cpu", config, "control") is None      # nothing shipped there


def test_ceiling_lookup_names_rows_the_codec_ceiling_writes():
    from banana.evaluation.ceiling import codec_ceiling
    from banana.evaluation.contest import CEILING_OF_HEADLINE, ceiling_values
    from banana.evaluation.generalist import headline_metrics
    from banana.world import CANONICAL_PALETTE

    rng = np.random.default_rng(0)
    semantic = rng.integers(0, len(CANONICAL_PALETTE), (1, 8, 8))
    depth = rng.uniform(1, 20, (1, 8, 8)).astype(np.float32)
    normals = np.zeros((1, 3, 8, 8), np.float32)
    normals[:, 2] = 1
    ceiling = codec_ceiling(semantic, depth, normals, CANONICAL_PALETTE, bits=(8,))
    metrics = {"segmentation": {"miou": 0.5}, "depth": {"metric": {"abs_rel": 0.1, "delta1": 0.9}},
               "normals": {"mean": 10.0}}
    names = list(headline_metrics(metrics))
    assert set(names) == set(CEILING_OF_HEADLINE)
    values = ceiling_values(ceiling, names)
    assert values[0] == pytest.approx(1.0) and len(values) == 4 and all(np.isfinite(values))


def test_every_notebook_opens_with_links_to_its_neighbours_and_modules_that_resolve():
    import re

    from banana.paths import NOTEBOOK_DIR

    notebooks = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    for i, path in enumerate(notebooks):
        cells = json.loads(path.read_text())["cells"]
        first = "".join(cells[0]["source"])
        neighbours = [n.name for n in (notebooks[i - 1:i] + notebooks[i + 1:i + 2])]
        assert all(f"]({name})" in first for name in neighbours), f"{path.name}: no link to {neighbours}"
        assert "Library modules used here:" in first, path.name
        for cell in cells:
            if cell["cell_type"] != "markdown":
                continue
            for target in re.findall(r"\]\((?!https?://)([^)#\s]+)", "".join(cell["source"])):
                assert (path.parent / target).exists(), f"{path.name}: broken link {target}"

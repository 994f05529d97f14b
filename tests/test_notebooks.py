"""Every numbered notebook: committed clean, documented parameters, and it runs.

The smoke-profile executions go through papermill exactly as ``banana reproduce`` runs
them; the executed copies are then re-run by ``pytest --nbval-lax`` (nbval), which checks
that a fresh kernel executes them again without error and that cells marked
``# NBVAL_CHECK_OUTPUT`` reproduce their outputs.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from banana.reproduce import GRIDS, NOTEBOOK_DIR, PIPELINE

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def test_pipeline_lists_every_numbered_notebook_in_order():
    assert [p.stem for p in NOTEBOOKS] == list(PIPELINE)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_and_follows_the_house_style(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), "strip outputs before committing"
    first = "".join(nb["cells"][0]["source"])
    assert "Expected runtime" in first and "CPU" in first and "gpu" in first.lower()
    assert "Exercises" in "".join(nb["cells"][-1]["source"])
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    lines = [line for line in "".join(params[0]["source"]).splitlines() if line.strip()]
    names = []
    for line in lines:
        statement, _, comment = line.partition("#")
        assert comment.strip(), f"parameter line without a comment: {line!r}"
        node = ast.parse(statement).body[0]
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), f"not a plain assignment: {line!r}"
        ast.literal_eval(node.value)  # flat literals only: papermill does not recompute expressions
        names.append(node.targets[0].id if isinstance(node, ast.Assign) else node.target.id)
    help_text = subprocess.run([str(Path(sys.executable).parent / "papermill"), "--help-notebook", str(path)],
                               capture_output=True, text=True, timeout=120).stdout
    for name in names:  # papermill parsed every parameter (a '=' in a comment silently drops one)
        assert f"  {name}:" in help_text, f"papermill --help-notebook does not list {name!r}"
    # Pipeline notebooks write into reports_dir; ablation notebooks are grid points writing output_dir.
    from banana.reproduce import GRIDS

    assert {"profile", "seed", "output_dir" if path.stem in GRIDS else "reports_dir"} <= set(names)


# ``smoke_run`` (the smoke-profile ``banana reproduce`` in a temporary folder) is a session fixture in
# ``conftest.py``: the solution notebooks (``test_solutions.py``) run against the same build.


@pytest.mark.notebook
def test_notebooks_execute_in_the_smoke_profile_and_write_their_reports(smoke_run):
    root, executed = smoke_run
    for name, path in executed.items():
        errors = [o for c in _cells(path) if c["cell_type"] == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, f"{name}: {errors}"
    reports = root / "reports"
    for produced in ("tables/codec_ceiling.csv", "tables/codec_ceiling.md", "figures/depth_codec_walk.png",
                     "figures/world_train_samples.png", "tables/world_class_frequencies.csv",
                     "figures/pretrain_samples_smoke.png", "figures/tune_predictions_smoke_best_full_r0.5.png",
                     "tables/tune_val_metrics_smoke_best_full_r0.5.md", "tables/comparison_smoke.md",
                     "tables/retention_smoke.md", "tables/verdict_smoke.md"):
        assert (reports / produced).is_file(), produced
    assert (root / "world" / "world_config.json").is_file()
    assert (root / "runs" / "pretrain-smoke" / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    val = json.loads((root / "runs" / "tune-smoke-best-full-r0.5" / "val_metrics.json").read_text())
    assert set(val["metrics"]) == {"segmentation", "depth", "normals"} and val["n_eval"] == 8
    timings = json.loads((reports / "notebooks" / "timings.json").read_text())
    assert list(timings["seconds"]) == list(PIPELINE) and timings["config"]["profile"] == "smoke"
    index = (reports / "README.md").read_text()
    assert "banana reproduce --profile smoke --seed 0" in index


@pytest.mark.notebook
def test_smoke_ablations_ran_every_grid_point_and_were_aggregated(smoke_run):
    import pandas as pd

    from banana.grid import load_grid, notebook_defaults
    from banana.reproduce import GRID_DIR, notebook_path

    root, _ = smoke_run
    for name, grid in GRIDS.items():
        spec = load_grid(GRID_DIR / f"{grid}.yaml", "smoke", notebook_defaults(notebook_path(name)))
        table = pd.read_csv(root / "reports" / grid / "results.csv")
        assert len(table) == len(spec.points) and (table["status"] == "done").all(), table
        assert {"segmentation_miou", "depth_delta1", "normals_mean_deg"} <= set(table.columns)
        assert (root / "reports" / grid / "summary.md").is_file()
        assert list((root / "reports" / grid).glob(f"{grid}_*.png")), f"no figure for {grid}"
    ratio = pd.read_csv(root / "reports" / "mixing_ratio" / "results.csv")
    assert "denoising_loss_increase_pct" in ratio.columns
    decoding = pd.read_csv(root / "reports" / "decoding" / "results.csv")
    assert (decoding["seconds_per_image"] > 0).all()


@pytest.mark.notebook
def test_every_executed_notebook_that_plots_carries_its_figures_inline(smoke_run):
    """The kernels plot inline (``banana.grid.runner.KERNEL_MPLBACKEND``): a notebook that draws a
    figure keeps it as an ``image/png`` output, so a report read on GitHub shows it."""
    import re

    _, executed = smoke_run
    for name, path in executed.items():
        code = [c for c in _cells(path) if c["cell_type"] == "code"]
        draws = r"\bfig(?:, \w+)? = |\bplt\.(?:subplots|figure)\("     # a cell that makes a figure
        plotting = [c for c in code if re.search(draws, "".join(c["source"]))]
        images = [c for c in plotting if any("image/png" in o.get("data", {}) for o in c["outputs"])]
        assert plotting, f"{name} draws no figure"
        assert len(images) == len(plotting), f"{name}: {len(plotting) - len(images)} plotting cell(s) without image/png"


@pytest.mark.notebook
def test_smoke_codec_ceiling_is_lossless_for_segmentation_and_tight_for_depth(smoke_run):
    import pandas as pd

    from banana.evaluation.contest import NORMALS_CODEC, PAPER_DEPTH_CODEC, SEGMENTATION_CODEC

    root, _ = smoke_run
    table = pd.read_csv(root / "reports" / "tables" / "codec_ceiling.csv")
    eight = table[table["bits"] == "8"].set_index(["task", "codec", "metric"])["value"]
    assert eight.loc[("segmentation", SEGMENTATION_CODEC, "miou")] == pytest.approx(1.0)
    assert eight.loc[("depth", PAPER_DEPTH_CODEC, "abs_rel")] < 0.01
    assert eight.loc[("normals", NORMALS_CODEC, "mean")] < 1.0


@pytest.mark.notebook
def test_executed_notebooks_pass_nbval(smoke_run):
    _, executed = smoke_run
    result = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
                             "-o", "addopts=", *map(str, executed.values())],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]

"""The student-project template: its notebook runs a real (smoke) grid through the runner,
aggregates it and reads it along the axis; its grid file is valid for every profile."""

from __future__ import annotations

import json

import pytest

from banana.paths import GRID_DIR, NOTEBOOK_DIR, notebook_path

TEMPLATE = NOTEBOOK_DIR / "projects" / "project_template.ipynb"
GRID = GRID_DIR / "project_template.yaml"


def test_the_template_grid_is_valid_for_every_profile_and_comments_every_field():
    from banana.grid import load_grid, notebook_defaults

    defaults = notebook_defaults(notebook_path("07_ablate_decoding"))
    for profile in ("smoke", "cpu", "gpu"):
        spec = load_grid(GRID, profile, defaults=defaults)
        assert spec.axes == ["ensemble_size", "seed"] and len(spec.points) >= 2
    text = GRID.read_text()
    assert text.count("#") >= 15, "the template grid file explains itself"


def test_with_parameters_fixes_folders_but_never_an_axis():
    from banana.grid import load_grid, notebook_defaults, with_parameters

    spec = load_grid(GRID, "smoke", defaults=notebook_defaults(notebook_path("07_ablate_decoding")))
    fixed = with_parameters(spec, {"world_dir": "/tmp/w"})
    assert all(p["world_dir"] == "/tmp/w" for p in fixed.points) and fixed.parameters["world_dir"] == "/tmp/w"
    with pytest.raises(ValueError, match="axes of grid"):
        with_parameters(spec, {"ensemble_size": 4})


def test_axis_reading_separates_only_non_overlapping_intervals():
    import pandas as pd

    from banana.grid import axis_reading

    rows = [{"status": "done", "k": k, "segmentation_miou": v, "segmentation_miou_ci_lo": v - 0.02,
             "segmentation_miou_ci_hi": v + 0.02, "segmentation_miou_above_floor": 1.0}
            for k, v in ((1, 0.30), (2, 0.31), (3, 0.50))]
    text = axis_reading(pd.DataFrame(rows), "k", ["segmentation_miou"])
    assert "Best: **k = 3**" in text and "separates it from [1, 2]" in text
    rows[2].update(segmentation_miou=0.34, segmentation_miou_ci_lo=0.325, segmentation_miou_ci_hi=0.355)
    text = axis_reading(pd.DataFrame(rows), "k", ["segmentation_miou"])
    assert "separates it from [1]" in text and "overlaps [2]" in text, text
    floor = pd.DataFrame(rows).assign(segmentation_miou_above_floor=0.0)
    assert "Every setting is at floor" in axis_reading(floor, "k", ["segmentation_miou"])


@pytest.mark.notebook
def test_the_project_template_runs_a_smoke_grid_end_to_end(smoke_run, tmp_path):
    import os

    import papermill

    from banana.grid.runner import KERNEL_MPLBACKEND

    root, _ = smoke_run
    base = root / "runs" / "pretrain-smoke" / "model"
    out = tmp_path / "executed.ipynb"
    env = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = KERNEL_MPLBACKEND
    try:
        papermill.execute_notebook(str(TEMPLATE), str(out), cwd=str(TEMPLATE.parent), kernel_name="python3",
                                   progress_bar=False, parameters={
                                       "profile": "smoke", "world_dir": str(root / "world"), "runs_dir": str(root / "runs"),
                                       "base_dir": str(base), "out_dir": str(tmp_path / "grid")})
    finally:
        os.environ.pop("MPLBACKEND") if env is None else os.environ.__setitem__("MPLBACKEND", env)
    cells = [c for c in json.loads(out.read_text())["cells"] if c["cell_type"] == "code"]
    outputs = [o for c in cells for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the axis figure is inline"
    reading = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert reading and "segmentation mIoU" in "".join(reading[-1])
    assert (tmp_path / "grid" / "report" / "results.csv").is_file()
    statuses = [json.loads(p.read_text())["status"] for p in (tmp_path / "grid").glob("*/status.json")]
    assert statuses == ["done", "done"]

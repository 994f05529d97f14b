"""banana.grid: expansion, running, resume after a kill, failure recording, aggregation.

The points run a tiny notebook the tests write themselves (no torch import), so each point
costs one kernel start: a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from banana.grid import (aggregate, collect, expand_block, expand_grid, grid_summary, load_grid, notebook_defaults,
                         point_name, run_grid)

PARAMETERS = '''x = 1  # the input
seed = 0  # a seed
fail = False  # raise inside the notebook
sleep_s = 0.0  # seconds to sleep before writing metrics
mode = "a"  # a label
profile = "smoke"  # profile
output_dir = "."  # where metrics.json goes'''

BODY = '''import json, time
from pathlib import Path
time.sleep(sleep_s)
if fail:
    raise RuntimeError(f"point asked to fail (x={x})")
Path(output_dir, "metrics.json").write_text(json.dumps({"y": 2 * x + seed, "nested": {"z": x * x}, "label": mode}))'''


@pytest.fixture()
def notebook(tmp_path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(BODY)]
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    return path


def write_grid(tmp_path: Path, text: str, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- expansion
def test_product_times_zip_and_blocks_with_notebook_defaults():
    points, axes = expand_block({"product": {"x": [1, 2], "seed": [0, 1]}, "zip": {"mode": ["a", "b"], "sleep_s": [0.0, 0.1]}})
    assert axes == ["x", "seed", "mode", "sleep_s"]
    assert len(points) == 2 * 2 * 2
    assert {"x": 1, "seed": 0, "mode": "b", "sleep_s": 0.1} in points
    spec = expand_grid("g", {"fail": False}, [{"product": {"x": [1, 2]}}, {"product": {"mode": ["b"]}}],
                       defaults={"x": 1, "seed": 0, "fail": False, "sleep_s": 0.0, "mode": "a", "profile": "smoke",
                                 "output_dir": "."})
    # block 2 takes the notebook's default x = 1, block 1 its default mode "a"
    assert spec.points == [{"fail": False, "x": 1, "mode": "a"}, {"fail": False, "x": 2, "mode": "a"},
                           {"fail": False, "x": 1, "mode": "b"}]
    assert [spec.point_name(p) for p in spec.points] == ["x-1_mode-a", "x-2_mode-a", "x-1_mode-b"]


def test_identical_points_from_two_blocks_run_once():
    spec = expand_grid("g", {}, [{"product": {"x": [1, 2]}}, {"product": {"x": [2, 3]}}])
    assert [p["x"] for p in spec.points] == [1, 2, 3]


def test_point_names_keep_floats_and_special_characters_apart():
    assert point_name({"r": 1.0, "s": "dpm++", "t": None}, ["r", "s", "t"]) == "r-1.0_s-dpm++_t-None"
    assert point_name({"r": 1}, ["r"]) != point_name({"r": 1.0}, ["r"])


@pytest.mark.parametrize("block, message", [
    ({"product": {"x": []}}, "non-empty list"),
    ({"product": {"x": 3}}, "non-empty list"),
    ({"zip": {"x": [1, 2], "seed": [0]}}, "equal lengths"),
    ({"product": {"x": [1]}, "zip": {"x": [2]}}, "both 'product' and 'zip'"),
    ({"product": {"output_dir": ["a"]}}, "set by the grid runner"),
    ({"cartesian": {"x": [1]}}, "unknown key"),
])
def test_bad_blocks_are_refused_with_a_clear_error(block, message):
    with pytest.raises(ValueError, match=message):
        expand_block(block)


def test_unknown_parameters_and_profile_overrides(tmp_path, notebook):
    defaults = notebook_defaults(notebook)
    assert defaults["x"] == 1 and defaults["mode"] == "a" and defaults["sleep_s"] == 0.0
    path = write_grid(tmp_path, "grid: {product: {x: [1, 2, 3]}}\nprofiles: {smoke: {grid: {product: {x: [5]}}, "
                                "parameters: {mode: b}}}\n")
    assert [p["x"] for p in load_grid(path, "cpu", defaults).points] == [1, 2, 3]
    smoke = load_grid(path, "smoke", defaults)
    assert smoke.points == [{"mode": "b", "x": 5}]
    bad = write_grid(tmp_path, "grid: {product: {learning_rat: [1, 2]}}\n", "bad")
    with pytest.raises(ValueError, match="learning_rat"):
        load_grid(bad, "cpu", defaults)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_grid(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="unknown key"):
        load_grid(write_grid(tmp_path, "grids: {}\n", "typo"))


def test_the_shipped_grid_files_expand_for_every_profile():
    from banana.reproduce import GRID_DIR, GRIDS, notebook_path

    for notebook, name in GRIDS.items():
        defaults = notebook_defaults(notebook_path(notebook))
        sizes = {profile: len(load_grid(GRID_DIR / f"{name}.yaml", profile, defaults).points)
                 for profile in ("smoke", "cpu", "gpu")}
        assert 1 <= sizes["smoke"] <= sizes["cpu"] <= sizes["gpu"], (name, sizes)
        assert "seed" in load_grid(GRID_DIR / f"{name}.yaml", "gpu", defaults).axes


# --------------------------------------------------------------------------- running
def _mtimes(out: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/notebook.ipynb")}


def test_grid_runs_every_point_in_parallel_then_a_rerun_recomputes_nothing(tmp_path, notebook):
    grid = write_grid(tmp_path, "grid: {product: {x: [1, 2], seed: [0, 1]}}\n")
    out = tmp_path / "runs"
    results = run_grid(notebook, grid, out_dir=out, profile="smoke", workers=2, progress=False)
    assert sorted(results) == ["x-1_seed-0", "x-1_seed-1", "x-2_seed-0", "x-2_seed-1"]
    assert all(r["status"] == "done" for r in results.values())
    metrics = json.loads((out / "x-2_seed-1" / "metrics.json").read_text())
    assert metrics["y"] == 5
    parameters = json.loads((out / "x-2_seed-1" / "parameters.json").read_text())
    assert parameters == {"x": 2, "seed": 1, "profile": "smoke", "output_dir": str((out / "x-2_seed-1").resolve())}
    before = _mtimes(out)
    again = run_grid(notebook, grid, out_dir=out, profile="smoke", workers=2, progress=False)
    assert all(r.get("skipped") for r in again.values())
    assert _mtimes(out) == before
    # a grown grid runs only its new points
    bigger = write_grid(tmp_path, "grid: {product: {x: [1, 2, 3], seed: [0, 1]}}\n")
    run_grid(notebook, bigger, out_dir=out, profile="smoke", workers=2, progress=False)
    after = _mtimes(out)
    assert {k: v for k, v in after.items() if k in before} == before and len(after) == 6


def test_a_grid_folder_refuses_another_profile_or_fixed_parameters(tmp_path, notebook):
    grid = write_grid(tmp_path, "grid: {product: {x: [1]}}\n")
    out = tmp_path / "runs"
    run_grid(notebook, grid, out_dir=out, profile="smoke", progress=False)
    with pytest.raises(ValueError, match="choose another output folder"):
        run_grid(notebook, grid, out_dir=out, profile="cpu", progress=False)
    other = write_grid(tmp_path, "parameters: {mode: b}\ngrid: {product: {x: [1]}}\n")
    with pytest.raises(ValueError, match="choose another output folder"):
        run_grid(notebook, other, out_dir=out, profile="smoke", progress=False)


def test_failures_and_timeouts_are_recorded_and_the_rest_still_runs(tmp_path, notebook):
    grid = write_grid(tmp_path, "grid:\n  - {product: {x: [1, 2]}}\n  - {zip: {x: [3], fail: [true]}}\n"
                                "  - {zip: {x: [4], sleep_s: [60.0]}}\n")
    out = tmp_path / "runs"
    results = run_grid(notebook, grid, out_dir=out, profile="smoke", workers=2, timeout_s=25, progress=False)
    assert results["x-1_fail-False_sleep_s-0.0"]["status"] == "done"
    failed = results["x-3_fail-True_sleep_s-0.0"]
    assert failed["status"] == "failed"
    assert "point asked to fail (x=3)" in failed["error"] and "RuntimeError" in failed["traceback_tail"]
    timed_out = results["x-4_fail-False_sleep_s-60.0"]
    assert timed_out["status"] == "timeout" and "timeout" in timed_out["error"]
    stored = json.loads((out / "x-3_fail-True_sleep_s-0.0" / "status.json").read_text())
    assert stored["status"] == "failed" and stored["seconds"] > 0
    summary = grid_summary(out)
    assert len(summary["done"]) == 2 and len(summary["failed"]) == 1 and len(summary["timeout"]) == 1

    # A plain rerun skips failed points; --retry-failed reruns only them.
    before = _mtimes(out)
    rerun = run_grid(notebook, grid, out_dir=out, profile="smoke", workers=2, timeout_s=25, progress=False)
    assert all(r.get("skipped") for r in rerun.values()) and _mtimes(out) == before
    retried = run_grid(notebook, grid, out_dir=out, profile="smoke", workers=2, timeout_s=25, progress=False,
                       retry_failed=True)
    assert not retried["x-3_fail-True_sleep_s-0.0"].get("skipped")
    assert not retried["x-4_fail-False_sleep_s-60.0"].get("skipped")
    assert retried["x-1_fail-False_sleep_s-0.0"].get("skipped")
    after = _mtimes(out)
    assert after["x-1_fail-False_sleep_s-0.0"] == before["x-1_fail-False_sleep_s-0.0"]


def test_a_killed_grid_loses_no_finished_point_and_the_rerun_finishes_the_rest(tmp_path, notebook):
    grid = write_grid(tmp_path, "grid:\n  - {product: {x: [1]}}\n  - {zip: {x: [2, 3], sleep_s: [3.0, 3.0]}}\n")
    out = tmp_path / "runs"
    env = {**os.environ, "TQDM_DISABLE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "banana.cli", "grid", str(notebook), "--grid", str(grid),
                                "--out", str(out), "--profile", "smoke", "--workers", "1"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first = out / "x-1_sleep_s-0.0" / "status.json"
    deadline = time.time() + 120
    while not first.is_file() and time.time() < deadline:
        time.sleep(0.2)
    assert first.is_file(), "the first point never finished"
    time.sleep(1.0)                        # the second point is now running
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    summary = grid_summary(out)
    assert summary["done"] == ["x-1_sleep_s-0.0"]
    assert set(summary["pending"]) == {"x-2_sleep_s-3.0", "x-3_sleep_s-3.0"}
    finished_at = first.stat().st_mtime_ns
    results = run_grid(notebook, grid, out_dir=out, profile="smoke", workers=2, progress=False)
    assert results["x-1_sleep_s-0.0"].get("skipped") and first.stat().st_mtime_ns == finished_at
    assert grid_summary(out) == {"done": ["x-1_sleep_s-0.0", "x-2_sleep_s-3.0", "x-3_sleep_s-3.0"]}


# --------------------------------------------------------------------------- aggregation
def test_aggregate_writes_a_tidy_table_figures_and_a_summary(tmp_path, notebook):
    grid = write_grid(tmp_path, "grid:\n  - {product: {x: [1, 2], seed: [0, 1]}}\n  - {zip: {x: [9], fail: [true]}}\n"
                                "report:\n  figures:\n    - {name: lines, x: x, metrics: [y, nested/z]}\n"
                                "    - {name: dots, kind: scatter, x: y, hue: seed, size: x, metrics: [nested/z]}\n")
    out = tmp_path / "runs"
    run_grid(notebook, grid, out_dir=out, profile="smoke", workers=2, progress=False)
    frame, stored = collect(out)
    assert len(frame) == 5 and stored["axes"] == ["x", "seed", "fail"]
    written = aggregate(out, tmp_path / "report")
    table = pd.read_csv(written["results"])
    done = table[table["status"] == "done"].sort_values(["x", "seed"])
    assert list(done["y"]) == [2, 3, 4, 5] and list(done["nested/z"]) == [1, 1, 4, 4]
    assert "label" not in table.columns            # only numbers are metrics
    assert (table["status"] == "failed").sum() == 1
    long = pd.read_csv(written["results_long"])
    assert set(long["metric"]) == {"y", "nested/z"} and len(long) == 8
    assert written["figure:lines"].is_file() and written["figure:dots"].is_file()
    summary = written["summary"].read_text()
    assert "2.5 ± 0.71" in summary        # x = 1: y over seeds {2, 3}
    assert "point asked to fail (x=9)" in summary
    with pytest.raises(FileNotFoundError, match="not a grid folder"):
        aggregate(tmp_path / "nothing")

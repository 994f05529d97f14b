"""The worked solutions (``notebooks/solutions/NN_<stem>_solutions.ipynb``): one per numbered
notebook, a solution for every exercise, the notebooks' house style, and they run.

The house-style checks read the committed files (no kernel). The execution test runs every
solutions notebook through papermill in the ``smoke`` profile, two at a time, against the session's
smoke build (``smoke_run`` in ``conftest.py``): the world, the runs and the aggregated grids that
``banana reproduce --profile smoke`` wrote, so the solutions reuse them instead of training their own.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from banana.paths import NOTEBOOK_DIR

SOLUTIONS_DIR = NOTEBOOK_DIR / "solutions"
NUMBERED = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted(SOLUTIONS_DIR.glob("*_solutions.ipynb"))
#: The longest code cell a notebook may have (as in ``test_notebook_style.py``).
MAX_CELL_LINES = 15
#: A code cell that makes a figure (as in ``test_notebooks.py``): it must keep it inline when executed.
DRAWS = r"\bfig(?:, \w+)? = |\bplt\.(?:subplots|figure)\("


def _notebook(path: Path) -> dict:
    return json.loads(path.read_text())


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _exercise_count(numbered: Path) -> int:
    """Items of the numbered notebook's "## Exercises" list (its last cell)."""
    text = _source(_notebook(numbered)["cells"][-1])
    section = text[text.index("## Exercises"):]
    return len(re.findall(r"^\d+\. ", section, flags=re.MULTILINE))


def _solution_of(numbered: Path) -> Path:
    return SOLUTIONS_DIR / f"{numbered.stem}_solutions.ipynb"


def test_every_numbered_notebook_has_its_solutions_notebook():
    assert [p.name for p in SOLUTIONS] == [_solution_of(p).name for p in NUMBERED]


@pytest.mark.parametrize("numbered", NUMBERED, ids=lambda p: p.stem)
def test_solutions_notebook_answers_every_exercise(numbered):
    cells = _notebook(_solution_of(numbered))["cells"]
    markdown = [_source(c) for c in cells if c["cell_type"] == "markdown"]
    headings = [int(m) for text in markdown for m in re.findall(r"^### Exercise (\d+)\s*$", text, flags=re.MULTILINE)]
    assert headings == list(range(1, _exercise_count(numbered) + 1)), f"exercise headings {headings}"
    # After each heading: at least one code cell, then a worked answer, before the next heading.
    starts = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "### Exercise" in _source(c)]
    for start, stop in zip(starts, starts[1:] + [len(cells)]):
        block = cells[start + 1:stop]
        assert any(c["cell_type"] == "code" for c in block), f"{_source(cells[start])[:40]!r} has no code"
        assert any(c["cell_type"] == "markdown" and "**Worked answer.**" in _source(c) for c in block), \
            f"{_source(cells[start])[:40]!r} has no worked answer"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solutions_notebook_is_committed_clean_and_follows_the_house_style(path):
    nb = _notebook(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), "strip outputs before committing"
    long = {i: len(_source(c).splitlines()) for i, c in enumerate(code) if len(_source(c).splitlines()) > MAX_CELL_LINES}
    assert not long, f"code cells over {MAX_CELL_LINES} lines: {long}"
    first = _source(nb["cells"][0])
    number, stem = path.stem[:2], path.stem.removesuffix("_solutions")
    assert first.startswith(f"# {number} · Solutions: "), first[:60]
    assert f"](../{stem}.ipynb)" in first, "no link back to the exercise notebook"
    assert "**Expected runtime:**" in first and all(p in first for p in ("`smoke`", "`cpu`", "`gpu`"))
    for target in re.findall(r"\]\((?!https?://)([^)#\s]+)", "".join(_source(c) for c in nb["cells"]
                                                                   if c["cell_type"] == "markdown")):
        assert (path.parent / target).exists(), f"broken link {target}"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    names = []
    for line in [line for line in _source(params[0]).splitlines() if line.strip()]:
        statement, _, comment = line.partition("#")
        assert comment.strip() and "=" not in comment, f"parameter line needs a comment without '=': {line!r}"
        node = ast.parse(statement).body[0]
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), f"not a plain assignment: {line!r}"
        ast.literal_eval(node.value)  # flat literals only: papermill does not recompute expressions
        names.append(node.targets[0].id if isinstance(node, ast.Assign) else node.target.id)
    assert {"profile", "seed"} <= set(names) and ("output_dir" in names or "reports_dir" in names), names
    help_text = subprocess.run([str(Path(sys.executable).parent / "papermill"), "--help-notebook", str(path)],
                               capture_output=True, text=True, timeout=120).stdout
    for name in names:  # papermill parsed every parameter
        assert f"  {name}:" in help_text, f"papermill --help-notebook does not list {name!r}"


def _smoke_parameters(root: Path, out: Path) -> dict[str, str]:
    """Every folder parameter a solutions notebook may declare, pointed at the smoke build."""
    from banana.paths import shipped_generator_dir

    shipped = shipped_generator_dir("smoke")
    return {"profile": "smoke", "seed": 0, "world_dir": str(root / "world"),
            "base_dir": str(shipped if shipped.is_dir() else root / "runs" / "pretrain-smoke" / "model"),
            "runs_dir": str(root / "runs"), "grid_dir": str(root / "runs" / "reproduce-smoke" / "mixing_ratio"),
            "curves_csv": str(root / "reports" / "learning_curves" / "results.csv"), "output_dir": str(out)}


@pytest.mark.notebook
def test_solutions_execute_in_the_smoke_profile(smoke_run, tmp_path, monkeypatch):
    import time
    from concurrent.futures import ThreadPoolExecutor

    import papermill as pm

    from banana.grid.runner import KERNEL_MPLBACKEND

    root, _ = smoke_run
    monkeypatch.setenv("MPLBACKEND", KERNEL_MPLBACKEND)   # kernels inherit it: figures stay inline
    monkeypatch.setenv("OMP_NUM_THREADS", "1")            # two kernels share the two cores
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

    def execute(path: Path) -> tuple[Path, float, str | None]:
        declared = pm.inspect_notebook(str(path))
        parameters = {k: v for k, v in _smoke_parameters(root, tmp_path / "runs" / path.stem).items() if k in declared}
        start, error = time.perf_counter(), None
        try:
            pm.execute_notebook(str(path), str(tmp_path / path.name), parameters=parameters, kernel_name="python3",
                                cwd=str(SOLUTIONS_DIR), progress_bar=False, execution_timeout=600)
        except Exception as exc:  # noqa: BLE001  (reported below with the notebook's name)
            error = f"{type(exc).__name__}: {str(exc)[-2000:]}"
        return path, time.perf_counter() - start, error

    with ThreadPoolExecutor(max_workers=2) as pool:
        ran = list(pool.map(execute, SOLUTIONS))
    print({path.stem: round(seconds, 1) for path, seconds, _ in ran})
    failed = {path.stem: error for path, _, error in ran if error}
    assert not failed, failed
    for path, _, _ in ran:
        code = [c for c in _notebook(tmp_path / path.name)["cells"] if c["cell_type"] == "code"]
        errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.stem}: {errors}"
        plotting = [c for c in code if re.search(DRAWS, _source(c))]
        inline = [c for c in plotting if any("image/png" in o.get("data", {}) for o in c["outputs"])]
        assert len(inline) == len(plotting), f"{path.stem}: {len(plotting) - len(inline)} plotting cell(s) without a figure"

"""Execute the numbered notebooks end to end with papermill.

``banana reproduce`` is the project's main job: it runs the notebooks in order, each in a
fresh ``python3`` kernel, with one ``profile`` (``smoke`` | ``cpu`` | ``gpu``) and ``seed``,
and writes the executed copies next to the figures they produce under ``reports/``.
Committed notebooks carry no outputs; the executed copies are the record of a run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"

#: The notebooks ``reproduce`` runs, in order. Later stages append theirs.
PIPELINE: tuple[str, ...] = (
    "01_task_as_image",
    "02_synthetic_world",
    "03_pretrain_generator",
    "04_instruction_tune",
    "05_evaluate",
)

PROFILES = ("smoke", "cpu", "gpu")


def notebook_path(name: str) -> Path:
    """``notebooks/<name>.ipynb``, with a clear error when it is missing."""
    path = NOTEBOOK_DIR / f"{name}.ipynb" if not str(name).endswith(".ipynb") else Path(name)
    if not path.is_file():
        known = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
        raise FileNotFoundError(f"notebook {path} does not exist; known notebooks: {known}")
    return path


def execute_notebook(notebook: str | Path, output: str | Path, parameters: Mapping[str, Any],
                     timeout_s: int | None = 1800, progress: bool = True) -> Path:
    """Run one notebook through papermill in a fresh ``python3`` kernel.

    The kernel's working directory is ``notebooks/`` so relative paths in the parameters
    (``../reports``) mean the same in Jupyter and here. ``HF_*_OFFLINE`` is set because no
    hub can be reached and ``datasets`` otherwise tries.
    """
    import papermill as pm

    notebook = Path(notebook)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    pm.execute_notebook(
        str(notebook), str(output), parameters=dict(parameters), kernel_name="python3",
        cwd=str(notebook.parent), progress_bar=progress, execution_timeout=timeout_s,
        request_save_on_cell_execute=True,
    )
    return output


def reproduce(profile: str = "cpu", seed: int = 0, reports_dir: str | Path | None = None,
              notebooks: Sequence[str] = PIPELINE, extra_parameters: Mapping[str, Any] | None = None,
              progress: bool = True) -> dict[str, float]:
    """Execute ``notebooks`` in order with ``profile`` and ``seed``.

    Executed copies go to ``<reports_dir>/notebooks/``; each notebook writes its own figures
    and tables under ``reports_dir``. Returns seconds per notebook (also written to
    ``<reports_dir>/notebooks/timings.json`` together with the provenance record).
    """
    import json

    from banana.provenance import run_info

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {PROFILES}")
    reports_dir = Path(reports_dir) if reports_dir is not None else REPO_ROOT / "reports"
    reports_dir = reports_dir.resolve()
    executed_dir = reports_dir / "notebooks"
    timings: dict[str, float] = {}
    for name in notebooks:
        parameters = {"profile": profile, "seed": seed, "reports_dir": str(reports_dir)}
        parameters.update(extra_parameters or {})
        start = time.perf_counter()
        print(f"[banana reproduce] {name} (profile={profile}, seed={seed})", flush=True)
        execute_notebook(notebook_path(name), executed_dir / f"{name}.ipynb", parameters, progress=progress)
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"[banana reproduce] {name} done in {timings[name]:.1f} s", flush=True)
    record = run_info({"profile": profile, "seed": seed, "notebooks": list(notebooks)})
    record["seconds"] = timings
    record["total_seconds"] = round(sum(timings.values()), 1)
    (executed_dir / "timings.json").write_text(json.dumps(record, indent=2) + "\n")
    write_reports_index(reports_dir, record)
    return timings


def write_reports_index(reports_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """``reports/README.md``: what ran (command, profile, seed, git SHA, machine, seconds per
    notebook), then every table (embedded) and figure (linked) the notebooks wrote."""
    reports_dir = Path(reports_dir)
    config = record["config"]
    lines = [
        "# banana reports",
        "",
        "Everything in this folder was produced by one run of",
        "",
        "```bash",
        f"banana reproduce --profile {config['profile']} --seed {config['seed']}",
        "```",
        "",
        f"on {record['machine']['processor']} ({record['machine']['platform']}), git `{record['git_sha']}`,"
        f" torch {record['packages'].get('torch')}, finished {record['created']}.",
        "Executed notebooks (with all outputs) are in [`notebooks/`](notebooks/).",
        "",
        "| notebook | seconds |",
        "|---|---|",
        *[f"| [`{name}`](notebooks/{name}.ipynb) | {seconds} |" for name, seconds in record["seconds"].items()],
        f"| **total** | **{record['total_seconds']}** |",
        "",
    ]
    for table in sorted((reports_dir / "tables").glob("*.md")):
        lines += [f"## `tables/{table.name}`", "", table.read_text().strip(), ""]
    figures = sorted((reports_dir / "figures").glob("*.png"))
    if figures:
        lines += ["## Figures", ""] + [f"- [`{f.name}`](figures/{f.name})" for f in figures] + [""]
    path = reports_dir / "README.md"
    path.write_text("\n".join(lines))
    return path

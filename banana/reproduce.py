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

from banana.paths import GRID_DIR, NOTEBOOK_DIR, PROFILES, REPO_ROOT, notebook_path  # noqa: F401  (re-exported)

#: The notebooks ``reproduce`` runs, in order.
PIPELINE: tuple[str, ...] = (
    "01_task_as_image",
    "02_synthetic_world",
    "03_pretrain_generator",
    "04_instruction_tune",
    "05_evaluate",
    "06_ablate_mixing_ratio",
    "07_ablate_decoding",
    "08_learning_curves",
)
#: Ablation notebooks: ``reproduce`` runs each over its grid (``grids/NAME.yaml``, the profile's
#: size) with :func:`banana.grid.run_grid` and aggregates it into ``reports/NAME/``.
GRIDS: dict[str, str] = {"06_ablate_mixing_ratio": "mixing_ratio", "07_ablate_decoding": "decoding",
                         "08_learning_curves": "learning_curves"}
#: Studies longer than ``reproduce`` may take on some profiles: notebook -> (profiles, the command
#: that reruns it). There ``reproduce`` keeps the committed report (``reports/GRID/``, written by
#: that command) and prints the command instead of running the grid (cpu: ~70 min on 2 cores).
STUDIES: dict[str, tuple[tuple[str, ...], str]] = {
    "08_learning_curves": (("cpu", "gpu"), "banana grid notebooks/08_learning_curves.ipynb --grid "
                                           "grids/learning_curves.yaml --profile {profile} --threads 2"),
}
#: Parallel grid points per profile: two 1-thread kernels use a 2-core CPU best; one GPU, one point.
GRID_WORKERS = {"smoke": 2, "cpu": 2, "gpu": 1}



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
    from banana.grid.runner import KERNEL_MPLBACKEND

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    backend = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = KERNEL_MPLBACKEND    # the kernel inherits it: figures inline in the executed copy
    try:
        pm.execute_notebook(
            str(notebook), str(output), parameters=dict(parameters), kernel_name="python3",
            cwd=str(notebook.parent), progress_bar=progress, execution_timeout=timeout_s,
            request_save_on_cell_execute=True,
        )
    finally:
        if backend is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = backend
    return output


def _workspace_parameters(name: str, profile: str, runs_dir: Path, world_dir: Path) -> dict[str, Any]:
    """Paths for notebook ``name`` when the run does not use the repository's ``runs/`` and
    ``data/world/`` (tests run the whole pipeline in a temporary folder this way)."""
    from banana.paths import tune_run_name
    from banana.training.publish import shipped_generator_dir

    shipped = Path(shipped_generator_dir(profile))
    base = shipped if shipped.is_dir() else runs_dir / f"pretrain-{profile}" / "model"
    tuned = runs_dir / tune_run_name(profile)
    return {
        "02_synthetic_world": {"world_dir": str(world_dir)},
        "03_pretrain_generator": {"world_dir": str(world_dir), "run_dir": str(runs_dir / f"pretrain-{profile}")},
        "04_instruction_tune": {"world_dir": str(world_dir), "base_dir": str(base), "run_dir": str(tuned)},
        "05_evaluate": {"world_dir": str(world_dir), "base_dir": str(base), "tune_run_dir": str(tuned),
                        "baseline_dir": str(runs_dir / tuned.name.replace("tune-", "baselines-", 1))},
        "06_ablate_mixing_ratio": {"world_dir": str(world_dir), "base_dir": str(base)},
        "07_ablate_decoding": {"world_dir": str(world_dir), "base_dir": str(base), "runs_dir": str(runs_dir)},
        "08_learning_curves": {"world_dir": str(world_dir), "base_dir": str(base)},
    }.get(name, {})


def run_ablation(name: str, profile: str = "cpu", seed: int = 0, reports_dir: str | Path | None = None,
                 runs_dir: str | Path | None = None, parameters: Mapping[str, Any] | None = None,
                 workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run ablation notebook ``name`` over its grid for ``profile`` and aggregate it.

    The grid folder is ``<runs_dir>/reproduce-PROFILE/GRID`` (resumable: a rerun of ``reproduce``
    skips finished points), the report ``<reports_dir>/GRID/``; the executed point notebooks are
    copied to ``<reports_dir>/GRID/notebooks/``. ``seed`` fixes the world (``world_seed``); the
    grid's own ``seed`` axis varies training and sampling. Raises if any point failed.
    """
    import shutil

    from banana.grid import aggregate, grid_summary, load_grid, notebook_defaults, run_grid, with_parameters

    grid_name = GRIDS[name]
    notebook = notebook_path(name)
    reports_dir = Path(reports_dir) if reports_dir is not None else REPO_ROOT / "reports"
    runs_dir = Path(runs_dir) if runs_dir is not None else REPO_ROOT / "runs"
    spec = load_grid(GRID_DIR / f"{grid_name}.yaml", profile, defaults=notebook_defaults(notebook))
    spec = with_parameters(spec, {"world_seed": seed, **(parameters or {})})
    grid_dir = runs_dir / f"reproduce-{profile}" / grid_name
    run_grid(notebook, spec, out_dir=grid_dir, profile=profile, progress=progress,
             workers=workers or GRID_WORKERS[profile])
    report_dir = reports_dir / grid_name
    if report_dir.is_dir():          # a report of this run only: no figure or notebook of an older grid lingers
        shutil.rmtree(report_dir)
    written = aggregate(grid_dir, report_dir, name=grid_name)
    executed = report_dir / "notebooks"
    executed.mkdir(parents=True, exist_ok=True)
    for point in spec.points:
        source = grid_dir / spec.point_name(point) / "notebook.ipynb"
        if source.is_file():
            shutil.copyfile(source, executed / f"{spec.point_name(point)}.ipynb")
    summary = grid_summary(grid_dir)
    bad = summary.get("failed", []) + summary.get("timeout", [])
    if bad:
        raise RuntimeError(f"{len(bad)} point(s) of grid {grid_name} failed: {bad}; see {grid_dir}/<point>/status.json "
                           f"and rerun with `banana grid {notebook} --grid grids/{grid_name}.yaml --out {grid_dir} "
                           f"--profile {profile} --retry-failed`")
    return {"grid_dir": grid_dir, "report": written, "points": len(spec.points)}


def reproduce(profile: str = "cpu", seed: int = 0, reports_dir: str | Path | None = None,
              notebooks: Sequence[str] = PIPELINE, extra_parameters: Mapping[str, Any] | None = None,
              progress: bool = True, runs_dir: str | Path | None = None,
              world_dir: str | Path | None = None) -> dict[str, float]:
    """Execute ``notebooks`` in order with ``profile`` and ``seed``.

    Executed copies go to ``<reports_dir>/notebooks/``; each notebook writes its own figures
    and tables under ``reports_dir``; the ablation notebooks (:data:`GRIDS`) run over their grids
    (:func:`run_ablation`). ``runs_dir``/``world_dir`` move training runs and the world out of the
    repository's ``runs/`` and ``data/world/PROFILE`` (default: the notebooks' own defaults).
    Returns seconds per notebook (also written to ``<reports_dir>/notebooks/timings.json``
    together with the provenance record).
    """
    import json

    from banana.provenance import run_info

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {PROFILES}")
    reports_dir = Path(reports_dir) if reports_dir is not None else REPO_ROOT / "reports"
    reports_dir = reports_dir.resolve()
    executed_dir = reports_dir / "notebooks"
    workspace = runs_dir is not None or world_dir is not None
    runs_path = Path(runs_dir).resolve() if runs_dir is not None else REPO_ROOT / "runs"
    world_path = Path(world_dir).resolve() if world_dir is not None else REPO_ROOT / "data" / "world" / profile
    timings: dict[str, float] = {}
    for name in notebooks:
        paths = _workspace_parameters(name, profile, runs_path, world_path) if workspace else {}
        start = time.perf_counter()
        print(f"[banana reproduce] {name} (profile={profile}, seed={seed})", flush=True)
        if name in STUDIES and profile in STUDIES[name][0]:
            print(f"[banana reproduce] {name} is a study: reports/{GRIDS[name]}/ is kept as committed; rerun it with "
                  f"`{STUDIES[name][1].format(profile=profile)}`", flush=True)
            continue
        if name in GRIDS:
            run_ablation(name, profile, seed, reports_dir, runs_path, parameters=paths, progress=progress)
        else:
            parameters = {"profile": profile, "seed": seed, "reports_dir": str(reports_dir), **paths}
            parameters.update(extra_parameters or {})
            execute_notebook(notebook_path(name), executed_dir / f"{name}.ipynb", parameters, progress=progress)
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"[banana reproduce] {name} done in {timings[name]:.1f} s", flush=True)
    record = run_info({"profile": profile, "seed": seed, "notebooks": list(notebooks)})
    record["seconds"] = timings
    record["total_seconds"] = round(sum(timings.values()), 1)
    executed_dir.mkdir(parents=True, exist_ok=True)
    (executed_dir / "timings.json").write_text(json.dumps(record, indent=2) + "\n")
    write_reports_index(reports_dir, record)
    return timings


def _grid_cell(rows, metric: str, fmt: str = ".3f") -> str:
    """A grid metric over some points (seeds): mean, the mean bootstrap interval, and "at floor"
    unless every point is above its best floor (columns written by
    :func:`banana.evaluation.comparison.point_record`)."""
    text = format(rows[metric].mean(), fmt)
    if f"{metric}_ci_lo" in rows:
        text += f" [{rows[f'{metric}_ci_lo'].mean():{fmt}}, {rows[f'{metric}_ci_hi'].mean():{fmt}}]"
    if f"{metric}_above_floor" in rows and rows[f"{metric}_above_floor"].min() < 1:
        text += " (at floor)"
    return text


def findings(reports_dir: str | Path, profile: str) -> list[str]:
    """What this run found, claim by claim against the paper, computed from the tables the
    notebooks wrote (a claim whose table is missing is skipped, never guessed)."""
    import pandas as pd

    reports_dir = Path(reports_dir)
    lines: list[str] = []
    ceiling = reports_dir / "tables" / "codec_ceiling.csv"
    if ceiling.is_file():
        c = pd.read_csv(ceiling)
        c = c[c["bits"].astype(str) == "8"].set_index(["codec", "metric"])["value"]
        lines.append(f"- **Task-as-image codecs are (nearly) lossless at 8 bits** (paper: the codecs are invertible). "
                     f"Segmentation mIoU {c[('palette, nearest colour', 'miou')]:.3f}; metric depth through the cube walk "
                     f"AbsRel {c[('metric cube walk (paper)', 'abs_rel')]:.4f} vs {c[('metric grayscale', 'abs_rel')]:.4f} "
                     f"for a grey ramp; normals {c[('(1-x, 1+y, 1+z)/2', 'mean')]:.2f} deg.")
    verdict = reports_dir / "tables" / f"verdict_{profile}.md"
    if verdict.is_file():
        wanted = ("segmentation mIoU", "mIoU, unseen palette", "depth AbsRel (metric, clipped)", "depth delta1",
                  "normals mean angle (deg)")
        picked = [line[2:] for line in verdict.read_text().splitlines()
                  if line.startswith("- [test] ") and line[9:].split(":")[0] in wanted]
        if picked:
            lines.append("- **Generalist vs controls, specialists and floors** (paper: Vision Banana beats specialists, "
                         "e.g. Cityscapes mIoU 0.699 vs SAM 3's 0.652). Here, on the test split, with 95% bootstrap "
                         "intervals over images; beats/trails only when the paired interval excludes 0; \"at floor\" "
                         f"when not distinguishable from the best floor baseline ([verdict](tables/verdict_{profile}.md)):")
            lines += [f"  - {line}" for line in picked]
    retention = reports_dir / "tables" / f"retention_{profile}.md"
    ratio = reports_dir / "mixing_ratio" / "results.csv"
    if ratio.is_file():
        r = pd.read_csv(ratio)
        r = r[r["status"] == "done"]
        if not r.empty:
            cells = ", ".join(f"{k:g}: mIoU {_grid_cell(v, 'segmentation_miou')} / delta1 {_grid_cell(v, 'depth_delta1')} / "
                              f"normals {_grid_cell(v, 'normals_mean_deg', '.1f')} deg / generation loss "
                              f"{v['denoising_loss_increase_pct'].mean():+.1f}%"
                              for k, v in r.groupby("mixing_ratio"))
            lines.append("- **Mixing ratio** (paper: 'a small amount' of vision data, value not disclosed). Mean over "
                         "seeds per vision fraction, [95% bootstrap interval over images], \"at floor\" unless every "
                         f"seed beats the best floor: {cells}. See [mixing_ratio/summary.md](mixing_ratio/summary.md).")
    elif retention.is_file():
        lines.append(f"- **Generation retention**: see [tables/retention_{profile}.md](tables/retention_{profile}.md).")
    decoding = reports_dir / "decoding" / "results.csv"
    if decoding.is_file():
        d = pd.read_csv(decoding)
        d = d[d["status"] == "done"]
        if not d.empty:
            axes = [a for a in ("scheduler", "sampling_steps", "ensemble_size", "text_guidance", "palette")
                    if a in d.columns]

            def setting(row) -> str:
                return ", ".join(f"{a} {row[a]}" for a in axes)

            best = d.loc[d["segmentation_miou"].idxmax()]
            fastest = d.loc[d["seconds_per_image"].idxmin()]
            lines.append("- **Decoding** (paper: sampler, steps and ensembling not disclosed). Best segmentation: "
                         f"{setting(best)}: mIoU {_grid_cell(d.loc[[best.name]], 'segmentation_miou')} at "
                         f"{best.seconds_per_image:.3f} s/image; cheapest: {setting(fastest)}: mIoU "
                         f"{_grid_cell(d.loc[[fastest.name]], 'segmentation_miou')} at "
                         f"{fastest.seconds_per_image:.3f} s/image. See [decoding/summary.md](decoding/summary.md).")
            if "palette" in d.columns and {"canonical", "random"} <= set(d["palette"]):
                pal = d.copy()
                for axis, value in (("scheduler", "ddim"), ("sampling_steps", 1), ("ensemble_size", 1),
                                    ("depth_codec", "metric")):
                    if axis in pal.columns:
                        pal = pal[pal[axis] == value]
                pal = {k: _grid_cell(v, "segmentation_miou") for k, v in pal.groupby("palette")}
                if {"canonical", "random"} <= set(pal):
                    lines.append(f"- **Reading the palette from the prompt** (paper: any palette given in the prompt). "
                                 f"mIoU with the canonical palette {pal['canonical']} vs a random one "
                                 f"{pal['random']}.")
    curves = reports_dir / "learning_curves" / "verdict.md"
    if curves.is_file():
        lines.append("- **Learning curves** (the thesis at our scale: where, if anywhere, does generative pretraining "
                     "pay?): [learning_curves/verdict.md](learning_curves/verdict.md), from the study grid "
                     f"`{STUDIES['08_learning_curves'][1].format(profile=profile)}`.")
    return lines


def write_reports_index(reports_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """``reports/README.md``: what ran (command, profile, seed, git SHA, machine, seconds per
    notebook), what was found against the paper's claims, the ablation summaries, then every
    table (embedded) and figure (linked) the notebooks wrote."""
    reports_dir = Path(reports_dir)
    config = record["config"]

    def link(name: str) -> str:
        if name in GRIDS:
            return f"[`{name}`]({GRIDS[name]}/summary.md) (grid `{GRIDS[name]}`)"
        return f"[`{name}`](notebooks/{name}.ipynb)"

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
        "Executed notebooks (with all outputs) are in [`notebooks/`](notebooks/); the ablation notebooks ran once per "
        "grid point, and their executed copies are in `<grid>/notebooks/`.",
        "",
        "| notebook | seconds |",
        "|---|---|",
        *[f"| {link(name)} | {seconds} |" for name, seconds in record["seconds"].items()],
        f"| **total** | **{record['total_seconds']}** ({record['total_seconds'] / 60:.1f} min) |",
        "",
    ]
    found = findings(reports_dir, config["profile"])
    if found:
        lines += ["## What this run found, against the paper's claims", "",
                  f"Measured at the `{config['profile']}` profile's scale (small models, synthetic world): "
                  "these are this run's numbers, not the paper's.", "", *found, ""]
    for grid in GRIDS.values():
        summary = reports_dir / grid / "summary.md"
        if summary.is_file():
            text = summary.read_text().replace("](", f"]({grid}/").replace(f"]({grid}/http", "](http")
            lines += [text.replace(f"# Grid `{grid}`", f"## Ablation grid `{grid}`", 1).replace("\n## ", "\n### "), ""]
    for table in sorted((reports_dir / "tables").glob("*.md")):
        lines += [f"## `tables/{table.name}`", "", table.read_text().strip(), ""]
    figures = sorted((reports_dir / "figures").glob("*.png"))
    if figures:
        lines += ["## Figures", ""] + [f"- [`{f.name}`](figures/{f.name})" for f in figures] + [""]
    path = reports_dir / "README.md"
    path.write_text("\n".join(lines))
    return path

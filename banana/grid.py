"""Run a notebook over a parameter grid with papermill, resumably; aggregate the results.

A grid file (YAML, ``grids/NAME.yaml``) says which parameter values to run::

    parameters:            # the same for every point
      n_eval: null
    grid:                  # one block, or a list of blocks whose points are concatenated
      product:             # every combination of these axes ...
        mixing_ratio: [0, 0.05, 0.5]
        seed: [0, 1]
      zip:                 # ... times these axes varied together (equal lengths)
        tuning: [lora, full]
        learning_rate: [0.001, 0.0001]
    profiles:              # optional: a profile replaces `grid` and/or updates `parameters`
      smoke: {grid: {product: {mixing_ratio: [0, 1], seed: [0]}}}
    report:                # optional: figures `banana aggregate` draws
      figures:
        - {name: tradeoff, x: mixing_ratio, hue: tuning, metrics: [segmentation_miou, denoising_loss]}

Each point runs in a fresh kernel (a ``papermill`` subprocess, so a timeout can kill it and its
kernel) and gets ``profile``, ``output_dir`` (its own folder) and its parameters. The notebook
writes ``metrics.json`` (a flat or nested dict of numbers) into ``output_dir``. The runner writes,
per point, ``runs/NAME/<point>/``: ``parameters.json``, the executed ``notebook.ipynb``,
``status.json`` (``done`` | ``failed`` | ``timeout``, seconds, error and traceback tail) and the
notebook's own files. A point counts as finished when ``status.json`` says ``done`` and
``metrics.json`` exists, both written atomically, so a killed grid loses no finished point and a
rerun skips them. Failed points are skipped on a rerun unless ``retry_failed`` (then only they run).

``aggregate(grid_dir)`` turns a grid folder into a tidy table (``results.csv``: one row per point,
parameters then metrics; ``results_long.csv``: one row per point and metric), seaborn figures and a
Markdown summary (mean ± sd over seeds) under ``reports/NAME/``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

STATUS_FILE = "status.json"
METRICS_FILE = "metrics.json"
PARAMETERS_FILE = "parameters.json"
NOTEBOOK_FILE = "notebook.ipynb"
GRID_FILE = "grid.json"
#: Parameters the runner sets itself; a grid file may not set them.
RESERVED = ("output_dir", "profile")
#: Papermill processes currently running, so an interrupted grid can take them down with it.
_RUNNING: set = set()


# --------------------------------------------------------------------------- grid files
@dataclass
class GridSpec:
    """A resolved grid: name, fixed parameters, the points (parameter dicts) and report settings."""

    name: str
    parameters: dict[str, Any]
    points: list[dict[str, Any]]
    axes: list[str]                    # the parameters that vary, in the order they were declared
    report: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None

    def point_name(self, point: Mapping[str, Any]) -> str:
        """``mixing_ratio-0.5_seed-0``: the varying parameters, in declaration order."""
        return point_name(point, self.axes)


def _format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        text = repr(value)                # 1.0 stays "1.0", so 1 and 1.0 are never mixed up
    else:
        text = str(value)
    safe = "".join(c if c.isalnum() or c in "-.+" else "-" for c in text)
    return safe or "none"


def point_name(point: Mapping[str, Any], axes: Sequence[str]) -> str:
    """A folder name for ``point`` from its values on ``axes`` (``name-value`` joined by ``_``)."""
    if not axes:
        return "default"
    return "_".join(f"{axis}-{_format_value(point[axis])}" for axis in axes)


def expand_block(block: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Points of one grid block: the product of ``product`` axes times the ``zip`` axes taken
    together. Returns ``(points, axes)``."""
    if not isinstance(block, Mapping):
        raise ValueError(f"a grid block must be a mapping with 'product' and/or 'zip', got {block!r}")
    unknown = set(block) - {"product", "zip"}
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in grid block; use 'product' and 'zip'")
    product = dict(block.get("product") or {})
    zipped = dict(block.get("zip") or {})
    both = set(product) & set(zipped)
    if both:
        raise ValueError(f"parameter(s) {sorted(both)} appear in both 'product' and 'zip'")
    for name, values in {**product, **zipped}.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid axis {name!r} must be a non-empty list of values, got {values!r}")
        if name in RESERVED:
            raise ValueError(f"{name!r} is set by the grid runner and cannot be a grid axis")
    lengths = {name: len(values) for name, values in zipped.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"'zip' axes must have equal lengths, got {lengths}")
    zip_rows = [dict(zip(zipped, row)) for row in zip(*zipped.values())] if zipped else [{}]
    product_rows = [dict(zip(product, row)) for row in itertools.product(*product.values())]
    points = [{**p, **z} for p in product_rows for z in zip_rows]
    return points, [*product, *zipped]


def load_grid(path: str | Path, profile: str | None = None, defaults: Mapping[str, Any] | None = None) -> GridSpec:
    """Read a grid file and expand it for ``profile`` (its ``profiles`` entry, if any, applies);
    ``defaults`` are the notebook's parameter defaults (see :func:`expand_grid`)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: a grid file is a mapping with 'parameters', 'grid', 'profiles', 'report'")
    unknown = set(raw) - {"parameters", "grid", "profiles", "report", "description"}
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}")
    parameters = dict(raw.get("parameters") or {})
    grid = raw.get("grid") or {}
    profiles = raw.get("profiles") or {}
    if profile is not None and profile in profiles:
        override = profiles[profile] or {}
        unknown = set(override) - {"parameters", "grid"}
        if unknown:
            raise ValueError(f"{path}: profile {profile!r} may override 'parameters' and 'grid', not {sorted(unknown)}")
        parameters.update(override.get("parameters") or {})
        grid = override.get("grid", grid)
    reserved = set(parameters) & set(RESERVED)
    if reserved:
        raise ValueError(f"{path}: {sorted(reserved)} are set by the grid runner, not the grid file")
    return expand_grid(path.stem, parameters, grid, report=dict(raw.get("report") or {}), profile=profile,
                       defaults=defaults)


def expand_grid(name: str, parameters: Mapping[str, Any], grid: Mapping | Sequence,
                report: Mapping | None = None, profile: str | None = None,
                defaults: Mapping[str, Any] | None = None) -> GridSpec:
    """Expand ``grid`` (a block or list of blocks) into points; fixed ``parameters`` apply to all.

    An axis that one block varies and another does not takes, in the other block's points, the
    notebook's default value (``defaults``, from :func:`notebook_defaults`), so every point states
    every axis. Points that come out identical from two blocks run once.
    """
    blocks = grid if isinstance(grid, list) else [grid]
    points: list[dict[str, Any]] = []
    axes: list[str] = []
    for block in blocks:
        block_points, block_axes = expand_block(block)
        axes += [a for a in block_axes if a not in axes]
        points += block_points
    clash = set(axes) & set(parameters)
    if clash:
        raise ValueError(f"{sorted(clash)} are both fixed parameters and grid axes")
    defaults = dict(defaults or {})
    if defaults:
        unknown = sorted((set(axes) | set(parameters)) - set(defaults))
        if unknown:
            raise ValueError(f"grid {name!r} sets {unknown}, which the notebook does not have as parameters; "
                             f"it has {sorted(defaults)}")
    missing = sorted({a for p in points for a in axes if a not in p and a not in defaults})
    if missing:
        raise ValueError(f"grid {name!r}: axes {missing} are missing from some blocks and have no notebook default")
    full: list[dict[str, Any]] = []
    for p in points:
        point = {**parameters, **{a: defaults[a] for a in axes if a not in p}, **p}
        if point not in full:
            full.append(point)
    names = [point_name(p, axes) for p in full]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"grid {name!r} has points that differ but share a folder name: {duplicates}")
    return GridSpec(name=name, parameters=dict(parameters), points=full, axes=axes, report=dict(report or {}),
                    profile=profile)


def notebook_defaults(notebook: str | Path) -> dict[str, Any]:
    """``{parameter: default value}`` of a notebook's parameters cell (via papermill)."""
    import ast

    import papermill as pm

    defaults = {}
    for name, info in pm.inspect_notebook(str(notebook)).items():
        try:
            defaults[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            defaults[name] = info["default"]
    return defaults


# --------------------------------------------------------------------------- point state
def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def point_status(point_dir: Path) -> str:
    """``done`` | ``failed`` | ``timeout`` | ``pending`` (never ran, or killed while running)."""
    status_path = Path(point_dir) / STATUS_FILE
    if not status_path.is_file():
        return "pending"
    status = json.loads(status_path.read_text()).get("status", "pending")
    if status == "done" and not (Path(point_dir) / METRICS_FILE).is_file():
        return "pending"
    return status


def _error_summary(text: str) -> str:
    """The last line of a traceback that names an exception."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Interrupt", "Exit")) or "Error" in head:
            return line[:500]
    return lines[-1][:500] if lines else "unknown error"


# --------------------------------------------------------------------------- running
_INTERRUPTED: list = []


def _kill(process: subprocess.Popen) -> None:
    """Kill a papermill subprocess and its kernel (same process group)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def run_point(notebook: str | Path, point: Mapping[str, Any], point_dir: str | Path, profile: str,
              timeout_s: float | None = None, threads: int | None = None) -> dict[str, Any]:
    """Execute ``notebook`` for one point in a fresh kernel; returns (and writes) its status.

    Papermill runs as a subprocess in its own process group so that a timeout kills the kernel
    too. ``threads`` sets ``OMP_NUM_THREADS`` for the kernel (workers share the machine's cores).
    """
    notebook = Path(notebook).resolve()
    point_dir = Path(point_dir).resolve()
    point_dir.mkdir(parents=True, exist_ok=True)
    for stale in (STATUS_FILE, METRICS_FILE):
        (point_dir / stale).unlink(missing_ok=True)
    parameters = {**point, "profile": profile, "output_dir": str(point_dir)}
    _write_json_atomic(point_dir / PARAMETERS_FILE, parameters)
    # papermill -f reads YAML; JSON is YAML, and keeps floats/None/bools exact.
    parameters_file = point_dir / "papermill_parameters.json"
    parameters_file.write_text(json.dumps(parameters))
    command = [sys.executable, "-m", "papermill", str(notebook), str(point_dir / NOTEBOOK_FILE),
               "-f", str(parameters_file), "--cwd", str(notebook.parent), "--kernel", "python3",
               "--no-progress-bar", "--request-save-on-cell-execute"]
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("MPLBACKEND", "Agg")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    log_path = point_dir / "papermill.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _RUNNING.add(process)
        try:
            returncode = process.wait(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill(process)
            returncode, timed_out = -9, True
        finally:
            _RUNNING.discard(process)
        if _INTERRUPTED and not timed_out:   # killed because the grid was interrupted: no status
            raise KeyboardInterrupt("grid interrupted")
    seconds = round(time.perf_counter() - start, 1)
    log_text = log_path.read_text(errors="replace")
    status: dict[str, Any] = {"seconds": seconds, "returncode": returncode, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if timed_out:
        status.update(status="timeout", error=f"point exceeded the per-point timeout of {timeout_s} s",
                      traceback_tail=log_text[-3000:])
    elif returncode != 0:
        status.update(status="failed", error=_error_summary(log_text), traceback_tail=log_text[-3000:])
    elif not (point_dir / METRICS_FILE).is_file():
        status.update(status="failed", error=f"the notebook finished but wrote no {METRICS_FILE} into output_dir",
                      traceback_tail=log_text[-3000:])
    else:
        status["status"] = "done"
    parameters_file.unlink(missing_ok=True)
    _write_json_atomic(point_dir / STATUS_FILE, status)
    return status


def run_grid(notebook: str | Path, grid: str | Path | GridSpec, out_dir: str | Path | None = None,
             profile: str = "cpu", workers: int = 1, timeout_s: float | None = None,
             retry_failed: bool = False, progress: bool = True, threads: int | None = None) -> dict[str, dict]:
    """Run every unfinished point of ``grid`` on ``notebook``; returns ``{point name: status}``.

    ``out_dir`` defaults to ``runs/<grid name>``. A folder that already holds a grid for another
    notebook, profile or fixed parameters is refused (pass another ``out_dir``); new points added
    to the axes simply run. ``threads`` per point defaults to ``cpu_count // workers``.
    """
    from tqdm.auto import tqdm

    from banana.provenance import run_info
    from banana.paths import REPO_ROOT, notebook_path

    notebook = notebook_path(notebook) if not Path(notebook).suffix else Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook {notebook} does not exist")
    spec = load_grid(grid, profile, defaults=notebook_defaults(notebook)) if not isinstance(grid, GridSpec) else grid
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir) if out_dir is not None else REPO_ROOT / "runs" / spec.name
    out_dir.mkdir(parents=True, exist_ok=True)
    identity = {"notebook": notebook.stem, "profile": profile, "parameters": spec.parameters}
    grid_path = out_dir / GRID_FILE
    if grid_path.is_file():
        stored = json.loads(grid_path.read_text())
        old = {k: stored.get(k) for k in identity}
        if old != json.loads(json.dumps(identity, default=str)):
            raise ValueError(f"{out_dir} holds a grid with {old}, not {identity}: choose another output folder")
    description = {**identity, "name": spec.name, "axes": spec.axes, "points": spec.points, "report": spec.report}
    record = run_info(description)
    record.update(description)            # top level too, for collect() and aggregate()
    _write_json_atomic(grid_path, record)

    statuses = {spec.point_name(p): point_status(out_dir / spec.point_name(p)) for p in spec.points}
    for p in spec.points:                      # a reused folder must hold the same point
        stored_params = out_dir / spec.point_name(p) / PARAMETERS_FILE
        if stored_params.is_file():
            old = {k: v for k, v in json.loads(stored_params.read_text()).items() if k not in RESERVED}
            if old != json.loads(json.dumps(p, default=str)):
                raise ValueError(f"{stored_params} holds {old}, not {p}: choose another output folder")
    if retry_failed:
        todo = [p for p in spec.points if statuses[spec.point_name(p)] in ("failed", "timeout")]
    else:
        todo = [p for p in spec.points if statuses[spec.point_name(p)] == "pending"]
    threads = threads if threads is not None else max(1, (os.cpu_count() or 1) // workers)
    results = {name: {"status": s, "skipped": True} for name, s in statuses.items()}
    bar = tqdm(total=len(spec.points), initial=len(spec.points) - len(todo), desc=f"grid {spec.name}",
               unit="point", disable=not progress)
    counts = {"done": 0, "failed": 0, "timeout": 0}
    pool = ThreadPoolExecutor(max_workers=workers)
    _INTERRUPTED.clear()
    try:
        futures = {pool.submit(run_point, notebook, p, out_dir / spec.point_name(p), profile, timeout_s, threads):
                   spec.point_name(p) for p in todo}
        for future in as_completed(futures):
            name = futures[future]
            status = future.result()
            results[name] = status
            counts[status["status"]] += 1
            bar.set_postfix(counts, refresh=False)
            bar.update(1)
            if status["status"] != "done":
                tqdm.write(f"[banana grid] {name}: {status['status']}: {status['error']}")
    except BaseException:
        # Interrupted (Ctrl-C, or SIGTERM via the CLI): stop queued points, kill running ones.
        # Their folders have no status, so the next run redoes them; finished points are kept.
        _INTERRUPTED.append(True)
        pool.shutdown(wait=False, cancel_futures=True)
        for process in list(_RUNNING):
            _kill(process)
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()
    return results


def grid_summary(out_dir: str | Path) -> dict[str, list[str]]:
    """``{status: [point names]}`` of a grid folder."""
    out_dir = Path(out_dir)
    stored = json.loads((out_dir / GRID_FILE).read_text())
    summary: dict[str, list[str]] = {}
    for p in stored["points"]:
        name = point_name(p, stored["axes"])
        summary.setdefault(point_status(out_dir / name), []).append(name)
    return summary


# --------------------------------------------------------------------------- aggregation
def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def collect(grid_dir: str | Path):
    """A DataFrame with one row per point of a grid folder: the grid's axes, ``status``,
    ``seconds``, then every number in the point's ``metrics.json`` (nested keys joined by ``/``)."""
    import pandas as pd

    grid_dir = Path(grid_dir)
    grid_path = grid_dir / GRID_FILE
    if not grid_path.is_file():
        raise FileNotFoundError(f"{grid_path} does not exist: {grid_dir} is not a grid folder (run `banana grid` first)")
    stored = json.loads(grid_path.read_text())
    rows = []
    for p in stored["points"]:
        name = point_name(p, stored["axes"])
        point_dir = grid_dir / name
        row: dict[str, Any] = {"point": name, **{a: p.get(a) for a in stored["axes"]}}
        row["status"] = point_status(point_dir)
        status_path = point_dir / STATUS_FILE
        row["seconds"] = json.loads(status_path.read_text()).get("seconds") if status_path.is_file() else math.nan
        if row["status"] == "done":
            row.update(_flatten(json.loads((point_dir / METRICS_FILE).read_text())))
        rows.append(row)
    return pd.DataFrame(rows), stored


def _figure(frame, stored: Mapping, figure: Mapping[str, Any], path: Path) -> Path | None:
    """One seaborn figure: a panel per metric, ``x`` against the metric, ``hue``/``style`` lines,
    mean and sd over the remaining axes (seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    for column, value in (figure.get("where") or {}).items():
        if column in frame.columns:
            frame = frame[frame[column].astype(str) == str(value)]
    # Axes a (profile's smaller) grid does not have are dropped from the figure, not an error.
    figure = {k: v for k, v in figure.items() if k not in ("hue", "style", "size") or v in frame.columns}
    metrics = [m for m in figure.get("metrics", []) if m in frame.columns]
    x = figure["x"]
    if not metrics or x not in frame.columns:
        return None
    id_columns = [c for c in (x, figure.get("hue"), figure.get("style"), figure.get("size")) if c]
    long = frame.melt(id_vars=[c for c in dict.fromkeys(id_columns)], value_vars=metrics, var_name="metric",
                      value_name="value").dropna(subset=["value"])
    if long.empty:
        return None
    for column in ("hue", "style"):            # categories, not a colour/marker scale
        name = figure.get(column)
        if name and name != x:
            long[name] = long[name].astype(str)
    kind = figure.get("kind", "line")
    kwargs = dict(x=x, y="value", col="metric", col_wrap=min(len(metrics), int(figure.get("col_wrap", 4))),
                  hue=figure.get("hue"), style=figure.get("style"), kind=kind, facet_kws={"sharey": False},
                  height=2.8, aspect=1.15)
    if kind == "line":
        kwargs.update(marker="o", errorbar="sd")
    else:
        kwargs.update(size=figure.get("size"))
    grid = sns.relplot(long, **kwargs)
    if figure.get("logx"):
        for ax in grid.axes.flat:
            if figure["logx"] == "symlog":
                linthresh = float(figure.get("linthresh", 0.01))
                ax.set_xscale("symlog", linthresh=linthresh)
                if long[x].min() >= 0:           # no empty negative half for non-negative data
                    ax.set_xlim(left=-linthresh / 2)
            else:
                ax.set_xscale("log")
    grid.set_titles("{col_name}")
    if figure.get("title"):
        grid.figure.suptitle(figure["title"], y=1.02)
    grid.savefig(path, dpi=110, bbox_inches="tight")
    matplotlib.pyplot.close(grid.figure)
    return path


def _display_path(path: str | Path) -> str:
    """``path`` relative to the repository when it is inside it (reports stay machine-independent)."""
    from banana.paths import REPO_ROOT

    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def aggregate(grid_dir: str | Path, reports_dir: str | Path | None = None, name: str | None = None) -> dict[str, Path]:
    """Write ``results.csv``, ``results_long.csv``, figures and ``summary.md`` for a grid folder
    into ``reports_dir`` (default ``reports/<grid name>``). Returns the written paths."""
    import pandas as pd

    from banana.paths import REPO_ROOT

    frame, stored = collect(grid_dir)
    name = name or stored.get("name") or Path(grid_dir).name
    out = Path(reports_dir) if reports_dir is not None else REPO_ROOT / "reports" / name
    out.mkdir(parents=True, exist_ok=True)
    axes = list(stored["axes"])
    written: dict[str, Path] = {}
    frame.to_csv(out / "results.csv", index=False)
    written["results"] = out / "results.csv"
    done = frame[frame["status"] == "done"]
    metric_columns = [c for c in frame.columns if c not in (*axes, "point", "status", "seconds")
                      and not c.endswith(("_ci_lo", "_ci_hi", "_floor", "_above_floor"))]
    long = done.melt(id_vars=["point", *axes], value_vars=metric_columns, var_name="metric", value_name="value")
    long.to_csv(out / "results_long.csv", index=False)
    written["results_long"] = out / "results_long.csv"

    figures = list(stored.get("report", {}).get("figures", []))
    if not figures and axes:
        x = next((a for a in axes if a != "seed"), axes[0])
        figures = [{"name": "metrics", "x": x, "metrics": metric_columns[:8]}]
    for figure in figures:
        path = _figure(done, stored, figure, out / f"{name}_{figure.get('name', 'metrics')}.png")
        if path is not None:
            written[f"figure:{figure.get('name', 'metrics')}"] = path

    # Mean ± sd over seeds (or over nothing, if there is no seed axis).
    group = [a for a in axes if a != "seed"]
    shown = [m for m in stored.get("report", {}).get("table", metric_columns) if m in done.columns]
    lines = [f"# Grid `{name}`", "",
             f"Notebook `{stored['notebook']}`, profile `{stored['profile']}`, git `{stored.get('git_sha')}`, "
             f"{len(frame)} points: " + ", ".join(f"{k} {v}" for k, v in frame["status"].value_counts().items()) + ".",
             "", f"Fixed parameters: `{json.dumps(stored['parameters'])}`.", ""]
    if not done.empty and shown:
        numeric = done[group + shown] if group else done[shown]
        extra = [c for m in shown for c in (f"{m}_ci_lo", f"{m}_ci_hi", f"{m}_above_floor") if c in done.columns]
        keys = group or ["point"]
        stats = done[keys + shown + extra].groupby(keys, dropna=False, sort=True).agg(["mean", "std", "count", "min"])
        table = pd.DataFrame(index=stats.index)
        for m in shown:
            mean, std, count = stats[(m, "mean")], stats[(m, "std")], stats[(m, "count")]
            cells = [f"{a:.4g} ± {s:.2g}" if c > 1 else f"{a:.4g}" for a, s, c in zip(mean, std.fillna(0), count)]
            if f"{m}_ci_lo" in done.columns:     # the bootstrap interval over images (mean of the seeds' bounds)
                cells = [f"{c} [{lo:.3g}, {hi:.3g}]" for c, lo, hi in
                         zip(cells, stats[(f"{m}_ci_lo", "mean")], stats[(f"{m}_ci_hi", "mean")])]
            if f"{m}_above_floor" in done.columns:   # at floor unless every seed is above the best floor
                cells = [c if above == 1 else f"{c} (at floor)" for c, above in
                         zip(cells, stats[(f"{m}_above_floor", "min")])]
            table[m] = cells
        table["n"] = stats[(shown[0], "count")].astype(int)
        table = table.reset_index()
        if not group:
            table = table.drop(columns="point")
        title = "Mean ± sd over seeds" if "seed" in axes else "Results"
        lines += [f"## {title}", ""]
        if extra:
            lines += ["Each cell: mean ± sd over seeds, then [the 95% bootstrap interval over the scored images], "
                      "\"(at floor)\" when a seed's point is not distinguishable (paired bootstrap) from the best floor "
                      "baseline on the same images.", ""]
        lines += [table.to_markdown(index=False), ""]
        floor_values = {m: done[f"{m}_floor"].dropna().unique() for m in shown if f"{m}_floor" in done.columns}
        if floor_values:
            lines += ["Best floor baseline per metric (per-pixel majority class / median train depth / mean train "
                      "normal, and the untuned base generator where the point scored it): "
                      + ", ".join(f"{m} {', '.join(f'{v:.4g}' for v in vals)}" for m, vals in floor_values.items())
                      + ".", ""]
    failed = frame[frame["status"].isin(["failed", "timeout"])]
    if not failed.empty:
        lines += ["## Failed points", ""]
        for point in failed["point"]:
            status = json.loads((Path(grid_dir) / point / STATUS_FILE).read_text())
            lines.append(f"- `{point}`: {status['status']}: {status.get('error')}")
        lines.append("")
    figure_paths = [p for k, p in written.items() if k.startswith("figure:")]
    if figure_paths:
        lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figure_paths] + [""]
    lines += [f"Reproduce: `banana grid notebooks/{stored['notebook']}.ipynb --grid grids/{name}.yaml "
              f"--profile {stored['profile']} --out {_display_path(grid_dir)}` (finished points are skipped), then "
              f"`banana aggregate {_display_path(grid_dir)}`.", ""]
    (out / "summary.md").write_text("\n".join(lines))
    written["summary"] = out / "summary.md"
    return written

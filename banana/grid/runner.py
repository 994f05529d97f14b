"""Running a grid: each point in a fresh papermill kernel (its own process group, so a timeout
or an interrupt takes the kernel down too), resumably."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Mapping

from banana.grid.spec import (GRID_FILE, METRICS_FILE, NOTEBOOK_FILE, PARAMETERS_FILE, RESERVED, STATUS_FILE, GridSpec,
                              _error_summary, _write_json_atomic, load_grid, notebook_defaults, point_name,
                              point_status)

#: Papermill processes currently running, so an interrupted grid can take them down with it.
_RUNNING: set = set()
_INTERRUPTED: list = []


#: The kernels' matplotlib backend: inline, so an executed notebook carries its figures
#: (``MPLBACKEND=Agg``, which the Makefile and tests export for the parent processes, would make
#: ipykernel skip its inline default and leave the executed copies without a single image).
KERNEL_MPLBACKEND = "module://matplotlib_inline.backend_inline"


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
    env["MPLBACKEND"] = KERNEL_MPLBACKEND          # figures inline in the executed copy (Agg would drop them)
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

"""Run every benchmark with one thread count and write ``reports/benchmarks.md``.

Each benchmark runs in its own process (``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set to
``--threads``, and ``--threads`` passed to the scripts that take it), one after the other. The
report holds the machine (CPU model, cores, torch, threads, date, git SHA, load average before
and after), the headline numbers and every benchmark's printed table. ``make bench`` calls this
(``make bench THREADS=2`` for two threads). Usage::

    python benchmarks/run_all.py [--threads 1] [--out reports/benchmarks.md] [--only NAME ...]
                                 [--note "machine shared with ..."] [--quick]

``--quick`` runs every benchmark at its tiniest size (seconds; checks that they run, the numbers
mean nothing). A full run takes about 5-6 minutes on a quiet 2-core CPU with one thread (10 on a
busy one): lightning ~2 min, sampling ~1.5 min, training ~1 min, codecs and renderer under 1 min.
GPU throughput and MFU are not measured here: see ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from banana.provenance import cpu_model  # noqa: E402  (one definition, shared with run records)


@dataclass
class Benchmark:
    name: str
    script: str
    args: list[str]
    quick_args: list[str]
    takes_threads: bool = True
    writes_json: bool = True
    title: str = ""


def benchmarks(cuda: bool) -> list[Benchmark]:
    presets = ["smoke", "cpu"] + (["gpu"] if cuda else [])
    return [
        Benchmark("codecs", "bench_codecs.py", ["--batch", "16", "--size", "256", "--repeats", "7"],
                  ["--batch", "1", "--size", "16", "--repeats", "1"],
                  title="Task-as-image codecs (Mpix/s)"),
        Benchmark("renderer", "bench_renderer.py", [], ["--n", "2", "--repeats", "1", "--resolutions", "16",
                                                        "--spp", "1"],
                  takes_threads=False, title="World renderer (images/s)"),
        Benchmark("training", "bench_training.py", ["--presets", *presets, "--steps", "10"],
                  ["--presets", "smoke", "--steps", "1", "--batch-size", "2"], writes_json=False,
                  title="Training step per preset, full vs LoRA (images/s)"),
        Benchmark("lightning", "bench_lightning_overhead.py", ["--preset", "cpu"],
                  ["--preset", "smoke", "--steps", "2", "--warmup", "1", "--repeats", "1", "--batch-size", "2"],
                  title="Lightning vs a plain PyTorch loop (seconds/step)"),
        Benchmark("sampling", "bench_sampling.py", [],
                  ["--preset", "smoke", "--steps", "1", "2", "--batch-size", "2", "--max-repeats", "1",
                   "--min-seconds", "0", "--schedulers", "ddim", "dpm++"],
                  title="Sampling (seconds per image) vs inference steps"),
    ]


# ----------------------------------------------------------------------------- machine


def git_sha() -> str:
    """HEAD, ``-dirty`` if tracked files differ (read-only: no index refresh is written)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def torch_info() -> tuple[str, str]:
    """(torch version, GPU name or ""); a CPU wheel is recognised without importing torch."""
    from importlib import metadata

    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "not installed", ""
    if version.endswith("+cpu"):
        return version, ""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__); "
                          "print(torch.cuda.get_device_name() if torch.cuda.is_available() else '')"],
                         capture_output=True, text=True, timeout=120)
    lines = (out.stdout.strip().splitlines() + ["", ""])[:2]
    return lines[0] or "unknown", lines[1]


def load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# ----------------------------------------------------------------------------- running
@dataclass
class Result:
    bench: Benchmark
    command: str
    seconds: float
    returncode: int
    stdout: str
    stderr: str
    data: dict = field(default_factory=dict)


def run(bench: Benchmark, threads: int, quick: bool, workdir: Path, timeout: float) -> Result:
    args = list(bench.quick_args if quick else bench.args)
    if bench.takes_threads:
        args += ["--threads", str(threads)]
    json_path = workdir / f"{bench.name}.json"
    shown = " ".join(["python", f"benchmarks/{bench.script}", *args])
    if bench.writes_json:
        args += ["--json", str(json_path)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MPLBACKEND": "Agg", "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(HERE / bench.script), *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code = -1
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = f"timed out after {timeout:.0f} s"
    result = Result(bench, shown, time.perf_counter() - start, code, out, err)
    if code == 0 and bench.writes_json and json_path.is_file():
        result.data = json.loads(json_path.read_text())
    elif code == 0 and bench.name == "training":
        result.data = parse_training(out)
    return result


def parse_training(stdout: str) -> dict:
    """``bench_training.py``'s table -> {preset: {full, lora, ratio}} (it writes no JSON)."""
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"^\s*(\w+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x", line)
        if m:
            rows[m.group(1)] = {"resolution": int(m.group(2)), "full": float(m.group(3)),
                                "lora": float(m.group(4)), "ratio": float(m.group(5))}
    return rows


# ----------------------------------------------------------------------------- report
def _fmt(value, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def headlines(results: dict[str, Result]) -> list[tuple[str, str, str]]:
    """(measure, value, source) rows of the headline table."""
    rows: list[tuple[str, str, str]] = []
    data = {name: r.data for name, r in results.items()}

    lt = data.get("lightning", {}).get("variants", {})
    if lt:
        preset = data["lightning"].get("preset")
        for v, label in (("banana", "banana's Trainer"), ("bare", "bare Trainer")):
            if v in lt:
                rows.append((f"Lightning/plain loop, s/step ({label}, `{preset}` preset; goal <= 1.05x)",
                             f"{_fmt(lt[v].get('ratio_to_plain'), '.3f', 'x')} wall, "
                             f"{_fmt(lt[v].get('cpu_ratio_to_plain'), '.3f', 'x')} CPU time "
                             f"({_fmt(lt[v].get('overhead_ms_per_step'), '+.0f', ' ms/step')})",
                             "bench_lightning_overhead"))
        if "plain" in lt:
            rows.append((f"plain loop s/step (`{preset}`, batch {data['lightning'].get('batch_size')})",
                         _fmt(lt["plain"]["seconds_per_step"], ".3f", " s"), "bench_lightning_overhead"))
        if "banana" in lt:
            rows.append(("checkpoint write (banana Trainer, excluded above)",
                         _fmt(lt["banana"]["seconds_per_checkpoint_write"], ".3f", " s"), "bench_lightning_overhead"))

    tr = data.get("training", {})
    for preset, row in tr.items():
        rows.append((f"training img/s, `{preset}` preset full / LoRA (LoRA/full)",
                     f"{row['full']:.1f} / {row['lora']:.1f} ({row['ratio']:.2f}x)", "bench_training"))

    codecs = data.get("codecs", {}).get("codecs", {})
    picks = [("segmentation, 8 classes", "segmentation (8 classes)"),
             ("depth metric+cube (default)", "depth (cube walk)"),
             ("normals", "normals")]
    parts = [f"{label} {codecs[key]['encode_decode']:.1f}" for key, label in picks if key in codecs]
    if parts:
        rows.append((f"codec encode+decode Mpix/s (batch {data['codecs']['batch']} x {data['codecs']['size']}^2)",
                     ", ".join(parts), "bench_codecs"))

    for row in data.get("renderer", {}).get("rows", []):
        if row["spp"] == 1:
            rows.append((f"renderer end-to-end img/s, {row['resolution']}x{row['resolution']}, 1 spp",
                         f"{row['end_to_end']:.1f}", "bench_renderer"))

    sp = data.get("sampling", {})
    if sp:
        steps_key = "10" if any("10" in r["seconds_per_image"] for r in sp["rows"]) else None
        for mode in ("off", "on"):
            sel = [r for r in sp["rows"] if r["guidance"] == mode]
            if not sel:
                continue
            key = steps_key or next(iter(sel[0]["seconds_per_image"]))
            text_g, image_g = sp["guidance"]["on"] if "on" in sp["guidance"] else (None, None)
            guide = "no guidance" if mode == "off" else f"guidance {text_g:g}/{image_g:g}"
            rows.append((f"sampling s/img at {key} steps, {guide} ({', '.join(r['scheduler'] for r in sel)})",
                         " / ".join(f"{r['seconds_per_image'][key]:.3f}" for r in sel), "bench_sampling"))
            rows.append((f"sampling cost per step, s/img, {guide}",
                         " / ".join(f"{r['per_step']:.4f}" for r in sel), "bench_sampling"))
    return rows


def write_report(path: Path, results: dict[str, Result], machine: dict, args, total: float) -> None:
    lines = ["# banana benchmarks", ""]
    shown = [a for i, a in enumerate(args.argv) if a != "--note" and (i == 0 or args.argv[i - 1] != "--note")]
    lines += [f"Written by `{shlex.join(['python', 'benchmarks/run_all.py', *shown])}` (what `make bench` runs) "
              f"in {total / 60:.1f} min. Every number below is from that one run.", ""]
    if args.quick:
        lines += ["> **Quick mode**: every benchmark ran at its tiniest size; these numbers only show that the "
                  "scripts run.", ""]
    if args.note:
        lines += [f"> **Note:** {args.note}", ""]
    lines += ["## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine.items()]
    lines += ["", "## Headline numbers", "", "| measure | value | from |", "|---|---|---|"]
    lines += [f"| {m} | {v} | `{s}` |" for m, v, s in headlines(results)]
    lines += ["", "Timing noise: each script interleaves the variants it compares and reports medians; on a "
              "shared machine compare ratios measured within one run, not absolute numbers across runs.", "",
              "## GPU", "",
              "Nothing here runs on a GPU. GPU training throughput and MFU come from `benchmarks/gpu_check.sh` "
              "when a GPU is available.", ""]
    for name, r in results.items():
        status = "" if r.returncode == 0 else f" — **FAILED (exit {r.returncode})**"
        lines += [f"## {r.bench.title or name}{status}", "", f"`{r.command}` ({r.seconds:.0f} s)", "", "```text",
                  r.stdout.rstrip() or "(no output)", "```", ""]
        if r.returncode != 0:
            lines += ["stderr (last lines):", "", "```text", "\n".join(r.stderr.rstrip().splitlines()[-20:]), "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="threads for every benchmark (default 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmarks.md")
    parser.add_argument("--only", nargs="+", default=None,
                        help="run only these (codecs renderer training lightning sampling)")
    parser.add_argument("--quick", action="store_true", help="tiniest sizes: checks the scripts run")
    parser.add_argument("--note", default="", help="a line for the report (e.g. that the machine was shared)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per benchmark")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    torch_version, gpu = torch_info()
    selected = [b for b in benchmarks(bool(gpu)) if args.only is None or b.name in args.only]
    if args.only and len(selected) != len(args.only):
        parser.error(f"unknown benchmark in {args.only}")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    machine = {
        "CPU": cpu_model(),
        "cores": f"{os.cpu_count()} logical ({usable} usable by this process)",
        "GPU": gpu or "none",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch_version,
        "threads": f"{args.threads} (torch.set_num_threads, OMP_NUM_THREADS, MKL_NUM_THREADS)",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_sha(),
        "load average (1/5/15 min) before": load(),
    }
    start = time.perf_counter()
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="banana-bench-") as tmp:
        for bench in selected:
            print(f"[run_all] {bench.name}: {bench.script} ...", flush=True)
            r = run(bench, args.threads, args.quick, Path(tmp), args.timeout)
            results[bench.name] = r
            print(r.stdout, end="" if r.stdout.endswith("\n") else "\n", flush=True)
            print(f"[run_all] {bench.name}: {'ok' if r.returncode == 0 else f'FAILED ({r.returncode})'} "
                  f"in {r.seconds:.0f} s", flush=True)
            if r.returncode != 0:
                print(r.stderr[-3000:], file=sys.stderr)
    total = time.perf_counter() - start
    machine["load average (1/5/15 min) after"] = load()
    write_report(args.out, results, machine, args, total)
    print(f"[run_all] wrote {args.out} ({total:.0f} s)")
    for m, v, _ in headlines(results):
        print(f"  {m}: {v}")
    return 0 if all(r.returncode == 0 for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Throughput of the synthetic-world ray caster (images per second, single process).

Usage::

    python benchmarks/bench_renderer.py [--n 40] [--repeats 3] [--resolutions 32 64] [--spp 1 4] [--json PATH]

For each (resolution, spp) it renders ``--n`` scenes (train split, seed 0, indices 0..n-1) and
reports the median over ``--repeats`` repeats of two rates: ``render`` = ``render_scene`` on
pre-sampled scenes (the ray caster alone) and ``end-to-end`` = ``render_sample`` (scene sampling,
including its small visibility render, plus rendering), which is what ``build_world`` pays per image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from banana.provenance import cpu_model  # noqa: E402
from banana.world import render_sample, render_scene, sample_scene  # noqa: E402


def _rate(fn, n: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40, help="scenes per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (the median is reported)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--spp", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--json", type=Path, default=None, help="also write the results (img/s) here")
    args = parser.parse_args(argv)

    print("# banana world renderer benchmark")
    print(f"# machine: {platform.node()} | {cpu_model()} | {os.cpu_count()} logical CPUs | {platform.platform()}")
    print(f"# python {platform.python_version()} | numpy {np.__version__} | single process, float64 internally")
    print(f"# {args.n} scenes per repeat, median of {args.repeats} repeats")
    scenes = [sample_scene(0, "train", i) for i in range(args.n)]
    render_scene(scenes[0], 16, 1)  # warm-up
    print(f"{'resolution':>10} {'spp':>4} {'render img/s':>13} {'end-to-end img/s':>17}")
    rows = []
    for res in args.resolutions:
        for spp in args.spp:
            render = _rate(lambda: [render_scene(s, res, spp) for s in scenes], args.n, args.repeats)
            e2e = _rate(lambda: [render_sample(0, "train", i, res, spp) for i in range(args.n)], args.n, args.repeats)
            print(f"{res:>10} {spp:>4} {render:>13.1f} {e2e:>17.1f}", flush=True)
            rows.append({"resolution": res, "spp": spp, "render": render, "end_to_end": e2e})
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "repeats": args.repeats, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Sampling cost: seconds per image vs number of inference steps, per scheduler, with and without guidance.

Runs :meth:`banana.pipeline.BananaPipeline.predict` (the vision path: task prompt -> sampling ->
decoding -> ensembling of one member) on ``--batch-size`` rendered test scenes and reads
:attr:`BananaPipeline.last_timing` (wall seconds per input image). ``--task generation`` times
``generate`` (text -> image) instead. For every scheduler (``ddim``, ``dpm++``, ``euler``) and step
count it reports seconds per image

* without guidance (``text_guidance = image_guidance = 1``: one UNet pass per step), and
* with dual classifier-free guidance (``--text-guidance``/``--image-guidance``, default 3 / 1.5:
  three UNet branches per step, batched into one call; text -> image has two).

and fits ``s/img = fixed + per_step * steps`` by least squares: ``per_step`` is the cost of one
denoising step, ``fixed`` the prompt encoding, decoding and set-up paid once per call.
Model: the shipped base generator (``data/generators/base-cpu``) or a freshly initialised preset
(``--preset``; same architecture, same speed). Calls are interleaved over schedulers and each
cell is repeated until it has run ``--min-seconds`` (at most ``--max-repeats`` times, median
reported) after one warm-up call per scheduler. Usage::

    python benchmarks/bench_sampling.py [--steps 1 2 4 10 25 50] [--batch-size 4] [--threads 1]
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SCHEDULER_NAMES = ("ddim", "dpm++", "euler")


def load_generator(preset: str | None, path: str | None):
    """-> (generator, description). Default: the shipped base of the cpu profile, else the cpu preset."""
    from banana.models import BananaGenerator
    from banana.training.publish import shipped_generator_dir

    if preset is None:
        folder = Path(path) if path else shipped_generator_dir("cpu")
        if (folder / "generator_config.json").is_file():
            root = Path(__file__).resolve().parents[1]
            shown = folder.resolve().relative_to(root) if folder.resolve().is_relative_to(root) else folder
            return BananaGenerator.from_pretrained(folder).eval(), str(shown)
        if path:
            raise FileNotFoundError(f"{folder} holds no saved generator")
        preset = "cpu"
    return BananaGenerator.from_preset(preset, seed=0).eval(), f"preset {preset} (fresh weights)"


def fit_line(steps: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least-squares ``seconds = fixed + per_step * steps`` -> (fixed, per_step)."""
    if len(set(steps)) < 2:
        return float("nan"), seconds[0] / steps[0]
    per_step, fixed = np.polyfit(np.asarray(steps, float), np.asarray(seconds, float), 1)
    return float(fixed), float(per_step)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 10, 25, 50])
    parser.add_argument("--schedulers", nargs="+", choices=SCHEDULER_NAMES, default=list(SCHEDULER_NAMES))
    parser.add_argument("--batch-size", type=int, default=4, help="images per pipeline call")
    parser.add_argument("--task", default="depth", help="segmentation | depth | normals | generation")
    parser.add_argument("--guidance", choices=("both", "off", "on"), default="both",
                        help="without guidance, with it, or both")
    parser.add_argument("--text-guidance", type=float, default=3.0)
    parser.add_argument("--image-guidance", type=float, default=1.5)
    parser.add_argument("--preset", default=None, help="time a fresh preset instead of the shipped base")
    parser.add_argument("--generator", default=None,
                        help="a saved generator folder (default: data/generators/base-cpu)")
    parser.add_argument("--min-seconds", type=float, default=0.5, help="repeat a cell until it ran this long")
    parser.add_argument("--max-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from banana.pipeline import BananaPipeline
    from banana.world import render_sample

    generator, source = load_generator(args.preset, args.generator)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    generator.to(device)
    pipe = BananaPipeline(generator)
    res = pipe.resolution
    images = np.stack([render_sample(0, "test", i, res)["image"] for i in range(args.batch_size)])
    prompts = [render_sample(0, "test", i, res)["description"] for i in range(args.batch_size)]
    modes = {"off": (1.0, 1.0), "on": (args.text_guidance, args.image_guidance)}
    modes = {m: g for m, g in modes.items() if args.guidance in (m, "both")}

    def call(scheduler: str, steps: int, mode: str) -> tuple[float, int]:
        text_g, image_g = modes[mode]
        kwargs = dict(scheduler=scheduler, num_inference_steps=steps, text_guidance=text_g,
                      generator=torch.Generator(device).manual_seed(0))
        if args.task == "generation":
            pipe.generate(prompts, **kwargs)
        else:
            pipe.predict(images, task=args.task, image_guidance=image_g, **kwargs)
        return pipe.last_timing, len(pipe.last_stats["branches"])

    name = torch.cuda.get_device_name() if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"# sampling cost, seconds per image: task {args.task}, batch {args.batch_size} x {res}x{res}, "
          f"generator {source}")
    print(f"# machine: {name}, device {device}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"# guidance on = text {args.text_guidance} / image {args.image_guidance}; median of up to "
          f"{args.max_repeats} interleaved calls per cell (>= {args.min_seconds} s), after 1 warm-up per scheduler")
    for s in args.schedulers:
        for m in modes:
            call(s, 1, m)                      # warm-up (first-call costs)

    times = {(s, m, n): [] for s in args.schedulers for m in modes for n in args.steps}
    branches = {}
    for n in args.steps:
        for m in modes:
            spent = {s: 0.0 for s in args.schedulers}
            for _ in range(args.max_repeats):
                for s in args.schedulers:     # interleaved
                    t0 = time.perf_counter()
                    seconds, branches[m] = call(s, n, m)
                    spent[s] += time.perf_counter() - t0
                    times[(s, m, n)].append(seconds)
                if min(spent.values()) >= args.min_seconds:
                    break

    header = f"{'scheduler':<10}{'guidance':<10}{'branches':>9}" + "".join(f"{f'{n} steps':>10}" for n in args.steps)
    header += f"{'per step':>10}{'fixed':>9}"
    print(header)
    results = {"task": args.task, "batch_size": args.batch_size, "resolution": res, "generator": source,
               "threads": torch.get_num_threads(), "device": str(device),
               "guidance": {m: list(g) for m, g in modes.items()}, "rows": []}
    for s in args.schedulers:
        for m in modes:
            med = [statistics.median(times[(s, m, n)]) for n in args.steps]
            fixed, per_step = fit_line(args.steps, med)
            results["rows"].append({"scheduler": s, "guidance": m, "branches": branches[m],
                                    "seconds_per_image": dict(zip(map(str, args.steps), med)),
                                    "per_step": per_step, "fixed": fixed})
            print(f"{s:<10}{m:<10}{branches[m]:>9}" + "".join(f"{v:>10.4f}" for v in med)
                  + f"{per_step:>10.5f}{fixed:>9.4f}", flush=True)
    print("# seconds per image; 'per step' and 'fixed' from a least-squares line through the row")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()

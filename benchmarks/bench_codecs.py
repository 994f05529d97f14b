"""Throughput of the task-as-image codecs (encode, decode, and both) in Mpix/s.

Usage:
    python benchmarks/bench_codecs.py [--batch 16] [--size 256] [--repeats 7] [--device cpu] [--threads N]

Each codec runs on a batch of ``batch x size x size`` pixels (RGB side:
``batch x 3 x size x size``). Timing: one warm-up call, then the median of
``--repeats`` timed calls (``time.perf_counter``; CUDA is synchronised).
Mpix/s counts image pixels (H x W per image), not channels.

Columns:
    encode        labels / depth / normals -> float RGB
    dec(8-bit)    decode of the 8-bit-quantised encoding, as read from a PNG
                  (the decoders then work once per distinct colour)
    dec(float)    decode of the float encoding (every pixel computed)
    enc+dec       decode(encode(x)) on floats, the full float round trip
    x base        enc+dec relative to BASELINE (the codecs before the fast paths), when the
                  batch, size and thread count match how BASELINE was measured

Targets (issue 11): >= 20 Mpix/s enc+dec on one CPU thread for segmentation (7 and 19
classes), the default depth codec (metric warp, cube walk) and normals, with outputs
bit-identical to the baseline code.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

# Allow running from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from banana.codecs import (  # noqa: E402
    DepthCodec,
    NormalsCodec,
    SegmentationCodec,
    quantize,
    random_palette,
    well_separated_palette,
)


#: Mpix/s of the codecs *before* the fast paths (git 92faee2, the parent of issue 11's codec
#: work), measured with this script: ``--batch 16 --size 256 --repeats 7 --threads 1``, CPU,
#: on the 2-core AMD EPYC development VM (torch 2.13.0+cpu).
BASELINE_SETUP = {"batch": 16, "size": 256, "threads": 1, "device": "cpu"}
#: Mean of two runs, interleaved with runs of the new code (the shared VM's speed drifts by about
#: +-25% from minute to minute; compare ratios measured in one sitting, not across days). The old
#: script had no 7- and 19-class rows; their old speed is that of the 8-class row.
BASELINE: dict[str, dict[str, float]] = {
    "segmentation, 8 classes": {"encode": 40.9, "decode_8bit": 12.7, "decode_float": 9.0, "encode_decode": 8.4},
    "segmentation, 32 classes": {"encode": 48.5, "decode_8bit": 16.0, "decode_float": 16.2, "encode_decode": 12.4},
    "depth metric+cube (default)": {"encode": 13.3, "decode_8bit": 6.0, "decode_float": 1.65, "encode_decode": 1.25},
    "depth affine+cube": {"encode": 3.4, "decode_8bit": 8.1, "decode_float": 1.55, "encode_decode": 1.1},
    "depth metric+gray": {"encode": 16.1, "decode_8bit": 6.2, "decode_float": 2.05, "encode_decode": 1.8},
    "depth metric+viridis (255 seg)": {"encode": 14.9, "decode_8bit": 7.6, "decode_float": 0.25, "encode_decode": 0.25},
    "normals": {"encode": 6.5, "decode_8bit": 6.1, "decode_float": 5.6, "encode_decode": 2.05},
}

COLUMNS = ("encode", "decode_8bit", "decode_float", "encode_decode")


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn`` after one warm-up call (first calls pay one-off costs)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results (Mpix/s) here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    b, s = args.batch, args.size
    mpix = b * s * s / 1e6

    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 8, (b, s, s), generator=gen).to(device)
    depth = (torch.rand(b, s, s, generator=gen) * 80.0).to(device)
    normals = torch.randn(b, 3, s, s, generator=gen)
    normals = (normals / normals.norm(dim=1, keepdim=True)).to(device)

    def seg(k: int) -> SegmentationCodec:
        return SegmentationCodec({f"c{i}": c for i, c in enumerate(well_separated_palette(k, exclude=[(0, 0, 0)]))})

    def seg_labels(k: int) -> torch.Tensor:  # classes 0..k-1 and some ignore (255) pixels
        lab = torch.randint(0, k + 1, (b, s, s), generator=gen)
        return lab.masked_fill_(lab == k, 255).to(device)

    rng = np.random.default_rng(0)
    seg19 = SegmentationCodec(random_palette([f"c{i}" for i in range(19)], rng))  # the unseen-palette setting
    cases = [
        ("segmentation, 7 classes", seg(7), seg_labels(7)),
        ("segmentation, 8 classes", seg(8), labels),
        ("segmentation, 19 classes (random palette)", seg19, seg_labels(19)),
        ("segmentation, 32 classes", seg(32), labels),
        ("depth metric+cube (default)", DepthCodec(), depth),
        ("depth affine+cube", DepthCodec(warp="affine"), depth),
        ("depth metric+gray", DepthCodec(colormap="gray"), depth),
        ("depth metric+viridis (255 seg)", DepthCodec(colormap="viridis"), depth),
        ("normals", NormalsCodec(), normals),
    ]

    print(f"# banana.codecs throughput, batch {b} x 3 x {s} x {s} ({mpix:.2f} Mpix per call)")
    print(
        f"# machine: {platform.processor() or platform.machine()} ({platform.platform()}), "
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"torch threads {torch.get_num_threads()}, device {device}"
    )
    print(f"# timing: 1 warm-up + median of {args.repeats} (time.perf_counter)")
    setup = {"batch": b, "size": s, "threads": torch.get_num_threads(), "device": device.type}
    compare = setup == BASELINE_SETUP and bool(BASELINE)
    print(f"# x base: enc+dec / baseline ({'measured the same way' if compare else 'n/a: other setup than BASELINE'})")
    print(f"{'codec (Mpix/s)':42s} {'encode':>10s} {'dec(8-bit)':>10s} {'dec(float)':>10s} {'enc+dec':>10s} {'x base':>8s}")
    results = {"batch": b, "size": s, "threads": torch.get_num_threads(), "device": str(device), "codecs": {}}
    for name, codec, x in cases:
        rgb = codec.encode(x)
        rgb8 = quantize(rgb)
        seconds = [
            median_seconds(fn, args.repeats, device)
            for fn in (
                lambda: codec.encode(x),
                lambda: codec.decode(rgb8),
                lambda: codec.decode(rgb),
                lambda: codec.decode(codec.encode(x)),
            )
        ]
        row = dict(zip(COLUMNS, (mpix / sec for sec in seconds)))
        base = BASELINE.get(name)
        if compare and base:
            row.update({f"x_baseline_{key}": row[key] / base[key] for key in COLUMNS if key in base})
        ratio = f"{row['x_baseline_encode_decode']:7.1f}x" if "x_baseline_encode_decode" in row else f"{'-':>8s}"
        print(f"{name:42s} " + " ".join(f"{mpix / sec:10.1f}" for sec in seconds) + f" {ratio}", flush=True)
        results["codecs"][name] = row
    if compare:
        print(f"\n{'ratio to BASELINE':42s} {'encode':>10s} {'dec(8-bit)':>10s} {'dec(float)':>10s} {'enc+dec':>10s}")
        for name, row in results["codecs"].items():
            if "x_baseline_encode_decode" in row:
                print(f"{name:42s} " + " ".join(f"{row['x_baseline_' + key]:9.1f}x" for key in COLUMNS))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()

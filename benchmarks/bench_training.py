"""Training throughput of each generator preset, full vs LoRA, on this machine.

Times the training step itself (prompt encoding, UNet forward/backward, AdamW) on random
images of the preset's resolution with real world descriptions as prompts, so the number is
comparable across presets and independent of the data pipeline. Prints images/s per preset
and tuning mode, and the LoRA/full ratio. Usage::

    python benchmarks/bench_training.py [--presets smoke cpu gpu] [--steps 20] [--threads N]
    python benchmarks/bench_training.py --presets gpu --device cuda --precision bf16 --batch-size 64 \\
        --mfu --peak-tflops 989 --json out.json

``--device cuda --precision bf16`` runs the step under ``torch.autocast(bfloat16)`` with fp32
weights and optimiser state (what Lightning's ``precision="bf16-mixed"`` does). ``--mfu`` counts
the FLOPs of one forward+backward with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls,
convolutions and attention as executed: a LoRA step has no weight gradients for the frozen base;
the optimiser is not counted) and reports model-FLOP utilisation = counted FLOPs per step /
median step time / ``--peak-tflops`` (default 989: H100 SXM dense bf16; pass your card's peak for
the precision you run, e.g. ~67 for H100 SXM fp32 without TF32).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time

import torch

H100_SXM_BF16_DENSE_TFLOPS = 989.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(preset: str, tuning: str, batch_size: int, steps: int, warmup: int = 3, device: str = "cpu",
            precision: str = "fp32", count_flops: bool = False) -> dict:
    """Median images/s of ``steps`` timed training steps (after ``warmup``), and the step's FLOPs
    (``count_flops``), as a dict."""
    from banana.adapters import add_lora, trainable_parameters
    from banana.models import BananaGenerator, build_noise_scheduler
    from banana.training import diffusion_loss
    from banana.world import sample_scene

    device = torch.device(device)
    generator = BananaGenerator.from_preset(preset, seed=0).train()
    if tuning == "lora":
        add_lora(generator, rank=8)
    generator.to(device)
    params = list(trainable_parameters(generator).values()) if tuning == "lora" else list(generator.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scheduler = build_noise_scheduler(generator.config)
    r = generator.config.resolution
    prompts = [sample_scene(0, "train", i).describe() for i in range(batch_size)]
    data_rng = torch.Generator().manual_seed(0)
    batch = {"target": (torch.rand(batch_size, 3, r, r, generator=data_rng) * 2 - 1).to(device),
             "condition": (torch.rand(batch_size, 3, r, r, generator=data_rng) * 2 - 1).to(device),
             "prompt": prompts}
    rng = torch.Generator(device=device).manual_seed(0)

    def autocast():
        if precision == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward_backward():
        with autocast():
            loss = diffusion_loss(generator, scheduler, batch, rng).mean()
        loss.backward()

    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        forward_backward()
        optimizer.step()
        _sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    step_seconds = statistics.median(times)
    result = {"preset": preset, "resolution": r, "tuning": tuning, "batch_size": batch_size,
              "precision": precision, "device": str(device), "steps_timed": steps,
              "median_step_seconds": step_seconds, "images_per_second": batch_size / step_seconds,
              "total_parameters": sum(p.numel() for p in generator.parameters()),
              "trainable_parameters": sum(p.numel() for p in params)}
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        optimizer.zero_grad(set_to_none=True)
        with FlopCounterMode(display=False) as counter:
            forward_backward()
        flops = counter.get_total_flops()
        result.update(flops_per_step=flops, flops_per_image=flops / batch_size,
                      achieved_tflops=flops / step_seconds / 1e12)
    return result


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["smoke", "cpu", "gpu"])
    parser.add_argument("--tunings", nargs="+", choices=("full", "lora"), default=["full", "lora"])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (kernel selection, caches)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="fp32, or bf16 autocast with fp32 weights (Lightning's bf16-mixed)")
    parser.add_argument("--mfu", action="store_true",
                        help="count one step's FLOPs (FlopCounterMode) and report model-FLOP utilisation")
    parser.add_argument("--peak-tflops", dest="peak_tflops", type=float, default=H100_SXM_BF16_DENSE_TFLOPS,
                        help="the card's peak TFLOP/s for --precision, the MFU denominator "
                             "(default 989: H100 SXM, dense bf16)")
    parser.add_argument("--json", default=None, help="also write every measurement to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False (CPU-only torch build or no GPU)")
    name = device_name(args.device)
    print(f"# banana training throughput, batch {args.batch_size}, {args.precision}, median of {args.steps} steps")
    print(f"# machine: {name} ({args.device}), {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    header = f"{'preset':<8}{'resolution':>11}" + "".join(f"{t + ' img/s':>12}" for t in args.tunings)
    if args.tunings == ["full", "lora"]:
        header += f"{'lora/full':>11}"
    if args.mfu:
        header += "".join(f"{t + ' MFU':>11}" for t in args.tunings)
    print(header)
    from banana.models import GENERATOR_PRESETS

    records = []
    for preset in args.presets:
        on_cpu = not args.device.startswith("cuda")
        steps = args.steps if preset != "gpu" or not on_cpu else max(3, args.steps // 5)
        results = {tuning: measure(preset, tuning, args.batch_size, steps, warmup=args.warmup, device=args.device,
                                   precision=args.precision, count_flops=args.mfu) for tuning in args.tunings}
        line = f"{preset:<8}{GENERATOR_PRESETS[preset].resolution:>11}"
        line += "".join(f"{results[t]['images_per_second']:>12.1f}" for t in args.tunings)
        if args.tunings == ["full", "lora"]:
            line += f"{results['lora']['images_per_second'] / results['full']['images_per_second']:>10.2f}x"
        for tuning, result in results.items():
            result.update(device_name=name, torch=torch.__version__, threads=torch.get_num_threads())
            if args.mfu:
                result.update(peak_tflops=args.peak_tflops, mfu=result["achieved_tflops"] / args.peak_tflops)
                line += f"{100 * result['mfu']:>10.2f}%"
            records.append(result)
        print(line, flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device_name": name, "device": args.device, "precision": args.precision,
                       "batch_size": args.batch_size, "peak_tflops": args.peak_tflops if args.mfu else None,
                       "torch": torch.__version__, "measurements": records}, handle, indent=1)
            handle.write("\n")


if __name__ == "__main__":
    main()

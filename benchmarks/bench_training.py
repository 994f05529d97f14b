"""Training throughput of each generator preset, full vs LoRA, on this machine.

Times the training step itself (prompt encoding, UNet forward/backward, AdamW) on random
images of the preset's resolution with real world descriptions as prompts, so the number is
comparable across presets and independent of the data pipeline. Prints images/s per preset
and tuning mode, and the LoRA/full ratio. Usage::

    python benchmarks/bench_training.py [--presets smoke cpu gpu] [--steps 20] [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch


def measure(preset: str, tuning: str, batch_size: int, steps: int, warmup: int = 3) -> float:
    from banana.adapters import add_lora, trainable_parameters
    from banana.models import BananaGenerator, build_noise_scheduler
    from banana.training import diffusion_loss
    from banana.world import sample_scene

    generator = BananaGenerator.from_preset(preset, seed=0).train()
    if tuning == "lora":
        add_lora(generator, rank=8)
    params = list(trainable_parameters(generator).values()) if tuning == "lora" else list(generator.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scheduler = build_noise_scheduler(generator.config)
    r = generator.config.resolution
    prompts = [sample_scene(0, "train", i).describe() for i in range(batch_size)]
    rng = torch.Generator().manual_seed(0)
    batch = {"target": torch.rand(batch_size, 3, r, r, generator=rng) * 2 - 1,
             "condition": torch.rand(batch_size, 3, r, r, generator=rng) * 2 - 1, "prompt": prompts}
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        loss = diffusion_loss(generator, scheduler, batch, rng).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["smoke", "cpu", "gpu"])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement (median reported)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
    print(f"# banana training throughput, batch {args.batch_size}, median of {args.steps} steps")
    print(f"# machine: {device}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"{'preset':<8}{'resolution':>11}{'full img/s':>12}{'lora img/s':>12}{'lora/full':>11}")
    from banana.models import GENERATOR_PRESETS

    for preset in args.presets:
        steps = args.steps if preset != "gpu" or torch.cuda.is_available() else max(3, args.steps // 5)
        full = measure(preset, "full", args.batch_size, steps)
        lora = measure(preset, "lora", args.batch_size, steps)
        print(f"{preset:<8}{GENERATOR_PRESETS[preset].resolution:>11}{full:>12.1f}{lora:>12.1f}{lora / full:>10.2f}x",
              flush=True)


if __name__ == "__main__":
    main()

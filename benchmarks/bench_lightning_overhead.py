"""What Lightning costs per training step: banana's Trainer vs a bare Trainer vs a plain PyTorch loop.

All three variants train banana's real :class:`~banana.training.module.BananaModule` (a fresh
``BananaGenerator.from_preset(preset, seed=0)``, same :class:`TrainConfig`) on the same list of
batches (random target/condition images in [-1, 1] at the preset's resolution, real world
descriptions as prompts, kinds mixed half generation / half vision), with the same per-step noise
RNG, so they do the same arithmetic (the script checks that their losses agree):

* ``plain``   a hand-written loop: ``diffusion_loss`` -> ``zero_grad`` -> ``backward`` ->
              ``clip_grad_norm_(grad_clip)`` -> AdamW ``step`` -> EMA update -> LR-scheduler step,
              iterating the same ``DataLoader`` Lightning gets.
* ``banana``  ``banana.training.run.make_trainer`` exactly as ``banana.training.train`` builds it
              (deterministic algorithms on, CSV logger, ``ModelCheckpoint`` every
              ``--checkpoint-every`` steps, per-kind loss logging of ``training_step``).
* ``bare``    ``L.Trainer`` with no logger, no checkpointing, no progress bar or summary (only the
              gradient clipping and precision banana uses).

Timing: seconds per step = wall time from one step's start to the next step's start (so the
loop's own overhead, data fetching, logging and LR scheduling are all inside), after
``--warmup`` steps; checkpoint writes (``trainer.save_checkpoint``) are timed on their own,
subtracted from the step they happen in and reported separately. Each variant runs
``--repeats`` times, interleaved (plain, banana, bare, plain, banana, bare, ...) so a noisy
neighbour hits every variant alike; the median over all timed steps of all repeats is reported,
in wall time and in CPU time of the process (``time.process_time``: on a shared machine the time
other processes take is not counted, so the CPU-time ratio is the steadier one there).
Goal: banana/plain <= 1.05x. Usage::

    python benchmarks/bench_lightning_overhead.py [--preset cpu] [--steps 10] [--threads 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

GOAL = 1.05
VARIANTS = ("plain", "banana", "bare")
VISION_KINDS = ("segmentation", "depth", "normals")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batches(resolution: int, batch_size: int, count: int, seed: int = 0) -> list[dict]:
    """``count`` distinct batches in the format ``BananaModule.training_step`` reads."""
    from banana.world import sample_scene

    rng = torch.Generator().manual_seed(seed)
    prompts = [sample_scene(seed, "train", i).describe() for i in range(batch_size)]
    batches = []
    for b in range(count):
        kinds = ["generation" if (b * batch_size + i) % 2 == 0 else VISION_KINDS[(b + i) % 3]
                 for i in range(batch_size)]
        batches.append({
            "target": torch.rand(batch_size, 3, resolution, resolution, generator=rng) * 2 - 1,
            "condition": torch.rand(batch_size, 3, resolution, resolution, generator=rng) * 2 - 1,
            "prompt": prompts[b % batch_size:] + prompts[:b % batch_size],
            "kind": kinds,
        })
    return batches


def _loader(batches: list[dict]) -> torch.utils.data.DataLoader:
    # batch_size=None: each element already is a batch (no collation, no shuffling).
    return torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)


def _module(preset: str, config, device: torch.device):
    from banana.models import BananaGenerator
    from banana.training.module import BananaModule

    generator = BananaGenerator.from_preset(preset, seed=0).train()
    return BananaModule(generator, config).to(device)


class StepTimer:
    """Step-start timestamps and losses (a Lightning callback, also used by the plain loop)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.starts: list[tuple[float, float]] = []        # (wall, process CPU) at each step start
        self.losses: list[torch.Tensor] = []
        self.checkpoints: list[tuple[float, float, float]] = []   # (wall start, wall s, CPU s) per write
        self.fit_called: float | None = None

    # Lightning callback interface (duck-typed into a Callback subclass below)
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.mark()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(loss.detach())

    def mark(self) -> None:
        _sync(self.device)
        self.starts.append((time.perf_counter(), time.process_time()))

    def step_seconds(self, warmup: int, clock: int = 0) -> list[float]:
        """Start-to-start durations of the steps after ``warmup``, checkpoint writes removed;
        ``clock`` 0: wall time, 1: CPU time of this process (all its threads)."""
        out = []
        for i in range(warmup, len(self.starts) - 1):
            t0, t1 = self.starts[i][0], self.starts[i + 1][0]
            ckpt = sum(c[1 + clock] for c in self.checkpoints if t0 <= c[0] < t1)
            out.append(self.starts[i + 1][clock] - self.starts[i][clock] - ckpt)
        return out


def _timer_callback(device):
    from lightning.pytorch.callbacks import Callback

    class _Timer(StepTimer, Callback):
        pass

    return _Timer(device)


def _time_checkpoints(trainer, timer: StepTimer) -> None:
    """Wrap ``trainer.save_checkpoint`` (what ModelCheckpoint calls) to time each write."""
    original = trainer.save_checkpoint

    def timed(*args, **kwargs):
        _sync(timer.device)
        start, cpu = time.perf_counter(), time.process_time()
        result = original(*args, **kwargs)
        _sync(timer.device)
        timer.checkpoints.append((start, time.perf_counter() - start, time.process_time() - cpu))
        return result

    trainer.save_checkpoint = timed


def run_plain(preset: str, config, batches: list[dict], device: torch.device) -> tuple[StepTimer, float]:
    module = _module(preset, config, device)
    timer = StepTimer(device)
    t_setup = time.perf_counter()
    params = list(module.trainable.values())
    opt_cfg = module.configure_optimizers()
    optimizer, scheduler = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    from banana.training.module import diffusion_loss

    setup = None
    for step, batch in enumerate(_loader(batches)):
        timer.mark()
        if setup is None:
            setup = timer.starts[0][0] - t_setup
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        loss = diffusion_loss(module.generator, module.noise_scheduler, batch, module.step_rng(step)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        if module.ema is not None:
            module.ema.update()
        scheduler.step()
        timer.losses.append(loss.detach())
    timer.mark()
    return timer, setup


def run_lightning(preset: str, config, batches: list[dict], device: torch.device, kind: str,
                  workdir: Path) -> tuple[StepTimer, float]:
    import lightning as L

    from banana.training.rundir import keep_determinism_setting, make_trainer

    module = _module(preset, config, device)
    timer = _timer_callback(device)
    t_setup = time.perf_counter()
    with keep_determinism_setting():
        if kind == "banana":
            trainer = make_trainer(workdir, len(batches), config, [timer], progress=False)
        else:
            trainer = L.Trainer(max_steps=len(batches), accelerator="auto", devices=1, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, gradient_clip_val=config.grad_clip,
                                precision=config.precision, use_distributed_sampler=False,
                                callbacks=[timer], default_root_dir=workdir)
        _time_checkpoints(trainer, timer)
        trainer.fit(module, train_dataloaders=_loader(batches))
        timer.mark()  # end of the last step (fit teardown included, so that step is never timed)
    return timer, timer.starts[0][0] - t_setup


def _quiet():
    import lightning  # noqa: F401  (importing it sets its loggers' levels: override them afterwards)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists.*")
    warnings.filterwarnings("ignore", message=r".*treespec.*")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"lightning.*")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", help="generator preset (smoke | cpu | gpu)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of every run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per variant")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tuning", choices=("full", "lora"), default="full")
    parser.add_argument("--checkpoint-every", type=int, default=5,
                        help="ModelCheckpoint period of the banana variant (writes are timed separately)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    _quiet()

    from banana.models import GENERATOR_PRESETS
    from banana.training.module import TrainConfig

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = TrainConfig(stage="tune", tuning=args.tuning, batch_size=args.batch_size,
                         max_steps=args.warmup + args.steps + 1, checkpoint_every=args.checkpoint_every)
    resolution = GENERATOR_PRESETS[args.preset].resolution
    # One extra step at the end: its start closes the last timed step.
    batches = make_batches(resolution, args.batch_size, args.warmup + args.steps + 1)
    cpu = torch.cuda.get_device_name() if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"# Lightning overhead per training step: preset {args.preset} ({resolution}x{resolution}), "
          f"batch {args.batch_size}, {args.tuning} tuning, EMA {config.ema_decay}, grad clip {config.grad_clip}")
    print(f"# machine: {cpu}, device {device}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"# {args.warmup} warm-up + {args.steps} timed steps per run, {args.repeats} interleaved runs per variant; "
          f"s/step = median start-to-start time, checkpoint writes excluded (banana: every "
          f"{args.checkpoint_every} steps)")

    steps = {v: [] for v in args.variants}
    cpu_steps = {v: [] for v in args.variants}
    setups = {v: [] for v in args.variants}
    ckpts = {v: [] for v in args.variants}
    losses = {}
    with tempfile.TemporaryDirectory(prefix="bench-lightning-") as tmp:
        for r in range(args.repeats):
            for v in args.variants:
                with contextlib.redirect_stdout(io.StringIO()):   # Lightning's banner lines
                    if v == "plain":
                        timer, setup = run_plain(args.preset, config, batches, device)
                    else:
                        timer, setup = run_lightning(args.preset, config, batches, device, v, Path(tmp) / f"{v}-{r}")
                steps[v] += timer.step_seconds(args.warmup)
                cpu_steps[v] += timer.step_seconds(args.warmup, clock=1)
                setups[v].append(setup)
                ckpts[v] += [c[1] for c in timer.checkpoints]
                losses.setdefault(v, torch.stack(timer.losses[:len(batches)]).float().cpu())

    results = {"preset": args.preset, "batch_size": args.batch_size, "tuning": args.tuning,
               "threads": torch.get_num_threads(), "device": str(device), "variants": {}}
    base = statistics.median(steps["plain"]) if "plain" in steps else None
    cpu_base = statistics.median(cpu_steps["plain"]) if "plain" in steps else None
    print(f"{'variant':<8}{'s/step':>9}{'min':>9}{'max':>9}{'img/s':>8}{'vs plain':>10}{'+ms/step':>10}"
          f"{'CPU s/step':>11}{'vs plain':>10}{'setup s':>9}{'ckpt writes':>13}{'s/write':>9}")
    for v in args.variants:
        med, cpu = statistics.median(steps[v]), statistics.median(cpu_steps[v])
        ratio = med / base if base else None
        cpu_ratio = cpu / cpu_base if cpu_base else None
        nck = len(ckpts[v]) / args.repeats
        per_write = statistics.mean(ckpts[v]) if ckpts[v] else 0.0
        results["variants"][v] = {
            "seconds_per_step": med, "min": min(steps[v]), "max": max(steps[v]),
            "images_per_second": args.batch_size / med, "ratio_to_plain": ratio,
            "overhead_ms_per_step": (med - base) * 1e3 if base else None,
            "cpu_seconds_per_step": cpu, "cpu_ratio_to_plain": cpu_ratio,
            "setup_seconds": statistics.median(setups[v]),
            "checkpoint_writes_per_run": nck, "seconds_per_checkpoint_write": per_write}
        print(f"{v:<8}{med:>9.4f}{min(steps[v]):>9.4f}{max(steps[v]):>9.4f}{args.batch_size / med:>8.1f}"
              f"{(f'{ratio:.3f}x' if ratio else '-'):>10}{(f'{(med - base) * 1e3:+.1f}' if base else '-'):>10}"
              f"{cpu:>11.4f}{(f'{cpu_ratio:.3f}x' if cpu_ratio else '-'):>10}"
              f"{statistics.median(setups[v]):>9.2f}{nck:>13.0f}{per_write:>9.3f}")
    print("# s/step: wall clock; CPU s/step: CPU time of this process (all threads), which other processes "
          "on a shared machine disturb far less")
    if "plain" in losses:
        for v in losses:
            if v != "plain":
                diff = float((losses[v] - losses["plain"]).abs().max())
                results["variants"][v]["max_loss_difference_to_plain"] = diff
                print(f"# same work check: max |loss({v}) - loss(plain)| over {len(losses[v])} steps = {diff:.3g}")
    for v in ("banana", "bare"):
        ratio = results["variants"].get(v, {}).get("ratio_to_plain")
        if ratio and "plain" in steps:
            fastest = min(steps[v]) / min(steps["plain"])
            results["variants"][v]["ratio_of_fastest_steps"] = fastest
            cpu_ratio = results["variants"][v]["cpu_ratio_to_plain"]
            verdict = "meets" if ratio <= GOAL else "misses"
            print(f"{'Lightning' if v == 'banana' else 'bare Lightning'}/plain ({v} Trainer): {ratio:.3f}x wall "
                  f"(goal <= {GOAL:.2f}x: {verdict}); CPU time {cpu_ratio:.3f}x; fastest steps {fastest:.3f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()

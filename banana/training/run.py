"""Training runs: one directory per run, resumable, with everything needed to trust its numbers.

Why
---
A number in a report is only as good as the run that produced it. So :func:`train` writes
everything into one run directory and can be killed and restarted at any point::

    run_dir/
      config.json            the resolved TrainConfig ("train") and GeneratorConfig ("generator")
      run_info.json          seed, package versions, git SHA, machine (banana.provenance)
      checkpoints/last.ckpt  Lightning checkpoint (every ``checkpoint_every`` steps and at the end)
      logs/version_*/        Lightning CSV logs (one version per invocation; a resumed run adds one)
      model/                 full tuning / pretraining: BananaGenerator.save_pretrained (EMA weights)
      adapter/               LoRA tuning: banana.adapters.save_adapter (EMA weights)
      metrics.json           final loss, mean loss over the last 10% of steps, steps, images seen,
                             wall seconds and training throughput (images per second)
      loss_curve.png         the logged losses, smoothed

Resuming
--------
If ``run_dir/checkpoints/last.ckpt`` exists, :func:`train` continues that run (``ckpt_path``):
weights, optimiser and LR-scheduler state, EMA buffers and the step counter come from the
checkpoint. ``max_steps`` may be raised to extend a finished run; every other field of the
:class:`TrainConfig` must match the stored ``config.json``.

What is exact: batch ``b`` of the sampler and the noise/timesteps of step ``b`` are pure
functions of ``(seed, b)`` (see :mod:`banana.training.data` and :mod:`banana.training.module`), and
the sampler restarts at the checkpoint's ``global_step``. On CPU, a run killed after a checkpoint
and resumed therefore ends with **bitwise the same weights** as an uninterrupted run (tested).
Not exact: steps done after the last checkpoint and before the kill are recomputed (the CSV
keeps the newest value per step), wall-clock numbers, and on a GPU any kernel that is not
deterministic (``deterministic="warn"`` there: such kernels warn instead of failing).

Many devices
------------
``TrainConfig.devices`` / ``num_nodes`` / ``strategy`` / ``accelerator`` / ``precision`` go to the
Lightning Trainer. ``batch_size`` is the **global** batch: at step ``s`` each of the
``W = devices * num_nodes`` ranks takes its own contiguous ``batch_size // W`` slice of global
batch ``s`` (divisibility is checked) and draws the noise/timesteps of exactly those rows, so a run
sees the same data and noise on any number of devices and differs from a one-device run only by
floating-point reduction order (tested: 2 CPU processes, gloo, "ddp"). DDP keeps the parameters
identical on every rank, so the EMA updates (local, after each optimiser step) are identical too
(tested). Only global rank 0 writes ``config.json``, ``run_info.json``, ``model/``/``adapter/``,
``metrics.json`` and the plot; Lightning writes checkpoints and logs from rank 0. A checkpoint
resumes on another device count (not to or from FSDP). ``strategy="ddp"`` is the one to use:
banana's generators (41.6 M parameters for the ``gpu`` preset) fit on one card with room to spare.
``"fsdp"`` is accepted (``ema_decay`` must be 0) but **untested**, LoRA + FSDP included: Lightning's
FSDP needs CUDA and none was available when it was written.
Multi-process strategies re-run the calling script once per extra device (Lightning's launcher):
use the ``banana`` command or a script, not a notebook.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

import torch

import lightning as L
from lightning.pytorch.callbacks import Callback

from banana.tasks import TASKS
from banana.training.data import BananaExamples, MixedBatchSampler, make_dataloader
from banana.training.module import BananaModule, TrainConfig
from banana.training.rundir import (CHECKPOINT_DIR, LAST_CHECKPOINT, ThroughputMeter, check_resume, fit_resumable,
                                    is_global_zero, keep_determinism_setting, make_trainer, mean_last,
                                    plot_loss_curve, read_loss_log, throughput_record, write_run_files)

__all__ = ["train", "load_run", "read_config", "MixedDataModule", "ThroughputMeter", "read_loss_log",
           "plot_loss_curve", "is_global_zero", "CHECKPOINT_DIR", "LAST_CHECKPOINT"]

#: TrainConfig fields that may change when a run is resumed.
RESUMABLE_CHANGES = frozenset({"max_steps", "log_every", "checkpoint_every", "num_workers",
                               "accelerator", "devices", "num_nodes", "strategy"})


class _LiveStartSampler(MixedBatchSampler):
    """A :class:`MixedBatchSampler` whose every pass starts at the trainer's current ``global_step``.

    Lightning may start a new "epoch" (a new ``iter()``) whenever its own batch count says the
    last one ended, e.g. after resuming from the end-of-run checkpoint of a shorter run. Reading
    the live step at ``iter()`` time keeps step ``s`` on global batch ``s`` whatever Lightning's
    epoch bookkeeping says (a run here is one long stream; its epochs carry no meaning).
    """

    def __init__(self, trainer, **kwargs):
        super().__init__(**kwargs)
        self.trainer = trainer

    def __iter__(self):
        if self.trainer is not None:
            self.start_batch = int(self.trainer.global_step)
        return super().__iter__()


class MixedDataModule(L.LightningDataModule):
    """Builds the run's DataLoader when Lightning asks for it, i.e. *after* a checkpoint has been
    restored, so the sampler can start at the restored ``global_step``."""

    def __init__(self, examples: BananaExamples, config: TrainConfig):
        super().__init__()
        self.examples = examples
        self.config = config

    def train_dataloader(self):
        trainer = self.trainer
        start = int(trainer.global_step) if trainer is not None else 0
        rank = trainer.global_rank if trainer is not None else 0
        world_size = trainer.world_size if trainer is not None else 1
        n = len(self.examples)
        sampler = _LiveStartSampler(trainer, n_generation=n, n_vision=self.config.vision_pool_size(n), batch_size=self.config.batch_size,
                                    mixing_ratio=self.config.mixing_ratio, num_batches=self.config.max_steps,
                                    seed=self.config.seed, rank=rank, world_size=world_size, start_batch=start)
        return make_dataloader(self.examples, sampler, num_workers=self.config.num_workers,
                               pin_memory=torch.cuda.is_available())


def read_config(run_dir: str | Path) -> tuple[TrainConfig, Any]:
    """``(TrainConfig, GeneratorConfig | LatentGeneratorConfig)`` stored in a run directory's ``config.json``."""
    from banana.models.registry import generator_config_from_dict

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a banana training run")
    data = json.loads(path.read_text())
    return TrainConfig.from_dict(data["train"]), generator_config_from_dict(data["generator"])


def _resolve_generator(config: TrainConfig, generator, world_dir=None):
    """-> (generator, base_model path or None).

    A directory is loaded by :func:`banana.models.registry.load_generator`: a saved generator (pixel or
    latent), or a Stable-Diffusion-family checkpoint, which becomes a
    :class:`~banana.models.latent.LatentGenerator` at the world's resolution."""
    from banana.models import BananaGenerator, LatentGenerator, is_sd_checkpoint, load_generator

    if isinstance(generator, BananaGenerator):
        return generator, config.base_model
    if isinstance(generator, LatentGenerator):
        return generator, config.base_model or generator.source
    path = generator if generator is not None else config.base_model   # a path to a saved base
    if path is not None:
        resolution = None
        if is_sd_checkpoint(path) and world_dir is not None:
            from banana.world.dataset import read_world_config

            resolution = int(read_world_config(world_dir)["config"]["resolution"])
        return load_generator(path, resolution=resolution), str(Path(path).resolve())
    if config.stage == "pretrain":
        # the vocabulary takes the dataset's class names and descriptions, so every prompt fits (the world's: unchanged)
        from banana.real.common import dataset_spec
        from banana.world import load_world

        texts, class_names = [], None
        if world_dir is not None:
            split = load_world(world_dir)[config.split]
            class_names, texts = dataset_spec(split).class_names, sorted(set(split["description"]))
        return BananaGenerator.from_preset(config.profile, seed=config.seed, class_names=class_names, texts=texts), None
    raise ValueError("stage='tune' needs a base generator: pass generator=<BananaGenerator or directory> "
                     "or set TrainConfig.base_model")


def train(config: TrainConfig, run_dir: str | Path, generator=None, world_dir: str | Path | None = None, *,
          progress: bool = True, callbacks: Sequence[Callback] = ()) -> Path:
    """Run (or resume) a training run in ``run_dir`` and return ``run_dir``.

    Args:
        config: the run's :class:`TrainConfig`.
        run_dir: the run directory (created; resumed if it holds ``checkpoints/last.ckpt``).
        generator: a :class:`~banana.models.BananaGenerator` (trained **in place**; it holds the
            exported EMA weights afterwards), a directory saved by ``save_pretrained`` (the base of
            a tuning run), or ``None``: ``config.base_model`` if set, else (pretraining only) a fresh
            generator from the ``config.profile`` preset seeded with ``config.seed``. A
            :class:`~banana.models.latent.LatentGenerator`, or a local Stable-Diffusion-family checkpoint
            directory (``model_index.json`` / ``vae/``: built at the world's resolution, conv_in
            widened with zeros), tunes in latent space (:mod:`banana.models.latent`).
        world_dir: the built world to train on (default ``config.world_dir``); its resolution must
            equal the generator's.
        progress: Lightning's progress bar and model summary.
        callbacks: extra Lightning callbacks.
    """
    from banana.adapters import codec_settings, save_adapter
    from banana.world import load_world

    wall_start = time.perf_counter()
    run_dir = Path(run_dir)
    world_dir = world_dir if world_dir is not None else config.world_dir
    if world_dir is None:
        raise ValueError("no world to train on: pass world_dir= or set TrainConfig.world_dir")
    generator, base_model = _resolve_generator(config, generator, world_dir)
    config = dataclasses.replace(config, world_dir=str(Path(world_dir).resolve()), base_model=base_model)

    checkpoint = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    resuming = checkpoint.is_file()
    if resuming:
        old_train, old_generator = read_config(run_dir)
        extra = []
        if old_train.strategy != config.strategy and "fsdp" in (old_train.strategy, config.strategy):
            extra.append(f"strategy: stored {old_train.strategy!r}, now {config.strategy!r} (FSDP checkpoints are "
                         "not interchangeable with single-device/DDP ones here)")
        if old_generator != generator.config:
            extra.append("the generator config differs")
        check_resume(run_dir, old_train.to_dict(), config.to_dict(), RESUMABLE_CHANGES, extra=extra)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"train": config.to_dict(), "generator": generator.config.to_dict()}
    records = _RunRecords(run_dir, record, {**record, "seed": config.seed, "resumed": resuming})

    split = load_world(world_dir)[config.split]
    resolution = int(split[0]["image"].shape[-1])
    if resolution != generator.config.resolution:
        raise ValueError(f"the world at {world_dir} is {resolution}px but the generator is "
                         f"{generator.config.resolution}px: build a world of the generator's resolution")
    L.seed_everything(config.seed, workers=True, verbose=False)
    examples = BananaExamples(split, seed=config.seed, random_palette_prob=config.random_palette_prob,
                              depth_codec=config.depth_codec,
                              drop_text_prob=config.drop_text_prob, drop_image_prob=config.drop_image_prob,
                              drop_both_prob=config.drop_both_prob, binary_prompt_prob=config.binary_prompt_prob,
                              absent_class_prob=config.absent_class_prob,
                              # the default mix: every dense task the split has labels for (a real data set may lack some)
                              tasks=None if config.tasks == TASKS else config.tasks)
    module = BananaModule(generator, config)
    datamodule = MixedDataModule(examples, config)
    meter = ThroughputMeter()
    # FSDP leaves every rank holding a shard of the weights; an unwrapped copy receives the full
    # ones from the final checkpoint (untested: Lightning's FSDP needs GPUs, none was available).
    unsharded = copy.deepcopy(module) if config.strategy.startswith("fsdp") else None
    with keep_determinism_setting():
        trainer = make_trainer(run_dir, config.max_steps, config, [records, meter, *callbacks], progress)
        steps_done, start_step = fit_resumable(trainer, module, datamodule, generator, checkpoint, resuming,
                                               config.max_steps, run_dir)
    if unsharded is not None and trainer.is_global_zero:
        unsharded.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"])
        module, generator = unsharded, unsharded.generator

    module.export_weights()
    generator.eval()
    if not trainer.is_global_zero:      # data parallel: rank 0 writes the run's files
        return run_dir
    records.write()                     # no-op if the Trainer's setup already wrote them
    if config.tuning == "lora":
        save_adapter(generator, run_dir / "adapter",
                     {"base_model": base_model, "codecs": codec_settings(config.random_palette_prob, config.depth_codec),
                      "train_config": config.to_dict()})
    else:
        generator.save_pretrained(run_dir / "model")

    metrics = _metrics(run_dir, config, steps_done, start_step, meter, time.perf_counter() - wall_start, module)
    metrics["world_size"] = int(trainer.world_size)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    plot_loss_curve(run_dir)
    return run_dir


class _RunRecords(Callback):
    """Writes ``config.json`` and ``run_info.json`` once, from global rank 0 only.

    Under a multi-process strategy every rank runs :func:`train`, and ranks are only known once the
    Trainer has set up its processes: so the files are written in ``setup`` (before the first step,
    which a killed run's resumption needs), or by :func:`train` itself when no fit happens.
    """

    def __init__(self, run_dir: Path, record: dict, info: dict):
        self.run_dir, self.record, self.info, self.written = run_dir, record, info, False

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.is_global_zero:
            self.write()

    def write(self) -> None:
        if not self.written:
            write_run_files(self.run_dir, self.record, self.info)
            self.written = True


# ---------------------------------------------------------------------------------- logs & metrics
def _metrics(run_dir: Path, config: TrainConfig, steps: int, start_step: int, meter: ThroughputMeter,
             wall_seconds: float, module: BananaModule) -> dict[str, Any]:
    log = read_loss_log(run_dir)
    loss = log.get("train/loss", [])
    images_this_run = meter.steps * config.batch_size
    throughput = throughput_record(run_dir, meter, images_this_run)
    return {
        "steps": int(steps),
        "resumed_from_step": int(start_step),
        "steps_this_run": int(meter.steps),
        "images_seen": int(steps * config.batch_size),
        "final_loss": loss[-1][1] if loss else None,
        "mean_loss_last_10pct": mean_last(loss, steps),
        "mean_loss_generation_last_10pct": mean_last(log.get("train/loss_generation", []), steps),
        "mean_loss_vision_last_10pct": mean_last(log.get("train/loss_vision", []), steps),
        "wall_seconds": round(wall_seconds, 3),
        **throughput,
        "batch_size": config.batch_size,
        "trainable_parameters": module.num_trainable(),
        "device": str(module.device),
        "loss_resolution_steps": config.log_every,
    }


# ---------------------------------------------------------------------------------- loading
def load_run(run_dir: str | Path, base_dir: str | Path | None = None):
    """The trained generator of a finished run, in eval mode: ``model/`` for full tuning and
    pretraining, else the base (``base_dir`` or the recorded ``base_model``) + ``adapter/``."""
    from banana.adapters import load_adapter, read_adapter_config
    from banana.models.registry import load_generator

    run_dir = Path(run_dir)
    if (run_dir / "model").is_dir():
        return load_generator(run_dir / "model")
    if (run_dir / "adapter").is_dir():
        record = read_adapter_config(run_dir / "adapter")
        base = base_dir or record["metadata"].get("base_model")
        if base is None:
            raise ValueError(f"{run_dir} holds a LoRA adapter whose base path was not recorded: pass base_dir=")
        # an SD checkpoint base is rebuilt with the adapter's generator config (resolution, conv_in, ...)
        return load_adapter(load_generator(base, generator_config=record["generator_config"]), run_dir / "adapter")
    raise FileNotFoundError(f"{run_dir} holds no trained model (no model/ or adapter/): has the run finished?")

"""Instruction tuning of the generator: the training stage of banana.

Why a separate stage: Vision Banana's claim is that *no new modules or losses* are needed, only
data. So this package is small and split by concern:

* :mod:`banana.training.data`: generation and vision examples from the world, and the
  :class:`MixedBatchSampler` that mixes them at ``mixing_ratio`` (deterministic, resumable).
* :mod:`banana.training.module`: :class:`TrainConfig` and :class:`BananaModule`, the single
  denoising loss (MSE on the generator's :func:`prediction_target`), EMA, the optimiser
  (:func:`build_optimizer`), per-kind logging.
* :mod:`banana.training.run`: :func:`train` (run directories, checkpoints, resume, export,
  metrics, loss curve) and :func:`load_run`.
* :mod:`banana.training.rundir`: the run-directory convention :func:`train` and the specialists
  (:mod:`banana.baselines`) share: config/run-info files, the resume check, the resumable fit,
  the Trainer, loss logs, metrics helpers and the loss curve.
* LoRA adapters live in :mod:`banana.adapters`.

Typical use::

    from banana.training import TrainConfig, train, load_run
    base = train(TrainConfig(stage="pretrain", mixing_ratio=0.0, max_steps=2000), "runs/pretrain",
                 world_dir="data/world/cpu")
    tuned = train(TrainConfig(stage="tune", tuning="lora", mixing_ratio=0.2, max_steps=2000),
                  "runs/tune-lora", generator=base / "model", world_dir="data/world/cpu")
    generator = load_run(tuned)
"""

from .data import GENERATION, KINDS, VISION, BananaExamples, ExampleKey, MixedBatchSampler, collate_examples
from .module import EMA, BananaModule, TrainConfig, build_optimizer, diffusion_loss, prediction_target
from .run import MixedDataModule, load_run, plot_loss_curve, read_config, read_loss_log, train

__all__ = ["GENERATION", "VISION", "KINDS", "ExampleKey", "BananaExamples", "MixedBatchSampler", "collate_examples",
           "TrainConfig", "BananaModule", "EMA", "diffusion_loss", "build_optimizer", "prediction_target",
           "train", "load_run", "read_config", "read_loss_log", "plot_loss_curve", "MixedDataModule"]

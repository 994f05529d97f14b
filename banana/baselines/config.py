"""What defines a specialist run: :class:`SpecialistConfig`, the config that mirrors a generalist
run (:func:`matched_config`) and the one stored in a run directory (:func:`read_specialist_config`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from banana.config import SerializableConfig
from banana.models.config import GENERATOR_PRESETS, GeneratorConfig
from banana.tasks import ALL_TASKS, QUERY_TASKS
from banana.training.run import read_config

#: TrainConfig-like fields of a specialist run that may change on resume.
RESUMABLE_CHANGES = frozenset({"max_steps", "log_every", "checkpoint_every", "num_workers"})


@dataclass(frozen=True)
class SpecialistConfig(SerializableConfig):
    """Everything that defines a specialist run (stored in the run's ``config.json``).

    ``backbone`` is a :data:`~banana.models.GENERATOR_PRESETS` name or a ``GeneratorConfig.to_dict()``
    (e.g. the ``"generator"`` record of a generalist run, which :func:`matched_config` copies), so
    the specialist's UNet is the generalist's, block for block.

    ``match_run``: a generalist run directory whose vision examples of ``task`` to replay
    (:func:`replay_vision_stream`). Then ``max_steps=None`` means one pass over that stream (the
    generalist's image count exactly); a larger value cycles through it again. Without
    ``match_run``, every batch draws ``batch_size`` images uniformly from the split (seeded), and
    ``max_steps`` is required.

    ``init_from``: ``None`` (random init) or a saved :class:`~banana.models.BananaGenerator`
    directory (e.g. ``data/generators/base-cpu``, or a pretraining run's ``model/``) whose UNet
    weights initialise the specialist (:meth:`Specialist.copy_generator_weights`); its
    GeneratorConfig must equal ``backbone``. Not a resumable change.
    """

    task: str = "segmentation"
    backbone: Any = "cpu"                    # preset name | GeneratorConfig dict
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999                 # 0 disables the EMA (the raw weights are exported)
    batch_size: int = 16
    max_steps: int | None = None
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    world_dir: str | None = None
    split: str = "train"
    match_run: str | None = None
    precision: str = "32-true"
    num_workers: int = 0
    init_from: str | None = None             # saved BananaGenerator dir whose UNet initialises the specialist

    def __post_init__(self):
        if self.task not in ALL_TASKS:
            raise ValueError(f"task must be one of {ALL_TASKS}, got {self.task!r}")
        if self.task in QUERY_TASKS and self.match_run is None:
            raise ValueError(f"a {self.task} specialist replays a generalist's queries: it needs match_run")
        if isinstance(self.init_from, Path):                  # a Path would not survive config.json
            object.__setattr__(self, "init_from", str(self.init_from))
        if self.init_from is not None and not isinstance(self.init_from, str):
            raise TypeError(f"init_from must be a directory path or None, got {type(self.init_from).__name__}")
        if isinstance(self.backbone, str):
            if self.backbone not in GENERATOR_PRESETS:
                raise ValueError(f"unknown backbone preset {self.backbone!r}; choose from {sorted(GENERATOR_PRESETS)} "
                                 "or pass a GeneratorConfig dict")
        elif isinstance(self.backbone, Mapping):
            GeneratorConfig.from_dict(self.backbone)          # fails loudly on a bad dict
        else:
            raise TypeError(f"backbone must be a preset name or a GeneratorConfig dict, got {type(self.backbone).__name__}")
        for name in ("batch_size", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (or None with match_run), got {self.max_steps}")
        if self.max_steps is None and self.match_run is None:
            raise ValueError("max_steps=None (one pass over the replayed stream) needs match_run; "
                             "without match_run set max_steps")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("need learning_rate > 0, weight_decay >= 0, warmup_steps >= 0")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    def backbone_config(self) -> GeneratorConfig:
        """The :class:`GeneratorConfig` whose UNet the specialist copies."""
        if isinstance(self.backbone, str):
            return GENERATOR_PRESETS[self.backbone]
        return GeneratorConfig.from_dict(self.backbone)


def matched_config(generalist_run: str | Path, task: str, **overrides) -> SpecialistConfig:
    """The specialist config that mirrors a generalist run: its UNet config, world, seed, batch
    size, optimiser settings, EMA and precision, and ``match_run`` = that run (so it replays the
    run's vision examples of ``task``). ``overrides`` replace any field, e.g. ``init_from=base_dir``
    for the pretrained-init specialist (the generalist's base: same GeneratorConfig by construction)."""
    train_config, generator_config = read_config(generalist_run)
    fields = dict(task=task, backbone=generator_config.to_dict(), learning_rate=train_config.learning_rate,
                  weight_decay=train_config.weight_decay, warmup_steps=train_config.warmup_steps,
                  grad_clip=train_config.grad_clip, ema_decay=train_config.ema_decay,
                  batch_size=train_config.batch_size, seed=train_config.seed, world_dir=train_config.world_dir,
                  split=train_config.split, match_run=str(Path(generalist_run).resolve()),
                  precision=train_config.precision, log_every=train_config.log_every,
                  checkpoint_every=train_config.checkpoint_every)
    return SpecialistConfig(**{**fields, **overrides})


def read_specialist_config(run_dir: str | Path) -> SpecialistConfig:
    """The (resolved) :class:`SpecialistConfig` of a specialist run directory."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a specialist run")
    data = json.loads(path.read_text())
    if "specialist" not in data:
        raise ValueError(f"{run_dir} is a training run, not a specialist run (no 'specialist' record)")
    return SpecialistConfig.from_dict(data["specialist"])

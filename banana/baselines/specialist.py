"""Training a specialist: the LightningModule (:class:`SpecialistModule`), the run
(:func:`train_specialist`, in the run-directory convention of :mod:`banana.training.rundir`), the
trained model (:func:`load_specialist`) and its pipeline (:class:`SpecialistPipeline`)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import torch

import lightning as L
from lightning.pytorch.callbacks import Callback

from banana.baselines.config import RESUMABLE_CHANGES, SpecialistConfig, read_specialist_config
from banana.baselines.data import (QueryExamples, SpecialistBatchSampler, SpecialistDataModule, SpecialistExamples,
                                   replay_vision_stream)
from banana.models.specialist import Specialist
from banana.tasks import QUERY_TASKS
from banana.training.module import EMA, EMATrainedModule
from banana.training.run import read_config
from banana.training.rundir import (CHECKPOINT_DIR, LAST_CHECKPOINT, ThroughputMeter, check_resume, fit_resumable,
                                    keep_determinism_setting, make_trainer, mean_last, plot_loss_curve, read_loss_log,
                                    throughput_record, write_run_files)

REPLAY_FILE = "replay.json"


class SpecialistPipeline:
    """Specialists behind the generalist pipeline's ``predict(images, task, palette)`` interface, so
    :func:`banana.evaluation.generalist.evaluate_generalist` scores them with the very same code.

    Sampling arguments (``generator``, steps, guidance, ensembles) do not apply to a one-pass model
    and are ignored. A segmentation ``palette`` must name ``CLASS_NAMES`` in id order (the specialist
    predicts class ids; colours mean nothing to it).
    """

    def __init__(self, specialists: Specialist | Sequence[Specialist] | Mapping[str, Specialist]):
        if isinstance(specialists, Specialist):
            specialists = [specialists]
        if not isinstance(specialists, Mapping):
            specialists = {model.task: model for model in specialists}
        for task, model in specialists.items():
            if model.task != task:
                raise ValueError(f"the specialist filed under {task!r} solves {model.task!r}")
        self.specialists = dict(specialists)
        self.last_timing = 0.0

    def predict(self, images, task: str, palette: Mapping | None = None, query=None, **ignored) -> dict:
        from banana.tasks import QUERY_TASKS, query_prompts
        from banana.world import CLASS_NAMES

        if task not in self.specialists:
            raise ValueError(f"no specialist for {task!r}; have {sorted(self.specialists)}")
        if task == "segmentation" and palette is not None and list(palette) != list(CLASS_NAMES):
            raise ValueError(f"a segmentation specialist predicts CLASS_NAMES ids {CLASS_NAMES}; "
                             f"the palette names {list(palette)}")
        start = time.perf_counter()
        prompts = None
        if task in QUERY_TASKS:
            prompts = query_prompts(task, query, int(images.shape[0]) if images.ndim == 4 else 1)
        prediction = self.specialists[task].predict(images, prompts)
        self.last_timing = (time.perf_counter() - start) / prediction.shape[0]
        return {"prediction": prediction}


class SpecialistModule(EMATrainedModule):
    """Trains a :class:`Specialist` with its task loss; logs ``train/loss`` and ``train/loss_<part>``.

    Optimiser, LR warm-up and EMA are the generalist's (:func:`~banana.training.module.build_optimizer`, :class:`~banana.training.module.EMA`), so the comparison
    varies the recipe only. There is no randomness in a step (no noise, no augmentation), so a
    resumed run repeats an uninterrupted one exactly.
    """

    def __init__(self, model: Specialist, config: SpecialistConfig):
        super().__init__()
        if model.task != config.task:
            raise ValueError(f"the model solves {model.task!r}, the config trains {config.task!r}")
        self.model = model
        self.config = config
        model.requires_grad_(True)
        self.trainable = dict(model.named_parameters())
        self.ema = EMA(self.trainable, config.ema_decay) if config.ema_decay > 0 else None

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable.values())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        per_example, parts = self.model.loss(self.model(batch["image"], batch.get("prompt")), batch["target"])
        loss = per_example.mean()
        if self._trainer is not None:
            size = batch["image"].shape[0]
            self.log("train/loss", loss, prog_bar=True, batch_size=size)
            for name, values in parts.items():
                if len(parts) > 1:
                    self.log(f"train/loss_{name}", values.detach().mean(), batch_size=size)
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["banana_specialist_config"] = self.config.to_dict()


def _check_same_world(world_dir: Path, generalist_world: str | None) -> None:
    """The replayed indices only mean the same images in the same world."""
    from banana.world import read_world_config

    if generalist_world is None or Path(generalist_world).resolve() == world_dir.resolve():
        return
    if not Path(generalist_world).exists():
        warnings.warn(f"the generalist's world {generalist_world} is not here; assuming {world_dir} is the same "
                      "world (the replayed indices are only meaningful then)", stacklevel=3)
        return
    if read_world_config(generalist_world) != read_world_config(world_dir):
        raise ValueError(f"{world_dir} is not the world the generalist trained on ({generalist_world}): "
                         "its replayed image indices would name other images")


def train_specialist(config: SpecialistConfig, run_dir: str | Path, world_dir: str | Path | None = None, *,
                     progress: bool = True, callbacks: Sequence[Callback] = ()) -> Path:
    """Run (or resume) a specialist run in ``run_dir`` and return ``run_dir``.

    The run directory follows :func:`banana.training.train`'s conventions: ``config.json``
    (``{"specialist": resolved config, "backbone": GeneratorConfig}``), ``run_info.json``,
    ``checkpoints/last.ckpt`` (resumed when present; only ``max_steps``, ``log_every``,
    ``checkpoint_every`` and ``num_workers`` may change), ``logs/``, ``model/``
    (:meth:`Specialist.save_pretrained`, EMA weights), ``metrics.json`` and ``loss_curve.png``;
    plus ``replay.json`` (the replayed image indices) with ``match_run``. ``config.json`` and
    ``metrics.json`` carry ``"init"``: :attr:`Specialist.init_record` (with ``init_from``: which
    UNet tensors were copied from the pretrained generator, how many values, which stayed fresh).

    ``world_dir``: default ``config.world_dir``, else the matched generalist's world.
    """
    from banana.world import load_world

    wall_start = time.perf_counter()
    run_dir = Path(run_dir)
    generalist = read_config(config.match_run)[0] if config.match_run is not None else None
    world_dir = world_dir or config.world_dir or (generalist.world_dir if generalist else None)
    if world_dir is None:
        raise ValueError("no world to train on: pass world_dir= or set SpecialistConfig.world_dir")
    world_dir = Path(world_dir).resolve()
    split = load_world(world_dir)[config.split]
    backbone = config.backbone_config()
    resolution = int(split[0]["image"].shape[-1])
    if resolution != backbone.resolution:
        raise ValueError(f"the world at {world_dir} is {resolution}px but the backbone is {backbone.resolution}px")

    stream, examples = None, None
    if generalist is not None:
        _check_same_world(world_dir, generalist.world_dir)
        keys = replay_vision_stream(generalist, config.task, split=split)
        if not keys:
            raise ValueError(f"the generalist run {config.match_run} saw no {config.task} example: nothing to match")
        stream = replayed = [key.index for key in keys]
        if config.task in QUERY_TASKS:       # the generalist's (image, query) pairs, by stream position
            examples = QueryExamples(split, config.task, keys, generalist.seed, generalist.tasks)
            stream = list(range(len(examples)))
    max_steps = config.max_steps if config.max_steps is not None else math.ceil(len(stream) / config.batch_size)
    config = dataclasses.replace(config, world_dir=str(world_dir), max_steps=max_steps,
                                 match_run=None if config.match_run is None else str(Path(config.match_run).resolve()),
                                 init_from=None if config.init_from is None else str(Path(config.init_from).resolve()))

    checkpoint = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    resuming = checkpoint.is_file()
    if resuming:
        read_specialist_config(run_dir)                  # a specialist run (clear error otherwise)
        # a field an older banana did not write (e.g. init_from) had its default value then
        defaults = {f.name: f.default for f in dataclasses.fields(SpecialistConfig)}
        old = {**json.loads(json.dumps(defaults)), **json.loads((run_dir / "config.json").read_text())["specialist"]}
        now = json.loads(json.dumps(config.to_dict()))   # compare as stored: JSON lists, not tuples
        check_resume(run_dir, old, now, RESUMABLE_CHANGES, what="specialist run",
                     shown={"backbone": ("<GeneratorConfig>", "<another GeneratorConfig>")})
    model = Specialist.from_config(config)               # before any file: a bad init_from fails here
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"specialist": config.to_dict(), "backbone": backbone.to_dict(), "init": model.init_record}
    if stream is not None:
        (run_dir / REPLAY_FILE).write_text(json.dumps(
            {"match_run": config.match_run, "task": config.task, "n_images": len(replayed), "indices": replayed}) + "\n")
    write_run_files(run_dir, record, {**record, "seed": config.seed, "resumed": resuming})

    L.seed_everything(config.seed, workers=True, verbose=False)   # from_config above left the global RNG alone
    module = SpecialistModule(model, config)
    examples = examples if examples is not None else SpecialistExamples(split, config.task)
    sampler_kwargs = dict(n=len(examples), batch_size=config.batch_size, num_batches=max_steps, seed=config.seed,
                          stream=stream)
    datamodule = SpecialistDataModule(examples, sampler_kwargs, config.num_workers)
    meter = ThroughputMeter()
    with keep_determinism_setting():
        trainer = make_trainer(run_dir, max_steps, config, [meter, *callbacks], progress)
        steps_done, start_step = fit_resumable(trainer, module, datamodule, model, checkpoint, resuming,
                                               config.max_steps, run_dir)

    module.export_weights()
    model.eval().save_pretrained(run_dir / "model")

    counter = SpecialistBatchSampler(**sampler_kwargs)
    images_this_run = counter.images_in(meter.start_step or 0, (meter.start_step or 0) + meter.steps)
    throughput = throughput_record(run_dir, meter, images_this_run)
    loss = read_loss_log(run_dir).get("train/loss", [])
    metrics = {
        "task": config.task,
        "steps": int(steps_done),
        "resumed_from_step": int(start_step),
        "steps_this_run": int(meter.steps),
        "images_seen": counter.images_in(0, steps_done),
        "matched_images": None if stream is None else len(stream),
        "final_loss": loss[-1][1] if loss else None,
        "mean_loss_last_10pct": mean_last(loss, steps_done),
        "wall_seconds": round(time.perf_counter() - wall_start, 3),
        **throughput,
        "batch_size": config.batch_size,
        "trainable_parameters": module.num_trainable(),
        "device": str(module.device),
        "loss_resolution_steps": config.log_every,
        "init": model.init_record,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    plot_loss_curve(run_dir)      # the curve is labelled "MSE"; here it is the task loss
    return run_dir


def load_specialist(run_dir: str | Path) -> Specialist:
    """The trained specialist of a finished run (``run_dir/model``), in eval mode."""
    model_dir = Path(run_dir) / "model"
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} holds no trained specialist (no model/): has the run finished?")
    return Specialist.from_pretrained(model_dir)

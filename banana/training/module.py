"""The training objective as a LightningModule: one denoising loss for every kind of example.

Why it looks like this
----------------------
Vision Banana adds no heads and no losses: a depth map is "just another image" to draw. So the
module below knows nothing about tasks. It takes a batch of ``(target, condition, prompt)``
triples (built by :mod:`banana.training.data`), noises the target with the DDPM schedule, asks the
generator for its prediction and scores it with a plain MSE against the prediction target of the
generator's config:

* ``epsilon``: the noise; ``v_prediction``: ``scheduler.get_velocity(x0, noise, t)``;
  ``sample``: ``x0`` itself (PROBES.md: on CPU-sized models x0/v learn far faster than epsilon).

Timesteps are uniform over the training schedule. The only task-aware thing is logging: the
loss is also reported per kind (``train/loss_generation``, ``train/loss_vision``, and per task)
so retention of generation can be watched while vision is learned.

Determinism and resumption
--------------------------
Noise and timesteps for a step come from a ``torch.Generator`` seeded by
``(seed, global batch index)``, not from the global RNG, so a resumed run draws exactly what an
uninterrupted one would have drawn (Lightning's checkpoints do not carry RNG states). The EMA
weights are buffers of this module, so they are checkpointed and restored with it.

Why the EMA is hand-written (measured with diffusers 0.42.1 and torch 2.13 on CPU, decay 0.999,
two 64x64 linear layers under random steps of 0.01): :class:`EMA` uses ``decay_t = min(decay,
(1 + t) / (10 + t))`` from the first update (t = 0: 0.1). diffusers' ``EMAModel`` (``foreach=True``)
has the same warm-up shifted by one update: its first update uses decay 0 (a plain copy), so the
averages differ by max |diff| 4.3e-3 after 1 update, 2.2e-5 after 5, 1.5e-8 after 20 and become
bitwise equal only after ~100 updates (``foreach=False`` computes ``s - (1 - d)(s - p)`` instead of
a lerp: 3e-8 off even after 200). ``torch.optim.swa_utils.AveragedModel`` with
``get_ema_multi_avg_fn(0.999)`` has no warm-up at all (0.50 off after 200 updates); with a
warm-up ``multi_avg_fn`` it matches ``EMAModel`` exactly, first-update copy included. Short runs
(every smoke and test run) would therefore export other weights than before. Both also keep their
state outside this module's buffers (``EMAModel``: a list needing ``on_save_checkpoint`` /
``on_load_checkpoint`` hooks; ``AveragedModel``: a deep copy of the whole generator, frozen LoRA
base included), which changes the checkpoint's keys. So the EMA stays as it is.

What trains (``TrainConfig.tuning``)
------------------------------------
* ``"full"``: every UNet and instruction-encoder parameter.
* ``"lora"``: LoRA on ``lora_targets`` + ``unet.conv_in`` + the whole instruction encoder
  (:func:`banana.adapters.add_lora`); the base UNet is frozen.

Optimiser: AdamW (torch's default ``foreach`` implementation), weight decay on every trainable
parameter, constant learning rate after a linear warm-up of ``warmup_steps``; gradient clipping is
done by the Trainer (``grad_clip``). Gradient accumulation is not supported (one batch = one step,
which the sampler's resume logic relies on).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from banana.config import SerializableConfig
from torch import nn

import lightning as L

from banana.adapters import DEFAULT_LORA_TARGETS, add_lora, trainable_parameters
from banana.training.losses import combine_losses

__all__ = ["TrainConfig", "EMA", "EMATrainedModule", "BananaModule", "diffusion_loss", "build_optimizer", "prediction_target"]

STAGES = ("pretrain", "tune")
TUNINGS = ("full", "lora")
#: Lightning precision settings TrainConfig accepts ("bf16-mixed": bf16 autocast, fp32 weights).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
#: Lightning strategies TrainConfig accepts. "ddp" is the one tested (2 CPU processes, gloo).
#: ("ddp_spawn" is not accepted: its main process gets the weights back but not the trainer state that
#: banana's final checkpoint and metrics are written from.)
STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true", "fsdp")


@dataclass(frozen=True)
class TrainConfig(SerializableConfig):
    """Everything that defines a training run (stored as ``config.json`` in the run directory).

    ``stage="pretrain"`` trains a generator from its preset on generation data only
    (``mixing_ratio`` must be 0, ``tuning`` must be ``"full"``). ``stage="tune"`` instruction-tunes
    a base (``base_model``: a ``BananaGenerator.save_pretrained`` directory) on the mixture.
    """

    stage: str = "tune"                      # "pretrain" | "tune"
    tuning: str = "full"                     # "full" | "lora"
    lora_rank: int = 8
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS  # module names; lora_preset names a set of them
    lora_preset: str | None = None           # "attention" | "attention+conv" (banana.training.recipe); overrides lora_targets
    condition_init: str = "keep"             # tune: conv_in's condition channels at the start: "keep" | "zeros" | "copy-half"
    vision_timesteps: str = "uniform"        # noise levels of vision examples: "uniform" | "terminal" (t = T-1) | "high"
    loss_normalisation: str = "batch"        # "batch" (plain mean) | "per-task" (each kind's loss / its detached mean)
    task_loss_weight: float = 0.0            # weight of the task-space loss on x0 of vision rows (0: the paper's recipe)
    mixing_ratio: float = 0.5                # fraction of vision examples per batch (not disclosed by the paper)
    labeled_scenes: int | None = None        # vision examples come from the split's first N scenes only (None: all)
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = 1.0            # gradient-norm clipping (None: off)
    batch_size: int = 16
    max_steps: int = 1000
    ema_decay: float = 0.999                 # 0 disables the EMA (the raw weights are exported)
    drop_text_prob: float = 0.05             # InstructPix2Pix: prompt -> ""
    drop_image_prob: float = 0.05            #                  condition -> zeros
    drop_both_prob: float = 0.05             #                  both
    random_palette_prob: float = 0.5         # segmentation: random palette vs the canonical one
    binary_prompt_prob: float = 0.0          # segmentation: one class in one random colour, the rest black
    absent_class_prob: float = 0.0           # of those, the share naming a class the scene lacks (all-black target)
    depth_codec: str = "metric"              # "metric" (paper: power warp + cube walk) | "affine-gray" (Marigold)
    tasks: tuple[str, ...] = ("segmentation", "depth", "normals")   # vision tasks of the mix (banana.tasks.ALL_TASKS)
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    profile: str = "cpu"                     # generator preset for pretraining from scratch
    world_dir: str | None = None             # built world (banana.world.build_world)
    split: str = "train"
    base_model: str | None = None            # tune: the pretrained generator directory
    precision: str = "32-true"               # Lightning precision; "bf16-mixed" on an Ampere+ GPU (H100)
    num_workers: int = 0
    accelerator: str = "auto"                # Lightning accelerator: "auto" | "cpu" | "gpu" | "cuda" | "mps"
    devices: int = 1                         # devices per node; data parallel over devices * num_nodes
    num_nodes: int = 1
    strategy: str = "auto"                   # "auto" | "ddp" | "fsdp" (see banana.training.run)

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.tuning not in TUNINGS:
            raise ValueError(f"tuning must be one of {TUNINGS}, got {self.tuning!r}")
        if self.stage == "pretrain" and (self.mixing_ratio != 0 or self.tuning != "full"):
            raise ValueError("stage='pretrain' trains on generation data only with full tuning: "
                             f"got mixing_ratio={self.mixing_ratio}, tuning={self.tuning!r}")
        from banana.tasks import ALL_TASKS, DEPTH_CODECS

        object.__setattr__(self, "tasks", tuple(self.tasks))     # a list from JSON -> the tuple it was
        if not self.tasks or set(self.tasks) - set(ALL_TASKS) or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct names from {ALL_TASKS}, got {self.tasks}")
        if self.depth_codec not in DEPTH_CODECS:
            raise ValueError(f"depth_codec must be one of {sorted(DEPTH_CODECS)}, got {self.depth_codec!r}")
        from banana.training.recipe import CONDITION_INITS, LORA_PRESETS, VISION_TIMESTEPS

        for name, allowed in (("condition_init", CONDITION_INITS), ("vision_timesteps", VISION_TIMESTEPS),
                              ("lora_preset", (None, *LORA_PRESETS))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        from banana.training.losses import LOSS_NORMALISATIONS

        if self.loss_normalisation not in LOSS_NORMALISATIONS:
            raise ValueError(f"loss_normalisation must be one of {LOSS_NORMALISATIONS}, got {self.loss_normalisation!r}")
        for name in ("random_palette_prob", "binary_prompt_prob", "absent_class_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.task_loss_weight < 0:
            raise ValueError(f"task_loss_weight must be >= 0, got {self.task_loss_weight}")
        if self.task_loss_weight > 0 and self.depth_codec != "metric":
            raise ValueError("task_loss_weight > 0 decodes depth along the metric cube walk: needs depth_codec='metric'")
        if self.stage == "pretrain" and self.condition_init != "keep":
            raise ValueError("condition_init applies when tuning starts: stage='pretrain' needs 'keep'")
        if not 0 <= self.mixing_ratio <= 1:
            raise ValueError(f"mixing_ratio must be in [0, 1], got {self.mixing_ratio}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        drops = (self.drop_text_prob, self.drop_image_prob, self.drop_both_prob)
        if min(drops) < 0 or sum(drops) > 1:
            raise ValueError(f"drop probabilities must be >= 0 and sum to <= 1, got {drops}")
        if self.labeled_scenes is not None and (isinstance(self.labeled_scenes, bool) or self.labeled_scenes < 1):
            raise ValueError(f"labeled_scenes must be None (every scene) or >= 1, got {self.labeled_scenes!r}")
        for name in ("lora_rank", "batch_size", "max_steps", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("need learning_rate > 0, weight_decay >= 0, warmup_steps >= 0")
        self._check_hardware()

    def _check_hardware(self) -> None:
        """Distributed settings: known names, and a global batch that splits evenly over the devices."""
        for name, allowed in (("precision", PRECISIONS), ("accelerator", ACCELERATORS), ("strategy", STRATEGIES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("devices", "num_nodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.batch_size % self.world_size:
            raise ValueError(f"batch_size={self.batch_size} is the global batch and must be divisible by "
                             f"devices * num_nodes = {self.world_size} (each device takes batch_size // "
                             f"{self.world_size} examples per step)")
        if self.strategy.startswith("fsdp") and self.ema_decay > 0:
            raise ValueError("strategy='fsdp' shards the parameters the EMA keeps references to: set "
                             "ema_decay=0, or use strategy='ddp' (recommended for banana's model sizes)")

    def vision_pool_size(self, n_scenes: int) -> int:
        """How many scenes of an ``n_scenes`` split vision examples are drawn from: the first
        ``labeled_scenes`` (the labeled pool of a learning curve), or all of them. Generation
        examples always use the whole split (plentiful images, scarce labels)."""
        if self.labeled_scenes is None:
            return int(n_scenes)
        if self.labeled_scenes > n_scenes:
            raise ValueError(f"labeled_scenes={self.labeled_scenes} but the split has only {n_scenes} scenes")
        return int(self.labeled_scenes)

    @property
    def lora_target_modules(self) -> tuple[str, ...]:
        """The LoRA targets: ``lora_preset``'s when set, else ``lora_targets``."""
        from banana.training.recipe import LORA_PRESETS

        return LORA_PRESETS[self.lora_preset] if self.lora_preset else tuple(self.lora_targets)

    @property
    def world_size(self) -> int:
        """Processes of a run: ``devices * num_nodes``."""
        return self.devices * self.num_nodes


    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


class EMA(nn.Module):
    """Exponential moving average of a fixed set of parameters, kept as buffers (so it is saved in
    Lightning checkpoints and moved across devices with the module).

    ``decay_t = min(decay, (1 + t) / (10 + t))`` at update ``t`` (the usual warm-up, as in
    diffusers' ``EMAModel``): early updates follow the weights closely, so short runs are not
    dominated by the initial weights.
    """

    def __init__(self, parameters: dict[str, nn.Parameter], decay: float):
        super().__init__()
        self.decay = float(decay)
        self.names = list(parameters)
        self._params = list(parameters.values())   # references, not registered (they belong to the model)
        for i, p in enumerate(self._params):
            self.register_buffer(f"shadow_{i}", p.detach().clone())
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def shadows(self) -> list[torch.Tensor]:
        return [getattr(self, f"shadow_{i}") for i in range(len(self._params))]

    def current_decay(self) -> float:
        t = int(self.num_updates)
        return min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self) -> None:
        decay = self.current_decay()
        shadows = self.shadows()
        params = [p.detach().to(s.dtype) for p, s in zip(self._params, shadows)]
        torch._foreach_lerp_(shadows, params, 1.0 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Overwrite the model's parameters with the averages (done once, at export)."""
        for p, s in zip(self._params, self.shadows()):
            p.copy_(s)


def prediction_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet is trained to output for clean samples ``x0`` noised with ``noise`` at
    ``timesteps``, by ``scheduler.config.prediction_type``: ``epsilon`` the noise, ``v_prediction``
    ``scheduler.get_velocity(x0, noise, timesteps)``, ``sample`` ``x0`` itself. The one definition
    of the target, used by :func:`diffusion_loss` and :func:`banana.evaluation.retention.denoising_loss`."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(x0, noise, timesteps)
    if prediction_type == "sample":
        return x0
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def diffusion_loss(generator, scheduler, batch: dict, generator_rng: torch.Generator, offset: int = 0,
                   total: int | None = None, vision_timesteps: str = "uniform",
                   task_loss_weight: float = 0.0) -> torch.Tensor:
    """Per-example MSE ``[B]`` between the model output and the prediction target (plus
    ``task_loss_weight`` times :func:`banana.training.losses.task_space_loss` on the x0 prediction).

    ``batch`` may be rows ``offset .. offset + B`` of a global batch of ``total`` rows (one rank's
    slice under data parallelism): timesteps and noise are drawn for all ``total`` rows from
    ``generator_rng`` and sliced, so every rank's rows get exactly what a single device drawing the
    whole global batch would have given them. Default: the batch is the whole global batch.
    ``vision_timesteps``: the noise levels of vision rows (:func:`banana.training.recipe.draw_timesteps`).
    """
    from banana.training.recipe import draw_timesteps

    # model space: the identity for pixel generators, VAE latents for banana.models.latent.LatentGenerator
    x0, condition = generator.to_model_space(batch["target"]), generator.to_model_space(batch["condition"])
    device = x0.device
    size = x0.shape[0]
    total = size if total is None else int(total)
    if not 0 <= offset <= total - size:
        raise ValueError(f"rows {offset}..{offset + size} do not fit in a global batch of {total}")
    kinds = batch.get("kind", ["generation"] * size)
    timesteps = draw_timesteps(kinds, offset, total, scheduler.config.num_train_timesteps, vision_timesteps,
                               generator_rng, device)
    noise = torch.randn((total, *x0.shape[1:]), generator=generator_rng, device=device,
                        dtype=x0.dtype)[offset:offset + size]
    noisy = scheduler.add_noise(x0, noise, timesteps)
    wanted = prediction_target(scheduler, x0, noise, timesteps)
    states, mask = generator.encode_prompts(batch["prompt"])
    output = generator(noisy, timesteps, condition, states, mask)
    loss = (output.float() - wanted.float()).pow(2).mean(dim=(1, 2, 3))
    if task_loss_weight > 0:
        from banana.training.losses import task_space_loss, x0_prediction

        if x0 is not batch["target"]:
            raise ValueError("task_loss_weight > 0 needs a pixel-space generator (its x0 prediction is an image)")
        loss = loss + task_loss_weight * task_space_loss(x0_prediction(scheduler, output, noisy, timesteps), x0, kinds)
    return loss


def build_optimizer(params, config) -> dict:
    """Lightning's ``configure_optimizers`` answer for every banana run (generators and specialists):
    AdamW over ``params`` with ``config.learning_rate`` and ``config.weight_decay``, constant
    learning rate after a linear warm-up of ``config.warmup_steps`` steps, stepped every step."""
    optimizer = torch.optim.AdamW(list(params), lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = config.warmup_steps

    def factor(step: int) -> float:
        return 1.0 if warmup == 0 else min(1.0, (step + 1) / warmup)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class EMATrainedModule(L.LightningModule):
    """What every banana LightningModule shares (the generator's and the specialists'): AdamW from
    :func:`build_optimizer` over ``self.trainable``, the :class:`EMA` ``self.ema`` (or ``None``)
    following every optimiser step, and :meth:`export_weights`. Subclasses set ``config``,
    ``trainable`` and ``ema``."""

    def optimizer_step(self, *args, **kwargs) -> None:
        # The EMA follows each optimiser step here, not in ``on_train_batch_end``: Lightning runs the
        # callbacks' ``on_train_batch_end`` (ModelCheckpoint) *before* the module's, so an update there
        # would be missing from the checkpoint of that step and a resumed run would drift.
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update()

    def configure_optimizers(self):
        return build_optimizer(list(self.trainable.values()), self.config)

    def export_weights(self) -> None:
        """Put the EMA weights into the model (no-op without EMA). Call once, after training."""
        if self.ema is not None:
            self.ema.copy_to_model()


class BananaModule(EMATrainedModule):
    """Trains a :class:`~banana.models.BananaGenerator` with the denoising loss.

    ``tuning="lora"`` adds LoRA to ``generator`` (in place) in the constructor. The module never
    builds data; :func:`banana.training.run.train` attaches a datamodule.
    """

    def __init__(self, generator, config: TrainConfig):
        super().__init__()
        from banana.models import build_noise_scheduler

        self.generator = generator
        self.config = config
        if config.stage == "tune":   # before LoRA wraps conv_in; a resumed run's checkpoint overwrites it
            from banana.training.recipe import init_condition_channels

            init_condition_channels(generator.unet, config.condition_init)
        if config.tuning == "lora":
            add_lora(generator, rank=config.lora_rank, targets=config.lora_target_modules)
        else:
            generator.requires_grad_(True)
        self.noise_scheduler = build_noise_scheduler(generator.config)
        self.trainable = trainable_parameters(generator)
        self.ema = EMA(self.trainable, config.ema_decay) if config.ema_decay > 0 else None

    # ------------------------------------------------------------------ helpers
    def step_rng(self, global_batch: int) -> torch.Generator:
        """The RNG of one step's noise and timesteps: a pure function of (seed, global batch)."""
        seed = int(np.random.SeedSequence([self.config.seed, int(global_batch), 0x7E5]).generate_state(1)[0])
        rng = torch.Generator(device=self.device)
        rng.manual_seed(seed)
        return rng

    def global_batch_index(self) -> int:
        """The global batch of this step: the step itself (every rank holds a slice of it)."""
        trainer = self._trainer
        return int(self.global_step) if trainer is None else int(trainer.global_step)

    def rank_slice(self, size: int) -> tuple[int, int]:
        """``(offset, total)`` of this rank's ``size`` rows in the step's global batch."""
        trainer = self._trainer
        world_size = 1 if trainer is None else int(trainer.world_size)
        rank = 0 if trainer is None else int(trainer.global_rank)
        return rank * size, world_size * size

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable.values())

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        offset, total = self.rank_slice(len(batch["prompt"]))
        per_example = diffusion_loss(self.generator, self.noise_scheduler, batch,
                                     self.step_rng(self.global_batch_index()), offset=offset, total=total,
                                     vision_timesteps=self.config.vision_timesteps,
                                     task_loss_weight=self.config.task_loss_weight)
        loss = combine_losses(per_example, batch["kind"], self.config.loss_normalisation)
        if self._trainer is not None:
            logged, kinds = per_example.detach(), np.asarray(batch["kind"])
            if total > len(kinds):
                # Data parallel: log the whole global batch's losses (the same on every rank).
                from banana.training.data import KINDS

                ids = torch.as_tensor([KINDS.index(str(k)) for k in kinds], device=logged.device)
                logged = self.all_gather(logged).reshape(-1)
                kinds = np.asarray(KINDS)[self.all_gather(ids).reshape(-1).cpu().numpy()]
            per_example = logged
            size = len(kinds)
            self.log("train/loss", logged.mean(), prog_bar=True, batch_size=size)
            is_generation = torch.as_tensor(kinds == "generation", device=per_example.device)
            groups = {"generation": is_generation, "vision": ~is_generation}
            groups.update({kind: torch.as_tensor(kinds == kind, device=per_example.device)
                           for kind in sorted(set(kinds) - {"generation"})})
            for name, selected in groups.items():
                count = int(selected.sum())
                if count:
                    self.log(f"train/loss_{name}", per_example.detach()[selected].mean(), batch_size=count)
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["banana_train_config"] = self.config.to_dict()
        checkpoint["banana_generator_config"] = self.generator.config.to_dict()

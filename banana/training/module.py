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

__all__ = ["TrainConfig", "EMA", "BananaModule", "diffusion_loss"]

STAGES = ("pretrain", "tune")
TUNINGS = ("full", "lora")


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
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    mixing_ratio: float = 0.5                # fraction of vision examples per batch (not disclosed by the paper)
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
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    profile: str = "cpu"                     # generator preset for pretraining from scratch
    world_dir: str | None = None             # built world (banana.world.build_world)
    split: str = "train"
    base_model: str | None = None            # tune: the pretrained generator directory
    precision: str = "32-true"               # Lightning precision ("bf16-mixed" on a GPU if wanted)
    num_workers: int = 0

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.tuning not in TUNINGS:
            raise ValueError(f"tuning must be one of {TUNINGS}, got {self.tuning!r}")
        if self.stage == "pretrain" and (self.mixing_ratio != 0 or self.tuning != "full"):
            raise ValueError("stage='pretrain' trains on generation data only with full tuning: "
                             f"got mixing_ratio={self.mixing_ratio}, tuning={self.tuning!r}")
        if not 0 <= self.mixing_ratio <= 1:
            raise ValueError(f"mixing_ratio must be in [0, 1], got {self.mixing_ratio}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        drops = (self.drop_text_prob, self.drop_image_prob, self.drop_both_prob)
        if min(drops) < 0 or sum(drops) > 1:
            raise ValueError(f"drop probabilities must be >= 0 and sum to <= 1, got {drops}")
        for name in ("lora_rank", "batch_size", "max_steps", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("need learning_rate > 0, weight_decay >= 0, warmup_steps >= 0")


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


def diffusion_loss(generator, scheduler, batch: dict, generator_rng: torch.Generator) -> torch.Tensor:
    """Per-example MSE ``[B]`` between the model output and the prediction target."""
    x0, condition = batch["target"], batch["condition"]
    device = x0.device
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],),
                              generator=generator_rng, device=device)
    noise = torch.randn(x0.shape, generator=generator_rng, device=device, dtype=x0.dtype)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        wanted = noise
    elif prediction_type == "v_prediction":
        wanted = scheduler.get_velocity(x0, noise, timesteps)
    elif prediction_type == "sample":
        wanted = x0
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}")
    states, mask = generator.encode_prompts(batch["prompt"])
    output = generator(noisy, timesteps, condition, states, mask)
    return (output.float() - wanted.float()).pow(2).mean(dim=(1, 2, 3))


class BananaModule(L.LightningModule):
    """Trains a :class:`~banana.models.BananaGenerator` with the denoising loss.

    ``tuning="lora"`` adds LoRA to ``generator`` (in place) in the constructor. The module never
    builds data; :func:`banana.training.run.train` attaches a datamodule.
    """

    def __init__(self, generator, config: TrainConfig):
        super().__init__()
        from banana.models import build_noise_scheduler

        self.generator = generator
        self.config = config
        if config.tuning == "lora":
            add_lora(generator, rank=config.lora_rank, targets=config.lora_targets)
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
        trainer = self._trainer
        if trainer is None:
            return int(self.global_step)
        return int(trainer.global_step) * trainer.world_size + trainer.global_rank

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable.values())

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        per_example = diffusion_loss(self.generator, self.noise_scheduler, batch, self.step_rng(self.global_batch_index()))
        loss = per_example.mean()
        if self._trainer is not None:
            size = len(batch["prompt"])
            self.log("train/loss", loss, prog_bar=True, batch_size=size)
            kinds = np.asarray(batch["kind"])
            is_generation = torch.as_tensor(kinds == "generation", device=per_example.device)
            groups = {"generation": is_generation, "vision": ~is_generation}
            groups.update({kind: torch.as_tensor(kinds == kind, device=per_example.device)
                           for kind in sorted(set(kinds) - {"generation"})})
            for name, selected in groups.items():
                count = int(selected.sum())
                if count:
                    self.log(f"train/loss_{name}", per_example.detach()[selected].mean(), batch_size=count)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        # The EMA follows each optimiser step here, not in ``on_train_batch_end``: Lightning runs the
        # callbacks' ``on_train_batch_end`` (ModelCheckpoint) *before* the module's, so an update there
        # would be missing from the checkpoint of that step and a resumed run would drift.
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update()

    def configure_optimizers(self):
        params = list(self.trainable.values())
        optimizer = torch.optim.AdamW(params, lr=self.config.learning_rate, weight_decay=self.config.weight_decay)
        warmup = self.config.warmup_steps

        def factor(step: int) -> float:
            return 1.0 if warmup == 0 else min(1.0, (step + 1) / warmup)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["banana_train_config"] = self.config.to_dict()
        checkpoint["banana_generator_config"] = self.generator.config.to_dict()

    def export_weights(self) -> None:
        """Put the EMA weights into the generator (no-op without EMA). Call once, after training."""
        if self.ema is not None:
            self.ema.copy_to_model()

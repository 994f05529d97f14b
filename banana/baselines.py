"""The two baselines a generalist must beat: task specialists, and the generalist without pretraining.

Why these two
-------------
Vision Banana's claim has two halves, and each needs its own control:

1. **"A generalist beats specialists."** In the paper the specialists are SAM 3, Depth Anything 3
   and Lotus-2. Here a :class:`Specialist` plays that role: one model per task, the *same UNet
   architecture and size* as the generator's, but with what a specialist is allowed to have and
   the generalist is not: an input of the image only, a task head (its own output channels) and
   a task loss (cross-entropy, log-depth L1, angular). It is trained on **exactly the vision
   examples the generalist saw** (same images, in the same order, same count; see
   :func:`replay_vision_stream`), so any gap is due to the recipe, not to data.
2. **"Generative pretraining is what makes it work."** The no-pretraining control
   (:func:`control_config`, :func:`train_control`) runs the *same* generalist recipe, through the
   very same :func:`banana.training.train`, from randomly initialised weights instead of the
   pretrained base. Everything else (TrainConfig, data stream, noise, steps, learning rate) is
   identical, and by default (``tuning=None``) so is **the set of parameters that trains**
   (:func:`trainable_parameter_names` of the two modules are equal):

   * a **fully tuned** generalist's control fully tunes the random init (every UNet and
     instruction-encoder weight), so the gap between the two is the effect of generative
     pretraining alone.
   * a **LoRA** generalist's default control is LoRA on the random init: the same trainable set
     (the LoRA matrices, ``unet.conv_in``, the instruction encoder), but everything else in its
     UNet is *frozen random* features. Its gap to the generalist therefore confounds "pretraining
     helps" with "how much of the model can train at all". So a LoRA generalist also gets the
     **fully tuned control** (``tuning="full"``): every weight of the same random init trains, with
     the same recipe. Beating both means pretraining helps even against a model free to adapt all
     of its weights; beating only the LoRA one means the first gap was about trainable capacity.
     (The full control keeps the LoRA recipe's learning rate, since only the trainable set may
     change; a fully tuned model may prefer another one, which errs against the control.)

With the pretrained-init specialist (:attr:`SpecialistConfig.init_from`) the baselines make a
2 x 2: {generative pretraining, random init} x {the answer drawn as RGB and decoded (generalist),
a task head with a task loss (specialist)}. The init axis says what pretraining buys each recipe,
the recipe axis what drawing the answer buys each init, so "the generalist beats the specialist"
cannot just mean "the generalist had pretrained weights and the specialist had not".

Design choices of the specialist (stated because they shape its numbers)
------------------------------------------------------------------------
* **Backbone**: ``UNet2DConditionModel.from_config(build_unet(cfg).config, in_channels=3,
  out_channels=C)``: every block, width and attention level of the generator's UNet, only the
  first and last convolutions differ. The timestep is fixed at 0 (a constant time embedding), and
  the cross-attention reads a small **learned constant text state** (``NULL_TOKENS`` tokens, no
  prompt): a specialist has nothing to be told.
* **Input**: the image in the model's range ``2 * rgb - 1``, like the generator's condition.
* **Segmentation head**: ``K = len(CLASS_NAMES)`` logits; loss = pixel cross-entropy ignoring
  label 255; prediction = argmax (class ids in ``CLASS_NAMES`` order, which is the canonical
  palette's order, so the same ``mean_iou`` applies).
* **Depth head**: 2 channels: ``log(metres)`` and a **separate sky logit**. Sky (``inf`` depth)
  cannot be regressed in log space, and predicting "a large value" would let the sky dominate an
  L1 loss or bias the near range; a logit separates *where* there is no surface from *how far* the
  surface is. Loss = L1 on log depth over finite pixels (scale-aware: a global scale error costs
  ``|log s|`` everywhere, so this is metric depth, not affine-invariant) + binary cross-entropy on
  the sky logit over all pixels. Prediction = ``exp(log depth)``, ``inf`` where the sky logit > 0
  (the generalist's depth codec also returns ``inf`` for "the end of the path").
* **Normals head**: 3 channels, normalised to unit length; loss = ``1 - cos`` over pixels whose
  target is a unit vector (sky normals are zero and ignored).
* **Optimisation**: the generalist's AdamW + warm-up (literally :meth:`BananaModule.configure_optimizers`)
  and its :class:`~banana.training.module.EMA`, so the two differ in recipe, not in optimiser.
* **Initialisation** (``init_from``): random by default. From a saved pretrained generator, every
  UNet tensor whose name and shape match is copied; ``conv_in`` takes the generator's input
  channels 0:3 (the ones that read the noisy / clean image in pretraining); ``conv_out`` (RGB
  outputs vs the head's channels) and the learned text state stay fresh unless the shapes match
  (the normals head has 3 channels, so it does inherit the RGB output conv). The fixed timestep 0
  is the "no noise" end of the pretrained schedule, which is what a clean input image is. What was
  copied is recorded (:attr:`Specialist.init_record`, in the run's ``config.json`` and
  ``metrics.json``).

What "the same examples" means exactly
--------------------------------------
A generalist run's vision slots are a pure function of its TrainConfig (seed, batch size, mixing
ratio, max_steps; :class:`~banana.training.MixedBatchSampler`) and the task of each slot is a pure
function of ``(seed, index, draw)`` (:meth:`BananaExamples.drawn_task`). Replaying both gives, in
order, the image indices the generalist saw *for this task*. The specialist cuts that list into
batches of its own ``batch_size`` (the last one may be shorter), so one pass sees every image
exactly as often as the generalist did. Slots whose condition image the generalist had dropped
(InstructPix2Pix dropout) are kept: the specialist then gets slightly *more* useful supervision,
which errs in the specialist's favour, the conservative side for a baseline.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

import lightning as L
from lightning.pytorch.callbacks import Callback

from banana.config import SerializableConfig
from banana.models import GENERATOR_PRESETS, BananaGenerator, GeneratorConfig, build_unet
from banana.tasks import TASKS
from banana.training.data import VISION, BananaExamples, ExampleKey, MixedBatchSampler
from banana.training.module import EMA, TUNINGS, BananaModule, TrainConfig
from banana.training.run import (CHECKPOINT_DIR, LAST_CHECKPOINT, ThroughputMeter, _fit, _mean_last, keep_determinism_setting, make_trainer, throughput_record,
                                 plot_loss_curve, read_config, read_loss_log, train)

__all__ = ["SpecialistConfig", "Specialist", "SpecialistExamples", "SpecialistBatchSampler", "SpecialistModule",
           "SpecialistPipeline", "replay_vision_stream", "matched_config", "train_specialist",
           "load_specialist", "read_specialist_config", "control_config", "train_control",
           "trainable_parameter_names", "specialist_loss", "NULL_TOKENS", "IGNORE_INDEX"]

#: Length of the learned constant "text" the specialist's cross-attention reads (it has no prompt).
NULL_TOKENS = 4
#: Segmentation label that the loss ignores (the convention of the metrics and the codecs).
IGNORE_INDEX = 255
#: The predicted log depth is clamped to [1 mm, 10 km] before exp(): an untrained head can neither
#: overflow nor predict 0 m (the metrics divide by depth).
MIN_LOG_DEPTH, MAX_LOG_DEPTH = math.log(1e-3), math.log(1e4)
#: TrainConfig-like fields of a specialist run that may change on resume.
RESUMABLE_CHANGES = frozenset({"max_steps", "log_every", "checkpoint_every", "num_workers"})
MODEL_FILE, MODEL_CONFIG_FILE, REPLAY_FILE, CONTROL_FILE = ("model.safetensors", "specialist_config.json",
                                                            "replay.json", "control.json")
_SAMPLER_TAG = 0x5BEC


def _num_classes() -> int:
    from banana.world import CLASS_NAMES

    return len(CLASS_NAMES)


def head_channels(task: str) -> int:
    """Output channels of the task head: K logits / log depth + sky logit / a 3-vector."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    return {"segmentation": _num_classes(), "depth": 2, "normals": 3}[task]


# ============================================================================ config
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
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
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


# ============================================================================ the model
class Specialist(nn.Module):
    """The generator's UNet with an image-only input and a task head (see the module docstring).

    ``forward`` maps model-range images ``[B, 3, H, W]`` in [-1, 1] to raw head outputs
    ``[B, C, H, W]``; :meth:`predict` maps user images to the prediction formats of
    :meth:`banana.pipeline.BananaPipeline.predict` (``["prediction"]``).
    """

    def __init__(self, task: str, backbone: GeneratorConfig):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.task = task
        self.backbone = backbone
        reference = build_unet(backbone)       # the generator's exact block layout; only in/out convs change
        self.unet = UNet2DConditionModel.from_config(reference.config, in_channels=3,
                                                     out_channels=head_channels(task))
        del reference
        self.text_state = nn.Parameter(torch.randn(1, NULL_TOKENS, backbone.text_dim) * 0.02)
        #: How the weights were initialised (set by :meth:`from_config`; ``None``: not recorded, e.g.
        #: after :meth:`from_pretrained`, whose weights are the trained ones anyway).
        self.init_record: dict | None = None

    @classmethod
    def from_config(cls, config: SpecialistConfig) -> "Specialist":
        """A fresh specialist for ``config``; ``config.seed`` fixes its initial weights (the caller's
        global torch RNG is left as it was). With ``config.init_from`` the UNet is then overwritten
        by the pretrained generator's weights (:meth:`copy_generator_weights`), so the seed only
        decides what is not copied (``conv_out`` unless its shape matches, and the text state)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = cls(config.task, config.backbone_config())
            if config.init_from is None:
                model.init_record = {"init_from": None}
            else:
                model.init_record = model.copy_generator_weights(config.init_from)
        return model

    @torch.no_grad()
    def copy_generator_weights(self, base) -> dict[str, Any]:
        """Initialise the UNet from a pretrained generator (directory or :class:`BananaGenerator`).

        Every UNet tensor of ``base`` whose name and shape equal the specialist's is copied. The
        input conv is 6 channels wide in the generator (``cat([noisy target, condition])``) and 3
        in the specialist: it takes the base's channels 0:3, the ones that read the noisy (at t=0:
        clean) image during pretraining. Channels 3:6 read the condition, which is all zeros in
        pure generation: their gradient was always zero, so pretraining never trained them (only
        weight decay touched them), and they are dropped.
        ``conv_out`` (3 RGB outputs vs the head's channels) keeps its fresh init unless the shapes
        match; the learned text state is always fresh (the base has no such tensor).

        Raises ``FileNotFoundError`` for a directory that is not a saved generator and
        ``ValueError`` if the base's GeneratorConfig is not this specialist's backbone. Returns the
        record stored as :attr:`init_record`: source, tensors / values copied, the fresh tensors.
        """
        from banana.adapters import has_lora

        source = "<BananaGenerator>"
        if not isinstance(base, BananaGenerator):
            source = str(Path(base).resolve())
            config_path = Path(base) / "generator_config.json"
            if not config_path.is_file():
                raise FileNotFoundError(f"init_from={str(base)!r}: {config_path} does not exist; init_from must be a "
                                        "saved BananaGenerator directory (e.g. data/generators/base-cpu or a "
                                        "pretraining run's model/)")
            self._check_backbone(GeneratorConfig.from_dict(json.loads(config_path.read_text())), base)
            base = BananaGenerator.from_pretrained(base)
        self._check_backbone(base.config, source)
        if has_lora(base):
            raise ValueError("init_from is a LoRA-adapted generator (its UNet weights are renamed): pass the base "
                             "it was tuned from, or a merged save_pretrained copy")
        theirs = base.unet.state_dict()
        ours = self.unet.state_dict()
        copied, partial, fresh = [], [], []
        values = 0
        for name, tensor in ours.items():
            source_tensor = theirs.get(name)
            if source_tensor is not None and source_tensor.shape == tensor.shape:
                ours[name] = source_tensor
                copied.append(name)
            elif (name == "conv_in.weight" and source_tensor is not None
                  and source_tensor[:, :tensor.shape[1]].shape == tensor.shape):
                # image channels 0:3 only; 3:6 read the all-zero condition, never trained in pretraining
                ours[name] = source_tensor[:, :tensor.shape[1]]
                partial.append(name)
            else:
                fresh.append(name)
                continue
            values += tensor.numel()
        self.unet.load_state_dict(ours, strict=True)
        return {"init_from": source,
                "copied_tensors": len(copied) + len(partial),
                "copied_values": int(values),
                "unet_tensors": len(ours),
                "unet_values": int(sum(t.numel() for t in ours.values())),
                "partially_copied": {name: f"input channels 0:{ours[name].shape[1]} of {theirs[name].shape[1]}"
                                     for name in partial},
                "fresh_tensors": fresh + ["text_state"],
                "base_tensors_unused": sorted(set(theirs) - set(ours))}

    def _check_backbone(self, config: GeneratorConfig, source) -> None:
        if config != self.backbone:
            diffs = sorted(k for k, v in config.to_dict().items() if self.backbone.to_dict().get(k) != v)
            raise ValueError(f"init_from={str(source)!r} is a generator with another GeneratorConfig than the "
                             f"specialist's backbone (fields differ: {diffs}): a pretrained init needs the same "
                             "architecture (matched_config copies the generalist's, i.e. its base's)")

    @property
    def device(self) -> torch.device:
        return self.text_state.device

    @property
    def resolution(self) -> int:
        return self.backbone.resolution

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        batch = images.shape[0]
        timesteps = torch.zeros(batch, dtype=torch.long, device=images.device)
        states = self.text_state.expand(batch, -1, -1).to(images.dtype)
        return self.unet(images, timesteps, encoder_hidden_states=states).sample

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-example task loss ``[B]`` and its named parts (each ``[B]``); see :func:`specialist_loss`."""
        return specialist_loss(self.task, outputs, target)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """Raw head outputs -> labels int64 ``[B, H, W]`` / metres float32 ``[B, H, W]`` (``inf`` =
        sky) / unit normals float32 ``[B, 3, H, W]``."""
        outputs = outputs.float()
        if self.task == "segmentation":
            return outputs.argmax(dim=1)
        if self.task == "depth":
            metres = outputs[:, 0].clamp(MIN_LOG_DEPTH, MAX_LOG_DEPTH).exp()
            return metres.masked_fill(outputs[:, 1] > 0, math.inf)
        return F.normalize(outputs, dim=1, eps=1e-8)

    @torch.no_grad()
    def predict(self, images, max_batch: int = 256) -> torch.Tensor:
        """Images (uint8 0..255 or float in [0, 1], ``[B, 3, H, W]`` or ``[3, H, W]``, validated like
        the pipeline's) -> the prediction, on the model's device."""
        from banana.pipeline import _prepare_images

        images = _prepare_images(images, self.resolution).to(self.device) * 2.0 - 1.0
        return torch.cat([self.decode(self(chunk)) for chunk in images.split(max_batch)])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- persistence: one safetensors file + the config that rebuilds the architecture
    def save_pretrained(self, directory: str | Path) -> Path:
        """``specialist_config.json`` (task + backbone GeneratorConfig) and ``model.safetensors``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        record = {"task": self.task, "backbone": self.backbone.to_dict(), "null_tokens": NULL_TOKENS}
        (directory / MODEL_CONFIG_FILE).write_text(json.dumps(record, indent=1) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / MODEL_FILE))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "Specialist":
        from safetensors.torch import load_file

        directory = Path(directory)
        path = directory / MODEL_CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {directory} is not a saved Specialist")
        record = json.loads(path.read_text())
        if record.get("null_tokens", NULL_TOKENS) != NULL_TOKENS:
            raise ValueError(f"{directory} was saved with {record['null_tokens']} null tokens, this banana uses "
                             f"{NULL_TOKENS}")
        model = cls(record["task"], GeneratorConfig.from_dict(record["backbone"]))
        model.load_state_dict(load_file(str(directory / MODEL_FILE)))
        return model.eval()


def specialist_loss(task: str, outputs: torch.Tensor, target: torch.Tensor
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-example loss ``[B]`` (mean over each example's valid pixels) and its parts.

    * segmentation: cross-entropy, pixels labelled :data:`IGNORE_INDEX` left out.
    * depth: ``|log d_pred - log d|`` over finite positive target pixels (``log_l1``) + BCE of the
      sky logit against ``isinf(d)`` over all pixels (``sky``).
    * normals: ``1 - cos`` over pixels whose target has norm > 0.5 (``angular``).

    An example without a valid pixel contributes 0 (never NaN).
    """
    outputs = outputs.float()

    def masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        valid = valid.float()
        return (values * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1.0)

    if task == "segmentation":
        target = target.long()
        valid = target != IGNORE_INDEX
        ce = F.cross_entropy(outputs, target.where(valid, torch.zeros_like(target)), reduction="none")
        ce = masked_mean(ce, valid)
        return ce, {"cross_entropy": ce}
    if task == "depth":
        target = target.float()
        sky = torch.isinf(target)
        valid = torch.isfinite(target) & (target > 0)
        log_target = torch.log(target.where(valid, torch.ones_like(target)))
        log_l1 = masked_mean((outputs[:, 0] - log_target).abs(), valid)
        sky_bce = F.binary_cross_entropy_with_logits(outputs[:, 1], sky.float(), reduction="none").flatten(1).mean(1)
        return log_l1 + sky_bce, {"log_l1": log_l1, "sky": sky_bce}
    if task == "normals":
        target = target.float()
        valid = target.norm(dim=1) > 0.5
        cosine = F.cosine_similarity(outputs, target, dim=1, eps=1e-8)
        angular = masked_mean(1.0 - cosine, valid)
        return angular, {"angular": angular}
    raise ValueError(f"unknown task {task!r}; choose from {TASKS}")


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

    def predict(self, images, task: str, palette: Mapping | None = None, **ignored) -> dict:
        from banana.world import CLASS_NAMES

        if task not in self.specialists:
            raise ValueError(f"no specialist for {task!r}; have {sorted(self.specialists)}")
        if task == "segmentation" and palette is not None and list(palette) != list(CLASS_NAMES):
            raise ValueError(f"a segmentation specialist predicts CLASS_NAMES ids {CLASS_NAMES}; "
                             f"the palette names {list(palette)}")
        start = time.perf_counter()
        prediction = self.specialists[task].predict(images)
        self.last_timing = (time.perf_counter() - start) / prediction.shape[0]
        return {"prediction": prediction}


# ============================================================================ data
def replay_vision_stream(generalist: TrainConfig | str | Path, task: str, split=None,
                         world_dir: str | Path | None = None) -> list[ExampleKey]:
    """The vision examples of ``task`` a generalist run saw, in training order.

    ``generalist`` is its :class:`TrainConfig` or run directory (``config.json``). The run's
    :class:`MixedBatchSampler` is rebuilt exactly as :func:`banana.training.train` builds it
    (``n_generation = n_vision = len(split)``, same batch size, mixing ratio, ``max_steps`` and seed,
    one device) and every vision slot is kept whose task, drawn by
    :meth:`BananaExamples.drawn_task` with the run's seed, equals ``task``. No example is built.

    ``split``: the world split the run trained on (default: ``load_world(world_dir or
    config.world_dir)[config.split]``); only its length is read.
    """
    from banana.world import load_world

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    config = generalist if isinstance(generalist, TrainConfig) else read_config(generalist)[0]
    if split is None:
        world_dir = world_dir if world_dir is not None else config.world_dir
        if world_dir is None:
            raise ValueError("the generalist config names no world: pass split= or world_dir=")
        split = load_world(world_dir)[config.split]
    examples = BananaExamples(split, seed=config.seed, in_memory=False)   # only drawn_task is used
    n = len(examples)
    sampler = MixedBatchSampler(n, n, config.batch_size, config.mixing_ratio, num_batches=config.max_steps,
                                seed=config.seed)
    return [key for batch in sampler for key in batch
            if key.source == VISION and examples.drawn_task(key.index, key.draw)[0] == task]


class SpecialistExamples(Dataset):
    """``index -> {"image": float32 [3, H, W] in [-1, 1], "target": label}`` over a world split.

    Targets: segmentation int64 ``[H, W]`` class ids; depth float32 ``[H, W]`` metres (``inf`` =
    sky); normals float32 ``[3, H, W]`` (zeros = sky). Columns are read into memory once.
    """

    FIELDS = {"segmentation": "semantic", "depth": "depth", "normals": "normals"}

    def __init__(self, split, task: str):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
        self.task = task
        field = self.FIELDS[task]
        columns = split.select_columns(["image", field])[:]
        self.images = torch.from_numpy(np.ascontiguousarray(columns["image"], dtype=np.float32)) * (2.0 / 255.0) - 1.0
        dtype = np.int64 if task == "segmentation" else np.float32
        self.targets = torch.from_numpy(np.ascontiguousarray(columns[field], dtype=dtype))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "target": self.targets[index]}


class SpecialistBatchSampler(Sampler):
    """Batches of split indices; batch ``b`` is a pure function of ``b`` (exact resumption).

    * With a ``stream`` (the replayed generalist examples): one pass is the stream cut into
      ``ceil(len / batch_size)`` consecutive batches (the last may be shorter); batch ``b`` is batch
      ``b mod passes`` of it.
    * Without: ``batch_size`` indices drawn uniformly (without replacement inside a batch) from
      ``numpy`` ``SeedSequence([seed, b, tag])``.

    ``trainer``: when given, every ``iter()`` starts at its live ``global_step`` (as the generalist's
    sampler does), so a resumed run continues with the batch an uninterrupted run would have used.
    """

    def __init__(self, n: int, batch_size: int, num_batches: int, seed: int, stream: Sequence[int] | None = None,
                 start_batch: int = 0, trainer=None):
        if batch_size < 1 or n < 1:
            raise ValueError(f"need batch_size >= 1 and a non-empty split, got {batch_size}, {n}")
        if stream is not None and len(stream) == 0:
            raise ValueError("the replayed stream is empty")
        self.n, self.batch_size, self.num_batches, self.seed = int(n), int(batch_size), int(num_batches), int(seed)
        self.stream = None if stream is None else [int(i) for i in stream]
        self.start_batch, self.trainer = int(start_batch), trainer

    @property
    def batches_per_pass(self) -> int | None:
        return None if self.stream is None else math.ceil(len(self.stream) / self.batch_size)

    def batch(self, b: int) -> list[int]:
        if self.stream is not None:
            j = b % self.batches_per_pass
            return self.stream[j * self.batch_size:(j + 1) * self.batch_size]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(b), _SAMPLER_TAG]))
        return [int(i) for i in rng.choice(self.n, size=self.batch_size, replace=self.batch_size > self.n)]

    def images_in(self, start: int, stop: int) -> int:
        """Images in batches ``start .. stop - 1``."""
        return sum(len(self.batch(b)) for b in range(start, stop))

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start_batch)

    def __iter__(self):
        if self.trainer is not None:
            self.start_batch = int(self.trainer.global_step)
        for b in range(self.start_batch, self.num_batches):
            yield self.batch(b)


class _SpecialistData(L.LightningDataModule):
    """Builds the DataLoader after a checkpoint is restored (so the sampler starts at its step)."""

    def __init__(self, examples: SpecialistExamples, sampler_kwargs: dict, num_workers: int):
        super().__init__()
        self.examples, self.sampler_kwargs, self.num_workers = examples, sampler_kwargs, num_workers

    def train_dataloader(self):
        sampler = SpecialistBatchSampler(**self.sampler_kwargs, trainer=self.trainer)
        return DataLoader(self.examples, batch_sampler=sampler, num_workers=self.num_workers,
                          pin_memory=torch.cuda.is_available())


# ============================================================================ training
class SpecialistModule(L.LightningModule):
    """Trains a :class:`Specialist` with its task loss; logs ``train/loss`` and ``train/loss_<part>``.

    Optimiser, LR warm-up and EMA are the generalist's (:class:`BananaModule`), so the comparison
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
        per_example, parts = self.model.loss(self.model(batch["image"]), batch["target"])
        loss = per_example.mean()
        if self._trainer is not None:
            size = batch["image"].shape[0]
            self.log("train/loss", loss, prog_bar=True, batch_size=size)
            for name, values in parts.items():
                if len(parts) > 1:
                    self.log(f"train/loss_{name}", values.detach().mean(), batch_size=size)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)      # EMA after the step, as BananaModule does (checkpoint order)
        if self.ema is not None:
            self.ema.update()

    # The generalist's optimiser and schedule, by construction (it only reads self.trainable and
    # self.config's learning_rate / weight_decay / warmup_steps).
    configure_optimizers = BananaModule.configure_optimizers

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["banana_specialist_config"] = self.config.to_dict()

    def export_weights(self) -> None:
        if self.ema is not None:
            self.ema.copy_to_model()


def read_specialist_config(run_dir: str | Path) -> SpecialistConfig:
    """The (resolved) :class:`SpecialistConfig` of a specialist run directory."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a specialist run")
    data = json.loads(path.read_text())
    if "specialist" not in data:
        raise ValueError(f"{run_dir} is a training run, not a specialist run (no 'specialist' record)")
    return SpecialistConfig.from_dict(data["specialist"])


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
    from banana.provenance import write_run_info
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

    stream = None
    if generalist is not None:
        _check_same_world(world_dir, generalist.world_dir)
        keys = replay_vision_stream(generalist, config.task, split=split)
        if not keys:
            raise ValueError(f"the generalist run {config.match_run} saw no {config.task} example: nothing to match")
        stream = [key.index for key in keys]
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
        diffs = [f"{k}: stored {'<GeneratorConfig>' if k == 'backbone' else v!r}, now "
                 f"{'<another GeneratorConfig>' if k == 'backbone' else now.get(k)!r}"
                 for k, v in old.items() if k not in RESUMABLE_CHANGES and now.get(k) != v]
        if diffs:
            raise ValueError(f"{run_dir} holds a specialist run with a different config, so it cannot be resumed ("
                             + "; ".join(diffs) + "). Use another run directory, or delete this one to restart.")
    model = Specialist.from_config(config)               # before any file: a bad init_from fails here
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"specialist": config.to_dict(), "backbone": backbone.to_dict(), "init": model.init_record}
    (run_dir / "config.json").write_text(json.dumps(record, indent=1) + "\n")
    if stream is not None:
        (run_dir / REPLAY_FILE).write_text(json.dumps(
            {"match_run": config.match_run, "task": config.task, "n_images": len(stream), "indices": stream}) + "\n")
    write_run_info(run_dir, {**record, "seed": config.seed, "resumed": resuming})

    L.seed_everything(config.seed, workers=True, verbose=False)   # from_config above left the global RNG alone
    module = SpecialistModule(model, config)
    sampler_kwargs = dict(n=len(split), batch_size=config.batch_size, num_batches=max_steps, seed=config.seed,
                          stream=stream)
    datamodule = _SpecialistData(SpecialistExamples(split, config.task), sampler_kwargs, config.num_workers)
    meter = ThroughputMeter()
    with keep_determinism_setting():
        trainer = make_trainer(run_dir, max_steps, config, [meter, *callbacks], progress)
        steps_done, start_step = _fit(trainer, module, datamodule, model, checkpoint, resuming, config, run_dir)

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
        "mean_loss_last_10pct": _mean_last(loss, steps_done),
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


# ============================================================================ no-pretraining control
def trainable_parameter_names(module: nn.Module) -> set[str]:
    """The names of the parameters that train.

    A training module (:class:`~banana.training.module.BananaModule`, :class:`SpecialistModule`):
    the keys of its ``trainable`` dict, i.e. exactly what its optimiser updates (names relative to
    the generator / specialist). Any other module (a generator after :func:`banana.adapters.add_lora`,
    a specialist): its parameters with ``requires_grad``. The control's claim "same trainable set
    as the generalist" is equality of this set (and so of its parameter count).
    """
    trainable = getattr(module, "trainable", None)
    if isinstance(trainable, Mapping):
        return set(trainable)
    return {name for name, p in module.named_parameters() if p.requires_grad}


def _base_generator_config(base) -> tuple[GeneratorConfig, str | None]:
    if isinstance(base, BananaGenerator):
        return base.config, None
    path = Path(base) / "generator_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {base} is not a saved BananaGenerator")
    return GeneratorConfig.from_dict(json.loads(path.read_text())), str(Path(base).resolve())


def _pretraining_seed(base_path: str | None) -> int | None:
    """The seed of the pretraining run that produced ``base_path`` (``<run>/model``), if it is one."""
    if base_path is None:
        return None
    try:
        train_config, _ = read_config(Path(base_path).parent)
    except (FileNotFoundError, ValueError, KeyError):
        return None
    return train_config.seed if train_config.stage == "pretrain" and train_config.base_model is None else None


def control_config(tune_config: TrainConfig, base=None, init_seed: int | None = None, tuning: str | None = None
                   ) -> tuple[TrainConfig, BananaGenerator]:
    """The no-generative-pretraining control of a tuning recipe: ``(config, fresh generator)``.

    The generator has the base's exact :class:`GeneratorConfig` (architecture, vocabulary,
    prediction type) but freshly initialised weights; the config is ``tune_config`` with
    ``base_model=None`` (and ``tuning`` when given), nothing else changed. Train it with the
    unchanged :func:`banana.training.train` (or use :func:`train_control`, which also saves the
    initial weights so the run can be reloaded and resumed).

    ``tuning``: ``None`` (default) keeps the generalist's own mode, so the control trains exactly
    its parameter set (LoRA on the random init for a LoRA generalist, every weight for a full one);
    ``"full"`` gives a LoRA generalist its fully tuned control (see the module docstring, 2.).

    ``base``: the pretrained base (directory or :class:`BananaGenerator`; default
    ``tune_config.base_model``; with neither, the ``tune_config.profile`` preset).
    ``init_seed``: the initial weights' seed. Default: the seed of the pretraining run that made
    ``base`` when ``base`` is a ``<run>/model`` directory of one, so the control starts from **the
    very weights pretraining started from** (control = base minus its pretraining); else
    ``tune_config.seed``. The caller's global torch RNG is left as it was.
    """
    if tune_config.stage != "tune":
        raise ValueError(f"the control replaces the base of a tuning run; got stage={tune_config.stage!r}")
    tuning = tune_config.tuning if tuning is None else tuning
    if tuning not in TUNINGS:
        raise ValueError(f"tuning must be None (the generalist's own, {tune_config.tuning!r}) or one of {TUNINGS}, "
                         f"got {tuning!r}")
    base = base if base is not None else tune_config.base_model
    if base is None:
        generator_config, base_path = GENERATOR_PRESETS[tune_config.profile], None
    else:
        generator_config, base_path = _base_generator_config(base)
    if init_seed is None:
        init_seed = _pretraining_seed(base_path)
    if init_seed is None:
        init_seed = tune_config.seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        generator = BananaGenerator(generator_config)
    return dataclasses.replace(tune_config, base_model=None, tuning=tuning), generator


def train_control(tune_config: TrainConfig, run_dir: str | Path, world_dir: str | Path | None = None, base=None,
                  init_seed: int | None = None, tuning: str | None = None, **train_kwargs) -> Path:
    """Train the no-pretraining control of ``tune_config`` in ``run_dir`` with :func:`banana.training.train`.

    The fresh generator of :func:`control_config` is saved to ``run_dir/init_model`` first and
    passed to ``train`` as the "base", so ``config.json`` records the random init as
    ``base_model`` (honest provenance), LoRA controls can be reloaded (``load_run``), and a resumed
    run finds the same starting point. ``control.json`` records the base it replaces, the seed and
    the tuning mode (``tuning`` / ``generalist_tuning``). ``tuning``: as in :func:`control_config`
    (``"full"``: the fully tuned control of a LoRA generalist; give it its own ``run_dir``).
    """
    run_dir = Path(run_dir)
    control, generator = control_config(tune_config, base=base, init_seed=init_seed, tuning=tuning)
    if (run_dir / "config.json").is_file():
        # checked before control.json is rewritten: train() would refuse to resume it anyway
        stored = read_config(run_dir)[0]           # (a non-training config.json fails here, not later)
        if stored.tuning != control.tuning:
            raise ValueError(f"{run_dir} holds a control with tuning={stored.tuning!r}, this one is "
                             f"tuning={control.tuning!r}: use another run directory")
    init_dir = run_dir / "init_model"
    if (init_dir / "generator_config.json").is_file():
        saved = BananaGenerator.from_pretrained(init_dir)
        same = saved.config == generator.config and all(
            torch.equal(a, b) for a, b in zip(saved.state_dict().values(), generator.state_dict().values()))
        if not same:
            raise ValueError(f"{init_dir} holds another initialisation than this control's: use another run directory")
    else:
        generator.save_pretrained(init_dir)
    replaced = base if base is not None else tune_config.base_model
    replaced_path = None if replaced is None or isinstance(replaced, BananaGenerator) else str(Path(replaced).resolve())
    if replaced_path is not None:
        _warn_if_untrained_base(replaced_path, generator)
    (run_dir / CONTROL_FILE).write_text(json.dumps(
        {"replaces_base": replaced_path, "init_seed": _resolved_seed(tune_config, replaced_path, init_seed),
         "init_model": str(init_dir.resolve()), "tuning": control.tuning, "generalist_tuning": tune_config.tuning},
        indent=1) + "\n")
    return train(control, run_dir, generator=init_dir, world_dir=world_dir, **train_kwargs)


def _resolved_seed(tune_config: TrainConfig, base_path: str | None, init_seed: int | None) -> int:
    if init_seed is not None:
        return init_seed
    seed = _pretraining_seed(base_path)
    return tune_config.seed if seed is None else seed


def _warn_if_untrained_base(base_path: str, generator: BananaGenerator) -> None:
    """A control identical to its base means the base was never trained (or the seeds collide)."""
    from safetensors.torch import load_file

    weights = Path(base_path) / "unet" / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        return
    stored = load_file(str(weights))
    current = generator.unet.state_dict()
    if stored.keys() == current.keys() and all(torch.equal(stored[k], current[k]) for k in stored):
        warnings.warn(f"the control's initial weights equal the base at {base_path}: the base looks untrained, so "
                      "this control isolates nothing (pass init_seed= to draw other weights)", stacklevel=3)

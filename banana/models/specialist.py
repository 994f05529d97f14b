"""The task specialist's model: the generator's UNet with an image-only input and a task head.

:class:`Specialist` keeps every block, width and attention level of the generator's UNet (only the
first and last convolutions differ), reads a fixed timestep 0 and a small learned constant text
state (:data:`NULL_TOKENS` tokens: a specialist has no prompt) and predicts with a task head of
:func:`head_channels` channels trained by :func:`specialist_loss`. It saves as
``specialist_config.json`` + ``model.safetensors``. The design choices, and how a specialist is
trained on exactly the generalist's examples, are in :mod:`banana.baselines`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from banana.models.config import GeneratorConfig
from banana.models.io import load_tensors, read_model_config, save_model_folder
from banana.models.pixel import BananaGenerator, build_unet
from banana.models.text import InstructionEncoder, InstructionTokenizer
from banana.tasks import ALL_TASKS, QUERY_TASKS

__all__ = ["Specialist", "specialist_loss", "head_channels", "NULL_TOKENS", "IGNORE_INDEX", "MODEL_FILE",
           "MODEL_CONFIG_FILE"]

#: Length of the learned constant "text" the specialist's cross-attention reads (it has no prompt).
NULL_TOKENS = 4
#: Segmentation label that the loss ignores (the convention of the metrics and the codecs).
IGNORE_INDEX = 255
#: The predicted log depth is clamped to [1 mm, 10 km] before exp(): an untrained head can neither
#: overflow nor predict 0 m (the metrics divide by depth).
MIN_LOG_DEPTH, MAX_LOG_DEPTH = math.log(1e-3), math.log(1e4)
MODEL_FILE, MODEL_CONFIG_FILE = "model.safetensors", "specialist_config.json"


def _num_classes() -> int:
    from banana.world import CLASS_NAMES

    return len(CLASS_NAMES)


def head_channels(task: str) -> int:
    """Output channels of the task head: K logits / log depth + sky logit / a 3-vector / the
    instance codec's RGB (its colours regressed, decoded by clustering) / one referred-mask logit."""
    if task not in ALL_TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {ALL_TASKS}")
    return {"segmentation": _num_classes(), "depth": 2, "normals": 3, "instance": 3, "referring": 1}[task]


class Specialist(nn.Module):
    """The generator's UNet with an image-only input and a task head (see :mod:`banana.baselines`).

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
        #: A query-task specialist must read its class or expression: it gets the generalist's
        #: tokenizer and text encoder (same vocabulary and architecture) instead of a constant state.
        self.reads_prompt = task in QUERY_TASKS
        if self.reads_prompt:
            self.tokenizer = InstructionTokenizer(backbone.vocabulary, backbone.max_tokens)
            self.text_encoder = InstructionEncoder(vocab_size=self.tokenizer.vocab_size, dim=backbone.text_dim,
                                                   layers=backbone.text_layers, heads=backbone.text_heads,
                                                   max_tokens=backbone.max_tokens)
        #: How the weights were initialised (set by :meth:`from_config`; ``None``: not recorded, e.g.
        #: after :meth:`from_pretrained`, whose weights are the trained ones anyway).
        self.init_record: dict | None = None

    @classmethod
    def from_config(cls, config) -> "Specialist":
        """A fresh specialist for ``config`` (a :class:`~banana.baselines.SpecialistConfig`);
        ``config.seed`` fixes its initial weights (the caller's global torch RNG is left as it was). With ``config.init_from`` the UNet is then overwritten
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
        if self.reads_prompt:        # the same text encoder, so it reads prompts as the base learned to
            self.text_encoder.load_state_dict(base.text_encoder.state_dict())
            copied.append("text_encoder")
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

    def forward(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        batch = images.shape[0]
        timesteps = torch.zeros(batch, dtype=torch.long, device=images.device)
        if self.reads_prompt:
            if prompts is None or len(prompts) != batch:
                raise ValueError(f"a {self.task} specialist reads one prompt per image: got "
                                 f"{None if prompts is None else len(prompts)} for {batch} images")
            tokens = {k: v.to(images.device) for k, v in self.tokenizer(list(prompts)).items()}
            states = self.text_encoder(**tokens).to(images.dtype)
            return self.unet(images, timesteps, encoder_hidden_states=states,
                             encoder_attention_mask=tokens["attention_mask"]).sample
        if prompts is not None:
            raise ValueError(f"a {self.task} specialist reads no prompt")
        states = self.text_state.expand(batch, -1, -1).to(images.dtype)
        return self.unet(images, timesteps, encoder_hidden_states=states).sample

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-example task loss ``[B]`` and its named parts (each ``[B]``); see :func:`specialist_loss`."""
        return specialist_loss(self.task, outputs, target)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """Raw head outputs -> labels int64 ``[B, H, W]`` / metres float32 ``[B, H, W]`` (``inf`` =
        sky) / unit normals float32 ``[B, 3, H, W]``."""
        outputs = outputs.float()
        if self.task == "instance":      # the generalist's decoder, on the regressed colours
            from banana.tasks import decode_prediction

            return decode_prediction("instance", outputs.sigmoid())
        if self.task == "referring":
            return outputs[:, 0] > 0
        if self.task == "segmentation":
            return outputs.argmax(dim=1)
        if self.task == "depth":
            metres = outputs[:, 0].clamp(MIN_LOG_DEPTH, MAX_LOG_DEPTH).exp()
            return metres.masked_fill(outputs[:, 1] > 0, math.inf)
        return F.normalize(outputs, dim=1, eps=1e-8)

    @torch.no_grad()
    def predict(self, images, prompts: Sequence[str] | None = None, max_batch: int = 256) -> torch.Tensor:
        """Images (uint8 0..255 or float in [0, 1], ``[B, 3, H, W]`` or ``[3, H, W]``, validated like
        the pipeline's) -> the prediction, on the model's device. A query-task specialist takes
        one prompt per image (:func:`banana.tasks.task_prompt` with the query)."""
        from banana.models.images import prepare_images, to_model_range

        images = to_model_range(prepare_images(images, self.resolution).to(self.device))
        chunks = [(lo, images[lo:lo + max_batch]) for lo in range(0, len(images), max_batch)]
        return torch.cat([self.decode(self(chunk, None if prompts is None else list(prompts)[lo:lo + len(chunk)]))
                          for lo, chunk in chunks])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- persistence: one safetensors file + the config that rebuilds the architecture
    def save_pretrained(self, directory: str | Path) -> Path:
        """``specialist_config.json`` (task + backbone GeneratorConfig) and ``model.safetensors``."""
        record = {"task": self.task, "backbone": self.backbone.to_dict(), "null_tokens": NULL_TOKENS}
        return save_model_folder(directory, MODEL_CONFIG_FILE, record, tensors={MODEL_FILE: self.state_dict()},
                                 newline=True)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "Specialist":
        record = read_model_config(directory, MODEL_CONFIG_FILE, "Specialist")
        if record.get("null_tokens", NULL_TOKENS) != NULL_TOKENS:
            raise ValueError(f"{directory} was saved with {record['null_tokens']} null tokens, this banana uses "
                             f"{NULL_TOKENS}")
        model = cls(record["task"], GeneratorConfig.from_dict(record["backbone"]))
        model.load_state_dict(load_tensors(directory, MODEL_FILE))
        return model.eval()


def specialist_loss(task: str, outputs: torch.Tensor, target: torch.Tensor
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-example loss ``[B]`` (mean over each example's valid pixels) and its parts.

    * segmentation: cross-entropy, pixels labelled :data:`IGNORE_INDEX` left out.
    * depth: ``|log d_pred - log d|`` over finite positive target pixels (``log_l1``) + BCE of the
      sky logit against ``isinf(d)`` over all pixels (``sky``).
    * normals: ``1 - cos`` over pixels whose target has norm > 0.5 (``angular``).
    * instance: L1 between the sigmoid of the head and the instance codec's RGB target ``[B, 3, H, W]``
      in [0, 1] (``l1``).
    * referring: BCE of the logit against the referred mask ``[B, H, W]`` (``bce``).

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
    if task == "instance":
        l1 = (outputs.sigmoid() - target.float()).abs().flatten(1).mean(1)
        return l1, {"l1": l1}
    if task == "referring":
        bce = F.binary_cross_entropy_with_logits(outputs[:, 0], target.float(), reduction="none").flatten(1).mean(1)
        return bce, {"bce": bce}
    raise ValueError(f"unknown task {task!r}; choose from {ALL_TASKS}")

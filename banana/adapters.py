"""LoRA adapters for instruction tuning: add them, save them, load them back exactly.

Why
---
Instruction tuning only has to teach the generator a few new "words" (the task prompts, palettes
given as numbers) and a new use of its condition input. Low-rank adapters (LoRA) on the
attention projections do that with a small fraction of the weights, leave the base generator
untouched (so generation can be compared with, and fall back to, the base), and give a file of a
few hundred kB that users can pass around. Users of Vision Banana-like methods ask for exactly
this, and for adapters that reload bit-for-bit across sessions; this module is that contract.

What trains in LoRA mode (see :func:`add_lora`)
-----------------------------------------------
* LoRA matrices (rank ``r``, ``lora_alpha = r`` so the scale is 1) on every UNet module whose
  name ends in one of ``targets`` (default the attention projections ``to_q``, ``to_k``, ``to_v``,
  ``to_out.0``, in self- and cross-attention). ``B`` starts at zero, so the adapted model starts
  exactly equal to the base.
* ``unet.conv_in``: the input convolution that reads the conditioning image. In pure generation
  the condition is always zeros, so these weights never learned to use it.
* The whole instruction encoder (``generator.text_encoder``, small): new prompts (palettes as
  numbers, task names) must be *read*, which a frozen encoder cannot learn to do.

Everything else in the UNet is frozen. :func:`trainable_parameters` lists exactly what trains.

Files written by :func:`save_adapter`
-------------------------------------
``adapter.safetensors`` holds three groups of tensors with prefixes ``lora.`` (peft's
adapter-name-free keys from ``get_peft_model_state_dict``, the format diffusers uses),
``conv_in.`` and ``text_encoder.``. ``adapter_config.json`` holds the LoRA settings, the
:class:`~banana.models.GeneratorConfig`, a fingerprint of the frozen base weights (so loading
onto the wrong base is an error, not a silent mismatch), the codec settings the prompts and
targets were made with, and any caller metadata (e.g. the base model path).

A latent generator (:mod:`banana.models.latent`) writes its adapter in the diffusers LoRA format instead
(``pytorch_lora_weights.safetensors`` + ``conv_in.safetensors`` + ``adapter_config.json`` with
``format_version`` 2); :func:`save_adapter` / :func:`load_adapter` dispatch to it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

__all__ = ["DEFAULT_LORA_TARGETS", "ADAPTER_WEIGHTS", "ADAPTER_CONFIG", "add_lora", "has_lora",
           "trainable_parameters", "base_fingerprint", "codec_settings", "save_adapter", "load_adapter",
           "read_adapter_config"]

DEFAULT_LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_NAME = "default"
ADAPTER_FORMAT = "banana-adapter"
_FORMAT = ADAPTER_FORMAT     # the old private name, for callers not yet updated
_FORMAT_VERSION = 1          # what save_adapter writes for pixel generators
_READABLE_VERSION = 2        # 2: a latent generator's diffusers-format adapter (banana.models.latent)


def has_lora(generator) -> bool:
    """Whether the generator's UNet carries a (peft) LoRA adapter."""
    return bool(getattr(generator.unet, "_hf_peft_config_loaded", False)) and bool(
        getattr(generator.unet, "peft_config", {}))


def add_lora(generator, rank: int = 8, targets: Sequence[str] = DEFAULT_LORA_TARGETS,
             init: str | bool = "gaussian"):
    """Add LoRA (rank ``rank``, alpha = rank) to ``generator.unet`` and set what trains.

    After this call exactly these parameters have ``requires_grad=True``: the LoRA matrices,
    ``unet.conv_in`` and the whole ``text_encoder``. Modifies ``generator`` in place and returns it.
    """
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if has_lora(generator):
        raise ValueError("the generator already has a LoRA adapter")
    targets = list(targets)
    if not targets:
        raise ValueError("LoRA needs at least one target module name")
    generator.unet.add_adapter(LoraConfig(r=int(rank), lora_alpha=int(rank), target_modules=targets,
                                          init_lora_weights=init, lora_dropout=0.0),
                               adapter_name=ADAPTER_NAME)   # freezes every base UNet weight
    generator.unet.conv_in.requires_grad_(True)
    # A latent generator (banana.models.latent) keeps its CLIP text encoder frozen unless configured otherwise.
    generator.text_encoder.requires_grad_(bool(getattr(generator, "lora_trains_text_encoder", True)))
    return generator


def trainable_parameters(generator) -> dict[str, torch.nn.Parameter]:
    """Name -> parameter for everything with ``requires_grad`` (what the optimizer updates)."""
    return {name: p for name, p in generator.named_parameters() if p.requires_grad}


def _is_adapter_owned(name: str) -> bool:
    """UNet parameter names that an adapter file replaces (LoRA matrices and conv_in)."""
    return ".lora_" in name or name.startswith("conv_in.")


def base_fingerprint(generator) -> str:
    """SHA-256 over the frozen base UNet weights (every UNet weight an adapter does not replace).

    Computed the same way on a plain base and on a LoRA-adapted one (peft's ``.base_layer``
    renaming is undone), so it identifies the base an adapter was trained on.
    """
    digest = hashlib.sha256()
    state = generator.unet.state_dict()
    for name in sorted(state, key=lambda n: n.replace(".base_layer", "")):
        if _is_adapter_owned(name):
            continue
        tensor = state[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(name.replace(".base_layer", "").encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def codec_settings(random_palette_prob: float | None = None, depth_codec: str = "metric") -> dict[str, Any]:
    """How the training prompts and targets were made (what a user of the adapter must match)."""
    from banana.tasks import DEPTH_PROMPTS, NORMALS_PROMPTS, SEGMENTATION_PROMPT_STYLES, TASKS
    from banana.tasks import depth_codec as make_depth_codec
    from banana.world import CANONICAL_PALETTE, CLASS_NAMES

    depth = make_depth_codec(depth_codec)
    return {
        "tasks": list(TASKS),
        "segmentation": {"class_names": list(CLASS_NAMES),
                         "canonical_palette": {k: list(v) for k, v in CANONICAL_PALETTE.items()},
                         "random_palette_prob": random_palette_prob,
                         "prompt_styles": list(SEGMENTATION_PROMPT_STYLES)},
        "depth": {"codec": depth_codec, "warp": depth.warp, "colormap": depth.colormap, "prompts": list(DEPTH_PROMPTS)},
        "normals": {"convention": "camera space, +x right, +y up, +z toward the viewer; "
                                  "R = (1 - x) / 2, G = (1 + y) / 2, B = (1 + z) / 2",
                    "prompts": list(NORMALS_PROMPTS)},
        "image_range": "model space [-1, 1] = 2 * rgb - 1",
    }


def save_adapter(generator, directory: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``adapter.safetensors`` + ``adapter_config.json`` for a LoRA-adapted generator.

    ``metadata`` (JSON-able: e.g. ``{"base_model": "...", "codecs": codec_settings(0.5)}``) is
    stored under ``"metadata"``; ``codecs`` defaults to :func:`codec_settings`. Tensors are
    saved as they are in the generator now (the training run swaps the EMA weights in first).
    """
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from banana.provenance import jsonable

    if not has_lora(generator):
        raise ValueError("the generator has no LoRA adapter: call add_lora first (or save_pretrained "
                         "for a fully tuned generator)")
    if hasattr(generator, "save_adapter"):   # a latent generator writes the diffusers LoRA format
        return generator.save_adapter(directory, metadata)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    unet = generator.unet
    tensors: dict[str, torch.Tensor] = {}
    lora_state = get_peft_model_state_dict(unet, adapter_name=ADAPTER_NAME)
    tensors.update({f"lora.{k}": v for k, v in lora_state.items()})
    tensors.update({f"conv_in.{k}": v for k, v in unet.conv_in.state_dict().items()})
    tensors.update({f"text_encoder.{k}": v for k, v in generator.text_encoder.state_dict().items()})
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_file(tensors, str(directory / ADAPTER_WEIGHTS), metadata={"format": ADAPTER_FORMAT})

    peft_config = unet.peft_config[ADAPTER_NAME]
    metadata = dict(metadata or {})
    metadata.setdefault("codecs", codec_settings())
    record = {
        "format": ADAPTER_FORMAT, "format_version": _FORMAT_VERSION,
        "rank": int(peft_config.r), "alpha": int(peft_config.lora_alpha),
        "targets": sorted(peft_config.target_modules), "init": peft_config.init_lora_weights,
        "trains": ["lora", "unet.conv_in", "text_encoder"],
        "base_fingerprint": base_fingerprint(generator),
        "generator_config": generator.config.to_dict(),
        "num_tensors": {"lora": len(lora_state), "total": len(tensors)},
        "metadata": jsonable(metadata),
    }
    (directory / ADAPTER_CONFIG).write_text(json.dumps(record, indent=1) + "\n")
    return directory


def read_adapter_config(directory: str | Path) -> dict[str, Any]:
    """The ``adapter_config.json`` of a saved adapter (FileNotFoundError if there is none)."""
    path = Path(directory) / ADAPTER_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a saved banana adapter (needs {ADAPTER_CONFIG} "
                                f"and {ADAPTER_WEIGHTS})")
    record = json.loads(path.read_text())
    if record.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{path} is not a banana adapter (format {record.get('format')!r})")
    if record.get("format_version", 0) > _READABLE_VERSION:
        raise ValueError(f"{path} has format_version {record['format_version']}; this banana reads "
                         f"<= {_READABLE_VERSION}. Upgrade banana.")
    # version 2 (latent generators): diffusers LoRA files named in "files"; version 1: adapter.safetensors
    weights = list(record.get("files", {}).values()) or [ADAPTER_WEIGHTS]
    missing = [name for name in weights if not (Path(directory) / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a complete banana adapter (missing {', '.join(missing)})")
    return record


def load_adapter(base_generator, directory: str | Path, check_base: bool = True):
    """Add the saved adapter to ``base_generator`` (in place) and return it, in eval mode.

    Reproduces the saved generator's outputs exactly: the LoRA layers are rebuilt with the saved
    rank/targets and every adapter tensor is copied in bit for bit. Raises ``ValueError`` if the
    base's :class:`GeneratorConfig` differs, or (``check_base=True``) if its frozen weights are not
    the ones the adapter was trained on.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from banana.models.config import GeneratorConfig

    if hasattr(base_generator, "load_adapter"):   # a latent generator reads the diffusers LoRA format
        return base_generator.load_adapter(directory, check_base=check_base)
    directory = Path(directory)
    record = read_adapter_config(directory)
    if record.get("weights_format", "banana") != "banana":
        raise ValueError(f"{directory} holds a latent generator's adapter ({record['weights_format']}); load it "
                         "onto a banana.models.latent.LatentGenerator")
    saved_config = GeneratorConfig.from_dict(record["generator_config"])
    if saved_config != base_generator.config:
        diffs = [k for k, v in saved_config.to_dict().items() if base_generator.config.to_dict().get(k) != v]
        raise ValueError(f"the adapter in {directory} was trained on a generator with a different config "
                         f"(fields differ: {diffs})")
    if check_base:
        fingerprint = base_fingerprint(base_generator)
        if fingerprint != record["base_fingerprint"]:
            raise ValueError(f"the base generator's weights are not the ones the adapter in {directory} was "
                             f"trained on (fingerprint {fingerprint[:12]} != {record['base_fingerprint'][:12]}); "
                             f"base model recorded: {record['metadata'].get('base_model')!r}. "
                             "Pass check_base=False to load anyway.")
    tensors = load_file(str(directory / ADAPTER_WEIGHTS))
    groups: dict[str, dict[str, torch.Tensor]] = {"lora": {}, "conv_in": {}, "text_encoder": {}}
    for key, value in tensors.items():
        prefix, _, rest = key.partition(".")
        if prefix not in groups:
            raise ValueError(f"unexpected tensor {key!r} in {directory / ADAPTER_WEIGHTS}")
        groups[prefix][rest] = value

    add_lora(base_generator, rank=record["rank"], targets=record["targets"], init=record.get("init", "gaussian"))
    device = base_generator.device
    result = set_peft_model_state_dict(base_generator.unet, {k: v.to(device) for k, v in groups["lora"].items()},
                                       adapter_name=ADAPTER_NAME)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing_lora = [k for k in (getattr(result, "missing_keys", []) or []) if ".lora_" in k]
    if unexpected or missing_lora:
        raise ValueError(f"adapter tensors do not match the LoRA layers: unexpected {unexpected[:5]}, "
                         f"missing {missing_lora[:5]}")
    base_generator.unet.conv_in.load_state_dict(groups["conv_in"], strict=True)
    base_generator.text_encoder.load_state_dict(groups["text_encoder"], strict=True)
    return base_generator.eval()

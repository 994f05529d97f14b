"""Stable-Diffusion-family checkpoints on disk: is a folder complete (:func:`check_sd_checkpoint`),
widen a UNet's ``conv_in`` for a condition input (:func:`widen_conv_in`), load a VAE alone
(:func:`load_vae`). Used by :class:`banana.models.latent.LatentGenerator`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

_COMPONENTS = {"unet": "config.json", "vae": "config.json", "text_encoder": "config.json",
               "tokenizer": None, "scheduler": "scheduler_config.json"}


def check_sd_checkpoint(directory: str | Path) -> Path:
    """Raise a clear error unless ``directory`` holds every component a LatentGenerator needs."""
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"SD checkpoint directory {directory} does not exist")
    if not directory.is_dir():
        raise NotADirectoryError(f"SD checkpoint {directory} is not a directory")
    if (directory / "text_encoder_2").is_dir() or (directory / "transformer").is_dir():
        raise ValueError(f"{directory} looks like an SDXL / DiT checkpoint (text_encoder_2/ or transformer/): "
                         "LatentGenerator supports SD 1.x / 2.x-style UNet checkpoints only")
    missing = []
    for name, config_file in _COMPONENTS.items():
        folder = directory / name
        if not folder.is_dir():
            missing.append(f"{name}/")
        elif config_file is not None and not (folder / config_file).is_file():
            missing.append(f"{name}/{config_file}")
        elif name == "tokenizer" and not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
                                          or (folder / "tokenizer.json").is_file()):
            missing.append("tokenizer/vocab.json + merges.txt (or tokenizer.json)")
    if missing:
        raise FileNotFoundError(f"{directory} is not a complete Stable-Diffusion-family checkpoint: missing "
                                f"{', '.join(missing)}. Expected the layout StableDiffusionPipeline.save_pretrained "
                                "writes: unet/, vae/, text_encoder/, tokenizer/, scheduler/ (+ model_index.json)")
    unet_class = json.loads((directory / "unet" / "config.json").read_text()).get("_class_name")
    if unet_class not in (None, "UNet2DConditionModel"):
        raise ValueError(f"{directory}/unet is a {unet_class}, not a UNet2DConditionModel")
    return directory


def widen_conv_in(unet, channels: int, init: str = "zeros") -> None:
    """Widen ``unet.conv_in`` (in place) from ``channels`` to ``2 * channels`` inputs.

    ``"zeros"``: old weights on the first half, zeros on the second (the UNet's output is
    unchanged for any condition). ``"copy-half"``: ``w / 2`` on both halves (Marigold). The
    bias is kept; ``unet.config.in_channels`` is updated so ``save_pretrained`` round-trips.
    """
    old = unet.conv_in
    if old.in_channels != channels:
        raise ValueError(f"conv_in has {old.in_channels} input channels, expected {channels}")
    new = nn.Conv2d(2 * channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        if init == "zeros":
            new.weight.zero_()
            new.weight[:, :channels].copy_(old.weight)
        elif init == "copy-half":
            new.weight.copy_(torch.cat([old.weight, old.weight], dim=1) * 0.5)
        else:
            raise ValueError(f"conv_in init must be 'zeros' or 'copy-half', got {init!r}")
        if old.bias is not None:
            new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=2 * channels)


def load_vae(directory: str | Path, torch_dtype: torch.dtype | None = None):
    """An ``AutoencoderKL`` from a VAE folder (``config.json`` + weights), an SD-family checkpoint
    (its ``vae/``) or a saved LatentGenerator (its ``vae/``)."""
    from diffusers import AutoencoderKL

    directory = Path(directory)
    folder = directory / "vae" if (directory / "vae" / "config.json").is_file() else directory
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no VAE at {directory}: expected config.json there or in {directory}/vae/")
    kwargs = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    return AutoencoderKL.from_pretrained(folder, **kwargs).eval()

"""The one conversion between images as users hold them and images as the models see them.

Outside a model an image is RGB in [0, 1] (or ``uint8`` 0..255); inside it lives in [-1, 1],
``2 * rgb - 1``. Every path (training data, specialists' data, sampling conditions, the VAE
ceiling) converts with :func:`to_model_range` and back with :func:`from_model_range`, and
validates what a caller passes with :func:`prepare_images`.

``uint8`` is divided by 255 (``x / 255 * 2 - 1``). Before this module the training data used
``x * (2/255) - 1``, which differs from the pipeline's ``x / 255 * 2 - 1`` by one float32 ulp on
111 of the 256 levels: the models were trained on marginally different inputs than they were
sampled with. Now both are the same bits.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["UINT8_MAX", "to_unit_range", "to_model_range", "from_model_range", "prepare_images"]

#: 8-bit images are divided by this to land in [0, 1].
UINT8_MAX = 255.0


def to_unit_range(images) -> torch.Tensor:
    """``uint8`` 0..255 (tensor or array) -> float32 in [0, 1]."""
    images = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if images.dtype != torch.uint8:
        raise ValueError(f"to_unit_range takes uint8 images (0..255), got dtype {images.dtype}")
    return images.float() / UINT8_MAX


def to_model_range(images) -> torch.Tensor:
    """RGB -> the model's [-1, 1]: ``uint8`` 0..255 or floating point in [0, 1] (tensor or array)."""
    images = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if images.dtype == torch.uint8:
        images = to_unit_range(images)
    elif not images.is_floating_point():
        raise ValueError(f"images must be uint8 (0..255) or floating point in [0, 1], got dtype {images.dtype}")
    return images * 2.0 - 1.0


def from_model_range(images: torch.Tensor) -> torch.Tensor:
    """The model's [-1, 1] -> float RGB in [0, 1] (not clamped: callers clamp where they need to)."""
    return (images.float() + 1.0) / 2.0


def prepare_images(images, resolution: int) -> torch.Tensor:
    """Any accepted image input -> float32 ``[B, 3, H, W]`` in [0, 1] (CPU or its device).

    Accepted: torch tensors or numpy arrays, ``uint8`` (0..255) or floating point in [0, 1],
    ``[B, 3, H, W]`` or one image ``[3, H, W]``. Anything else is refused loudly: a float image
    in 0..255, a channel-last array or a NaN would otherwise become a plausible-looking but
    meaningless condition, and the model's answer would be silently wrong.
    """
    if isinstance(images, np.ndarray):
        if images.dtype == object:
            raise ValueError("images must be a numeric array, got dtype=object")
        images = torch.from_numpy(np.ascontiguousarray(images))
    elif not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor or numpy.ndarray [B, 3, H, W], got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(0)                    # one image -> a batch of one
    if images.ndim != 4 or images.shape[1] != 3:
        hint = (" (it looks channel-last: use .permute(0, 3, 1, 2) / np.moveaxis(x, -1, 1))"
                if images.ndim in (3, 4) and images.shape[-1] == 3 else "")
        raise ValueError(f"images must have shape [B, 3, H, W] (or [3, H, W]), got {tuple(images.shape)}{hint}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0)")
    if tuple(images.shape[-2:]) != (resolution, resolution):
        raise ValueError(f"images must be {resolution}x{resolution} (the generator's resolution), got "
                         f"{images.shape[-2]}x{images.shape[-1]}; resize them first")
    if images.dtype == torch.uint8:
        return to_unit_range(images)
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 (0..255) or floating point in [0, 1], got dtype {images.dtype}")
    images = images.float()
    if torch.isnan(images).any():
        raise ValueError("images contain NaN")
    low, high = float(images.min()), float(images.max())
    if low < -1e-6 or high > 1 + 1e-6:               # tolerate resampling overshoot of a few ulps
        hint = " (looks like 0..255: divide by 255 or pass uint8)" if high > 1.5 else ""
        raise ValueError(f"float images must have values in [0, 1], got min {low:.4g}, max {high:.4g}{hint}")
    return images.clamp(0.0, 1.0)

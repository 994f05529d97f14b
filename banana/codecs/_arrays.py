"""Shared input handling for the task-as-image codecs.

Every codec accepts either a ``torch.Tensor`` or a ``numpy.ndarray`` and hands
back the same kind it was given (numpy in -> numpy out; torch in -> torch out,
on the input's device). The arithmetic itself is always done in torch, so the
helpers here do three small jobs:

1. :func:`as_tensor` turns the input into a tensor and remembers where it came
   from; :func:`like_input` turns a result back.
2. ``check_*`` functions validate inputs and raise ``ValueError`` with a
   message that names the problem *and* the offending thing (a count, a shape,
   a value). Failing loudly here is deliberate: a codec that silently decodes a
   NaN or a 4-channel image produces plausible-looking but wrong metrics later.
3. :func:`quantize`, the one public helper: it simulates saving an RGB image as
   an 8-bit PNG, which is what a real image generator's output goes through.

Image layout convention, used by all codecs: RGB images are channel-first,
``[..., 3, H, W]``, with any number (including zero) of leading batch dims.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, TypeVar, Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray]
A = TypeVar("A", torch.Tensor, np.ndarray)

#: Tolerance for RGB values slightly outside [0, 1]. Float images that went
#: through resampling or colour conversion overshoot by a few ulps; anything
#: beyond this is a real bug (e.g. an image in 0..255 passed by mistake).
RGB_TOLERANCE = 1e-6


# --------------------------------------------------------------------------
# numpy <-> torch
# --------------------------------------------------------------------------
def as_tensor(x: Any, name: str) -> tuple[torch.Tensor, bool]:
    """Return ``(tensor, was_numpy)`` for a tensor or ndarray input.

    numpy arrays are wrapped without a copy when possible. Unsigned integer
    types wider than 8 bits are widened to int64 first because torch supports
    only a handful of operations on them.
    """
    if isinstance(x, torch.Tensor):
        return x, False
    if isinstance(x, np.ndarray):
        if x.dtype.kind == "u" and x.dtype.itemsize > 1:
            x = x.astype(np.int64)
        if not x.dtype.isnative:  # big-endian data from some file formats
            x = x.astype(x.dtype.newbyteorder("="))
        return torch.from_numpy(np.ascontiguousarray(x)), True
    raise TypeError(
        f"{name} must be a torch.Tensor or numpy.ndarray; got {type(x).__name__}"
    )


def like_input(t: torch.Tensor, was_numpy: bool) -> ArrayLike:
    """Convert a result back to the kind of array the caller passed in."""
    if was_numpy:
        return t.detach().cpu().numpy()
    return t


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------
def dtype_name(t: torch.Tensor) -> str:
    """``"float32"`` rather than ``"torch.float32"``: reads the same for numpy users."""
    return str(t.dtype).removeprefix("torch.")


def check_no_nan(t: torch.Tensor, name: str) -> None:
    """Raise if ``t`` (floating point) contains NaN; the message gives the count."""
    if t.is_floating_point():
        n_nan = int(torch.isnan(t).sum())
        if n_nan:
            raise ValueError(
                f"{name} contains {n_nan} NaN value(s) out of {t.numel()}"
            )


def check_float(t: torch.Tensor, name: str) -> None:
    """Raise unless ``t`` has a floating-point dtype."""
    if not t.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point array; got dtype {dtype_name(t)}"
        )


def check_channels(t: torch.Tensor, name: str, channels: int = 3) -> None:
    """Raise unless ``t`` is channel-first ``[..., channels, H, W]``."""
    if t.ndim < 3 or t.shape[-3] != channels:
        raise ValueError(
            f"{name} must have shape [..., {channels}, H, W] "
            f"({channels} channels at dim -3); got shape {tuple(t.shape)}"
        )


def check_min_ndim(t: torch.Tensor, name: str, ndim: int, layout: str) -> None:
    """Raise unless ``t`` has at least ``ndim`` dims (e.g. ``[..., H, W]``)."""
    if t.ndim < ndim:
        raise ValueError(
            f"{name} must have shape {layout}; got shape {tuple(t.shape)}"
        )


def _range_error(lo: float, hi: float, name: str, tol: float) -> None:
    if lo < -tol or hi > 1.0 + tol:
        hint = " (an image in 0..255? divide by 255)" if hi > 1.5 else ""
        raise ValueError(
            f"{name} values must lie in [0, 1]; got min {lo:.6g}, max {hi:.6g}{hint}"
        )


def check_unit_range(t: torch.Tensor, name: str, tol: float = RGB_TOLERANCE) -> None:
    """Raise unless every value of ``t`` lies in ``[0, 1]`` (within ``tol``)."""
    if t.numel() == 0:
        return
    lo, hi = torch.aminmax(t)
    _range_error(float(lo), float(hi), name, tol)


def check_rgb_image(rgb: torch.Tensor, name: str = "rgb") -> torch.Tensor:
    """Validate an RGB image for decoding and return it as float, clamped.

    Checks: floating dtype, ``[..., 3, H, W]`` layout, no NaN, values in
    ``[0, 1]`` up to :data:`RGB_TOLERANCE`. The tiny tolerated overshoot is then
    clamped away so decoders can assume exact bounds. One pass finds min and
    max (NaN shows up in both, and only then are NaNs counted); an image already
    inside ``[0, 1]`` is returned as is, not copied, so callers must not modify
    the result in place.
    """
    check_float(rgb, name)
    check_channels(rgb, name)
    if rgb.numel() == 0:
        return rgb
    lo_t, hi_t = torch.aminmax(rgb)
    lo, hi = float(lo_t), float(hi_t)
    if math.isnan(lo) or math.isnan(hi):
        check_no_nan(rgb, name)
    _range_error(lo, hi, name, RGB_TOLERANCE)
    if lo < 0.0 or hi > 1.0:
        return rgb.clamp(0.0, 1.0)
    return rgb


# --------------------------------------------------------------------------
# Chunking
# --------------------------------------------------------------------------
def row_chunks(n_rows: int, cols: int, budget: int = 1 << 22) -> Iterator[slice]:
    """Yield slices over ``n_rows`` so that ``rows * cols <= budget``.

    Nearest-colour decoding builds an ``[N, K]`` distance matrix; chunking the
    N pixels keeps peak memory bounded (about ``budget`` elements) no matter
    how large the batch is.
    """
    step = max(1, budget // max(1, cols))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


# --------------------------------------------------------------------------
# Decode each distinct colour once
# --------------------------------------------------------------------------
#: Below this many pixels, the direct computation is cheaper than finding the
#: distinct colours first.
MIN_PIXELS_FOR_DEDUPE = 4096

#: How far (in 0..255 units) a value may sit from an integer level and still
#: count as 8-bit: covers float32 rounding of k/255, nothing more.
_LATTICE_TOLERANCE = 1e-3


def lattice_levels(values: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """``round(values * 255)`` (same dtype and shape) if every value is within
    :data:`_LATTICE_TOLERANCE` of an 8-bit level, else ``None``.

    The same test as :func:`unique_8bit_colors`, done elementwise in ``values``' dtype (so it
    decides exactly as that function does on the same values), without the pixel layout and
    with an early exit: the first few thousand values usually settle a float image. ``dtype``:
    compute in this dtype instead (the depth decoders test float64 values).
    """
    dtype = dtype or values.dtype
    flat = values.reshape(-1)
    head = flat[:4096].to(dtype) * 255.0
    if float((head - head.round()).abs_().max()) > _LATTICE_TOLERANCE:
        return None
    scaled = values.to(dtype) * 255.0
    levels = scaled.round()
    if float(scaled.sub_(levels).abs_().max()) > _LATTICE_TOLERANCE:
        return None
    return levels


def unique_8bit_colors(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Distinct colours of an 8-bit image, or ``None`` if it is not 8-bit.

    ``pixels``: ``[N, 3]`` floats in [0, 1]. If every value is (up to float
    rounding) a multiple of 1/255, returns ``(colors, inverse)`` with
    ``colors`` ``[U, 3]`` float64 and ``pixels ~= colors[inverse]``.
    Each colour is packed into one 24-bit integer key so that a single
    ``torch.unique`` over N integers finds them.
    """
    scaled = pixels * 255.0
    levels = scaled.round()
    if float((scaled - levels).abs().max()) > _LATTICE_TOLERANCE:
        return None
    lv = levels.to(torch.int32)
    key = (lv[:, 0] << 16) | (lv[:, 1] << 8) | lv[:, 2]
    uniq, inverse = torch.unique(key, return_inverse=True)
    colors = torch.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], dim=1)
    return colors.to(torch.float64) / 255.0, inverse


def map_colors(pixels: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply a per-colour decoder ``fn`` to every row of ``pixels`` ``[N, 3]``.

    ``fn`` maps float64 colours ``[M, 3]`` in [0, 1] to one value per colour
    ``[M]``. Decoders are pure functions of a pixel's colour, and an image
    that went through an 8-bit PNG has at most 2**24 distinct colours -
    usually a few thousand (a quantised cube-path depth map has at most
    7 * 255 + 1 = 1786). So for large 8-bit inputs ``fn`` runs once per
    distinct colour and the results are scattered back, which makes costly
    decoders (nearest of 255 colormap segments) tens of times faster. Float
    inputs that are not on the 8-bit lattice take the direct route; results
    are the same either way.
    """
    if pixels.shape[0] >= MIN_PIXELS_FOR_DEDUPE:
        found = unique_8bit_colors(pixels)
        if found is not None:
            colors, inverse = found
            return fn(colors)[inverse]
    return fn(pixels.to(torch.float64))


# --------------------------------------------------------------------------
# Public: 8-bit quantisation
# --------------------------------------------------------------------------
def quantize(rgb: A, bits: int = 8) -> A:
    """Round an RGB image in ``[0, 1]`` to ``2**bits`` evenly spaced levels.

    This simulates writing the image to an 8-bit PNG (``bits=8``) and reading
    it back: values are clipped to ``[0, 1]``, scaled to ``0 .. 2**bits - 1``,
    rounded to the nearest integer (halves up) and scaled back. Use it to
    measure a codec's *ceiling*: ``decode(quantize(encode(x)))`` is the best
    any generator that emits 8-bit images can do.

    The output has the same type (numpy / torch), dtype, device and shape as
    the input. Any shape is accepted; only the values matter.
    """
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an integer in 1..16; got {bits!r}")
    t, was_numpy = as_tensor(rgb, "rgb")
    check_float(t, "rgb")
    check_no_nan(t, "rgb")
    levels = float(2**bits - 1)
    # Compute in float64 so the rounding itself adds no float32 error, then
    # return in the caller's dtype. floor(x + 0.5) rounds halves up, like
    # common image writers (torch.round would round halves to even).
    q = torch.floor(t.to(torch.float64).clamp(0.0, 1.0) * levels + 0.5) / levels
    return like_input(q.to(t.dtype), was_numpy)


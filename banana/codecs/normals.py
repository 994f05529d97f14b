"""Surface normals as an RGB image.

Convention (the paper's; sign mistakes here are the most common complaint
about normal estimators, so it is spelled out): **camera space,
right-handed**, +x to the right, +y up, +z out of the image toward the viewer.
A unit normal ``(x, y, z)`` becomes::

    R = (1 - x) / 2      G = (1 + y) / 2      B = (1 + z) / 2

Note the flipped x: a surface facing *left* (-1, 0, 0) is red-ish
(1, 0.5, 0.5). The paper's anchors: facing left -> pinkish red, facing up
(0, 1, 0) -> light green (0.5, 1, 0.5), facing the camera (0, 0, 1) -> light
blue/purple (0.5, 0.5, 1).

Decoding inverts the map and renormalises to unit length, which also removes
most of the error a generator or 8-bit storage adds *along* the normal.
Exact zero vectors mean "no normal" (sky, invalid pixels): they encode to
mid-grey (0.5, 0.5, 0.5), and decoded vectors shorter than
``undefined_below`` decode back to zero.
"""

from __future__ import annotations

import math

import torch

from ._arrays import (
    ArrayLike,
    as_tensor,
    check_channels,
    check_float,
    check_no_nan,
    check_rgb_image,
    like_input,
)

#: Per-channel sign and offset: rgb = offset + sign * n / 2, and back n = sign * (2 rgb - 1).
#: x is flipped, y and z are not.
_SIGN = (-1.0, 1.0, 1.0)


def _channel_view(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    """A ``[3, 1, 1]`` tensor that broadcasts against ``[..., 3, H, W]``."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(3, 1, 1)


def _length(n: torch.Tensor) -> torch.Tensor:
    """Euclidean length over dim -3 of float32 ``n``, ``[..., 1, H, W]``.

    Bit-identical to ``torch.linalg.vector_norm(n, dim=-3, keepdim=True)`` on CPU (float32
    sum of squares in channel order, square root in float64, rounded to float32), at a small
    fraction of its cost: that reduction over a strided dim of size 3 takes ~0.3 us a pixel.
    """
    x0, x1, x2 = n[..., 0:1, :, :], n[..., 1:2, :, :], n[..., 2:3, :, :]
    acc = x0 * x0
    acc += x1 * x1
    acc += x2 * x2
    return acc.to(torch.float64).sqrt_().to(torch.float32)


class NormalsCodec:
    """Encode unit surface normals as RGB images and decode them back.

    Args:
        unit_tolerance: ``encode`` accepts vectors whose length is within this
            of 1 (they are renormalised) or exactly 0 ("no normal"); anything
            else raises ``ValueError`` naming the worst length.
        undefined_below: ``decode`` returns the zero vector where the decoded
            (pre-normalisation) vector is shorter than this; mid-grey and
            near-grey pixels carry no reliable direction.

    Example:
        >>> codec = NormalsCodec()
        >>> rgb = codec.encode(normals)     # [..., 3, H, W] unit vectors -> RGB
        >>> normals2 = codec.decode(rgb)    # -> unit vectors (or 0) [..., 3, H, W]
    """

    def __init__(self, unit_tolerance: float = 1e-2, undefined_below: float = 0.1) -> None:
        if not unit_tolerance >= 0:
            raise ValueError(f"unit_tolerance must be >= 0; got {unit_tolerance}")
        if not 0 <= undefined_below < 1:
            raise ValueError(f"undefined_below must be in [0, 1); got {undefined_below}")
        self.unit_tolerance = float(unit_tolerance)
        self.undefined_below = float(undefined_below)

    def __repr__(self) -> str:
        return f"NormalsCodec(unit_tolerance={self.unit_tolerance}, undefined_below={self.undefined_below})"

    def encode(self, normals: ArrayLike) -> ArrayLike:
        """Unit normals ``[..., 3, H, W]`` -> float32 RGB ``[..., 3, H, W]`` in [0, 1]."""
        n, was_numpy = as_tensor(normals, "normals")
        check_float(n, "normals")
        check_channels(n, "normals")
        n = n.to(torch.float32)
        length = _length(n)
        if length.numel() and math.isnan(float(length.max())):  # NaN anywhere in n makes its length NaN
            check_no_nan(n, "normals")  # raises, naming the count
        is_zero = length == 0
        off_unit = (length - 1.0).abs_() > self.unit_tolerance
        if bool(off_unit.any()):
            bad = off_unit & ~is_zero
            if bool(bad.any()):
                # Report the length farthest from 1 among the offending pixels.
                dev = torch.where(bad, (length - 1.0).abs(), torch.zeros_like(length))
                worst = float(length.flatten()[dev.flatten().argmax()])
                raise ValueError(
                    f"normals are not unit length: {int(bad.sum())} pixel(s) off, worst norm "
                    f"{worst:.6g} (tolerance {self.unit_tolerance}; exact zero vectors are allowed)"
                )
        # Renormalise the accepted near-unit vectors exactly; zeros stay zero. Then
        # 0.5 + 0.5 * sign * n (0.5 * sign is exact). Per channel plane: broadcasting
        # [..., 1, H, W] against [..., 3, H, W] is several times slower in torch.
        rgb = torch.empty_like(n)
        scale = length.clamp(min=1e-12)
        any_zero = bool(is_zero.any())
        for k in range(3):
            plane = rgb[..., k : k + 1, :, :]
            torch.div(n[..., k : k + 1, :, :], scale, out=plane)
            if any_zero:
                plane.copy_(torch.where(is_zero, n[..., k : k + 1, :, :], plane))
            plane.mul_(0.5 * _SIGN[k])
        rgb.add_(0.5).clamp_(0.0, 1.0)
        return like_input(rgb, was_numpy)

    def decode(self, rgb: ArrayLike) -> ArrayLike:
        """RGB ``[..., 3, H, W]`` in [0, 1] -> unit normals (or 0) ``[..., 3, H, W]``, float32."""
        x, was_numpy = as_tensor(rgb, "rgb")
        x = check_rgb_image(x, "rgb").to(torch.float32)
        n = x * 2.0  # a new tensor: the input is never modified
        n.sub_(1.0)
        n[..., 0, :, :].neg_()  # sign * (2 rgb - 1), x flipped
        length = _length(n)
        undefined = length < self.undefined_below
        scale = length.clamp(min=1e-12)
        for k in range(3):
            n[..., k : k + 1, :, :].div_(scale).masked_fill_(undefined, 0.0)
        return like_input(n, was_numpy)

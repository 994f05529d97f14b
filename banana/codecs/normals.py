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
        check_no_nan(n, "normals")
        n = n.to(torch.float32)
        length = torch.linalg.vector_norm(n, dim=-3, keepdim=True)
        is_zero = length == 0
        off_unit = (length - 1.0).abs() > self.unit_tolerance
        bad = off_unit & ~is_zero
        if bool(bad.any()):
            # Report the length farthest from 1 among the offending pixels.
            dev = torch.where(bad, (length - 1.0).abs(), torch.zeros_like(length))
            worst = float(length.flatten()[dev.flatten().argmax()])
            raise ValueError(
                f"normals are not unit length: {int(bad.sum())} pixel(s) off, worst norm "
                f"{worst:.6g} (tolerance {self.unit_tolerance}; exact zero vectors are allowed)"
            )
        # Renormalise the accepted near-unit vectors exactly; zeros stay zero.
        n = torch.where(is_zero, n, n / length.clamp(min=1e-12))
        rgb = 0.5 + 0.5 * _channel_view(_SIGN, n) * n
        return like_input(rgb.clamp(0.0, 1.0).contiguous(), was_numpy)

    def decode(self, rgb: ArrayLike) -> ArrayLike:
        """RGB ``[..., 3, H, W]`` in [0, 1] -> unit normals (or 0) ``[..., 3, H, W]``, float32."""
        x, was_numpy = as_tensor(rgb, "rgb")
        x = check_rgb_image(x, "rgb").to(torch.float32)
        n = _channel_view(_SIGN, x) * (2.0 * x - 1.0)
        length = torch.linalg.vector_norm(n, dim=-3, keepdim=True)
        undefined = length < self.undefined_below
        n = torch.where(undefined, torch.zeros_like(n), n / length.clamp(min=1e-12))
        return like_input(n, was_numpy)

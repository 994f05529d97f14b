"""Affine (relative) depth normalisation for :class:`banana.codecs.DepthCodec` (``warp="affine"``).

Split out of ``depth.py``; the names are re-exported there.
"""

from __future__ import annotations

import torch

#: Quantiles that the affine warp maps to 0 and 1 (Marigold's choice: robust
#: to a few outlier pixels at either end).
AFFINE_QUANTILES = (0.02, 0.98)


# --------------------------------------------------------------------------
# Affine (relative) normalisation
# --------------------------------------------------------------------------
def _nanquantile_rows(x: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row quantile of ``x`` ``[B, N]`` ignoring NaN, linear interpolation.

    Same definition as ``numpy.nanquantile`` (method "linear"). Written out
    with a sort because ``torch.quantile`` refuses inputs above 2**24
    elements. Rows with no finite value return NaN.
    """
    xs, _ = torch.sort(x, dim=1)  # NaN sorts to the end
    n_valid = (~torch.isnan(x)).sum(1)  # [B]
    pos = q * (n_valid - 1).clamp(min=0).to(x.dtype)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    v_lo = xs.gather(1, lo[:, None]).squeeze(1)
    v_hi = xs.gather(1, hi[:, None]).squeeze(1)
    out = v_lo + (pos - lo.to(x.dtype)) * (v_hi - v_lo)
    return torch.where(n_valid > 0, out, torch.full_like(out, float("nan")))


def affine_normalize(depth: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Marigold-style relative depth: per image (last two dims), float64 in [0, 1].

    The 2% and 98% quantiles of the finite depths (restricted to ``mask``
    when given) map to 0 and 1; values outside are clipped; ``inf`` maps to
    1. An image with no finite valid depth uses quantiles (0, 1). A constant
    image (both quantiles equal) maps to 0 at that depth and 1 beyond it.
    """
    d = depth.to(torch.float64)
    lead, (h, w) = d.shape[:-2], d.shape[-2:]
    flat = d.reshape(-1, h * w)
    valid = torch.isfinite(flat)
    if mask is not None:
        valid &= mask.reshape(-1, h * w)
    masked = torch.where(valid, flat, torch.full_like(flat, float("nan")))
    q_lo = _nanquantile_rows(masked, AFFINE_QUANTILES[0])
    q_hi = _nanquantile_rows(masked, AFFINE_QUANTILES[1])
    no_data = torch.isnan(q_lo)
    q_lo = torch.where(no_data, torch.zeros_like(q_lo), q_lo)
    q_hi = torch.where(no_data, torch.ones_like(q_hi), q_hi)
    # A tiny floor on the scale keeps constant images finite (no 0/0).
    scale = (q_hi - q_lo).clamp(min=1e-12)
    rel = ((flat - q_lo[:, None]) / scale[:, None]).clamp(0.0, 1.0)  # inf -> 1
    return rel.reshape(*lead, h, w)

"""Depth as an RGB image.

Vision Banana paints depth maps. Two steps turn metres into a colour:

1. **Warp** depth ``d`` in ``[0, inf]`` metres to ``f`` in ``[0, 1]``.
   The paper uses Barron's power transform (lambda = -3, c = 10/3)::

       f(d) = 1 - (1 + d/10) ** -2        d = 10 * ((1 - f) ** -0.5 - 1)

   so 0 m -> 0, 10 m -> 0.75, 40 m -> 0.96 and infinity (sky) -> 1. Near
   depths get most of the range, where metric accuracy matters most, yet
   every depth up to infinity stays representable.

2. **Colour path**: ``f`` is the arc parameter ``t`` of a piecewise-linear
   path through colour space. The paper's default walks the edges of the RGB
   cube, black -> red -> yellow -> green -> cyan -> blue -> magenta -> white
   (7 edges of equal length, each covering 1/7 of ``t``). Using all three
   channels gives 7x the resolution of a grey ramp in an 8-bit image, and
   consecutive-only vertex sharing makes decoding unambiguous: edges that are
   not neighbours on the path are at least 1 unit apart, so mild colour noise
   can never jump to a far part of the path.

Decoding projects each pixel's colour onto every segment of the path, picks
the nearest segment, reads ``t`` and inverts the warp.

Ablation variants share one interface, :class:`DepthCodec`:

* ``colormap``: ``"cube"`` (default), ``"gray"``, or a matplotlib colormap
  (``"viridis"``, ``"plasma"``, ``"inferno"``) used as a 255-segment path.
* ``warp``: ``"metric"`` (default, the paper) or ``"affine"``
  (Marigold-style affine-invariant depth: per-image 2%/98% quantiles -> 0/1).
  **Affine decode returns relative depth in [0, 1], not metres**; evaluation
  must align it to the ground truth (least squares scale and shift).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ._arrays import (
    ArrayLike,
    as_tensor,
    check_float,
    check_min_ndim,
    check_no_nan,
    check_rgb_image,
    check_unit_range,
    dtype_name,
    like_input,
    map_colors,
    row_chunks,
)
from ._affine import AFFINE_QUANTILES, _nanquantile_rows, affine_normalize  # noqa: F401  (re-exported)
from ._cube import CUBE_PATH_VERTICES, CubeEdgeDecoder

WARPS = ("metric", "affine")
COLORMAPS = ("cube", "gray", "viridis", "plasma", "inferno")

#: Decoding refines the float32 choice of segment over this many neighbours
#: on each side, in float64 (see ColorPath._project).
REFINE_WINDOW = 2

#: Decoded path parameters within this of 1 count as the path's end (depth
#: inf): about float32 precision, far above any depth an image can encode.
END_SNAP = 1e-7

# --------------------------------------------------------------------------
# The metric warp
# --------------------------------------------------------------------------
def metric_warp(depth: torch.Tensor) -> torch.Tensor:
    """``f = 1 - (1 + d/10)^-2``: metres ``[0, inf]`` -> ``[0, 1]`` (inf -> 1).

    Computed in float64: near f = 1 (far depths), float32 would lose most of
    the information (at 1000 m, 1 - f is only ~1e-4).
    """
    # The same operations as 1 - (1 + d / 10) ** -2, in place on one float64 copy.
    return 1.0 - depth.to(torch.float64, copy=True).div_(10.0).add_(1.0).pow_(-2)


def inverse_metric_warp(f: torch.Tensor) -> torch.Tensor:
    """``d = 10 ((1 - f)^-1/2 - 1)``: ``[0, 1]`` -> metres, f == 1 -> inf. float64."""
    f = f.to(torch.float64).clamp(0.0, 1.0)
    return 10.0 * ((1.0 - f) ** -0.5 - 1.0)


# --------------------------------------------------------------------------
# Colour paths
# --------------------------------------------------------------------------
class ColorPath:
    """A piecewise-linear path through RGB space, parameterised by ``t`` in [0, 1].

    The path visits ``vertices`` in order; each of the ``V - 1`` segments
    covers an equal share of ``t`` (``1 / (V - 1)``), regardless of its length.

    Layout is **channel-last** (a path maps scalars to colours):
    ``encode(t [...]) -> rgb [..., 3]`` and ``decode(rgb [..., 3]) -> t [...]``.
    Both accept numpy or torch and return the same kind.

    Args:
        vertices: ``[V, 3]`` colours in [0, 1], ``V >= 2``; consecutive
            vertices must differ.
    """

    def __init__(self, vertices: Sequence[Sequence[float]] | np.ndarray | torch.Tensor) -> None:
        v = torch.as_tensor(np.asarray(vertices, dtype=np.float64), dtype=torch.float64)
        if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 2:
            raise ValueError(f"vertices must have shape [V >= 2, 3]; got shape {tuple(v.shape)}")
        check_no_nan(v, "vertices")
        check_unit_range(v, "vertices")
        self.vertices = v  # [V, 3] float64
        self.starts = v[:-1]  # [S, 3] segment start points
        self.directions = v[1:] - v[:-1]  # [S, 3] segment vectors
        self.lengths_sq = (self.directions**2).sum(1)  # [S]
        if bool((self.lengths_sq == 0).any()):
            bad = torch.nonzero(self.lengths_sq == 0).flatten().tolist()
            raise ValueError(f"consecutive vertices must differ; segments {bad} have zero length")
        # The paper's cube path has a closed-form decoder (same results, much faster).
        self._edges = CubeEdgeDecoder(v.numpy()) if CubeEdgeDecoder.applies(v.numpy()) else None

    @property
    def num_segments(self) -> int:
        return self.starts.shape[0]

    def __repr__(self) -> str:
        return f"ColorPath({self.vertices.shape[0]} vertices, {self.num_segments} segments)"

    def encode(self, t: ArrayLike) -> ArrayLike:
        """``t`` in [0, 1], any shape ``[...]`` -> colours ``[..., 3]`` (float64 math).

        Output dtype: float32 for torch/numpy float32-or-lower inputs, float64
        for float64 inputs (so callers can keep full precision if they want).
        """
        tt, was_numpy = as_tensor(t, "t")
        check_float(tt, "t")
        check_no_nan(tt, "t")
        check_unit_range(tt, "t")
        out_dtype = torch.float64 if tt.dtype == torch.float64 else torch.float32
        rgb = self._encode(tt.to(torch.float64))
        return like_input(rgb.to(out_dtype), was_numpy)

    def decode(self, rgb: ArrayLike) -> ArrayLike:
        """Colours ``[..., 3]`` in [0, 1] -> ``t`` ``[...]`` by nearest-segment projection."""
        x, was_numpy = as_tensor(rgb, "rgb")
        check_float(x, "rgb")
        if x.ndim < 1 or x.shape[-1] != 3:
            raise ValueError(f"rgb must have shape [..., 3] (channel-last); got shape {tuple(x.shape)}")
        check_no_nan(x, "rgb")
        check_unit_range(x, "rgb")
        out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        t = self._decode(x.clamp(0.0, 1.0).to(torch.float64))
        return like_input(t.to(out_dtype), was_numpy)

    # Tensor-only cores, float64 in and out; used by DepthCodec directly.
    def _encode(self, t: torch.Tensor) -> torch.Tensor:
        n = self.num_segments
        s = t.clamp(0.0, 1.0) * n
        # Segment index; t == 1 belongs to the last segment at fraction 1.
        i = s.floor().clamp(0, n - 1).long()
        frac = (s - i).unsqueeze(-1)
        starts = self.starts.to(t.device)
        dirs = self.directions.to(t.device)
        return starts[i] + frac * dirs[i]

    def _decode(self, rgb: torch.Tensor) -> torch.Tensor:
        lead = rgb.shape[:-1]
        if self._edges is not None:
            flat = rgb.reshape(-1, 3)
            return self._edges.decode_channels_first(flat.T[:, :, None], self._project).reshape(lead)
        return map_colors(rgb.reshape(-1, 3), self._project).reshape(lead)

    # Channel-first variants used by DepthCodec: no [..., H, W, 3] float64 copies.
    def _encode_channels_first(self, t: torch.Tensor) -> torch.Tensor:
        """float64 ``t`` ``[..., H, W]`` -> float32 ``[..., 3, H, W]``; the values of ``_encode``."""
        n = self.num_segments
        s = t.clamp(0.0, 1.0).mul_(n)
        seg = s.floor().clamp_(0, n - 1)
        frac = s.sub_(seg)  # s - i, exactly as _encode (i converts to float64 exactly)
        if self._edges is not None:
            return self._edges.encode_channels_first(seg, frac)
        i = seg.long()
        out = torch.empty(t.shape[:-2] + (3,) + t.shape[-2:], dtype=torch.float32, device=t.device)
        starts, dirs = self.starts.to(t.device), self.directions.to(t.device)
        flat = i.reshape(-1)
        for ch in range(3):
            d = dirs[:, ch].contiguous().index_select(0, flat).view(i.shape)
            a = starts[:, ch].contiguous().index_select(0, flat).view(i.shape)
            out.select(-3, ch).copy_(a.add_(d.mul_(frac)))  # start + frac * dir
        return out

    def _decode_channels_first(self, x: torch.Tensor) -> torch.Tensor:
        """Colours ``[..., 3, H, W]`` (any float dtype, in [0, 1]) -> float64 ``t`` ``[..., H, W]``."""
        if self._edges is None:
            return self._decode(x.movedim(-3, -1).to(torch.float64))
        return self._edges.decode_channels_first(x, self._project)

    def _project(self, p: torch.Tensor) -> torch.Tensor:
        """``t`` for each colour of ``p`` ``[N, 3]`` (float64): nearest-segment projection.

        Two passes, for speed without losing precision:

        1. *Roughly which segment?* Distances to all S segments in float32,
           expanded so the work is one matmul plus a few in-place passes over
           an ``[N, S]`` array (chunked over pixels, so a 255-segment colormap
           path on a megapixel batch stays within a few tens of MB).
        2. *Exactly which, and where on it?* float64 projection onto the
           winner and its ``REFINE_WINDOW`` neighbours on each side. float32
           can confuse segments whose distances differ by less than ~1e-6,
           i.e. neighbours near a shared vertex; non-neighbours that close
           would mean the path nearly touches itself, which no path here
           does. Far depths live in the last 1e-4 of ``t``, so this float64
           step is what keeps the metric round trip within 1e-4 relative
           error out to 1000 m.
        """
        dev = p.device
        a, d, len_sq = self.starts.to(dev), self.directions.to(dev), self.lengths_sq.to(dev)
        # Coordinates centred on mid-grey: smaller magnitudes, so less float32
        # cancellation in the expanded distance below.
        a32, d32 = (a - 0.5).float(), d.float()
        a_dot_d = (a32 * d32).sum(1)  # [S]
        a_sq = (a32 * a32).sum(1)  # [S]
        len_sq32, inv_len_sq32 = len_sq.float(), 1.0 / len_sq.float()
        n = self.num_segments
        offsets = torch.arange(-REFINE_WINDOW, REFINE_WINDOW + 1, device=dev)
        t = torch.empty(p.shape[0], dtype=torch.float64, device=dev)

        for rows in row_chunks(p.shape[0], max(n, 3 * len(offsets))):
            # Pass 1 (float32, all segments).
            q = (p[rows] - 0.5).float()  # [M, 3]
            # w = (q - a) . d: how far along each segment's direction q lies.
            w = torch.addmm(-a_dot_d, q, d32.T)  # [M, S]
            u = (w * inv_len_sq32).clamp_(0.0, 1.0)  # projection, clamped to the segment
            # |q - a - u d|^2 = |q|^2 - 2 q.a + |a|^2 - 2 u w + u^2 |d|^2.
            # |q|^2 is the same for every segment, so it is dropped; the rest
            # is built in place to limit the number of [M, S] temporaries.
            score = (u * len_sq32).sub_(w, alpha=2.0).mul_(u)  # u^2 |d|^2 - 2 u w
            score.add_(a_sq).addmm_(q, a32.T, alpha=-2.0)
            rough = score.argmin(dim=1)  # [M]
            del w, u, score

            # Pass 2 (float64, the winner and its neighbours). Written per
            # colour channel on [M, C] arrays: torch is slow at reducing over
            # a trailing dim of size 3, and this loop has only 3 iterations.
            cand = (rough[:, None] + offsets).clamp_(0, n - 1)  # [M, C]
            pk = p[rows]  # [M, 3]
            diffs, dirs = [], []
            w = torch.zeros(cand.shape, dtype=torch.float64, device=dev)
            for ch in range(3):
                diff = pk[:, ch : ch + 1] - a[cand, ch]  # (q - a) per candidate
                dirs.append(d[cand, ch])
                diffs.append(diff)
                w.addcmul_(diff, dirs[-1])
            u_c = w.div_(len_sq[cand]).clamp_(0.0, 1.0)  # [M, C]
            dist_sq = torch.zeros_like(u_c)
            for diff, dir_ in zip(diffs, dirs):
                dist_sq.add_(diff.addcmul_(u_c, dir_, value=-1.0).square_())
            best = dist_sq.argmin(dim=1, keepdim=True)
            seg = cand.gather(1, best).squeeze(1)
            t[rows] = (seg.to(torch.float64) + u_c.gather(1, best).squeeze(1)) / n
        return t


def cube_path() -> ColorPath:
    """The paper's default path: black -> red -> yellow -> green -> cyan -> blue -> magenta -> white."""
    return ColorPath(CUBE_PATH_VERTICES)


def colormap_path(name: str) -> ColorPath:
    """A :class:`ColorPath` for ``"cube"``, ``"gray"`` or a matplotlib colormap name.

    Matplotlib colormaps become a 255-segment path through their 256-entry
    lookup table; matplotlib is imported only here, so the default codec
    does not need it.
    """
    if name == "cube":
        return cube_path()
    if name == "gray":
        return ColorPath([(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)])
    if name in COLORMAPS:
        import matplotlib  # lazy: optional for the default codec

        lut = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
        return ColorPath(lut)
    raise ValueError(f"unknown colormap {name!r}; expected one of {COLORMAPS}")


# --------------------------------------------------------------------------
# The codec
# --------------------------------------------------------------------------
class DepthCodec:
    """Encode depth maps as RGB images and decode them back.

    Args:
        warp: ``"metric"`` (default; the paper's power transform, decodes to
            metres) or ``"affine"`` (per-image 2%/98% quantile normalisation;
            **decodes to relative depth in [0, 1], not metres**).
        colormap: ``"cube"`` (default; the paper's RGB-cube edge walk),
            ``"gray"``, ``"viridis"``, ``"plasma"`` or ``"inferno"`` (the
            paper augmented training targets with the latter four).

    Example:
        >>> codec = DepthCodec()
        >>> rgb = codec.encode(depth_m)      # [..., H, W] metres -> [..., 3, H, W]
        >>> depth = codec.decode(rgb)        # -> float32 metres [..., H, W]; white -> inf
    """

    def __init__(self, warp: str = "metric", colormap: str = "cube") -> None:
        if warp not in WARPS:
            raise ValueError(f"unknown warp {warp!r}; expected one of {WARPS}")
        if colormap not in COLORMAPS:
            raise ValueError(f"unknown colormap {colormap!r}; expected one of {COLORMAPS}")
        self._warp = warp
        self._colormap = colormap
        self.path = colormap_path(colormap)

    @property
    def warp(self) -> str:
        return self._warp

    @property
    def colormap(self) -> str:
        return self._colormap

    @property
    def is_metric(self) -> bool:
        """True when :meth:`decode` returns metres (``warp="metric"``)."""
        return self._warp == "metric"

    def __repr__(self) -> str:
        return f"DepthCodec(warp={self._warp!r}, colormap={self._colormap!r})"

    # ---------------------------------------------------------------- encode
    def encode(self, depth: ArrayLike, mask: ArrayLike | None = None) -> ArrayLike:
        """Depth ``[..., H, W]`` (metres >= 0, ``+inf`` allowed) -> float32 RGB ``[..., 3, H, W]``.

        ``mask`` (bool ``[..., H, W]``, optional) marks valid pixels. Only the
        affine warp uses it, to choose which pixels the quantiles see; the
        metric warp encodes every pixel independently and ignores it.
        """
        d, was_numpy = as_tensor(depth, "depth")
        check_float(d, "depth")
        check_min_ndim(d, "depth", 2, "[..., H, W]")
        if not bool((d >= 0).all()):  # one pass for the valid case; NaN and negatives fail it
            self._explain_bad_depth(d)
        m = None
        if mask is not None:
            m, _ = as_tensor(mask, "mask")
            if m.dtype != torch.bool:
                raise ValueError(f"mask must be a bool array; got dtype {dtype_name(m)}")
            if m.shape != d.shape:
                raise ValueError(f"mask shape {tuple(m.shape)} must equal depth shape {tuple(d.shape)}")
            m = m.to(d.device)

        f = self._to_unit(d, m)  # float64 in [0, 1]
        rgb = self.path._encode_channels_first(f)  # [..., 3, H, W] float32
        return like_input(rgb, was_numpy)

    @staticmethod
    def _explain_bad_depth(d: torch.Tensor) -> None:
        """The ValueError for depth that is not all >= 0 (NaN first, then -inf, then negatives)."""
        check_no_nan(d, "depth")
        n_neg_inf = int(torch.isneginf(d).sum())
        if n_neg_inf:
            raise ValueError(f"depth contains {n_neg_inf} -inf value(s); depth must be >= 0 (+inf allowed for sky)")
        n_neg = int((d < 0).sum())
        if n_neg:
            raise ValueError(
                f"depth contains {n_neg} negative value(s) (min {float(d.min()):.6g}); depth must be >= 0"
            )
        raise AssertionError("unreachable: depth failed >= 0 but no check named why")  # pragma: no cover

    def _to_unit(self, d: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self._warp == "metric":
            return metric_warp(d)
        return affine_normalize(d, mask)

    # ---------------------------------------------------------------- decode
    def decode_unit(self, rgb: ArrayLike) -> ArrayLike:
        """RGB ``[..., 3, H, W]`` -> the path parameter ``t`` in [0, 1], float64.

        For the metric warp this is the warped depth ``f``; for the affine warp
        it is the relative depth (the same as :meth:`decode`). Useful to
        measure codec error in the warped space, where 8-bit quantisation
        error is uniform.
        """
        x, was_numpy = as_tensor(rgb, "rgb")
        x = check_rgb_image(x, "rgb")
        t = self.path._decode_channels_first(x)
        return like_input(t, was_numpy)

    def decode(self, rgb: ArrayLike) -> ArrayLike:
        """RGB ``[..., 3, H, W]`` in [0, 1] -> float32 ``[..., H, W]``.

        Metric warp: metres, with the path's end (pure white for the cube
        path) decoding to ``inf``; so do colours within float32 precision of
        the end (``t > 1 - END_SNAP``, i.e. beyond ~30 km). Affine warp: relative depth in [0, 1]
        (**not metres**; align to ground truth before computing metrics).
        """
        x, was_numpy = as_tensor(rgb, "rgb")
        x = check_rgb_image(x, "rgb")
        t = self.path._decode_channels_first(x)  # a new float64 tensor: modified in place below
        if self.is_metric:
            # A colour at the path's end stored in float32 decodes to t a few
            # 1e-8 short of 1, i.e. ~1e5 m instead of inf. Snap it: no real
            # depth lives there (8-bit images cannot even express > ~412 m).
            t.masked_fill_(t > 1.0 - END_SNAP, 1.0)
            # inverse_metric_warp, in place: 10 * ((1 - f) ** -0.5 - 1); its clamp to [0, 1]
            # changes nothing here (t = (segment + u) / S with u in [0, 1]).
            t = t.neg_().add_(1.0).pow_(-0.5).sub_(1.0).mul_(10.0)  # -t + 1 is 1 - t, rounded once
        return like_input(t.to(torch.float32), was_numpy)

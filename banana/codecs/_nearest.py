"""Fast, exact nearest-colour labelling for 8-bit colours (the core of segmentation decoding).

:meth:`SegmentationCodec.decode` labels a pixel by its nearest candidate colour (the palette plus
the ignore colour), with a rejection radius. For colours on the 8-bit lattice (every generated
image that went through a PNG, and every image :meth:`~SegmentationCodec.encode` paints) the
squared distances are small integers, so the rule can be evaluated *exactly* and much faster than
a distance matrix:

1. A coarse table over the RGB cube, ``32 x 32 x 32`` cells of ``8 x 8 x 8`` colours, holds the
   answer for every cell where it is the same for all 512 colours. That is decided from exact
   integer bounds (the smallest and largest squared distance from the cell to each candidate):
   a cell is *pure* when one candidate is strictly nearest everywhere in it and the whole cell
   is inside (or outside) its rejection ball, or when every colour of the cell is farther than
   the radius from every class colour.
2. Pixels in the remaining *mixed* cells (near a ball's surface or a tie) are computed
   exactly, with integer distances to every candidate.

The rule evaluated is exactly the one of :meth:`SegmentationCodec._nearest_labels` on integer
colours: the first nearest candidate wins ties; rejected if it is the ignore colour or if its
squared distance exceeds ``reject_radius ** 2`` rounded to float32 (that method compares in
float32, where these integer distances, at most ``3 * 255 ** 2``, are exact).

The table lives on the device of the images it decodes (built once per device), and all work is
torch ops, so CUDA tensors stay on their device.
"""

from __future__ import annotations

import numpy as np
import torch

from ._arrays import MIN_PIXELS_FOR_DEDUPE, lattice_levels, row_chunks

#: Cells per channel of the coarse table (each covers 256 / CELLS levels).
CELLS = 32
_SHIFT = 3  # log2(256 / CELLS)

#: ``(m / 255 as float32) * 255`` is exactly ``m`` for every 8-bit level ``m``: so an image whose
#: values all scale to integers is decoded from those integers with no rounding in between.
_LEVELS_EXACT = bool(
    torch.equal((torch.arange(256, dtype=torch.float64) / 255.0).float() * 255.0, torch.arange(256).float())
)


def integer_levels(t: torch.Tensor) -> torch.Tensor | None:
    """The 8-bit levels (int32, same shape) that the nearest-colour rule sees for ``t``, or ``None``.

    Mirrors the routes of :func:`banana.codecs._arrays.map_colors` as segmentation decoding uses
    them: a large image within rounding of the 8-bit lattice is decoded from its snapped levels;
    otherwise from ``float32(t) * 255``, which is usable here only when every value is an integer.
    """
    if t.numel() // 3 >= MIN_PIXELS_FOR_DEDUPE and _LEVELS_EXACT:
        levels = lattice_levels(t)
        if levels is not None:
            return levels.to(torch.int32)
    p = t.to(torch.float32) * 255.0
    levels = p.round()
    if torch.equal(levels, p):
        return levels.to(torch.int32)
    return None


class NearestColorTable:
    """Exact labels for integer colours: a coarse lookup table plus an exact fallback.

    Args:
        candidates: ``[C, 3]`` integer colours 0..255; the last one is the ignore colour.
        labels: ``[C - 1]`` label of each non-ignore candidate (class ids).
        ignore_label: the label of rejected pixels.
        radius_sq: squared rejection radius, compared as float32 (see the module docstring).
    """

    def __init__(self, candidates: np.ndarray, ignore_label: int, radius_sq: float) -> None:
        cand = np.asarray(candidates, np.int64)
        self.num_candidates = c = len(cand)
        k = c - 1
        self.ignore_label = int(ignore_label)
        self.radius_sq32 = float(np.float32(radius_sq))
        # A table value no label can take: marks "mixed" cells.
        self.mixed = -1 if self.ignore_label >= 0 else self.ignore_label - 1
        r2 = self.radius_sq32

        lo = np.arange(CELLS, dtype=np.int64)[:, None] << _SHIFT  # [CELLS, 1]
        hi = lo + (1 << _SHIFT) - 1
        dmin, dmax = [], []
        for ch in range(3):
            v = cand[None, :, ch]  # [1, C]
            dmin.append(np.maximum(np.maximum(lo - v, v - hi), 0) ** 2)  # [CELLS, C]
            dmax.append(np.maximum((v - lo) ** 2, (v - hi) ** 2))
        mins = (dmin[0][:, None, None] + dmin[1][None, :, None] + dmin[2][None, None, :]).reshape(-1, c)
        maxs = (dmax[0][:, None, None] + dmax[1][None, :, None] + dmax[2][None, None, :]).reshape(-1, c)
        rows = np.arange(len(mins))
        first = mins.argmin(1)
        m1 = mins[rows, first]
        masked = mins.copy()
        masked[rows, first] = np.iinfo(np.int64).max
        m2 = masked.min(1)
        # Smallest distance from the cell to any *other* candidate than j.
        other = np.where(np.arange(c)[None, :] == first[:, None], m2[:, None], m1[:, None])
        strictly_nearest = maxs < other  # [cells, C]: j nearest at every colour of the cell

        lut = np.full(len(mins), self.mixed, np.int64)
        far_from_all = (mins[:, :k] > r2).all(1)  # rejected wherever the nearest is
        lut[far_from_all] = self.ignore_label
        lut[strictly_nearest[:, k]] = self.ignore_label
        for j in range(k):
            sn = strictly_nearest[:, j]
            lut[sn & (maxs[:, j] <= r2)] = j
            lut[sn & (mins[:, j] > r2)] = self.ignore_label
        self._lut = torch.from_numpy(lut)
        self._cand = torch.from_numpy(cand)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on:
            self._on[device] = (self._lut.to(device), self._cand.to(device))
        return self._on[device]

    def lookup(self, levels: torch.Tensor) -> torch.Tensor:
        """int64 labels ``[..., H, W]`` for int levels ``[..., 3, H, W]`` (values 0..255)."""
        lut, cand = self._tables(levels.device)
        cells = levels >> _SHIFT
        index = cells.select(-3, 0) * (CELLS * CELLS)
        index += cells.select(-3, 1) * CELLS
        index += cells.select(-3, 2)
        labels = lut.index_select(0, index.reshape(-1)).view(index.shape)
        mixed = labels == self.mixed
        if bool(mixed.any()):
            pixels = levels.movedim(-3, -1)[mixed]  # [M, 3]
            labels[mixed] = self.exact(pixels, cand)
        return labels

    def exact(self, pixels: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """The rule on integer colours ``[M, 3]``, by brute force over the candidates (int64)."""
        k = self.num_candidates - 1
        out = torch.empty(pixels.shape[0], dtype=torch.int64, device=pixels.device)
        p_all = pixels.to(torch.int64)
        for rows in row_chunks(p_all.shape[0], 3 * self.num_candidates):
            p = p_all[rows]
            d = p[:, None, 0] - cand[None, :, 0]
            dist = d * d
            for ch in (1, 2):
                d = p[:, None, ch] - cand[None, :, ch]
                dist += d * d
            nearest = dist.argmin(dim=1)  # first of equal minima, as today
            near_sq = dist.gather(1, nearest[:, None]).squeeze(1)
            rejected = (nearest == k) | (near_sq.to(torch.float64) > self.radius_sq32)
            out[rows] = nearest.masked_fill_(rejected, self.ignore_label)
        return out

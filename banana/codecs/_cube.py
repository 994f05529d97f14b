"""Closed-form decoding for colour paths along the RGB cube's edges (the paper's default path).

:meth:`ColorPath._project` decodes any path: a float32 pass over all segments picks roughly
which one is nearest, then a float64 pass over that segment and its neighbours decides. For a
path whose segments are *edges of the unit RGB cube* (each varies one channel from 0 to 1 or
back, the others fixed at 0 or 1) that float64 pass has a closed form, computed here per colour
channel with a handful of elementwise ops and no ``[N, S, 3]`` temporaries:

* a colour ``p`` (in the cube) projects onto the edge without clamping, so its squared
  distance to edge ``s`` is the sum of two per-channel terms, ``p_k ** 2`` or
  ``(p_k - 1) ** 2`` for the two fixed channels, and its position is ``u = p_c`` (or
  ``1 - p_c`` when the edge runs from 1 to 0). These are the very floating-point operations
  ``_project``'s float64 pass performs (each step is exact or rounds once, in the same order),
  so the results are the same bits;
* most colours lie *on* the path (every image :meth:`DepthCodec.encode` paints, and its 8-bit
  quantisation): two channels are exactly 0 or 1, so the nearest segment is the first edge
  whose fixed channels match, found with comparisons only; the rest go through the
  per-segment distances below;
* ``_project`` picks the first nearest segment *within a window around its float32 choice*.
  When every segment within ``AMBIGUITY`` of the nearest distance lies within two indices of
  each other, every possible float32 choice leads to the same window answer, the first
  nearest segment overall, which is what is computed here. The float32 error is below
  ``1e-6``, ``AMBIGUITY`` is ten times that. Colours near the path (``d^2 < NEAR``) always
  qualify: on the cube path segments that are not neighbours are at least 1 apart. The rare
  rest (colours about equally far from non-neighbouring edges, deep inside the cube) are
  decoded by ``_project`` itself.
"""

from __future__ import annotations

import numpy as np
import torch

from ._arrays import MIN_PIXELS_FOR_DEDUPE, lattice_levels

#: Vertices of the paper's default colour path: a Gray-code walk over the RGB cube corners (each step
#: flips one channel), black first, white last; re-exported by :mod:`banana.codecs.depth`.
CUBE_PATH_VERTICES: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, 0.0),  # black
    (1.0, 0.0, 0.0),  # red
    (1.0, 1.0, 0.0),  # yellow
    (0.0, 1.0, 0.0),  # green
    (0.0, 1.0, 1.0),  # cyan
    (0.0, 0.0, 1.0),  # blue
    (1.0, 0.0, 1.0),  # magenta
    (1.0, 1.0, 1.0),  # white
)

#: Segments whose squared distances are within this of the nearest one count as candidates of
#: the float32 pass (its error is below 1e-6).
AMBIGUITY = 1e-5

#: Colours with a squared distance to the path below this are never ambiguous on the cube path
#: (non-neighbouring segments are >= 1 apart: sqrt(NEAR) < 1/2 - 0.01).
NEAR = 0.2

#: Pixels per chunk: keeps the [S, chunk] float64 distances within the CPU caches.
CHUNK = 1 << 16


class CubeEdgeDecoder:
    """Exact, vectorised ``t`` for a :class:`ColorPath` whose segments are unit cube edges."""

    def __init__(self, vertices: np.ndarray) -> None:
        v = np.asarray(vertices, np.float64)
        self.num_segments = len(v) - 1
        chan, neg, fixed = [], [], []
        for a, b in zip(v[:-1], v[1:]):
            (c,) = np.flatnonzero(a != b)
            chan.append(int(c))
            neg.append(bool(b[c] < a[c]))
            others = [k for k in range(3) if k != c]
            # (value at vertex 0/1, channel) of the two fixed channels, in channel order.
            fixed.append(tuple((int(a[k]), k) for k in others))
        self.fixed = fixed
        self._chan = torch.tensor(chan)
        self._neg = torch.tensor(neg)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        # Per-segment facts as 8-bit masks (bit s = segment s): ``(MASK >> seg) & 1`` answers
        # "is this pixel's segment in the set" with two uint8 ops instead of an int64 gather.
        bits = lambda segments: sum(1 << k for k in segments)  # noqa: E731
        self.varies = [bits(k for k in range(len(chan)) if chan[k] == c) for c in range(3)]
        self.descends = bits(k for k in range(len(neg)) if neg[k])
        starts = np.asarray(v[:-1])
        self.rises = [bits(k for k in range(len(chan)) if chan[k] == c and not neg[k]) for c in range(3)]
        self.falls = [bits(k for k in range(len(chan)) if chan[k] == c and neg[k]) for c in range(3)]
        self.stays_one = [bits(k for k in range(len(chan)) if chan[k] != c and starts[k, c] == 1) for c in range(3)]

    @staticmethod
    def applies(vertices: np.ndarray) -> bool:
        """True for the paper's cube path: the only edge path whose ``NEAR`` bound is proven here."""
        v = np.asarray(vertices, np.float64)
        return v.shape == (8, 3) and bool(np.array_equal(v, np.asarray(CUBE_PATH_VERTICES, np.float64)))

    @staticmethod
    def _in(mask: int, seg8: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """1 where ``seg8``'s segment is one of the bits of ``mask``, else 0, as ``dtype``.

        Selections below are blends ``a * m + b * (1 - m)`` with such 0/1 masks, not
        ``torch.where``: on CPU ``where`` costs about ten elementwise multiplies, and a blend
        with exactly one non-zero term returns that term's bits."""
        one = torch.tensor(mask, dtype=torch.uint8, device=seg8.device)
        return torch.bitwise_right_shift(one, seg8).bitwise_and_(1).to(dtype)

    def encode_channels_first(self, seg: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
        """float32 colours ``[..., 3, H, W]`` for segment indices ``seg`` (float64, whole numbers) and
        positions ``frac`` in [0, 1] (float64) ``[..., H, W]`` (``seg`` is overwritten): the bits of ``start + frac * direction``
        rounded to float32 (on a cube edge that is ``frac``, ``1 - frac``, 0 or 1 exactly)."""
        seg8 = seg.to(torch.uint8)
        up, down = frac.float(), seg.fill_(1.0).sub_(frac).float()  # seg's buffer reused for 1 - frac
        out = torch.empty(frac.shape[:-2] + (3,) + frac.shape[-2:], dtype=torch.float32, device=frac.device)
        for ch in range(3):
            plane = out.select(-3, ch)
            torch.mul(up, self._in(self.rises[ch], seg8, torch.float32), out=plane)
            if self.falls[ch]:
                plane.addcmul_(down, self._in(self.falls[ch], seg8, torch.float32))
            plane.add_(self._in(self.stays_one[ch], seg8, torch.float32))
        return out

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on:
            self._on[device] = (self._chan.to(device), self._neg.to(device))
        return self._on[device]

    def decode_channels_first(self, x: torch.Tensor, project) -> torch.Tensor:
        """float64 ``t`` ``[..., H, W]`` for colours ``x`` ``[..., 3, H, W]`` (any float dtype, in
        [0, 1]); ``project`` is the general decoder for the rare ambiguous colours
        (float64 ``[M, 3]`` -> ``[M]``).

        Follows :func:`banana.codecs._arrays.map_colors` as ``ColorPath._decode`` uses it: a
        large image on the 8-bit lattice (tested in float64) is decoded from its snapped levels
        ``m / 255``.
        """
        lead = x.shape[:-3] + x.shape[-2:]
        n_pix = x.numel() // 3
        src, snapped = x, False
        if n_pix >= MIN_PIXELS_FOR_DEDUPE:
            levels = lattice_levels(x, torch.float64)
            if levels is not None:
                src, snapped = levels, True
        planes = [src.select(-3, k) for k in range(3)]
        # Exactly on a vertex value: the squared offset (p - 0)^2 or (p - 1)^2 is 0 in float64.
        top = 255.0 if snapped else 1.0
        if src.dtype == torch.float64 and not snapped:  # tiny float64 values square to 0
            zero = [pl * pl == 0 for pl in planes]
        else:
            zero = (src == 0).unbind(-3)  # one pass over all three planes
        one = (src == top).unbind(-3)
        at = (zero, one)
        # Bit s of ``code`` says "segment s's two fixed channels match"; the first match is the
        # lowest set bit (isolated as code & -code), its index read off three bit tests.
        code = torch.zeros(lead, dtype=torch.uint8, device=x.device)
        for s in range(self.num_segments):
            (ai, i), (aj, j) = self.fixed[s]
            code.bitwise_or_((at[ai][i] & at[aj][j]).view(torch.uint8).bitwise_left_shift(s))
        off = code == 0
        low = code.bitwise_not().add_(1).bitwise_and_(code)
        seg8 = low.bitwise_and(0xAA).clamp_(max=1)
        seg8.add_(low.bitwise_and(0xCC).clamp_(max=1).mul_(2)).add_(low.bitwise_and(0xF0).clamp_(max=1).mul_(4))
        any_off = bool(off.any())
        # The varying channel's value, then u = value or 1 - value (|1 - v| = 1 - v and |0 - v| = v,
        # one rounding each, as before), t = (segment + u) / S.
        wdt = planes[0].dtype
        val = planes[0] * self._in(self.varies[0], seg8, wdt)
        val.addcmul_(planes[1], self._in(self.varies[1], seg8, wdt)).addcmul_(planes[2], self._in(self.varies[2], seg8, wdt))
        val = val.to(torch.float64)
        if snapped:
            val = val / 255.0
        u = self._in(self.descends, seg8, torch.float64).sub_(val).abs_()
        t = u.add_(seg8).div_(float(self.num_segments))  # u + segment, exactly as segment + u
        if any_off:
            rows = off.reshape(-1).nonzero().squeeze(1)
            p = torch.stack([pl.reshape(-1).index_select(0, rows) for pl in planes]).to(torch.float64)
            if snapped:
                p = p / 255.0
            t.view(-1)[rows] = self.decode(p, project)
        return t

    def decode(self, p: torch.Tensor, project) -> torch.Tensor:
        """``t`` for float64 colour planes ``p`` ``[3, N]`` in [0, 1], every colour through the
        per-segment distances (no lattice snapping: callers pass the colours to decode)."""
        n_pix = p.shape[1]
        chan, neg = self._tables(p.device)
        t = torch.empty(n_pix, dtype=torch.float64, device=p.device)
        unsure = []
        n = float(self.num_segments)
        for start in range(0, n_pix, CHUNK):
            q = p[:, start:start + CHUNK]
            m = q.shape[1]
            sq = torch.empty((2, 3, m), dtype=torch.float64, device=p.device)
            torch.mul(q, q, out=sq[0])  # (p - 0)^2
            torch.sub(q, 1.0, out=sq[1]).square_()  # (p - 1)^2
            dist = torch.empty((self.num_segments, m), dtype=torch.float64, device=p.device)
            for s, ((ai, i), (aj, j)) in enumerate(self.fixed):
                torch.add(sq[ai, i], sq[aj, j], out=dist[s])
            # First nearest segment, by a running minimum (torch's argmin over a short leading
            # dim is ~10x slower): strict "<" keeps the first of equal minima, as argmin does.
            dmin = dist[0].clone()
            seg = torch.zeros(m, dtype=torch.int64, device=p.device)
            for s in range(1, self.num_segments):
                closer = torch.lt(dist[s], dmin)
                seg.masked_fill_(closer, s)
                torch.minimum(dmin, dist[s], out=dmin)
            val = q.gather(0, chan.index_select(0, seg)[None])[0]  # p_c on the varying channel
            u = torch.where(neg.index_select(0, seg), 1.0 - val, val)
            t[start:start + m] = (seg.to(torch.float64) + u) / n
            far = dmin >= NEAR
            if bool(far.any()):
                idx = far.nonzero().squeeze(1)
                d = dist[:, idx]
                close = d <= dmin[idx] + AMBIGUITY  # [S, M]: the segments the float32 pass might pick
                ar = torch.arange(self.num_segments, device=p.device)[:, None]
                lo = torch.where(close, ar, self.num_segments).amin(0)
                hi = torch.where(close, ar, -1).amax(0)
                amb = idx[hi - lo > 2]
                if len(amb):
                    unsure.append(amb + start)
        if unsure:
            rows = torch.cat(unsure)
            t[rows] = project(p[:, rows].T.contiguous())
        return t

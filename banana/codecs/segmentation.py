"""Semantic segmentation as an RGB image.

Vision Banana does not have a segmentation head. It *paints* the answer: the
prompt names each class and a colour, e.g.

    Generate a semantic segmentation visualization image, using this color
    mapping: {"cat": <255,165,0>, "background": <125,0,125>}

and the generator draws every pixel of a class in that colour. This module is
the codec around that idea:

* :class:`SegmentationCodec` encodes integer label maps to RGB (what the
  training targets look like), decodes RGB back to labels by *nearest prompted
  colour*, and writes the prompt.
* Decoding has a **rejection radius**: generated colours drift, and a pixel
  whose colour is far from every prompted colour is more honestly reported as
  "unknown" (``ignore_index``) than forced into the nearest class.
* :func:`well_separated_palette` picks deterministic, maximally distinct
  colours (for evaluation, where you want the codec's ceiling);
  :func:`random_palette` picks random colours (for training, so the model must
  *read* the colours from the prompt instead of memorising one fixed palette,
  and for the unseen-palette evaluation).

**The decoding rule** (one rule for every palette, canonical or unseen):

    A pixel gets the class whose colour is nearest (Euclidean, RGB 0..255);
    it is rejected (``ignore_index``) if the nearest candidate is the ignore
    colour, or if it is farther than ``r`` from that colour, where
    ``r = min(REJECT_RADIUS, d_min / 2)`` and ``d_min`` is the smallest
    distance between two *candidates* (the palette colours and the ignore
    colour).

So every class accepts exactly the ball of radius ``r`` around its colour and
no two balls overlap. Every palette banana itself draws keeps
:data:`MIN_PALETTE_DISTANCE` (``= 2 * REJECT_RADIUS``) between any two colours
and from the ignore colour black: the canonical world palette
(:data:`banana.world.CANONICAL_PALETTE`, closest pair: floor to black, ~103)
and every :func:`random_palette` (the unseen-palette setting). For all of them
``r == REJECT_RADIUS`` exactly: canonical and unseen palettes are decoded by
the same decoder. Only a denser palette given from outside gets a smaller
radius (the official Cityscapes colours: bus and train are 20 apart, so
``r = 10``). An explicit ``reject_radius`` larger than ``d_min / 2`` would make
decision regions overlap and is a ``ValueError``.

Colours are RGB integers ``0..255`` everywhere in this module's API (palettes,
``reject_radius``), because that is how the prompt states them; images are
floats in ``[0, 1]``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ._arrays import ArrayLike, as_tensor, check_min_ndim, check_rgb_image, dtype_name, like_input, row_chunks
from ._nearest import NearestColorTable, integer_levels
from .palettes import (  # noqa: F401  (re-exported: the public names live on here too)
    BASIC_COLOR_NAMES,
    CUBE_CORNERS_ORDER,
    IGNORE_COLOR,
    MAX_RGB_DISTANCE,
    MIN_PALETTE_DISTANCE,
    PROMPT_PREFIX,
    PROMPT_STYLES,
    REJECT_RADIUS,
    RGB,
    _as_rgb,
    _closest_pair,
    _distance_matrix,
    _first_far_enough,
    _lattice,
    _pairwise_min_distance,
    format_prompt,
    random_palette,
    well_separated_palette,
)


# --------------------------------------------------------------------------
# The codec
# --------------------------------------------------------------------------
class SegmentationCodec:
    """Encode label maps as RGB images and decode them by nearest colour.

    Args:
        palette: class name -> RGB colour (three ints in 0..255). Class ids
            are the insertion order: the first entry is class 0. An iterable
            of ``(name, colour)`` pairs works too.
        reject_radius: in RGB units (0..255 scale). A decoded pixel whose
            colour is farther than this from its nearest palette colour becomes
            ``ignore_index``. Default (the module's one rule):
            ``min(REJECT_RADIUS, d_min / 2)``, ``d_min`` being the smallest
            distance between two candidates (palette colours and
            ``ignore_color``): :data:`REJECT_RADIUS` for the canonical world
            palette and every :func:`random_palette`, less only for a palette
            denser than :data:`MIN_PALETTE_DISTANCE`. An explicit value must be
            ``<= d_min / 2`` (no overlapping decision regions), else
            ``ValueError``.
        ignore_index: the label meaning "no class" (void / unlabelled). Must
            not be a valid class id.
        ignore_color: the colour ``ignore_index`` pixels are painted with.
            During decoding it is also a candidate colour (mapping to
            ``ignore_index``), so ``decode(encode(labels))`` round-trips
            ignored pixels as well. Must differ from every palette colour.

    Attributes:
        class_names: list of class names, in id order.
        colors: ``uint8`` array ``[K, 3]``, row ``k`` is class ``k``'s colour.
        num_classes, ignore_index, ignore_color, reject_radius.

    Example:
        >>> seg = SegmentationCodec({"sky": (135, 206, 235), "floor": (255, 0, 0)})
        >>> rgb = seg.encode(labels)          # int [..., H, W] -> float [..., 3, H, W]
        >>> labels2 = seg.decode(rgb)         # -> int64 [..., H, W]
    """

    def __init__(
        self,
        palette: Mapping[str, Sequence[int]] | Iterable[tuple[str, Sequence[int]]],
        reject_radius: float | None = None,
        ignore_index: int = 255,
        ignore_color: Sequence[int] = IGNORE_COLOR,
    ) -> None:
        items = list(palette.items()) if isinstance(palette, Mapping) else list(palette)
        if len(items) < 1:
            raise ValueError("palette must contain at least 1 class; got 0 classes")
        names: list[str] = []
        colors: list[RGB] = []
        for item in items:
            try:
                name, color = item
            except (TypeError, ValueError):
                raise ValueError(f"palette entries must be (name, colour) pairs; got {item!r}") from None
            if not isinstance(name, str) or not name:
                raise ValueError(f"class names must be non-empty strings; got {name!r}")
            if name in names:
                raise ValueError(f"duplicate class name {name!r} in palette")
            names.append(name)
            colors.append(_as_rgb(color, f"colour of class {name!r}"))

        # Two classes with the same colour cannot be told apart when decoding.
        first_with: dict[RGB, str] = {}
        for name, color in zip(names, colors):
            if color in first_with:
                raise ValueError(
                    f"palette has duplicate colours: classes {first_with[color]!r} "
                    f"and {name!r} both use {color}"
                )
            first_with[color] = name

        ignore_color_t = _as_rgb(ignore_color, "ignore_color")
        if ignore_color_t in first_with:
            raise ValueError(
                f"ignore_color {ignore_color_t} equals the colour of class "
                f"{first_with[ignore_color_t]!r}; pick a different ignore_color"
            )

        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise ValueError(f"ignore_index must be an integer; got {ignore_index!r}")
        if 0 <= int(ignore_index) < len(names):
            raise ValueError(
                f"ignore_index {ignore_index} collides with a class id "
                f"(valid class ids are 0..{len(names) - 1})"
            )

        self._names = names
        self._colors = np.asarray(colors, dtype=np.uint8)
        self._ignore_index = int(ignore_index)
        self._ignore_color = ignore_color_t

        # The decoding candidates are the palette colours and the ignore colour; their closest
        # pair bounds the radius (see the module docstring: one rule for every palette).
        candidates = np.concatenate([self._colors, np.asarray([ignore_color_t], np.uint8)])
        max_radius = _pairwise_min_distance(candidates) / 2
        if reject_radius is None:
            reject_radius = min(REJECT_RADIUS, max_radius)
        reject_radius = float(reject_radius)
        if not reject_radius >= 0:  # also catches NaN
            raise ValueError(f"reject_radius must be >= 0 (RGB units); got {reject_radius}")
        if reject_radius > max_radius:
            a, b = _closest_pair(candidates)
            name = lambda i: "the ignore colour" if i == len(names) else f"class {names[i]!r}"  # noqa: E731
            raise ValueError(
                f"reject_radius {reject_radius:g} makes decision regions overlap: {name(a)} "
                f"{tuple(int(v) for v in candidates[a])} and {name(b)} {tuple(int(v) for v in candidates[b])} "
                f"are only {2 * max_radius:.4g} apart, so the radius must be <= {max_radius:.4g} "
                f"(half the closest distance); leave reject_radius=None for the default rule "
                f"min(REJECT_RADIUS={REJECT_RADIUS:g}, {max_radius:.4g})"
            )
        self._reject_radius = reject_radius

        # Lookup tables in [0, 1]. Row K is the ignore colour, so encoding is a
        # single gather and decoding treats "ignore" as one more candidate.
        table = np.concatenate([self._colors, np.asarray([ignore_color_t], np.uint8)])
        self._table255 = torch.from_numpy(table.astype(np.float32))  # [K+1, 3], 0..255
        self._table01 = self._table255 / 255.0
        self._candidates = table.astype(np.int64)  # [K+1, 3]
        self._nearest_table: NearestColorTable | None = None

    # ---------------------------------------------------------------- constructors
    @classmethod
    def with_random_palette(
        cls,
        class_names: Sequence[str],
        rng: np.random.Generator,
        min_distance: float = MIN_PALETTE_DISTANCE,
        **kwargs: Any,
    ) -> "SegmentationCodec":
        """A codec with random, pairwise-distinct colours (see :func:`random_palette`).

        The colours also keep ``min_distance`` from ``ignore_color`` (default
        black), so ignored pixels stay distinguishable. Extra keyword
        arguments go to the constructor.
        """
        ignore_color = kwargs.get("ignore_color", IGNORE_COLOR)
        palette = random_palette(class_names, rng, min_distance, exclude=(ignore_color,))
        return cls(palette, **kwargs)

    # ---------------------------------------------------------------- properties
    @property
    def class_names(self) -> list[str]:
        """Class names in id order (class ``k`` is ``class_names[k]``)."""
        return list(self._names)

    @property
    def colors(self) -> np.ndarray:
        """``uint8`` array ``[K, 3]``: the RGB colour of each class."""
        return self._colors.copy()

    @property
    def palette(self) -> dict[str, RGB]:
        """Class name -> RGB tuple, in id order."""
        return {n: tuple(int(v) for v in c) for n, c in zip(self._names, self._colors)}  # type: ignore[misc]

    @property
    def num_classes(self) -> int:
        return len(self._names)

    @property
    def ignore_index(self) -> int:
        return self._ignore_index

    @property
    def ignore_color(self) -> RGB:
        return self._ignore_color

    @property
    def reject_radius(self) -> float:
        """Rejection radius in RGB units (0..255 scale)."""
        return self._reject_radius

    def __repr__(self) -> str:
        return (
            f"SegmentationCodec({self.palette}, reject_radius={self._reject_radius:.4g}, "
            f"ignore_index={self._ignore_index}, ignore_color={self._ignore_color})"
        )

    # ---------------------------------------------------------------- encode
    def encode(self, labels: ArrayLike) -> ArrayLike:
        """Paint a label map: int ``[..., H, W]`` -> float32 RGB ``[..., 3, H, W]`` in [0, 1].

        Class ``k`` becomes ``colors[k] / 255``; ``ignore_index`` becomes
        ``ignore_color / 255``. Any other value raises ``ValueError``.
        """
        t, was_numpy = as_tensor(labels, "labels")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(
                f"labels must be an integer array; got dtype {dtype_name(t)} "
                "(convert with .astype(int) / .long() if the values are whole numbers)"
            )
        check_min_ndim(t, "labels", 2, "[..., H, W]")
        t = t.to(torch.int64)
        k = self.num_classes

        # Row of the table for each label (row K: the ignore colour), or -1 for a bad label.
        index = None
        if t.numel():
            lo, hi = (int(v) for v in torch.aminmax(t))
            if lo >= 0 and hi < k:
                index = t  # no ignore pixels, nothing to check
            elif lo >= 0 and hi < (1 << 16):
                rows = torch.full((hi + 1,), -1, dtype=torch.int64)
                rows[: min(k, hi + 1)] = torch.arange(min(k, hi + 1))
                if 0 <= self._ignore_index <= hi:
                    rows[self._ignore_index] = k
                index = rows.to(t.device).index_select(0, t.reshape(-1)).view(t.shape)
                if bool((index < 0).any()):
                    index = None  # bad labels: the check below names them
        if index is None:
            is_ignore = t == self._ignore_index
            bad = ((t < 0) | (t >= k)) & ~is_ignore
            if bool(bad.any()):
                bad_values = torch.unique(t[bad]).tolist()
                shown = bad_values[:10] + (["..."] if len(bad_values) > 10 else [])
                raise ValueError(
                    f"labels contain values {shown} outside the palette: valid class ids "
                    f"are 0..{k - 1} (plus ignore_index {self._ignore_index})"
                )
            index = t.masked_fill(is_ignore, k)

        # Gather each channel from the table (index_select is far faster than fancy indexing).
        table_t = self._table01.to(t.device).T.contiguous()  # [3, K+1]
        flat = index.reshape(-1)
        rgb = torch.empty(t.shape[:-2] + (3,) + t.shape[-2:], dtype=torch.float32, device=t.device)
        for ch in range(3):
            rgb.select(-3, ch).copy_(table_t[ch].index_select(0, flat).view(t.shape))
        return like_input(rgb, was_numpy)

    # ---------------------------------------------------------------- decode
    def decode(self, rgb: ArrayLike) -> ArrayLike:
        """Read labels back from an RGB image by nearest palette colour.

        ``rgb``: float ``[..., 3, H, W]`` in [0, 1]. Returns int64 ``[..., H, W]``.
        Each pixel gets the class whose colour is nearest in Euclidean RGB
        distance; pixels nearest to ``ignore_color``, or farther than
        ``reject_radius`` from every palette colour, get ``ignore_index``.
        """
        t, was_numpy = as_tensor(rgb, "rgb")
        t = check_rgb_image(t, "rgb")
        levels = integer_levels(t)
        if levels is not None:
            # 8-bit colours (PNG-like, or painted by encode): exact integer rule, table lookup.
            labels = self._table().lookup(levels)
        else:
            out_shape = t.shape[:-3] + t.shape[-2:]
            pixels = t.movedim(-3, -1).reshape(-1, 3)  # [..., 3, H, W] -> [N, 3]
            labels = self._nearest_labels(pixels.to(torch.float64)).reshape(out_shape)
        return like_input(labels, was_numpy)

    def _table(self) -> NearestColorTable:
        """The exact 8-bit decoder (built on first use)."""
        if self._nearest_table is None:
            self._nearest_table = NearestColorTable(
                self._candidates, self._ignore_index, self._reject_radius**2
            )
        return self._nearest_table

    def _nearest_labels(self, colors: torch.Tensor) -> torch.Tensor:
        """Labels for ``[N, 3]`` colours in [0, 1] (the core of :meth:`decode`)."""
        p_all = colors.to(torch.float32) * 255.0  # the palette's 0..255 units
        table = self._table255.to(colors.device)  # [K+1, 3]
        table_sq = (table * table).sum(1)  # [K+1]
        k = self.num_classes
        radius_sq = self._reject_radius**2
        labels = torch.empty(p_all.shape[0], dtype=torch.int64, device=colors.device)

        for rows in row_chunks(p_all.shape[0], table.shape[0]):
            p = p_all[rows]
            # ||p - c||^2 = ||p||^2 - 2 p.c + ||c||^2; ||p||^2 is the same for
            # every candidate, so it can be dropped for the argmin. One fused
            # matmul instead of an [N, K, 3] difference tensor.
            score = torch.addmm(table_sq, p, table.T, alpha=-2.0)  # [M, K+1]
            nearest = score.argmin(dim=1)
            # The expansion loses a little float32 precision, harmless for the
            # argmin but not for a sharp radius test, so the distance to the
            # winning colour is recomputed exactly.
            dist_sq = ((p - table[nearest]) ** 2).sum(1)
            rejected = (nearest == k) | (dist_sq > radius_sq)
            labels[rows] = nearest.masked_fill_(rejected, self._ignore_index)
        return labels

    # ---------------------------------------------------------------- prompt
    def prompt(self, style: str = "json") -> str:
        """The instruction text that asks the generator for this segmentation.

        Styles (the paper says colours may be given in any of these forms):

        * ``"json"`` (default, the paper's example format)::

            Generate a semantic segmentation visualization image, using this
            color mapping: {"sky": <135,206,235>, "floor": <255,0,0>}

        * ``"rgb"``:  ``... mapping: sky in rgb(135, 206, 235), floor in rgb(255, 0, 0)``
        * ``"hex"``:  ``... mapping: sky in #87ceeb, floor in #ff0000``
        * ``"natural"``: like ``"rgb"`` but a colour that exactly equals a
          basic named colour (:data:`BASIC_COLOR_NAMES`) is written by name:
          ``... mapping: sky in sky blue, floor in red``.
        """
        pairs = [(n, tuple(int(v) for v in c)) for n, c in zip(self._names, self._colors)]
        return format_prompt(pairs, style)  # type: ignore[arg-type]

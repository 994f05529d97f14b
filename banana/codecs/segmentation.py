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

import itertools
import json
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ._arrays import (
    ArrayLike,
    as_tensor,
    check_min_ndim,
    check_rgb_image,
    dtype_name,
    like_input,
    map_colors,
    row_chunks,
)

RGB = tuple[int, int, int]

#: Prompt prefix used by the paper for semantic segmentation.
PROMPT_PREFIX = "Generate a semantic segmentation visualization image, using this color mapping: "

#: Supported ``prompt(style=...)`` values.
PROMPT_STYLES = ("json", "rgb", "hex", "natural")

#: Largest possible distance in the RGB cube, sqrt(3) * 255 ~= 441.67.
MAX_RGB_DISTANCE = 255.0 * math.sqrt(3.0)

#: The default colour of ignored (void) pixels, and a colour every random palette keeps away from.
IGNORE_COLOR: tuple[int, int, int] = (0, 0, 0)

#: Default rejection radius (RGB units, 0..255 scale) for every palette, canonical and unseen.
#: 48 is the largest round radius that satisfies both constraints on it:
#: (1) the canonical world palette must get it in full: its closest candidate pair is the floor
#: colour (90, 50, 10) and the ignore colour black, ~103.4 apart, so ``2 * r <= 103``;
#: (2) :func:`random_palette` must place the 19 Cityscapes classes plus black at pairwise
#: ``2 * r``: at 96 one rejection-sampling pass fails for ~0.2% of seeds (and is retried), at 100
#: already ~9%, at 110 ~96%. It tolerates a drift of ~28 units per channel (48 / sqrt(3)) in
#: every direction, i.e. well beyond 8-bit quantisation and mild colour noise.
REJECT_RADIUS: float = 48.0

#: Minimum distance (RGB units) :func:`random_palette` keeps between any two palette colours and
#: from the ignore colour: ``2 * REJECT_RADIUS``, so decision regions never overlap and every
#: random palette is decoded with the full :data:`REJECT_RADIUS`.
MIN_PALETTE_DISTANCE: float = 2.0 * REJECT_RADIUS

#: Basic colour names used by ``prompt(style="natural")``. A colour is named
#: only when it matches *exactly*: an approximate name ("blue" for
#: (20, 40, 200)) would tell the model a different colour than the decoder
#: expects, which silently costs accuracy.
BASIC_COLOR_NAMES: dict[RGB, str] = {
    (0, 0, 0): "black",
    (255, 255, 255): "white",
    (128, 128, 128): "gray",
    (192, 192, 192): "silver",
    (255, 0, 0): "red",
    (0, 255, 0): "green",
    (0, 0, 255): "blue",
    (255, 255, 0): "yellow",
    (0, 255, 255): "cyan",
    (255, 0, 255): "magenta",
    (255, 165, 0): "orange",
    (128, 0, 128): "purple",
    (255, 192, 203): "pink",
    (165, 42, 42): "brown",
    (128, 0, 0): "maroon",
    (0, 0, 128): "navy",
    (128, 128, 0): "olive",
    (0, 128, 128): "teal",
    (0, 128, 0): "dark green",
    (135, 206, 235): "sky blue",
}


# --------------------------------------------------------------------------
# Palette validation
# --------------------------------------------------------------------------
def _as_rgb(color: Any, what: str) -> RGB:
    """Validate one colour: three integers in 0..255 -> ``(r, g, b)``."""
    try:
        values = list(color)
    except TypeError:
        raise ValueError(f"{what} must be 3 integers in 0..255; got {color!r}") from None
    if len(values) != 3:
        raise ValueError(f"{what} must be 3 integers in 0..255; got {color!r}")
    out = []
    for v in values:
        # Accept ints and integer-valued floats (e.g. from numpy), reject 0.5.
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"{what} must be 3 integers in 0..255; got {color!r}")
        if float(v) != int(v) or not 0 <= int(v) <= 255:
            raise ValueError(
                f"{what} must be 3 integers in 0..255; got {color!r} "
                "(colours outside 0..255 or non-integer)"
            )
        out.append(int(v))
    return (out[0], out[1], out[2])


def _distance_matrix(colors: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances of the rows of ``colors`` ([K, 3]), inf on the diagonal."""
    c = np.asarray(colors).astype(np.float64)
    d = np.sqrt(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1))
    d[np.diag_indices(len(c))] = np.inf
    return d


def _pairwise_min_distance(colors: np.ndarray) -> float:
    """Smallest Euclidean distance between two rows of ``colors`` ([K, 3])."""
    if len(colors) < 2:
        return math.inf
    return float(_distance_matrix(colors).min())


def _closest_pair(colors: np.ndarray) -> tuple[int, int]:
    """Row indices ``(i, j)``, ``i < j``, of the closest two rows of ``colors`` (>= 2 rows)."""
    i, j = np.unravel_index(int(np.argmin(_distance_matrix(colors))), (len(colors), len(colors)))
    return (int(min(i, j)), int(max(i, j)))


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

        is_ignore = t == self._ignore_index
        bad = ((t < 0) | (t >= k)) & ~is_ignore
        if bool(bad.any()):
            bad_values = torch.unique(t[bad]).tolist()
            shown = bad_values[:10] + (["..."] if len(bad_values) > 10 else [])
            raise ValueError(
                f"labels contain values {shown} outside the palette: valid class ids "
                f"are 0..{k - 1} (plus ignore_index {self._ignore_index})"
            )

        # Map ignore -> row K of the table, then gather all three channels at once.
        index = torch.where(is_ignore, torch.full_like(t, k), t)
        table_t = self._table01.to(t.device).T  # [3, K+1]
        rgb = table_t[:, index]  # [3, ..., H, W]
        rgb = rgb.movedim(0, -3).contiguous()  # [..., 3, H, W]
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
        out_shape = t.shape[:-3] + t.shape[-2:]
        pixels = t.movedim(-3, -1).reshape(-1, 3)  # [..., 3, H, W] -> [N, 3]
        labels = map_colors(pixels, self._nearest_labels)
        return like_input(labels.reshape(out_shape), was_numpy)

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
        if style == "json":
            # json.dumps quotes and escapes class names correctly (quotes,
            # backslashes, unicode) - free text class names are allowed.
            body = ", ".join(f"{json.dumps(n)}: <{r},{g},{b}>" for n, (r, g, b) in pairs)
            return PROMPT_PREFIX + "{" + body + "}"
        if style == "rgb":
            body = ", ".join(f"{n} in rgb({r}, {g}, {b})" for n, (r, g, b) in pairs)
        elif style == "hex":
            body = ", ".join(f"{n} in #{r:02x}{g:02x}{b:02x}" for n, (r, g, b) in pairs)
        elif style == "natural":
            body = ", ".join(
                f"{n} in {BASIC_COLOR_NAMES.get(c) or 'rgb({}, {}, {})'.format(*c)}"
                for n, c in pairs
            )
        else:
            raise ValueError(f"unknown prompt style {style!r}; expected one of {PROMPT_STYLES}")
        return PROMPT_PREFIX + body


# --------------------------------------------------------------------------
# Palettes
# --------------------------------------------------------------------------
#: The 8 corners of the RGB cube, in the order :func:`well_separated_palette`
#: uses them. The first four (red, green, blue, white) form a regular
#: tetrahedron (pairwise distance 255*sqrt(2) ~= 360.6), the best possible for
#: 3 or 4 colours; the other four complete the cube (min distance 255, the
#: best possible for 8 colours). Black comes last because it is the default
#: ``ignore_color``.
CUBE_CORNERS_ORDER: tuple[RGB, ...] = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 255),
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 255),
    (0, 0, 0),
)


def _lattice(levels: int) -> np.ndarray:
    """All colours of the ``levels^3`` lattice with evenly spaced 0..255 levels."""
    values = np.round(np.linspace(0, 255, levels)).astype(np.int64)
    return np.array(list(itertools.product(values, repeat=3)), dtype=np.int64)


def well_separated_palette(n: int, exclude: Iterable[Sequence[int]] = ()) -> list[RGB]:
    """``n`` deterministic RGB colours that are as far apart as we can cheaply make them.

    Used for evaluation: with maximally distinct colours, the codec's own
    error (after 8-bit quantisation or mild colour drift) is zero, so any
    error measured is the model's.

    Algorithm (greedy farthest-point selection, seeded with the cube corners):

    1. Take the 8 RGB cube corners in :data:`CUBE_CORNERS_ORDER`, skipping any
       corner closer than 127.5 (half the corner spacing) to an excluded
       colour. Corners are the optimal packing for 8 points in a cube; the
       order makes every prefix good too (n=2..4 give min distance ~360.6,
       n=5..8 give 255).
    2. Beyond that, repeatedly add the colour of the lattice
       ``{0, 51, ..., 255}^3`` (216 colours; a ``{0, 17, ..., 255}^3`` lattice
       when more are needed) that maximises the minimum distance to every
       colour chosen so far and every excluded colour. Ties go to the first
       lattice colour, so the result is deterministic.

    Args:
        n: number of colours, >= 1.
        exclude: colours to stay away from (e.g. the ignore colour).

    Returns:
        list of ``n`` ``(r, g, b)`` integer tuples.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    excluded = [_as_rgb(c, "excluded colour") for c in exclude]
    excluded_arr = np.asarray(excluded, dtype=np.float64).reshape(-1, 3)

    chosen: list[RGB] = []
    for corner in CUBE_CORNERS_ORDER:
        if len(chosen) == n:
            return chosen
        if len(excluded_arr):
            d = np.sqrt(((excluded_arr - np.asarray(corner, np.float64)) ** 2).sum(1))
            if d.min() < 127.5:
                continue
        chosen.append(corner)

    if len(chosen) < n:
        lattice = _lattice(6)
        if n + len(excluded) > len(lattice):
            lattice = _lattice(16)
        if n + len(excluded) > len(lattice):
            raise ValueError(
                f"cannot pick {n} distinct colours: at most {len(lattice) - len(excluded)} "
                f"are available with {len(excluded)} excluded"
            )
        lat = lattice.astype(np.float64)
        # min_sq[i]: squared distance from lattice colour i to its nearest
        # chosen/excluded colour; updated incrementally after each pick, so the
        # whole selection is O(n * lattice size).
        min_sq = np.full(len(lat), np.inf)
        for c in list(excluded_arr) + [np.asarray(c, np.float64) for c in chosen]:
            min_sq = np.minimum(min_sq, ((lat - c) ** 2).sum(1))
        while len(chosen) < n:
            i = int(np.argmax(min_sq))  # argmax returns the first of equal maxima
            c = lat[i]
            chosen.append((int(c[0]), int(c[1]), int(c[2])))
            min_sq = np.minimum(min_sq, ((lat - c) ** 2).sum(1))
    return chosen


def random_palette(
    class_names: Sequence[str],
    rng: np.random.Generator,
    min_distance: float = MIN_PALETTE_DISTANCE,
    exclude: Iterable[Sequence[int]] = (IGNORE_COLOR,),
    max_tries: int = 4096,
    max_restarts: int = 32,
) -> dict[str, RGB]:
    """Random colours, one per class, pairwise at least ``min_distance`` apart.

    Training with a fresh random palette per example is what teaches the
    model to *follow the colours in the prompt* rather than memorise a fixed
    class -> colour table; the unseen-palette evaluation draws its palettes
    here too. ``min_distance`` (RGB units, default :data:`MIN_PALETTE_DISTANCE`)
    is kept between any two colours and from every ``exclude`` colour (default:
    the ignore colour black), so a :class:`SegmentationCodec` decodes the
    palette with the full :data:`REJECT_RADIUS`. The default works for up to
    ~20 classes (19 Cityscapes classes: fine for every seed tried).

    Rejection sampling: for each class in turn, draw ``max_tries`` uniform
    colours (in one vectorised draw) and keep the first that is at least
    ``min_distance`` from every colour already chosen and from every
    ``exclude`` colour. Early choices can leave no room for the last classes;
    then the whole palette is drawn again (at most ``max_restarts`` more
    times, continuing the same generator). Deterministic given the
    generator's state; never loops forever.

    Raises:
        ValueError: if no palette was found in ``1 + max_restarts`` attempts
            (too many classes for this ``min_distance``), or for bad input.
    """
    names = list(class_names)
    if len(names) < 1:
        raise ValueError("class_names must contain at least 1 class; got 0")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate class names: {dupes}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    if not min_distance >= 0:
        raise ValueError(f"min_distance must be >= 0; got {min_distance}")
    if max_tries < 1 or max_restarts < 0:
        raise ValueError(f"max_tries must be >= 1 and max_restarts >= 0; got {max_tries}, {max_restarts}")

    excluded = [_as_rgb(c, "excluded colour") for c in exclude]
    # Exact integer squared distances; a candidate must also differ from every taken colour
    # (distance > 0) when min_distance is 0.
    min_sq = float(min_distance) ** 2
    best = 0
    for _attempt in range(1 + max_restarts):
        taken = np.asarray(excluded, np.int64).reshape(-1, 3)
        palette: dict[str, RGB] = {}
        for name in names:
            candidates = rng.integers(0, 256, size=(max_tries, 3))
            c = _first_far_enough(candidates, taken, min_sq)
            if c is None:
                break
            palette[name] = (int(c[0]), int(c[1]), int(c[2]))
            taken = np.concatenate([taken, c[None]])
        if len(palette) == len(names):
            return palette
        best = max(best, len(palette))
    raise ValueError(
        f"could not place class {names[best]!r} at min_distance {min_distance} from the other classes and "
        f"{len(excluded)} excluded colour(s): {1 + max_restarts} attempts of {max_tries} draws per class "
        f"placed at most {best} of {len(names)} classes; lower min_distance or use fewer classes"
    )


def _first_far_enough(candidates: np.ndarray, taken: np.ndarray, min_sq: float) -> np.ndarray | None:
    """The first row of ``candidates`` ([T, 3] ints) whose squared distance to every row of
    ``taken`` ([M, 3]) is ``>= min_sq`` and ``> 0``; ``None`` if there is none. Checked in
    growing chunks (the first hit is usually among the first few candidates)."""
    if len(taken) == 0:
        return candidates[0]
    start, size = 0, 64
    while start < len(candidates):
        chunk = candidates[start:start + size]
        d_sq = ((chunk[:, None, :] - taken[None, :, :]) ** 2).sum(-1)  # [chunk, M]
        hits = np.flatnonzero(((d_sq >= min_sq) & (d_sq > 0)).all(1))
        if len(hits):
            return chunk[hits[0]]
        start, size = start + size, size * 4
    return None

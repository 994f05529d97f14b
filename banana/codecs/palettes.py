"""Palettes for :mod:`banana.codecs.segmentation`: colour validation, the rejection-radius
constants, deterministic and random palettes, and the prompt text that names them.

Split out of ``segmentation.py`` (every name here is re-exported there and from
:mod:`banana.codecs`). Colours are RGB integers ``0..255`` throughout.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any, Iterable, Sequence

import numpy as np

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

# --------------------------------------------------------------------------
# Prompt text
# --------------------------------------------------------------------------
def format_prompt(pairs: Sequence[tuple[str, RGB]], style: str = "json") -> str:
    """The segmentation instruction for ``(class name, colour)`` pairs in one of :data:`PROMPT_STYLES`
    (see :meth:`banana.codecs.SegmentationCodec.prompt`)."""
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

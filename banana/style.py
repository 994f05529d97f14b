"""The package's one figure style: every chart banana draws is readable on a slide.

A chart (bars, curves, loss) is 16:9 (:func:`slide_size`), every text is at least
:data:`MIN_FONT_PT` points, metric axes carry a readable name with its unit and which way is
better (:data:`LABELS`), legends sit outside the data, and the best trivial predictor on the same
images is a dashed reference line (:func:`floor_line`). Picture grids (codec encodings) keep their
pixels square and carry :func:`pixel_key`, which says what white (infinite depth) and black
(rejected colours) mean. ``tests/test_figure_style.py`` checks each figure function against these
rules. Nothing here imports the rest of banana: every room may draw.
"""

from __future__ import annotations

from typing import Mapping

#: Width over height of every chart.
ASPECT = 16 / 9
#: The smallest font size (points) of any text in a banana figure.
MIN_FONT_PT = 10.0
#: Matplotlib settings applied by :func:`use_style` (and so by every notebook's setup cell).
RC: dict[str, float | str] = {
    "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10, "ytick.labelsize": 10,
    "legend.fontsize": 10, "legend.title_fontsize": 10, "figure.titlesize": 13, "axes.grid": True,
    "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
}
#: How floor reference lines are drawn, everywhere.
FLOOR_STYLE: dict[str, object] = {"color": "0.3", "linestyle": "--", "linewidth": 1.2}

#: Readable names (with units, and for metrics which way is better) of metric and axis columns;
#: other names show as they are.
LABELS: dict[str, str] = {
    "segmentation_miou": "segmentation mIoU (↑)", "segmentation_miou_unseen": "mIoU, unseen palette (↑)",
    "depth_delta1": "depth δ1, metric (↑)", "depth_abs_rel": "depth AbsRel, metric (↓)",
    "depth_delta1_affine": "depth δ1, affine-aligned (↑)", "depth_abs_rel_affine": "depth AbsRel, affine-aligned (↓)",
    "normals_mean_deg": "normals mean angle, deg (↓)", "sky_iou": "sky IoU (↑)",
    "denoising_loss_increase_pct": "generation loss vs base, % (↓)", "seconds_per_image": "seconds per image (↓)",
    "mixing_ratio": "vision fraction of the mix", "sampling_steps": "sampling steps", "ensemble_size": "ensemble size",
    "labeled_scenes": "labeled scenes", "depth_codec": "depth codec", "palette": "segmentation palette",
}
#: What the two special colours of a decoded picture mean (see :func:`pixel_key`).
PIXEL_MEANINGS: Mapping[str, tuple[tuple[float, float, float], str]] = {
    "white": ((1.0, 1.0, 1.0), "white in depth: infinitely far (sky)"),
    "black": ((0.0, 0.0, 0.0), "black in segmentation: rejected colour (no class)"),
}


def label(name: str) -> str:
    """The readable name of a metric or axis column (:data:`LABELS`), else the name itself."""
    return LABELS.get(name, name)


def slide_size(width: float = 13.33) -> tuple[float, float]:
    """A 16:9 figure size in inches (13.33 x 7.5 is a widescreen slide)."""
    return (width, width / ASPECT)


def use_style() -> None:
    """Apply :data:`RC` to matplotlib (and seaborn's theme when seaborn is installed)."""
    import matplotlib

    try:
        import seaborn as sns

        sns.set_theme(style="whitegrid")
    except ImportError:    # seaborn is a dependency; the style still applies without it
        pass
    matplotlib.rcParams.update(RC)


def floor_line(ax, value: float, label: str = "best floor", vertical: bool = False):
    """The best trivial predictor's value as a dashed reference line across ``ax``; the axis
    grows to show it when the data lie all above or below it (a line outside the view says nothing)."""
    draw = ax.axvline if vertical else ax.axhline
    line = draw(float(value), label=label, **FLOOR_STYLE)
    get, put = (ax.get_xlim, ax.set_xlim) if vertical else (ax.get_ylim, ax.set_ylim)
    lo, hi, value = *get(), float(value)
    log = (ax.get_xscale() if vertical else ax.get_yscale()) == "log"
    if log and value > 0 and not lo * 1.1 <= value <= hi / 1.1:
        put(min(lo, value / 1.2), max(hi, value * 1.2))
    elif not log:                          # a line on (or beyond) the frame's edge would hide behind the spine
        pad = 0.05 * (max(hi, value) - min(lo, value))
        if not lo + pad / 2 <= value <= hi - pad / 2:
            put(min(lo, value - pad), max(hi, value + pad))
    return line


def pixel_key(fig, which=("white", "black")):
    """A legend below a picture grid (outside the pictures; the figure needs
    ``layout="constrained"``) saying what the special colours mean: white = infinite depth,
    black = a rejected segmentation colour. Returns the legend."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=PIXEL_MEANINGS[w][0], edgecolor="0.4", label=PIXEL_MEANINGS[w][1]) for w in which]
    return fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False,
                      fontsize=MIN_FONT_PT)


def panel_layout(n: int, panel_aspect: float = 1.5) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels on one 16:9 figure whose panels come closest to
    ``panel_aspect`` (width over height) while leaving the fewest empty slots."""
    if n < 1:
        raise ValueError(f"panel_layout needs at least one panel, got {n}")
    best = None
    for cols in range(1, n + 1):
        rows = -(-n // cols)
        shape = ASPECT * rows / cols               # each panel's width over height
        score = abs(shape / panel_aspect - 1) + 0.1 * (rows * cols - n)
        if best is None or score < best[0]:
            best = (score, rows, cols)
    return best[1], best[2]

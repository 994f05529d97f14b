"""How sure is a number? Bootstrap intervals over images, and paired differences between models.

Why over images
---------------
The scored images are a sample of the split, and the split a sample of the world: a second
draw of images would give another mIoU. The bootstrap answers "how much would it move?" by
re-drawing the images with replacement (Efron's percentile bootstrap): every metric here is a
function of per-image *sufficient statistics* summed over the images (a confusion matrix, a sum
of angular errors and a pixel count, a per-image AbsRel and a 1), so a resample is a weighted
sum, ``W @ stats`` with ``W ~ Multinomial(N, 1/N)`` of shape ``[B, N]``, reduced to the metric.
Pooled metrics (mIoU over one confusion matrix, normals over all pixels) are resampled as
pooled metrics: whole images move in and out, never single pixels, because pixels of one image
are not independent.

Paired differences
------------------
Two models scored on the same images are compared with the **same** resamples (one ``W`` for
both), so the interval of ``metric(A) - metric(B)`` excludes what the two share (which images are
hard) and keeps only how they differ. A verdict calls A better than B only when that interval
excludes 0 (:func:`compare`), else "tie".

Protocol: ``B = N_BOOTSTRAP`` resamples, seed ``BOOTSTRAP_SEED``, 95% percentile intervals; the
same seed for every call, so an interval is recomputable from ``predictions.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

__all__ = ["N_BOOTSTRAP", "BOOTSTRAP_SEED", "LEVEL", "ImageStatistic", "mean_over_images", "pooled_ratio",
           "bootstrap_weights", "bootstrap_interval", "paired_difference", "compare", "Comparison", "intervals"]

#: Resamples per interval; 1000 keeps the Monte-Carlo error of a 95% percentile bound near 1% of its width.
N_BOOTSTRAP = 1000
#: One fixed seed, so every interval is a pure function of the stored predictions.
BOOTSTRAP_SEED = 0
#: Coverage of every interval.
LEVEL = 0.95


@dataclass(frozen=True)
class ImageStatistic:
    """One metric as per-image statistics ``values`` ``[N, d]`` and a ``reduce`` that maps their
    (weighted) sum over images ``[B, d]`` to the metric ``[B]``."""

    values: np.ndarray
    reduce: Callable[[np.ndarray], np.ndarray]

    def __post_init__(self):
        if self.values.ndim != 2 or len(self.values) == 0:
            raise ValueError(f"per-image statistics must be [N >= 1, d], got shape {self.values.shape}")

    @property
    def n_images(self) -> int:
        return int(self.values.shape[0])

    def value(self) -> float:
        """The metric on the images as scored (all weights 1)."""
        return float(self.reduce(self.values.sum(axis=0, keepdims=True))[0])

    def resampled(self, weights: np.ndarray) -> np.ndarray:
        """The metric under each row of image ``weights`` ``[B, N]``."""
        if weights.shape[1] != self.n_images:
            raise ValueError(f"weights cover {weights.shape[1]} images, the statistic {self.n_images}")
        return self.reduce(weights @ self.values)


def _ratio(summed: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(summed[:, 1] > 0, summed[:, 0] / np.where(summed[:, 1] > 0, summed[:, 1], 1), np.nan)


def mean_over_images(per_image: np.ndarray) -> ImageStatistic:
    """The mean of a per-image value (``NaN`` = the image has no valid pixel and does not count)."""
    per_image = np.asarray(per_image, dtype=np.float64)
    ok = ~np.isnan(per_image)
    return ImageStatistic(np.stack([np.where(ok, per_image, 0.0), ok.astype(np.float64)], axis=1), _ratio)


def pooled_ratio(numerator: np.ndarray, denominator: np.ndarray) -> ImageStatistic:
    """``sum(numerator) / sum(denominator)`` over images (pixel-pooled metrics, IoUs)."""
    return ImageStatistic(np.stack([np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)], axis=1),
                          _ratio)


def bootstrap_weights(n_images: int, n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``[n_boot, n_images]`` counts: how often each image is drawn in each resample."""
    if n_images < 1 or n_boot < 1:
        raise ValueError(f"need n_images >= 1 and n_boot >= 1, got {n_images}, {n_boot}")
    rng = np.random.default_rng(np.random.SeedSequence([0xB007, int(seed), int(n_images)]))
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=n_boot).astype(np.float64)


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(samples, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_interval(stat: ImageStatistic, n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED,
                       level: float = LEVEL) -> tuple[float, float]:
    """The ``level`` percentile-bootstrap interval of ``stat`` over its images."""
    return _percentiles(stat.resampled(bootstrap_weights(stat.n_images, n_boot, seed)), level)


def paired_difference(a: ImageStatistic, b: ImageStatistic, n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED,
                      level: float = LEVEL) -> tuple[float, float, float]:
    """``(metric(a) - metric(b), lo, hi)``: the difference on the scored images and its paired
    bootstrap interval (both models resampled with the same image weights)."""
    if a.n_images != b.n_images:
        raise ValueError(f"a paired comparison needs the same images: {a.n_images} vs {b.n_images}")
    w = bootstrap_weights(a.n_images, n_boot, seed)
    lo, hi = _percentiles(a.resampled(w) - b.resampled(w), level)
    return a.value() - b.value(), lo, hi


@dataclass(frozen=True)
class Comparison:
    """The paired comparison of two models on one metric, oriented so that ``> 0`` is better for ``a``."""

    difference: float       # a - b, in the metric's own direction
    lo: float
    hi: float
    higher_is_better: bool

    @property
    def outcome(self) -> str:
        """``"beats"`` / ``"trails"`` when the interval of the difference excludes 0, else ``"tie"``."""
        sign = 1 if self.higher_is_better else -1
        lo, hi = sorted((sign * self.lo, sign * self.hi))
        if np.isnan(lo) or lo <= 0 <= hi:
            return "tie"
        return "beats" if lo > 0 else "trails"


def compare(a: ImageStatistic, b: ImageStatistic, higher_is_better: bool, **kwargs) -> Comparison:
    """:func:`paired_difference` with its verdict (:attr:`Comparison.outcome`)."""
    return Comparison(*paired_difference(a, b, **kwargs), higher_is_better=higher_is_better)


def intervals(stats: Mapping[str, ImageStatistic], **kwargs) -> dict[str, list[float]]:
    """``{name: [lo, hi]}`` for every statistic (what ``metrics.json`` stores as ``ci95``)."""
    return {name: list(bootstrap_interval(stat, **kwargs)) for name, stat in stats.items()}

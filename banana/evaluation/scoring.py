"""One scoring function for every model: decoded answers + labels -> metrics with intervals.

:func:`score_task` is the only place where a task's answers meet its metrics: the generalist
(:mod:`banana.evaluation.generalist`), specialists, floor baselines and :func:`recompute_metrics`
all call it, so a stored prediction re-scores to exactly the numbers that were written.

What a task's result holds (protocol: :mod:`banana.evaluation.metrics`):

* segmentation: ``miou``, ``per_class``, ``pixel_accuracy``, ``rejected_fraction``;
* depth: ``metric`` and ``affine`` (:func:`~banana.evaluation.metrics.depth_metrics` inside the
  dataset's ``[min_depth, max_depth]``, predictions clipped to it), and ``sky``
  (:func:`~banana.evaluation.metrics.sky_iou`: predicted beyond the range vs true sky);
* normals: ``mean``, ``median``, ``within_*``, ``n_pixels``;
* every task: ``ci95`` = ``{statistic: [lo, hi]}``, the 95% bootstrap interval over images
  (:mod:`banana.evaluation.uncertainty`) of each statistic :func:`task_statistics` names.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["SEGMENTATION_TASKS", "score_task", "task_statistics", "lookup", "label_arrays"]

#: The two segmentation settings (canonical palette, and palettes unseen in training).
SEGMENTATION_TASKS = ("segmentation", "segmentation_unseen_palette")


def label_arrays(split, n: int) -> dict[str, np.ndarray]:
    """The labels (those the split has) of its first ``n`` rows, the rows every evaluation scores."""
    rows = split[0:n]
    return {key: np.asarray(rows[key]) for key in ("semantic", "depth", "normals") if key in split.column_names}


def lookup(metrics: Mapping, name: str):
    """``metrics["metric"]["abs_rel"]`` for ``name="metric.abs_rel"`` (statistic names are paths)."""
    value = metrics
    for key in name.split("."):
        value = value[key]
    return value


def _default_spec(class_names, depth_range):
    from banana.real.common import world_spec

    spec = world_spec()
    names = list(spec.class_names if class_names is None else class_names)
    return names, tuple(spec.depth_range if depth_range is None else depth_range)


def _confusion_per_image(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """``[N, K, K + 1]`` confusion matrices (last column: rejected), the per-image pieces of
    :func:`banana.evaluation.metrics.segmentation_confusion` (which validates the ids)."""
    n = pred.shape[0]
    p = pred.reshape(n, -1).astype(np.int64)
    t = target.reshape(n, -1).astype(np.int64)
    keep = t != ignore_index
    p = np.where(p == ignore_index, num_classes, p)
    cells = num_classes * (num_classes + 1)
    flat = (np.arange(n)[:, None] * cells + t * (num_classes + 1) + p)[keep]
    return np.bincount(flat, minlength=n * cells).reshape(n, num_classes, num_classes + 1).astype(np.float64)


def _miou_from_confusion(num_classes: int):
    def reduce(summed: np.ndarray) -> np.ndarray:
        cm = summed.reshape(-1, num_classes, num_classes + 1)
        tp = np.diagonal(cm[:, :, :num_classes], axis1=1, axis2=2)
        union = cm.sum(axis=2) + cm[:, :, :num_classes].sum(axis=1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)
        present = ~np.isnan(iou)
        return np.where(present.any(axis=1), np.nansum(iou, axis=1) / np.maximum(present.sum(axis=1), 1), np.nan)
    return reduce


def task_statistics(task: str, prediction, truth: Mapping[str, np.ndarray],
                    class_names: Sequence[str] | None = None, depth_range: tuple[float, float] | None = None,
                    ignore_index: int = 255) -> dict:
    """The per-image statistics (:class:`~banana.evaluation.uncertainty.ImageStatistic`) behind
    ``task``'s headline metrics, keyed by their path in :func:`score_task`'s result
    (``"miou"``, ``"metric.abs_rel"``, ``"sky.iou"``, ``"mean"``, ...). Each one's ``value()``
    equals that metric."""
    import torch

    from banana.evaluation.metrics import depth_per_image, angular_error_deg, sky_masks
    from banana.evaluation.uncertainty import ImageStatistic, mean_over_images, pooled_ratio

    names, (min_depth, max_depth) = _default_spec(class_names, depth_range)
    if task in SEGMENTATION_TASKS:
        k = len(names)
        cm = _confusion_per_image(np.asarray(prediction), np.asarray(truth["semantic"]), k, ignore_index)
        tp = np.trace(cm[:, :, :k], axis1=1, axis2=2)
        return {"miou": ImageStatistic(cm.reshape(len(cm), -1), _miou_from_confusion(k)),
                "pixel_accuracy": pooled_ratio(tp, cm.sum(axis=(1, 2)))}
    if task == "depth":
        out = {}
        for align, key in (("none", "metric"), ("affine", "affine")):
            per_image = depth_per_image(prediction, truth["depth"], None, align, min_depth, max_depth)["per_image"]
            for metric in ("abs_rel", "delta1", "rmse"):
                out[f"{key}.{metric}"] = mean_over_images(per_image[metric])
        ps, ts = sky_masks(prediction, truth["depth"], max_depth)
        axes = tuple(range(1, ps.ndim))
        out["sky.iou"] = pooled_ratio((ps & ts).sum(dim=axes).numpy(), (ps | ts).sum(dim=axes).numpy())
        return out
    if task == "normals":
        target = torch.as_tensor(np.asarray(truth["normals"])).double()
        err = angular_error_deg(torch.as_tensor(np.asarray(prediction)), target)
        valid = target.norm(dim=-3) > 0.5
        axes = tuple(range(1, err.ndim))
        count = valid.sum(dim=axes).double().numpy()
        out = {"mean": pooled_ratio((err * valid).sum(dim=axes).numpy(), count)}
        for thr in (11.25, 22.5, 30):
            out[f"within_{thr:g}"] = pooled_ratio(100 * ((err < thr) & valid).sum(dim=axes).double().numpy(), count)
        return out
    raise ValueError(f"unknown task {task!r}; choose from {(*SEGMENTATION_TASKS, 'depth', 'normals')}")


def score_task(task: str, prediction, truth: Mapping[str, np.ndarray], class_names: Sequence[str] | None = None,
               depth_range: tuple[float, float] | None = None) -> dict:
    """Score one task's decoded answers against labels (``truth``: the ``semantic``, ``depth`` or
    ``normals`` arrays of the same rows). ``class_names``: segmentation classes in id order, and
    ``depth_range``: ``(min_depth, max_depth)``; both default to the world's
    (:func:`banana.real.dataset_spec` gives a dataset's). Adds ``ci95`` (module docstring)."""
    from banana.evaluation.metrics import depth_metrics, mean_iou, normal_metrics, sky_iou
    from banana.evaluation.uncertainty import intervals

    names, (min_depth, max_depth) = _default_spec(class_names, depth_range)
    if task in SEGMENTATION_TASKS:
        result = mean_iou(np.asarray(prediction).astype(np.int64), np.asarray(truth["semantic"]).astype(np.int64),
                          len(names), class_names=names)
    elif task == "depth":
        result = {align_key: depth_metrics(prediction, truth["depth"], align=align, min_depth=min_depth,
                                           max_depth=max_depth)
                  for align, align_key in (("none", "metric"), ("affine", "affine"))}
        result["sky"] = sky_iou(prediction, truth["depth"], max_depth)
    elif task == "normals":
        result = normal_metrics(prediction, truth["normals"])
    else:
        raise ValueError(f"unknown task {task!r}; choose from {(*SEGMENTATION_TASKS, 'depth', 'normals')}")
    if task == "depth":
        result["range"] = {"min_depth": min_depth, "max_depth": max_depth}   # the clip that was applied
    result["ci95"] = intervals(task_statistics(task, prediction, truth, names, (min_depth, max_depth)))
    return result

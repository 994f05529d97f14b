"""Score a generalist on a world split: sample every task, decode, measure.

The generalist answers each task with a picture; :meth:`BananaPipeline.predict` decodes it with
the task's codec. This module runs that over a dataset split in batches, keeps the decoded
answers (so anyone can recompute a metric) and scores them with :mod:`banana.evaluation.metrics`,
the same code that measured the codec ceiling.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch


def _rows(split, start: int, stop: int) -> dict[str, np.ndarray]:
    rows = split[start:stop]
    return {key: np.asarray(rows[key]) for key in ("image", "semantic", "depth", "normals")
            if key in split.column_names}


def evaluate_generalist(pipe, split, tasks: Sequence[str] | None = None,
                        palette: Mapping[str, tuple[int, int, int]] | None = None, limit: int | None = None,
                        batch_size: int = 16, seed: int = 0, progress: bool = True, **sampling) -> dict:
    """Predict and score ``tasks`` on the first ``limit`` examples of a world ``split``.

    Args:
        pipe: a :class:`banana.pipeline.BananaPipeline`.
        split: one split of :func:`banana.world.load_world` (numpy format), or of a real dataset
            (:mod:`banana.real`).
        tasks: default every task the split has labels for (:func:`banana.real.dataset_spec`).
        palette: segmentation palette named in the prompt (default: the split's canonical one);
            it must name the split's classes in id order, the ids the ground truth is scored in.
        seed: batch ``k`` samples with ``torch.Generator().manual_seed(seed + k)``, so results
            do not depend on the batch size of earlier tasks.
        sampling: forwarded to ``pipe.predict`` (steps, scheduler, guidance, ensemble_size).

    Returns ``{"metrics": {task: {...}}, "predictions": {task: array}, "seconds_per_image":
    {task: float}}``, each task scored by :func:`banana.evaluation.scoring.score_task` (depth inside
    the split's ``[min_depth, max_depth]``, with 95% bootstrap intervals over images).
    """
    from tqdm.auto import tqdm

    from banana.evaluation.scoring import score_task
    from banana.real.common import dataset_spec

    spec = dataset_spec(split)      # the world: all tasks, CLASS_NAMES and CANONICAL_PALETTE
    tasks = tuple(t for t in ("segmentation", "depth", "normals") if t in spec.tasks) if tasks is None else tasks
    missing = [t for t in tasks if t not in spec.tasks]
    if missing:
        raise ValueError(f"the {spec.name} split has no labels for {missing}; it offers {spec.tasks}")
    palette = dict(palette or spec.palette)
    if list(palette) != list(spec.class_names):
        raise ValueError(f"the palette must name the {spec.name} classes in id order {list(spec.class_names)}, "
                         f"got {list(palette)}")
    n = len(split) if limit is None else min(limit, len(split))
    if n == 0:
        raise ValueError("evaluate_generalist got an empty split")
    truth = _rows(split, 0, n)
    results: dict = {"metrics": {}, "predictions": {}, "seconds_per_image": {}, "n_images": n}
    for task in tasks:
        outputs, seconds = [], 0.0
        batches = range(0, n, batch_size)
        for k, start in enumerate(tqdm(batches, desc=f"evaluate {task}", disable=not progress)):
            images = truth["image"][start:start + batch_size]
            out = pipe.predict(images, task, palette=palette, generator=torch.Generator().manual_seed(seed + k),
                               **sampling)
            outputs.append(out["prediction"].cpu().numpy())
            seconds += pipe.last_timing * len(images)
        prediction = np.concatenate(outputs)
        results["predictions"][task] = prediction
        results["seconds_per_image"][task] = seconds / n
        results["metrics"][task] = score_task(task, prediction, truth, list(palette), spec.depth_range)
    return results


def headline_metrics(metrics: Mapping) -> dict[str, float]:
    """The one-number-per-task summary used in tables: mIoU, depth AbsRel and delta1 (metric),
    normals mean angular error, instance PQ and referring mIoU."""
    out = {}
    if "segmentation" in metrics:
        out["segmentation mIoU"] = metrics["segmentation"]["miou"]
    if "depth" in metrics:
        out["depth AbsRel"] = metrics["depth"]["metric"]["abs_rel"]
        out["depth delta1"] = metrics["depth"]["metric"]["delta1"]
    if "normals" in metrics:
        out["normals mean angle (deg)"] = metrics["normals"]["mean"]
    if "instance" in metrics:
        out["instance PQ"] = metrics["instance"]["pq"]
    if "referring" in metrics:
        out["referring mIoU"] = metrics["referring"]["miou"]
    return out

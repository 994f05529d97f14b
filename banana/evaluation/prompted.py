"""Scoring the query tasks (instance and referring segmentation by prompt), with floors and intervals.

Protocol
--------
* **Queries.** Row ``i`` of a split is asked one instance query and one referring query, drawn
  by :func:`banana.tasks.draw_query` with ``numpy.random.default_rng(SeedSequence([QUERY_TAG,
  seed, i]))``: an object class present in the scene, and one of its checked expressions (a row
  without any expression that picks exactly one object is not asked a referring query). Every
  model of a comparison is asked the same queries (:func:`evaluation_queries`), and they are
  stored beside the answers, so ``predictions.npz`` re-scores without the model.
* **Instance** (one class per prompt): instances are matched by IoU > 0.5 (unique matches, COCO
  panoptic); ``pq``, ``sq``, ``rq`` pooled over the images (torchmetrics' ``PanopticQuality``),
  ``precision`` and ``recall`` of the matches (:func:`banana.evaluation.instances.instance_metrics`).
* **Referring**: ``miou`` (mean over expressions of the mask IoU), ``ciou`` (cumulative: summed
  intersections over summed unions) and ``precision@0.5/0.7/0.9`` (RefCOCO conventions).
* ``ci95``: 95% bootstrap intervals over images of each headline (:mod:`~banana.evaluation.uncertainty`).

Floors
------
* ``floor: class prior`` (instance): ignores the image. For the prompted class, the pixel
  positions where that class is at least half as frequent over the train split as at its most
  frequent position, answered as one instance.
* ``floor: largest object`` (referring): ignores the *text*. It reads the scene's true instance
  map and answers its largest object: what a model that segments perfectly but cannot read the
  expression would score.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["QUERY_TAG", "QUERY_FLOOR_NAMES", "QUERY_HEADLINES", "evaluation_queries", "query_truth",
           "score_query_task", "query_statistics", "fit_query_floors", "pipeline_answer", "answer_queries",
           "evaluate_answer", "query_floor_results"]

#: First entropy word of the evaluation queries' seed sequence (training draws from others).
QUERY_TAG = 0x9E7A_51ED
#: Display names of the query tasks' floors.
QUERY_FLOOR_NAMES = {"instance": "floor: class prior", "referring": "floor: largest object"}
#: The headline metric of each query task (higher is better for both).
QUERY_HEADLINES = {"instance": "pq", "referring": "miou"}


def _row(split, i: int) -> dict:
    row = split[int(i)]
    return {k: row[k] for k in ("image", "semantic", "instance", "objects") if k in row}


def evaluation_queries(split, n: int, seed: int = 0) -> dict[str, dict[str, list]]:
    """``{task: {"rows": [...], "queries": [...]}}`` for rows ``0..n-1`` (module docstring)."""
    from banana.tasks import draw_query

    out = {"instance": {"rows": [], "queries": []}, "referring": {"rows": [], "queries": []}}
    for i in range(int(n)):
        row = _row(split, i)
        rng = np.random.default_rng(np.random.SeedSequence([QUERY_TAG, int(seed), i]))
        for task in ("instance", "referring"):
            query = draw_query(task, row, rng)
            if query is not None:
                out[task]["rows"].append(i)
                out[task]["queries"].append(query)
    return out


def query_truth(split, task: str, rows: Sequence[int], queries: Sequence[str]) -> np.ndarray:
    """The exact answers ``[M, H, W]`` (instance ids / referred masks) of ``queries`` on ``rows``."""
    from banana.tasks import query_target

    if len(rows) != len(queries) or not len(rows):
        raise ValueError(f"need one query per row and at least one; got {len(rows)} rows, {len(queries)} queries")
    return np.stack([query_target(task, _row(split, r), q) for r, q in zip(rows, queries)])


def _pq_reduce(summed: np.ndarray) -> np.ndarray:
    tp, fp, fn, iou_sum = summed.T
    denominator = tp + 0.5 * fp + 0.5 * fn
    return np.where(denominator > 0, iou_sum / np.where(denominator > 0, denominator, 1), 1.0)


def query_statistics(task: str, prediction, truth) -> dict:
    """The per-image statistics behind the headline metrics of a query task (for intervals and
    paired comparisons): ``pq`` for instance; ``miou``, ``ciou``, ``precision@0.5`` for referring."""
    from banana.evaluation.instances import instance_metrics, referring_metrics
    from banana.evaluation.uncertainty import ImageStatistic, mean_over_images, pooled_ratio

    if task == "instance":
        per_image = np.asarray(instance_metrics(prediction, truth)["per_image"], np.float64)
        return {"pq": ImageStatistic(per_image, _pq_reduce)}
    if task == "referring":
        m = referring_metrics(prediction, truth)
        inter, union = np.asarray(m["intersection"]), np.asarray(m["union"])
        return {"miou": mean_over_images(inter / union), "ciou": pooled_ratio(inter, union),
                "precision@0.5": mean_over_images((inter / union >= 0.5).astype(np.float64))}
    raise ValueError(f"unknown query task {task!r}; choose from {tuple(QUERY_HEADLINES)}")


def score_query_task(task: str, prediction, truth) -> dict:
    """Metrics of a query task's answers ``[M, H, W]`` against ``truth`` (module docstring), with ``ci95``."""
    from banana.evaluation.instances import instance_metrics, referring_metrics
    from banana.evaluation.uncertainty import intervals

    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if task == "instance":
        result = {k: v for k, v in instance_metrics(prediction.astype(np.int64), truth.astype(np.int64)).items()
                  if k != "per_image"}
    elif task == "referring":
        result = {k: v for k, v in referring_metrics(prediction, truth).items() if k not in ("intersection", "union")}
    else:
        raise ValueError(f"unknown query task {task!r}; choose from {tuple(QUERY_HEADLINES)}")
    result["n_queries"] = int(len(truth))
    result["ci95"] = intervals(query_statistics(task, prediction, truth))
    return result


# --------------------------------------------------------------------------- answering
#: What answers a query task: ``answer(images [M, 3, H, W] uint8, queries, rows) -> [M, H, W]``.
Answer = Callable[[np.ndarray, Sequence[str], Sequence[int]], np.ndarray]


def fit_query_floors(train_split, limit: int | None = None) -> dict[str, Callable]:
    """The floors of :data:`QUERY_FLOOR_NAMES` as ``{task: answer(split)}``: call with the scored
    split to get an :data:`Answer` (the largest-object floor reads that split's instance maps).
    The class prior is fitted on the first ``limit`` train rows (default all)."""
    from banana.world import CLASS_IDS

    n = len(train_split) if limit is None else min(int(limit), len(train_split))
    if n == 0:
        raise ValueError("fit_query_floors got an empty train split")
    semantic = np.asarray(train_split[0:n]["semantic"])
    priors = {}
    for name, class_id in CLASS_IDS.items():
        frequency = (semantic == class_id).mean(axis=0)
        priors[name] = (frequency >= 0.5 * frequency.max()) & (frequency > 0)

    def class_prior(split) -> Answer:
        def answer(images, queries, rows):
            unknown = sorted(set(queries) - set(priors))
            if unknown:
                raise ValueError(f"the class prior knows no class {unknown}; it has {sorted(priors)}")
            return np.stack([priors[q].astype(np.int64) for q in queries])
        return answer

    def largest_object(split) -> Answer:
        def answer(images, queries, rows):
            out = []
            for r in rows:
                instance = np.asarray(split[int(r)]["instance"]).astype(np.int64)
                ids, counts = np.unique(instance[instance > 0], return_counts=True)
                out.append(instance == ids[np.argmax(counts)] if len(ids) else np.zeros_like(instance, bool))
            return np.stack(out)
        return answer

    return {"instance": class_prior, "referring": largest_object}


def pipeline_answer(pipe, task: str, seed: int = 0, batch_offset: int = 0, **sampling) -> Answer:
    """An :data:`Answer` of a :class:`~banana.pipeline.BananaPipeline`: each call samples with
    ``torch.Generator().manual_seed(seed + k)``, ``k`` counting the calls (the batches)."""
    import torch

    calls = [batch_offset]

    def answer(images, queries, rows):
        generator = torch.Generator().manual_seed(seed + calls[0])
        calls[0] += 1
        return pipe.predict(images, task, query=list(queries), generator=generator, **sampling)["prediction"].cpu().numpy()
    return answer


def answer_queries(answer: Answer, split, task: str, queries: Mapping[str, list], batch_size: int = 16) -> np.ndarray:
    """Run ``answer`` over the rows and queries of one task (``evaluation_queries(...)[task]``) in
    batches; returns the answers ``[M, H, W]`` in row order."""
    rows, asked = list(queries["rows"]), list(queries["queries"])
    if not rows:
        raise ValueError(f"no {task} queries to answer")
    outputs = []
    for lo in range(0, len(rows), batch_size):
        part = rows[lo:lo + batch_size]
        images = np.stack([np.asarray(split[int(r)]["image"]) for r in part])
        outputs.append(np.asarray(answer(images, asked[lo:lo + batch_size], part)))
    return np.concatenate(outputs)


def evaluate_answer(answer: Answer, split, task: str, n: int, seed: int = 0, batch_size: int = 16) -> dict:
    """Score any :data:`Answer` on the queries of rows ``0..n-1`` (:func:`evaluation_queries` of
    ``seed``): a result dict like the harness's (``metrics``, ``predictions``, ``queries``,
    ``seconds_per_image``, ``n_images``), so :mod:`banana.evaluation.comparison` tables it."""
    import time

    asked = evaluation_queries(split, n, seed)[task]
    start = time.perf_counter()
    prediction = answer_queries(answer, split, task, asked, batch_size)
    seconds = (time.perf_counter() - start) / len(asked["rows"])
    truth = query_truth(split, task, asked["rows"], asked["queries"])
    return {"metrics": {task: score_query_task(task, prediction, truth)}, "predictions": {task: prediction},
            "queries": {task: asked}, "seconds_per_image": {task: seconds}, "n_images": int(n)}


def query_floor_results(train_split, split, tasks: Sequence[str], limit: int | None = None, seed: int = 0) -> dict:
    """``{floor name: result}`` of the query floors of ``tasks`` on the first ``limit`` rows of ``split``."""
    n = len(split) if limit is None else min(int(limit), len(split))
    floors = fit_query_floors(train_split)
    return {QUERY_FLOOR_NAMES[task]: evaluate_answer(floors[task](split), split, task, n, seed) for task in tasks}

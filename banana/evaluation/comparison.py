"""Put the generalist, its controls, the specialists and the floors in one table, and say what
the table says - with intervals, and only what the intervals allow.

Every result dict here comes from :func:`banana.evaluation.harness.evaluate_pipeline` or
:func:`~banana.evaluation.harness.evaluate_specialist` (floors included: they are scored as
specialists), so all models are scored by the same code (:func:`banana.evaluation.scoring.score_task`)
on the same first ``n`` images of each split. Each result keeps its decoded ``predictions``, and
:class:`Scoreboard` turns them into per-image statistics once, from which come

* the value and its 95% bootstrap interval over images (:func:`comparison_table`);
* paired differences between two models on the same images (:func:`verdict`): "beats" or
  "trails" only when the paired interval of the difference excludes 0, else "tie";
* "at floor": a model not distinguishable from the best floor baseline on that metric (or below
  it) has learned nothing the floor does not already know, whatever its number.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from banana.evaluation.scoring import label_arrays, lookup, task_statistics
from banana.evaluation.uncertainty import ImageStatistic, bootstrap_interval, compare

__all__ = ["HEADLINES", "POINT_METRICS", "Scoreboard", "comparison_table", "per_class_table", "verdict", "point_record",
           "point_reading", "floor_results", "merge_results", "comparison_markdown"]

#: (task key in the results, statistic name (a path into the task's metrics), label, higher is better)
HEADLINES: tuple[tuple[str, str, str, bool], ...] = (
    ("segmentation", "miou", "segmentation mIoU", True),
    ("segmentation_unseen_palette", "miou", "mIoU, unseen palette", True),
    ("depth", "metric.abs_rel", "depth AbsRel (metric, clipped)", False),
    ("depth", "metric.delta1", "depth delta1", True),
    ("depth", "affine.abs_rel", "depth AbsRel (affine-aligned)", False),
    ("depth", "sky.iou", "sky IoU (depth beyond range)", True),
    ("normals", "mean", "normals mean angle (deg)", False),
    ("normals", "within_11.25", "normals % within 11.25 deg", True),
    ("instance", "pq", "instance PQ", True),
    ("referring", "miou", "referring mIoU", True),
    ("referring", "ciou", "referring cIoU", True),
)
#: Tasks answered per query (``result["queries"][task]``: the rows asked and their queries).
_QUERY_TASKS = ("instance", "referring")


class Scoreboard:
    """Per-image statistics of every ``(split, model, task)`` of ``results[split][model]``,
    computed once from the stored predictions against ``splits[split]``'s labels."""

    def __init__(self, results: Mapping[str, Mapping[str, Mapping]], splits: Mapping[str, object]):
        from banana.real.common import dataset_spec

        self.results = results
        self._stats: dict[tuple[str, str, str], dict[str, ImageStatistic]] = {}
        self._truth, self._spec, self._splits, self._queries = {}, {}, splits, {}
        for split, by_model in results.items():
            if split not in splits:
                raise ValueError(f"results hold split {split!r} but no dataset split was given for it")
            sizes = {model: int(r["n_images"]) for model, r in by_model.items() if "n_images" in r}
            if len(set(sizes.values())) > 1:
                raise ValueError(f"[{split}] models were scored on different numbers of images {sizes}: "
                                 "a paired comparison needs the same images")
            n = next(iter(sizes.values())) if sizes else len(splits[split])
            self._truth[split] = label_arrays(splits[split], n)
            self._spec[split] = dataset_spec(splits[split])

    def statistic(self, split: str, model: str, task: str, name: str) -> ImageStatistic | None:
        """The statistic, or ``None`` when ``model`` did not answer ``task`` on ``split``."""
        result = self.results[split].get(model)
        if result is None or task not in result.get("predictions", {}):
            return None
        key = (split, model, task)
        if key not in self._stats and task in _QUERY_TASKS:
            self._stats[key] = self._query_statistics(split, model, task)
        if key not in self._stats:
            spec = self._spec[split]
            self._stats[key] = task_statistics(task, result["predictions"][task], self._truth[split],
                                               list(spec.class_names), spec.depth_range)
        return self._stats[key][name]

    def _query_statistics(self, split: str, model: str, task: str) -> dict[str, ImageStatistic]:
        """A query task's statistics; every model of a split must have been asked the same queries."""
        from banana.evaluation.prompted import query_statistics, query_truth

        asked = self.results[split][model]["queries"][task]
        pair = (tuple(asked["rows"]), tuple(asked["queries"]))
        known = self._queries.setdefault((split, task), {})
        if known and known["asked"] != pair:
            raise ValueError(f"[{split}] {model} was asked other {task} queries than the other models: "
                             "a paired comparison needs the same queries (evaluation_queries with one seed)")
        if not known:
            known.update(asked=pair, truth=query_truth(self._splits[split], task, *pair))
        return query_statistics(task, self.results[split][model]["predictions"][task], known["truth"])

    def models(self, split: str) -> list[str]:
        return list(self.results[split])


def comparison_table(results: Mapping[str, Mapping[str, Mapping]], splits: Mapping[str, object]):
    """``results[split][model]`` = an evaluation result dict -> tidy DataFrame with columns
    ``split, model, metric, value, ci_lo, ci_hi, n_images, higher_is_better, seconds_per_image``
    (``ci_*``: the 95% bootstrap interval over images)."""
    import pandas as pd

    board = Scoreboard(results, splits)
    rows = []
    for split, by_model in results.items():
        for model, result in by_model.items():
            for task, name, label, higher in HEADLINES:
                stat = board.statistic(split, model, task, name)
                if stat is None:
                    continue
                lo, hi = bootstrap_interval(stat)
                rows.append({"split": split, "model": model, "metric": label, "value": stat.value(),
                             "ci_lo": lo, "ci_hi": hi, "n_images": stat.n_images, "higher_is_better": higher,
                             "seconds_per_image": result.get("seconds_per_image", {}).get(task)})
    return pd.DataFrame(rows)


def per_class_table(results: Mapping[str, Mapping[str, Mapping]], task: str = "segmentation"):
    """Per-class IoU of every model that answered ``task``: DataFrame ``split, model, class, iou``."""
    import pandas as pd

    rows = [{"split": split, "model": model, "class": name, "iou": iou}
            for split, by_model in results.items() for model, result in by_model.items()
            if task in result.get("metrics", {})
            for name, iou in lookup(result["metrics"][task], "per_class").items()]
    return pd.DataFrame(rows)


def _interval(stat: ImageStatistic) -> str:
    lo, hi = bootstrap_interval(stat)
    return f"{stat.value():.3f} [{lo:.3f}, {hi:.3f}]"


def _floor_status(board: Scoreboard, split: str, model: str, task: str, name: str, higher: bool,
                  floors: Sequence[str]) -> str | None:
    """"at floor" / "below floor" / "above floor" against the best floor on this metric."""
    ours = board.statistic(split, model, task, name)
    scored = [(f, board.statistic(split, f, task, name)) for f in floors]
    scored = [(f, s) for f, s in scored if s is not None and not np.isnan(s.value())]
    if ours is None or not scored:
        return None
    best, best_stat = (max if higher else min)(scored, key=lambda fs: fs[1].value())
    c = compare(ours, best_stat, higher)
    word = {"beats": "above floor", "tie": "at floor", "trails": "below floor"}[c.outcome]
    best = best.removeprefix("floor: ")
    return (f"{word} (best floor: {best} {best_stat.value():.3f}; difference {c.difference:+.3f} "
            f"[{c.lo:+.3f}, {c.hi:+.3f}])")


def verdict(results: Mapping[str, Mapping[str, Mapping]], splits: Mapping[str, object], generalist: str,
            rivals: Sequence[str], floors: Sequence[str] = ()) -> list[str]:
    """One sentence per (split, metric): the generalist's value and interval, whether it is at
    floor, and for each rival "beats" / "trails" / "ties" by a paired bootstrap on the same images.
    A rival's own floor status is named when it is at or below floor. Computed from the stored
    predictions, so the verdict cannot drift from the table."""
    board = Scoreboard(results, splits)
    lines = []
    for split in results:
        for task, name, label, higher in HEADLINES:
            ours = board.statistic(split, generalist, task, name)
            if ours is None:
                continue
            parts = [f"{generalist} {_interval(ours)}"]
            status = _floor_status(board, split, generalist, task, name, higher, floors)
            if status:
                parts[0] += f", {status}"
            for rival in rivals:
                theirs = board.statistic(split, rival, task, name)
                if theirs is None:
                    continue
                c = compare(ours, theirs, higher)
                word = {"beats": "beats", "trails": "trails", "tie": "ties with"}[c.outcome]
                text = (f"{word} {rival} ({theirs.value():.3f}; difference {c.difference:+.3f} "
                        f"[{c.lo:+.3f}, {c.hi:+.3f}])")
                rival_status = _floor_status(board, split, rival, task, name, higher, floors)
                if rival_status and not rival_status.startswith("above"):
                    text += f" - {rival} is {rival_status.split(' (')[0]}"
                parts.append(text)
            lines.append(f"[{split}] {label}: " + "; ".join(parts))
    return lines


#: The flat metric names grid points write into ``metrics.json``: name -> (task, statistic, higher is better).
POINT_METRICS: dict[str, tuple[str, str, bool]] = {
    "segmentation_miou": ("segmentation", "miou", True),
    "segmentation_miou_unseen": ("segmentation_unseen_palette", "miou", True),
    "depth_abs_rel": ("depth", "metric.abs_rel", False),
    "depth_delta1": ("depth", "metric.delta1", True),
    "depth_abs_rel_affine": ("depth", "affine.abs_rel", False),
    "depth_delta1_affine": ("depth", "affine.delta1", True),
    "sky_iou": ("depth", "sky.iou", True),
    "normals_mean_deg": ("normals", "mean", False),
    "instance_pq": ("instance", "pq", True),
    "referring_miou": ("referring", "miou", True),
}


def point_record(result: Mapping, split, floors: Mapping[str, Mapping]) -> dict[str, float]:
    """The flat record of one grid point: for every :data:`POINT_METRICS` name the model answered,
    ``NAME`` (value), ``NAME_ci_lo``/``NAME_ci_hi`` (95% bootstrap over images), ``NAME_floor`` (the
    best floor's value on the same images) and ``NAME_above_floor`` (1 when the paired interval of
    model - best floor excludes 0 in the model's favour, else 0: "at floor"). ``floors``: name ->
    result of each floor baseline scored on the same rows of ``split``."""
    results = {"split": {"model": result, **floors}}
    board = Scoreboard(results, {"split": split})
    record: dict[str, float] = {}
    for key, (task, name, higher) in POINT_METRICS.items():
        ours = board.statistic("split", "model", task, name)
        if ours is None:
            continue
        lo, hi = bootstrap_interval(ours)
        record.update({key: ours.value(), f"{key}_ci_lo": lo, f"{key}_ci_hi": hi})
        scored = [s for s in (board.statistic("split", f, task, name) for f in floors) if s is not None]
        scored = [s for s in scored if not np.isnan(s.value())]
        if scored:
            best = (max if higher else min)(scored, key=lambda s: s.value())
            record[f"{key}_floor"] = best.value()
            record[f"{key}_above_floor"] = float(compare(ours, best, higher).outcome == "beats")
    return record


def point_reading(record: Mapping[str, float]) -> str:
    """A :func:`point_record` read out as Markdown, one line per metric: value, 95% interval, the
    best floor on the same images and whether the model is above it. Notebooks print it as "what
    this run found", so their words come from the run's numbers and cannot disagree with them."""
    labels = {(task, name): label for task, name, label, _ in HEADLINES}
    lines = []
    for key, (task, name, higher) in POINT_METRICS.items():
        if key not in record:
            continue
        text = (f"- {labels.get((task, name), key)} ({'higher' if higher else 'lower'} is better): "
                f"{record[key]:.3f} [{record[f'{key}_ci_lo']:.3f}, {record[f'{key}_ci_hi']:.3f}]")
        if f"{key}_floor" in record:
            text += (f", **above** the best floor ({record[f'{key}_floor']:.3f})" if record.get(f"{key}_above_floor")
                     else f", at or below the best floor ({record[f'{key}_floor']:.3f}): no finding")
        lines.append(text)
    return "\n".join(lines) + "\n"


def floor_results(train_split, split, limit: int | None = None, tasks=None, seed: int = 0) -> dict[str, dict]:
    """Every per-task floor (:mod:`banana.evaluation.floors`) fitted on ``train_split`` and scored on
    the first ``limit`` rows of ``split``: ``{floor name: result}``, ready for :func:`verdict`,
    :func:`comparison_table` and :func:`point_record`. The majority-class floor also answers the
    unseen-palette setting (it never reads a prompt). Query tasks in ``tasks`` add their floors
    (:mod:`banana.evaluation.prompted`), asked the queries of ``seed``."""
    from banana.evaluation.floors import FLOOR_NAMES, fit_floors
    from banana.evaluation.harness import UNSEEN_TASK, evaluate_specialist
    from banana.evaluation.prompted import query_floor_results

    asked = [t for t in (tasks or ()) if t in _QUERY_TASKS]
    dense = None if tasks is None else [t for t in tasks if t not in _QUERY_TASKS and t != UNSEEN_TASK]
    out = query_floor_results(train_split, split, asked, limit, seed) if asked else {}
    if dense == []:
        return out
    for task, predictor in fit_floors(train_split, tasks=dense).items():
        result = evaluate_specialist(predictor, split, task, limit=limit)
        if task == "segmentation":
            for key in ("metrics", "predictions", "seconds_per_image"):
                result[key][UNSEEN_TASK] = result[key]["segmentation"]
        out[FLOOR_NAMES[task]] = result
    return out


def merge_results(parts: Sequence[Mapping]) -> dict:
    """One result dict from per-task results of the same images (e.g. three specialists, one per
    task, or the three per-task floors), so a model answering several tasks is one table row."""
    if not parts:
        raise ValueError("merge_results got no results")
    sizes = {int(p["n_images"]) for p in parts}
    if len(sizes) > 1:
        raise ValueError(f"cannot merge results scored on different numbers of images: {sorted(sizes)}")
    merged: dict = {"n_images": sizes.pop()}
    for key in ("metrics", "predictions", "seconds_per_image"):
        merged[key] = {task: value for p in parts for task, value in p.get(key, {}).items()}
    return merged


def comparison_markdown(table, note: str = "") -> str:
    """:func:`comparison_table` as Markdown: one table per split, a row per model, a column per
    metric, each cell ``value [95% interval]``; a model that did not answer a metric shows ``-``."""
    table = table.assign(cell=[f"{v:.4f} [{lo:.4f}, {hi:.4f}]"
                               for v, lo, hi in zip(table["value"], table["ci_lo"], table["ci_hi"])])
    parts = [note, ""] if note else []
    for split, rows in table.groupby("split", sort=False):
        wide = rows.pivot_table(index="model", columns="metric", values="cell", aggfunc="first", sort=False)
        wide = wide.reindex(index=list(dict.fromkeys(rows["model"])), columns=list(dict.fromkeys(rows["metric"])))
        parts += [f"### {split}", "", wide.fillna("-").reset_index().to_markdown(index=False), ""]
    return "\n".join(parts)

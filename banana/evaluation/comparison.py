"""Put the generalist, the no-pretraining control and the specialists in one table, and say
what the table says.

Every result dict here comes from :func:`banana.evaluation.harness.evaluate_pipeline` or
:func:`~banana.evaluation.harness.evaluate_specialist`, so all models are scored by the same
metric code on the same images.
"""

from __future__ import annotations

from typing import Mapping

#: (task key in the results, metric path, label, higher is better)
HEADLINES: tuple[tuple[str, tuple[str, ...], str, bool], ...] = (
    ("segmentation", ("miou",), "segmentation mIoU", True),
    ("segmentation_unseen_palette", ("miou",), "mIoU, unseen palette", True),
    ("depth", ("metric", "abs_rel"), "depth AbsRel", False),
    ("depth", ("metric", "delta1"), "depth delta1", True),
    ("depth", ("affine", "abs_rel"), "depth AbsRel (affine-aligned)", False),
    ("normals", ("mean",), "normals mean angle (deg)", False),
    ("normals", ("within_11.25",), "normals % within 11.25 deg", True),
)


def comparison_table(results: Mapping[str, Mapping[str, Mapping]]):
    """``results[split][model]`` = an evaluation result dict -> tidy DataFrame with columns
    ``split, model, metric, value, higher_is_better, seconds_per_image``."""
    import pandas as pd

    rows = []
    for split, by_model in results.items():
        for model, result in by_model.items():
            for task, path, label, higher in HEADLINES:
                if task not in result["metrics"]:
                    continue
                value = result["metrics"][task]
                for key in path:
                    value = value[key]
                rows.append({"split": split, "model": model, "metric": label, "value": value,
                             "higher_is_better": higher,
                             "seconds_per_image": result["seconds_per_image"].get(task)})
    return pd.DataFrame(rows)


def verdict(table, generalist: str, rivals: tuple[str, ...]) -> list[str]:
    """One sentence per (split, metric): does ``generalist`` beat each rival that was scored on
    it? Computed from the numbers, so the notebook's verdict cannot drift from its table."""
    lines = []
    for (split, metric), group in table.groupby(["split", "metric"], sort=False):
        values = dict(zip(group["model"], group["value"]))
        if generalist not in values:
            continue
        higher = bool(group["higher_is_better"].iloc[0])
        ours = values[generalist]
        parts = []
        for rival in rivals:
            if rival in values:
                better = ours > values[rival] if higher else ours < values[rival]
                parts.append(f"{'beats' if better else 'trails'} {rival} ({ours:.3f} vs {values[rival]:.3f})")
        if parts:
            lines.append(f"[{split}] {metric}: {generalist} " + "; ".join(parts))
    return lines

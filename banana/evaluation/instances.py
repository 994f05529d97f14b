"""Scores for instance and referring segmentation (issue 14), on decoded masks.

* **Instance segmentation** of one prompted class: panoptic quality PQ = SQ x RQ with the COCO
  panoptic matching (a predicted and a true instance match when their IoU exceeds 0.5, which makes
  the match unique), computed by torchmetrics' ``PanopticQuality`` with the prompted class as the
  one "thing" and everything else as one "stuff"; plus the matching's precision and recall at
  IoU 0.5 per image (what a reader checks by eye). Instance ids are arbitrary: only the grouping
  of pixels is scored, never a colour.
* **Referring segmentation** (the RefCOCO conventions): per expression the IoU of the predicted
  and the referred mask; **mIoU** is their mean, **cIoU** the cumulative intersection over the
  cumulative union (big objects weigh more), **P@0.5** the share of expressions with IoU >= 0.5.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: IoU above which a predicted and a true instance match (COCO panoptic: > 0.5, unique).
MATCH_IOU = 0.5
#: The IoU thresholds of the referring precision (RefCOCO reports 0.5 to 0.9).
REFERRING_THRESHOLDS = (0.5, 0.7, 0.9)


def _check_maps(pred: np.ndarray, target: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape or pred.ndim < 2:
        raise ValueError(f"{what}: prediction {pred.shape} and target {target.shape} must be equal [..., H, W] maps")
    return pred.reshape(-1, *pred.shape[-2:]), target.reshape(-1, *target.shape[-2:])


def match_instances(pred: np.ndarray, target: np.ndarray, iou: float = MATCH_IOU) -> dict:
    """One ``[H, W]`` pair of instance maps (0 = background): the matched pairs (IoU > ``iou``), their
    IoUs, and the counts ``tp``, ``fp`` (unmatched predictions), ``fn`` (unmatched true instances)."""
    pred, target = np.asarray(pred).reshape(-1), np.asarray(target).reshape(-1)
    p_ids, t_ids = [int(i) for i in np.unique(pred) if i > 0], [int(i) for i in np.unique(target) if i > 0]
    pairs, ious = [], []
    for t in t_ids:
        t_mask = target == t
        for p in p_ids:
            p_mask = pred == p
            inter = int(np.count_nonzero(t_mask & p_mask))
            if inter:
                value = inter / int(np.count_nonzero(t_mask | p_mask))
                if value > iou:
                    pairs.append((p, t))
                    ious.append(value)
    return {"pairs": pairs, "ious": ious, "tp": len(pairs), "fp": len(p_ids) - len(pairs), "fn": len(t_ids) - len(pairs)}


def instance_metrics(pred: np.ndarray, target: np.ndarray) -> dict:
    """Instance maps ``[N, H, W]`` (or one ``[H, W]``) of one prompted class -> ``pq``, ``sq``, ``rq``
    (pooled over the images, torchmetrics' ``PanopticQuality``), ``precision`` and ``recall`` at IoU
    0.5 (pooled counts), and per image ``per_image`` = ``[(tp, fp, fn, iou_sum)]`` for the bootstrap."""
    import torch
    from torchmetrics.detection import PanopticQuality

    pred, target = _check_maps(pred, target, "instance_metrics")
    per_image = []
    for p, t in zip(pred, target):
        m = match_instances(p, t)
        per_image.append((m["tp"], m["fp"], m["fn"], float(sum(m["ious"]))))
    thing, stuff = 1, 0

    def panoptic(maps: np.ndarray) -> torch.Tensor:
        ids = torch.as_tensor(maps.astype(np.int64))
        return torch.stack([torch.where(ids > 0, thing, stuff), ids], dim=-1)

    metric = PanopticQuality(things={thing}, stuffs={stuff}, return_sq_and_rq=True, return_per_class=True)
    values = metric(panoptic(pred), panoptic(target))      # [classes, (pq, sq, rq)]
    tp, fp, fn = (sum(r[k] for r in per_image) for k in range(3))
    has_instances = tp + fn + fp > 0
    row = values[metric.cat_id_to_continuous_id[thing]]
    pq, sq, rq = (float(v) for v in row) if has_instances else (1.0, 1.0, 1.0)
    return {"pq": pq, "sq": sq, "rq": rq, "precision": tp / (tp + fp) if tp + fp else float(not fn),
            "recall": tp / (tp + fn) if tp + fn else 1.0, "per_image": per_image}


def pooled_pq(per_image: Sequence[tuple[int, int, int, float]]) -> float:
    """PQ from per-image ``(tp, fp, fn, iou_sum)``: sum IoU / (TP + FP/2 + FN/2) (1.0 when there is
    nothing to find and nothing was found). What :func:`instance_metrics` pools, for intervals."""
    tp, fp, fn, iou_sum = (sum(r[k] for r in per_image) for k in range(4))
    denominator = tp + 0.5 * fp + 0.5 * fn
    return float(iou_sum / denominator) if denominator else 1.0


def referring_metrics(pred: np.ndarray, target: np.ndarray,
                      thresholds: Sequence[float] = REFERRING_THRESHOLDS) -> dict:
    """Boolean masks ``[N, H, W]``, one per expression -> ``miou``, ``ciou``, ``precision@T`` for
    each threshold, and ``intersection`` / ``union`` per expression (for the bootstrap)."""
    pred, target = _check_maps(pred, target, "referring_metrics")
    pred, target = pred.astype(bool), target.astype(bool)
    if not target.reshape(len(target), -1).any(axis=1).all():
        raise ValueError("every referred mask must hold at least one pixel (an expression refers to an object)")
    inter = np.count_nonzero(pred & target, axis=(1, 2)).astype(np.float64)
    union = np.count_nonzero(pred | target, axis=(1, 2)).astype(np.float64)
    iou = inter / union
    out = {"miou": float(iou.mean()), "ciou": float(inter.sum() / union.sum()),
           "intersection": inter.tolist(), "union": union.tolist()}
    out.update({f"precision@{t:g}": float((iou >= t).mean()) for t in thresholds})
    return out

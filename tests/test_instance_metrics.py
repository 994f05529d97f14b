"""Instance and referring metrics (issue 14) against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from banana.evaluation.instances import instance_metrics, match_instances, pooled_pq, referring_metrics


def _two_boxes():
    target = np.zeros((4, 8), np.int64)
    target[:, :4], target[:, 4:] = 1, 2                 # two instances of 16 pixels each
    return target


def test_a_perfect_relabelled_prediction_scores_one():
    target = _two_boxes()
    pred = np.where(target == 1, 7, np.where(target == 2, 3, 0))   # other ids: only the grouping counts
    m = instance_metrics(pred[None], target[None])
    assert m["pq"] == pytest.approx(1.0) and m["precision"] == 1.0 and m["recall"] == 1.0


def test_hand_computed_panoptic_quality():
    target = _two_boxes()
    pred = np.zeros_like(target)
    pred[:, :3] = 1                   # instance 1 found with IoU 12/16 = 0.75
    pred[0, 4:] = 2                   # instance 2: IoU 4/16 = 0.25 -> no match: one FP and one FN
    m = match_instances(pred, target)
    assert m["tp"] == 1 and m["fp"] == 1 and m["fn"] == 1 and m["ious"] == [0.75]
    # PQ = sum IoU / (TP + FP/2 + FN/2) = 0.75 / 2 ; SQ = 0.75 ; RQ = 1 / 2
    result = instance_metrics(pred[None], target[None])
    assert result["pq"] == pytest.approx(0.375) and result["sq"] == pytest.approx(0.75)
    assert result["rq"] == pytest.approx(0.5)
    assert pooled_pq(result["per_image"]) == pytest.approx(result["pq"]), "our pooling equals torchmetrics'"
    assert result["precision"] == 0.5 and result["recall"] == 0.5


def test_pooling_over_images_and_empty_images():
    target = np.stack([_two_boxes(), np.zeros((4, 8), np.int64)])
    pred = target.copy()
    pred[1, 0, 0] = 5                 # a false positive speck where there is nothing
    result = instance_metrics(pred, target)
    assert result["pq"] == pytest.approx(2 / 2.5) == pytest.approx(pooled_pq(result["per_image"]))
    nothing = np.zeros((1, 4, 8), np.int64)
    assert instance_metrics(nothing, nothing)["pq"] == 1.0, "nothing to find, nothing found"


def test_referring_metrics_follow_refcoco():
    target = np.zeros((2, 4, 4), bool)
    target[0, :2, :2] = True          # 4 pixels
    target[1, :, :] = True            # 16 pixels
    pred = np.zeros_like(target)
    pred[0, :2, :1] = True            # IoU 2/4 = 0.5
    pred[1, :2, :] = True             # IoU 8/16 = 0.5... make it 12/16
    pred[1, 2, :] = True              # IoU 12/16 = 0.75
    m = referring_metrics(pred, target)
    assert m["miou"] == pytest.approx((0.5 + 0.75) / 2)
    assert m["ciou"] == pytest.approx((2 + 12) / (4 + 16))
    assert m["precision@0.5"] == 1.0 and m["precision@0.7"] == 0.5 and m["precision@0.9"] == 0.0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="must be equal"):
        instance_metrics(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="at least one pixel"):
        referring_metrics(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4), bool))

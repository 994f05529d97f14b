"""Metrics against hand-computed values, masks, alignment and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from banana.evaluation.metrics import angular_error_deg, depth_metrics, mean_iou, normal_metrics


def test_mean_iou_matches_a_hand_computed_example():
    target = np.array([[0, 0, 1, 1], [0, 0, 1, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 1]])
    # class 0: tp 3, union 4 -> 0.75; class 1: tp 3, union 5 -> 0.6; class 2: tp 0, union 1 -> 0
    scores = mean_iou(pred, target, num_classes=3, class_names=["a", "b", "c"])
    assert scores["per_class"] == pytest.approx({"a": 0.75, "b": 0.6, "c": 0.0})
    assert scores["miou"] == pytest.approx((0.75 + 0.6 + 0.0) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(6 / 8)


def test_mean_iou_ignores_target_ignore_pixels_but_counts_rejected_predictions():
    target = torch.tensor([[0, 255], [1, 1]])
    pred = torch.tensor([[0, 1], [255, 1]])
    scores = mean_iou(pred, target, num_classes=2)
    # The 255 target pixel is dropped; the rejected prediction is a miss for class 1.
    assert scores["per_class"]["0"] == pytest.approx(1.0)
    assert scores["per_class"]["1"] == pytest.approx(0.5)
    assert scores["rejected_fraction"] == pytest.approx(1 / 3)


def test_mean_iou_leaves_absent_classes_out_of_the_mean_and_honours_the_mask():
    target = np.zeros((2, 2), dtype=np.int64)
    pred = np.array([[0, 0], [0, 1]])
    scores = mean_iou(pred, target, num_classes=4, mask=np.array([[True, True], [True, False]]))
    assert scores["miou"] == pytest.approx(1.0)
    assert math.isnan(scores["per_class"]["3"])


@pytest.mark.parametrize("bad, match", [
    (dict(pred=np.zeros((2, 2)), target=np.zeros((2, 2), dtype=int)), "integer class ids"),
    (dict(pred=np.zeros((2, 3), dtype=int), target=np.zeros((2, 2), dtype=int)), "same shape"),
    (dict(pred=np.zeros((2, 2), dtype=int), target=np.full((2, 2), 5)), r"outside \[0, 3\)"),
    (dict(pred=np.full((2, 2), 9), target=np.zeros((2, 2), dtype=int)), r"pred holds class ids \[9\]"),
])
def test_mean_iou_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        mean_iou(bad["pred"], bad["target"], num_classes=3)


def test_depth_metrics_perfect_scaled_and_affine():
    rng = np.random.default_rng(0)
    target = rng.uniform(1, 10, size=(2, 8, 8))
    target[0, 0, 0] = np.inf  # sky: not a valid pixel
    perfect = depth_metrics(np.where(np.isfinite(target), target, 50.0), target)
    assert perfect["abs_rel"] == pytest.approx(0.0, abs=1e-12) and perfect["delta1"] == 1.0
    doubled = depth_metrics(2 * target, target)
    assert doubled["abs_rel"] == pytest.approx(1.0) and doubled["delta1"] == 0.0
    assert doubled["log10"] == pytest.approx(math.log10(2))
    assert depth_metrics(2 * target, target, align="scale")["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    affine = depth_metrics(0.1 * target - 0.05, target, align="affine")
    assert affine["abs_rel"] == pytest.approx(0.0, abs=1e-9) and affine["n_images"] == 2


def test_depth_metrics_rmse_and_valid_range():
    target = np.array([[[1.0, 2.0], [3.0, 100.0]]])
    pred = np.array([[[2.0, 2.0], [3.0, 0.0]]])
    scores = depth_metrics(pred, target, max_depth=10.0)
    assert scores["rmse"] == pytest.approx(math.sqrt(1 / 3))
    assert scores["delta1"] == pytest.approx(2 / 3)


def test_depth_metrics_rejects_nan_bad_mask_and_unknown_alignment():
    d = np.ones((4, 4))
    with pytest.raises(ValueError, match="NaN"):
        depth_metrics(np.full((4, 4), np.nan), d)
    with pytest.raises(ValueError, match="mask must be boolean"):
        depth_metrics(d, d, mask=np.ones((4, 4)))
    with pytest.raises(ValueError, match="align must be"):
        depth_metrics(d, d, align="median")


def test_normal_metrics_known_angles():
    target = np.zeros((3, 1, 4))
    target[2] = 1.0  # all facing the camera
    pred = target.copy()
    pred[:, 0, 1] = [np.sin(np.radians(20)), 0, np.cos(np.radians(20))]
    pred[:, 0, 2] = [1, 0, 0]          # 90 degrees off
    target[:, 0, 3] = 0                 # undefined target: excluded
    scores = normal_metrics(pred, target)
    assert scores["n_pixels"] == 3
    assert scores["mean"] == pytest.approx((0 + 20 + 90) / 3, abs=1e-6)
    assert scores["median"] == pytest.approx(20, abs=1e-6)
    assert scores["within_11.25"] == pytest.approx(100 / 3)
    assert scores["within_22.5"] == pytest.approx(200 / 3)
    assert angular_error_deg(pred, pred).max() < 1e-5


def test_normal_metrics_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, H, W\]"):
        normal_metrics(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))

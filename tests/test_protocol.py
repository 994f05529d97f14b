"""The evaluation protocol of issue 10, pinned with known answers: clipped depth, the affine fit
on finite predictions, sky IoU, floors, bootstrap coverage, paired ties, comparison verdicts."""

import math

import numpy as np
import pytest

from banana.evaluation.metrics import depth_metrics, sky_iou
from banana.evaluation.scoring import score_task, task_statistics
from banana.evaluation.uncertainty import (ImageStatistic, bootstrap_interval, compare, mean_over_images,
                                           paired_difference, pooled_ratio)


# --------------------------------------------------------------------------- depth protocol
def test_inf_and_near_white_predictions_are_clipped_to_max_depth():
    target = np.full((1, 2, 2), 5.0)
    pred = target.copy()
    pred[0, 0, 0] = np.inf            # the white end of the walk
    pred[0, 0, 1] = 1e9               # near white: a huge finite value
    scores = depth_metrics(pred, target, min_depth=1e-3, max_depth=50.0)
    # two pixels at 50 m on a 5 m surface: |50 - 5| / 5 = 9 each, two exact ones: mean 4.5
    assert scores["abs_rel"] == pytest.approx(4.5)
    assert scores["delta1"] == pytest.approx(0.5)
    # an unclipped protocol would have made this 1e8; without a finite range it is an error, not a number
    with pytest.raises(ValueError, match="max_depth"):
        depth_metrics(pred, target)


def test_affine_fit_ignores_non_finite_predictions():
    rng = np.random.default_rng(0)
    target = rng.uniform(1, 10, size=(1, 8, 8))
    pred = 0.5 * target + 0.2            # an exact affine copy ...
    pred[0, 0, 0] = np.inf               # ... with one pixel at "infinity"
    scores = depth_metrics(pred, target, align="affine", min_depth=1e-3, max_depth=20.0)
    # the fit recovers s = 2, b = -0.4 from the 63 finite pixels; the inf pixel is clipped to 20 m
    expected = abs(20.0 - target[0, 0, 0]) / target[0, 0, 0] / 64
    assert scores["abs_rel"] == pytest.approx(expected, rel=1e-6)


def test_sky_iou_scores_beyond_range_against_true_sky():
    target = np.array([[[np.inf, np.inf], [3.0, 4.0]]])
    pred = np.array([[[np.inf, 2.0], [60.0, 4.0]]])      # one sky hit, one miss, one false sky
    out = sky_iou(pred, target, max_depth=50.0)
    assert out["iou"] == pytest.approx(1 / 3)


def test_world_depth_range_bounds_every_rendered_depth():
    from banana.world import MAX_DEPTH, MIN_DEPTH, render_scene, sample_scene

    worst = 0.0
    for split in ("train", "held_out"):
        for i in range(40):
            depth = render_scene(sample_scene(0, split, i), resolution=12, spp=1)["depth"]
            finite = depth[np.isfinite(depth)]
            assert finite.min() >= MIN_DEPTH
            worst = max(worst, float(finite.max()))
    assert worst <= MAX_DEPTH


def test_score_task_records_range_and_intervals_that_contain_the_value():
    rng = np.random.default_rng(1)
    target = rng.uniform(1, 10, size=(12, 6, 6)).astype(np.float32)
    target[:, 0, :] = np.inf
    pred = target * rng.uniform(0.8, 1.25, size=target.shape).astype(np.float32)
    result = score_task("depth", pred, {"depth": target}, depth_range=(1e-3, 50.0))
    assert result["range"] == {"min_depth": 1e-3, "max_depth": 50.0}
    lo, hi = result["ci95"]["metric.abs_rel"]
    assert lo <= result["metric"]["abs_rel"] <= hi
    assert result["sky"]["iou"] == pytest.approx(1.0)


def test_statistics_reproduce_the_metrics_exactly():
    rng = np.random.default_rng(2)
    semantic = rng.integers(0, 7, size=(5, 8, 8))
    semantic[0, 0, 0] = 255
    pred = np.where(rng.random(semantic.shape) < 0.7, semantic, rng.integers(0, 7, size=semantic.shape))
    pred[1, 1, 1] = 255
    normals = rng.normal(size=(5, 3, 8, 8))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    noisy = normals + 0.3 * rng.normal(size=normals.shape)
    truth = {"semantic": semantic, "normals": normals}
    seg = score_task("segmentation", pred, truth)
    stats = task_statistics("segmentation", pred, truth)
    assert stats["miou"].value() == pytest.approx(seg["miou"], abs=1e-12)
    assert stats["pixel_accuracy"].value() == pytest.approx(seg["pixel_accuracy"], abs=1e-12)
    nrm = score_task("normals", noisy, truth)
    assert task_statistics("normals", noisy, truth)["mean"].value() == pytest.approx(nrm["mean"], rel=1e-9)


# --------------------------------------------------------------------------- uncertainty
def test_bootstrap_interval_covers_a_known_mean():
    """Repeated experiments of 48 'images' from a distribution with mean 0.5: the 95% interval
    holds the true mean in about 95% of them (checked over 200 experiments, generous bounds)."""
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(200):
        sample = rng.beta(2, 2, size=48)             # true mean 0.5
        lo, hi = bootstrap_interval(mean_over_images(sample), n_boot=400)
        hits += lo <= 0.5 <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_pooled_ratio_and_nan_images():
    stat = pooled_ratio(np.array([1.0, 3.0]), np.array([2.0, 2.0]))
    assert stat.value() == pytest.approx(1.0)
    assert mean_over_images(np.array([0.2, np.nan, 0.4])).value() == pytest.approx(0.3)
    with pytest.raises(ValueError):
        ImageStatistic(np.zeros((0, 2)), lambda s: s[:, 0])


def test_noise_alone_is_a_tie_and_a_real_gap_is_not():
    rng = np.random.default_rng(4)
    difficulty = rng.uniform(0.2, 0.8, size=48)
    # the same model twice, other noise: a tie, except in about 5% of repetitions (the interval's miss rate)
    ties = sum(compare(mean_over_images(difficulty + rng.normal(0, 0.05, size=48)),
                       mean_over_images(difficulty + rng.normal(0, 0.05, size=48)), True, n_boot=300).outcome == "tie"
               for _ in range(100))
    assert ties >= 85
    b = mean_over_images(difficulty + rng.normal(0, 0.05, size=48))
    better = mean_over_images(difficulty + 0.1 + rng.normal(0, 0.05, size=48))
    assert compare(better, b, higher_is_better=True).outcome == "beats"
    assert compare(better, b, higher_is_better=False).outcome == "trails"   # e.g. an error metric
    diff, lo, hi = paired_difference(better, b)
    assert lo < diff < hi and lo > 0
    with pytest.raises(ValueError, match="same images"):
        paired_difference(b, mean_over_images(difficulty[:10]))


# --------------------------------------------------------------------------- floors and verdicts
def test_floors_on_a_tiny_world(world_dir):
    from banana.evaluation.floors import fit_floors
    from banana.evaluation.harness import evaluate_specialist
    from banana.world import load_world

    world = load_world(world_dir)
    floors = fit_floors(world["train"])
    semantic = np.asarray(world["train"][:]["semantic"])
    # the majority map is, pixel by pixel, the most frequent train class there
    counts = np.stack([(semantic == c).sum(0) for c in range(7)])
    assert np.array_equal(floors["segmentation"].answer, counts.argmax(0))
    depth = np.asarray(world["train"][:]["depth"])
    assert np.array_equal(floors["depth"].answer, np.median(depth, axis=0).astype(np.float32))
    norms = np.linalg.norm(floors["normals"].answer, axis=0)
    assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0))
    scored = evaluate_specialist(floors["segmentation"], world["test"], "segmentation")
    assert 0 < scored["metrics"]["segmentation"]["miou"] < 1
    with pytest.raises(ValueError, match="images"):
        floors["depth"].predict(np.zeros((2, 3, 5, 5)))


def test_verdict_says_at_floor_tie_and_beats(world_dir):
    from banana.evaluation.comparison import comparison_table, verdict
    from banana.evaluation.floors import fit_floors
    from banana.evaluation.harness import evaluate_specialist
    from banana.evaluation.scoring import label_arrays
    from banana.world import load_world

    world = load_world(world_dir)
    test = world["test"]
    n = len(test)
    truth = label_arrays(test, n)
    floor = fit_floors(world["train"], tasks=["segmentation"])["segmentation"]
    floor_result = evaluate_specialist(floor, test, "segmentation")

    class Oracle:
        def predict(self, images):
            return truth["semantic"][: len(images)].astype(np.int64)

    results = {"test": {"oracle": evaluate_specialist(Oracle(), test, "segmentation"),
                        "floor copy": evaluate_specialist(floor, test, "segmentation"),
                        "floor: majority class": floor_result}}
    splits = {"test": test}
    table = comparison_table(results, splits)
    row = table[(table.model == "oracle") & (table.metric == "segmentation mIoU")].iloc[0]
    assert row.value == pytest.approx(1.0) and row.ci_lo <= 1.0 <= row.ci_hi + 1e-12
    lines = verdict(results, splits, "floor copy", ("oracle",), floors=("floor: majority class",))
    line = [l for l in lines if "segmentation mIoU" in l][0]
    assert "at floor" in line and "trails oracle" in line
    lines = verdict(results, splits, "oracle", ("floor copy",), floors=("floor: majority class",))
    line = [l for l in lines if "segmentation mIoU" in l][0]
    assert "above floor" in line and "beats floor copy" in line and "floor copy is at floor" in line
    assert math.isfinite(row.ci_hi)

"""Tests of the evaluation harness (``banana evaluate``) and of generation retention.

One smoke world and one 2-step full-tuning run (with its fresh base saved beside it) are built
per module; sampling uses 1-2 steps on 4 images. The models are untrained, so the tests check
the *plumbing and the rules* (files, exact re-scoring, palettes, determinism, scores of oracle
inputs), never the quality of the numbers. torch runs on one thread (shared 2-core machines).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from banana.cli import main
from banana.codecs import SegmentationCodec
from banana.evaluation.harness import (UNSEEN_TASK, evaluate_pipeline, evaluate_specialist, recompute_metrics,
                                       time_predict, unseen_palette)
from banana.evaluation.retention import (PipelineSegmenter, adherence_inputs, denoising_loss, prompt_adherence,
                                         retention_report, score_adherence)
from banana.models import BananaGenerator
from banana.pipeline import BananaPipeline
from banana.tasks import decode_prediction, ensemble
from banana.training import TrainConfig, load_run, train
from banana.world import CANONICAL_PALETTE, CLASS_IDS, CLASS_NAMES, COLOR_VOCABULARY, load_world


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(world_dir):
    return load_world(world_dir)


@pytest.fixture(scope="module")
def run(tmp_path_factory, world_dir):
    """(run_dir, base_dir): a fresh smoke base and a 2-step full tuning of it."""
    root = tmp_path_factory.mktemp("harness_run")
    base_dir = BananaGenerator.from_preset("smoke", seed=0).save_pretrained(root / "base")
    config = TrainConfig(stage="tune", tuning="full", profile="smoke", max_steps=2, batch_size=4, checkpoint_every=2)
    run_dir = train(config, root / "run", generator=base_dir, world_dir=world_dir, progress=False)
    return run_dir, base_dir


@pytest.fixture(scope="module")
def evaluation(run, tmp_path_factory):
    """``banana evaluate`` on 4 test images in 2 batches (so two unseen palettes), 2 steps."""
    out = tmp_path_factory.mktemp("harness_eval") / "eval"
    code = main(["evaluate", str(run[0]), "--split", "test", "--steps", "2", "--limit", "4", "--batch-size", "2",
                 "--seed", "3", "--out", str(out), "--no-progress"])
    assert code == 0
    return out


# ------------------------------------------------------------------------------------------ harness
def test_evaluate_writes_metrics_predictions_and_rescoring_matches(evaluation, world):
    record = json.loads((evaluation / "metrics.json").read_text())
    assert (evaluation / "run_info.json").is_file()
    assert record["split"] == "test" and record["n_images"] == 4
    assert list(record["metrics"]) == ["segmentation", UNSEEN_TASK, "depth", "normals"]
    seg = record["metrics"]["segmentation"]
    assert 0 <= seg["miou"] <= 1 and set(seg["per_class"]) == set(CLASS_NAMES)
    for kind in ("metric", "affine"):
        assert {"abs_rel", "rmse", "delta1"} <= set(record["metrics"]["depth"][kind])
    assert {"mean", "median", "within_11.25", "within_22.5", "within_30"} <= set(record["metrics"]["normals"])
    assert record["sampling"]["num_inference_steps"] == 2 and record["sampling"]["scheduler"] == "ddim"
    # inference cost per image for every task, from the pipeline's own timing
    assert set(record["seconds_per_image"]) == set(record["metrics"])
    assert all(v > 0 for v in record["seconds_per_image"].values())
    assert "segmentation mIoU (unseen palette)" in record["headline"]

    with np.load(evaluation / "predictions.npz") as stored:
        assert stored["segmentation"].shape == (4, 16, 16) and stored["depth"].shape == (4, 16, 16)
        assert stored["normals"].shape == (4, 3, 16, 16)
        assert stored["palette_canonical"].tolist() == [list(CANONICAL_PALETTE[c]) for c in CLASS_NAMES]
    # Re-scored from the files alone: exactly the written numbers.
    assert recompute_metrics(evaluation) == record["metrics"]
    # ... and the check can fail: a corrupted answer changes the score.
    corrupted = evaluation.parent / "corrupted"
    corrupted.mkdir()
    (corrupted / "metrics.json").write_text((evaluation / "metrics.json").read_text())
    with np.load(evaluation / "predictions.npz") as stored:
        arrays = dict(stored)
    arrays["depth"] = arrays["depth"] * 2
    np.savez_compressed(corrupted / "predictions.npz", **arrays)
    assert recompute_metrics(corrupted)["depth"] != record["metrics"]["depth"]


def test_unseen_palettes_differ_from_canonical_and_are_recorded(evaluation):
    with np.load(evaluation / "predictions.npz") as stored:
        palettes = stored["palettes_unseen"]                                    # [N, K, 3], one per image
    canonical = np.asarray([CANONICAL_PALETTE[c] for c in CLASS_NAMES])
    expected = [np.asarray([unseen_palette(3, k)[c] for c in CLASS_NAMES]) for k in (0, 1)]
    for row, batch in enumerate((0, 0, 1, 1)):                                   # batch size 2, seed 3
        assert np.array_equal(palettes[row], expected[batch])
        assert not np.array_equal(palettes[row], canonical)
    assert not np.array_equal(expected[0], expected[1])
    assert unseen_palette(3, 0) == unseen_palette(3, 0)                          # deterministic


def test_unseen_palette_is_prompted_and_decoded_with(run, world):
    class Spy:
        """Passes predict through, recording the palette it was given and the answer."""

        def __init__(self, pipe):
            self.pipe, self.calls = pipe, []

        def predict(self, images, task, palette=None, **kwargs):
            out = self.pipe.predict(images, task, palette=palette, **kwargs)
            self.calls.append((palette, out))
            return out

        @property
        def last_timing(self):
            return self.pipe.last_timing

    spy = Spy(BananaPipeline(load_run(run[0])))
    results = evaluate_pipeline(spy, world["test"], tasks=(UNSEEN_TASK,), limit=4, batch_size=2, seed=5,
                                progress=False, num_inference_steps=1)
    assert len(spy.calls) == 2
    stored = results["predictions"][UNSEEN_TASK]
    for k, (palette, out) in enumerate(spy.calls):
        assert palette == unseen_palette(5, k) != dict(CANONICAL_PALETTE)
        assert out["prompt"] == SegmentationCodec(palette).prompt()             # named only in the prompt
        rows = stored[2 * k:2 * k + 2]
        redecoded = ensemble("segmentation", decode_prediction("segmentation", out["rgb"], palette))
        assert np.array_equal(rows, redecoded.numpy())                          # decoded with that palette
        canonical = ensemble("segmentation", decode_prediction("segmentation", out["rgb"], CANONICAL_PALETTE))
        assert not np.array_equal(rows, canonical.numpy())
    assert results["palettes"]["unseen_batch"].tolist() == [0, 0, 1, 1]


def test_time_predict_and_specialist_scoring(world):
    split = world["test"]

    class DepthOracle:
        """A "specialist" answering with the true depth of the rows it is shown, in order."""

        def __init__(self):
            self.depth, self.next = np.asarray(split[0:4]["depth"]), 0

        def predict(self, images):
            out = self.depth[self.next:self.next + len(images)]
            self.next += len(images)
            return torch.from_numpy(out)

    results = evaluate_specialist(DepthOracle(), split, "depth", limit=4, batch_size=3)
    assert results["metrics"]["depth"]["metric"]["abs_rel"] == 0.0
    assert results["metrics"]["depth"]["metric"]["delta1"] == 1.0
    assert results["seconds_per_image"]["depth"] >= 0

    class Slow:
        def predict(self, images):
            import time
            time.sleep(0.01 * len(images))
            return images

    timing = time_predict(Slow(), np.zeros((4, 3, 16, 16), np.uint8), batch_size=2, repeats=2)
    assert timing["images"] == 4 and 0.009 < timing["seconds_per_image"] < 0.1


# ------------------------------------------------------------------------------------------ retention
def test_denoising_loss_is_deterministic_and_tells_models_apart(run, world):
    tuned, base = load_run(run[0]), BananaGenerator.from_pretrained(run[1])
    split = world["held_out"]
    first = denoising_loss(tuned, split, n=3, seed=1, batch_size=2)
    assert first == denoising_loss(tuned, split, n=3, seed=1, batch_size=2)
    assert list(first["per_timestep"]) == ["100", "300", "500", "700", "900"] and first["n"] == 3
    assert np.isfinite(first["mean"]) and first["mean"] > 0
    assert denoising_loss(base, split, n=3, seed=1)["mean"] != first["mean"]
    assert denoising_loss(tuned, split, n=3, seed=2)["mean"] != first["mean"]     # the seed fixes the noise


def _oracle_rows(world, n=3):
    """Rows (across test and held_out) where every named object is visible at 16 px."""
    rows = []
    for name in ("test", "held_out"):
        split = world[name]
        prompts, objects = adherence_inputs(split)
        for i, (prompt, objs) in enumerate(zip(prompts, objects)):
            sample = split[i]
            if all((sample["instance"] == o["instance_id"]).any() for o in objs):
                rows.append((prompt, objs, sample["instance"], sample["semantic"]))
    assert len(rows) >= n, "the smoke world has too few fully visible scenes for this test"
    return rows[:n]


class _Painter:
    """A "generator" that paints each named object flat in a colour (its named one by default)."""

    def __init__(self, rows, colour=None):
        self.images = {}
        for prompt, objs, instance, _ in rows:
            image = np.zeros((3, *instance.shape), np.float32)
            for o in objs:
                name = colour(o, objs) if colour else o["color_name"]
                image[:, instance == o["instance_id"]] = np.asarray(COLOR_VOCABULARY[name], np.float32)[:, None] / 255
            self.images[prompt] = image

    def generate(self, prompts, generator=None, **sampling):
        return torch.from_numpy(np.stack([self.images[p] for p in prompts]))


class _Segmenter:
    """Returns the given label maps in call order (or all floor)."""

    def __init__(self, labels, floor=False):
        self.labels, self.next, self.floor = labels, 0, floor

    def predict(self, images):
        out = np.stack(self.labels[self.next:self.next + len(images)])
        self.next += len(images)
        return np.full_like(out, CLASS_IDS["floor"]) if self.floor else out


def test_prompt_adherence_scores_oracle_one_and_floor_zero(world):
    rows = _oracle_rows(world)
    prompts, objects, labels = [r[0] for r in rows], [r[1] for r in rows], [r[3] for r in rows]
    perfect = prompt_adherence(_Painter(rows), prompts, objects, _Segmenter(labels), batch_size=2)
    assert perfect["aggregate"] == {"object_presence": 1.0, "object_color": 1.0, "prompt_presence": 1.0,
                                    "prompt_correct": 1.0, "n_prompts": 3, "n_objects": sum(map(len, objects))}
    assert [r["prompt"] for r in perfect["records"]] == prompts
    floor = prompt_adherence(_Painter(rows), prompts, objects, _Segmenter(labels, floor=True), batch_size=2)
    assert all(floor["aggregate"][k] == 0.0 for k in ("object_presence", "object_color", "prompt_correct"))

    # Right shapes, wrong colours (one no object of the prompt is named with): present, never colour-correct.
    def unnamed(o, objs):
        return next(c for c in COLOR_VOCABULARY if c not in {p["color_name"] for p in objs})

    wrong = prompt_adherence(_Painter(rows, unnamed), prompts, objects, _Segmenter(labels), batch_size=2)
    assert wrong["aggregate"]["object_presence"] == 1.0 and wrong["aggregate"]["object_color"] == 0.0


def test_colour_rule_tolerates_shading():
    """A red object in shadow (albedo x 0.3) is still red; the same pixels are not grey."""
    labels = np.full((4, 4), CLASS_IDS["sphere"])
    dark_red = np.round(np.asarray(COLOR_VOCABULARY["red"]) * 0.3).astype(np.uint8)
    image = np.broadcast_to(dark_red[:, None, None], (3, 4, 4)).copy()
    assert score_adherence(image, labels, [{"shape": "sphere", "color_name": "red"}])["correct"]
    assert not score_adherence(image, labels, [{"shape": "sphere", "color_name": "grey"}])["correct"]


def test_retention_report_runs_base_and_tuned(run, world):
    tuned, base = load_run(run[0]), BananaGenerator.from_pretrained(run[1])
    segmenter = PipelineSegmenter(BananaPipeline(tuned), num_inference_steps=1)
    report = retention_report(base, tuned, world["held_out"], segmenter, n=2, seed=0, num_inference_steps=1)
    assert report["n"] == 2
    losses = report["denoising_loss"]
    assert losses["difference"] == pytest.approx(losses["tuned"]["mean"] - losses["base"]["mean"])
    for model in ("base", "tuned"):
        aggregate = report["prompt_adherence"][model]["aggregate"]
        assert aggregate["n_prompts"] == 2 and 0 <= aggregate["prompt_correct"] <= 1
        assert report["prompt_adherence"][model]["seconds_per_image"] > 0
    assert set(report["prompt_adherence"]["difference"]) == {"object_presence", "object_color", "prompt_presence",
                                                            "prompt_correct"}

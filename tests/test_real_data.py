"""Real-dataset builders (banana.real): Cityscapes and NYUv2 from their on-disk layouts.

Tiny fixtures in each dataset's real layout are written to tmp_path (64x128 Cityscapes PNGs with
every label id 0..33; 480x640 NYUv2 uint16 depth PNGs with holes and far values, 8-bit normals),
built, and checked against expectations computed here independently: the id -> train id table,
ignore handling, crop/resize, the depth mask, and that training examples, the codecs and the
evaluation harness run on them with the dataset's own classes and tasks. Every clear error too.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from banana.cli import main
from banana.evaluation.harness import evaluate_pipeline, recompute_metrics, unseen_palette, write_evaluation
from banana.real import (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, EIGEN_CROP, build_cityscapes, build_nyuv2,
                         dataset_spec, label_ids_to_train_ids, load_real)
from banana.tasks import ALL_TASKS, TASKS, decode_prediction, encode_target
from banana.training.data import BananaExamples, MixedBatchSampler, make_dataloader

pytestmark = pytest.mark.usefixtures("one_thread")

# The official table (cityscapesScripts labels.py), written out again so the test does not trust the code.
OFFICIAL = {7: ("road", 0, (128, 64, 128)), 8: ("sidewalk", 1, (244, 35, 232)), 11: ("building", 2, (70, 70, 70)),
            12: ("wall", 3, (102, 102, 156)), 13: ("fence", 4, (190, 153, 153)), 17: ("pole", 5, (153, 153, 153)),
            19: ("traffic light", 6, (250, 170, 30)), 20: ("traffic sign", 7, (220, 220, 0)),
            21: ("vegetation", 8, (107, 142, 35)), 22: ("terrain", 9, (152, 251, 152)), 23: ("sky", 10, (70, 130, 180)),
            24: ("person", 11, (220, 20, 60)), 25: ("rider", 12, (255, 0, 0)), 26: ("car", 13, (0, 0, 142)),
            27: ("truck", 14, (0, 0, 70)), 28: ("bus", 15, (0, 60, 100)), 31: ("train", 16, (0, 80, 100)),
            32: ("motorcycle", 17, (0, 0, 230)), 33: ("bicycle", 18, (119, 11, 32))}


def _train_ids(ids: np.ndarray) -> np.ndarray:
    out = np.full(ids.shape, 255, np.uint8)
    for label_id, (_, train_id, _) in OFFICIAL.items():
        out[ids == label_id] = train_id
    return out


# ------------------------------------------------------------------------------------------ fixtures
def _label_ids(k: int, h: int = 64, w: int = 128) -> np.ndarray:
    """8x8 blocks cycling through every label id 0..33 (ignored ones included)."""
    r, c = np.mgrid[0:h, 0:w]
    return (((r // 8) * 16 + c // 8 + k) % 34).astype(np.uint8)


def _save(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _cityscapes_tree(root, splits=(("train", "aachen", 2), ("val", "frankfurt", 2)), size=(64, 128),
                     train_ids_only=()):
    rng = np.random.default_rng(0)
    for split, city, n in splits:
        for k in range(n):
            stem = f"{city}_{k:06d}_000019"
            _save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                  rng.integers(0, 256, (*size, 3), dtype=np.uint8))
            ids = _label_ids(k, *size)
            if (split, k) in train_ids_only:
                _save(root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png", _train_ids(ids))
            else:
                _save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
    return root


def _nyu_depth_mm() -> np.ndarray:
    r, c = np.mgrid[0:480, 0:640]
    depth = (500 + 10 * c + r).astype(np.uint16)        # 0.5 .. 7.4 m
    depth[100:140, 200:260] = 0                          # no measurement
    depth[300:340, 300:360] = 12000                      # 12 m: beyond the 10 m range
    return depth


def _nyu_normals_png() -> np.ndarray:
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[...] = (128, 128, 255)                           # facing the camera (banana frame)
    rgb[400:] = (128, 255, 128)                          # facing up (a floor)
    rgb[:60] = 0                                         # no normal
    return rgb


def _nyu_tree(root, splits=(("train", 2), ("test", 2)), normals=True, size=(480, 640)):
    r, c = np.mgrid[0:size[0], 0:size[1]]
    for split, n in splits:
        for k in range(n):
            name = f"{k:05d}"
            _save(root / split / "rgb" / f"{name}.png",
                  np.stack([(r + k) % 256, c % 256, (r + c) % 256], -1).astype(np.uint8))
            _save(root / split / "depth" / f"{name}.png", _nyu_depth_mm()[:size[0], :size[1]])
            if normals:
                _save(root / split / "normals" / f"{name}.png", _nyu_normals_png()[:size[0], :size[1]])
    return root


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory):
    return _cityscapes_tree(tmp_path_factory.mktemp("cityscapes_raw"), train_ids_only={("val", 1)})


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory, cityscapes_root):
    out = tmp_path_factory.mktemp("cityscapes_built") / "cs32"
    return out, build_cityscapes(cityscapes_root, out, resolution=32, progress=False)


@pytest.fixture(scope="module")
def nyu(tmp_path_factory):
    root = _nyu_tree(tmp_path_factory.mktemp("nyu_raw"))
    out = tmp_path_factory.mktemp("nyu_built") / "nyu48"
    return out, build_nyuv2(root, out, resolution=48, progress=False)


# ------------------------------------------------------------------------------------------ Cityscapes
def test_label_table_is_the_official_one():
    assert CITYSCAPES_CLASSES == tuple(name for name, _, _ in sorted(OFFICIAL.values(), key=lambda v: v[1]))
    assert CITYSCAPES_PALETTE == {name: colour for name, _, colour in OFFICIAL.values()}
    ids = np.arange(34, dtype=np.uint8).reshape(2, 17)
    assert np.array_equal(label_ids_to_train_ids(ids), _train_ids(ids))
    assert (label_ids_to_train_ids(ids) == 255).sum() == 34 - 19


def test_cityscapes_build_maps_ids_crops_and_resizes(cityscapes, cityscapes_root):
    out, ds = cityscapes
    assert set(ds) == {"train", "val"} and len(ds["train"]) == 2 and len(ds["val"]) == 2
    assert ds["train"].column_names == ["image", "semantic", "description", "index", "source"]  # no depth/normals
    row = ds["train"][1]
    assert row["image"].shape == (3, 32, 32) and row["image"].dtype == np.uint8
    assert row["semantic"].shape == (32, 32) and row["semantic"].dtype == np.uint8
    # centre square of 64x128 = columns 32:96; nearest 64 -> 32 takes pixels 1, 3, 5, ...
    assert np.array_equal(row["semantic"], _train_ids(_label_ids(1))[1::2, 32 + 1:96:2])
    assert 255 in row["semantic"] and set(np.unique(row["semantic"])) - {255} <= set(range(19))
    # the image is area-averaged: pixel (0, 0) is the mean of the 2x2 block at rows 0:2, cols 32:34
    raw = np.asarray(Image.open(cityscapes_root / ds["train"][1]["source"]))
    assert np.abs(row["image"][:, 0, 0].astype(int) - raw[0:2, 32:34].reshape(-1, 3).mean(0)).max() <= 1
    # a val image with only _labelTrainIds.png gives the same labels as its _labelIds.png would
    assert np.array_equal(ds["val"][1]["semantic"], _train_ids(_label_ids(1))[1::2, 33:96:2])
    assert row["description"].startswith("a photo of a city street with ")

    record = json.loads((out / "world_config.json").read_text())
    assert record["format"] == "banana-real" and record["tasks"] == ["segmentation"]
    assert record["class_names"] == list(CITYSCAPES_CLASSES) and record["canonical_palette"]["road"] == [128, 64, 128]
    spec = dataset_spec(ds["val"])
    assert spec.tasks == ("segmentation",) and spec.class_names == CITYSCAPES_CLASSES and spec.ignore_index == 255
    assert dataset_spec(load_real(out)["val"].select([1, 0])) == spec          # travels with the split


def test_cityscapes_full_frame_policy_and_reuse(tmp_path, cityscapes_root):
    out = tmp_path / "full"
    ds = build_cityscapes(cityscapes_root, out, resolution=16, crop="full", splits=("val",), limit=1, progress=False)
    assert ds["val"][0]["image"].shape == (3, 16, 32) and len(ds["val"]) == 1
    assert np.array_equal(ds["val"][0]["semantic"], _train_ids(_label_ids(0))[2::4, 2::4])
    again = build_cityscapes(cityscapes_root, out, resolution=16, crop="full", splits=("val",), limit=1,
                             progress=False)                                     # identical build: reused
    assert len(again["val"]) == 1
    with pytest.raises(FileExistsError, match="different cityscapes build"):
        build_cityscapes(cityscapes_root, out, resolution=8, crop="full", splits=("val",), limit=1, progress=False)


# ------------------------------------------------------------------------------------------ NYUv2
def test_nyu_build_masks_depth_and_reads_normals(nyu):
    out, ds = nyu
    assert set(ds) == {"train", "test"}
    assert ds["test"].column_names == ["image", "depth", "normals", "description", "index", "source"]  # no semantic
    row = ds["test"][0]
    assert row["image"].shape == (3, 48, 48) and row["depth"].dtype == np.float32
    rows, cols = 10 * np.arange(48) + 5, 80 + 10 * np.arange(48) + 5                # centre square, nearest
    raw = _nyu_depth_mm()[rows][:, cols].astype(np.float64) / 1000
    inside = np.zeros((480, 640), bool)
    inside[EIGEN_CROP[0]:EIGEN_CROP[1], EIGEN_CROP[2]:EIGEN_CROP[3]] = True
    valid = (raw > 0) & (raw <= 10) & inside[rows][:, cols]
    assert np.array_equal(np.isfinite(row["depth"]), valid)
    assert np.isinf(row["depth"][~valid]).all() and (row["depth"][~valid] > 0).all()    # inf = no depth
    assert np.array_equal(row["depth"][valid], raw[valid].astype(np.float32))
    assert not valid[0].any() and not valid[-1].any() and valid[20].all() and not valid[11].all()  # crop, holes
    normals = row["normals"]
    assert np.allclose(normals[:, 20, 20], [0, 0, 1], atol=0.01)                     # facing the camera
    assert np.allclose(normals[:, 45, 20], [0, 1, 0], atol=0.01)                     # floor, facing up
    assert (normals[:, :6] == 0).all()                                              # rows < 60: no normal
    spec = dataset_spec(ds["test"])
    assert spec.tasks == ("depth", "normals") and spec.class_names == ()
    record = json.loads((out / "world_config.json").read_text())
    assert record["eigen_crop"] == list(EIGEN_CROP) and record["eigen_test_split_complete"] is False


def test_nyu_without_normals_offers_depth_only(tmp_path):
    root = _nyu_tree(tmp_path / "raw", splits=(("test", 1),), normals=False, size=(60, 80))
    ds = build_nyuv2(root, tmp_path / "out", resolution=16, splits=("test",), eigen_crop=False, progress=False)
    assert "normals" not in ds["test"].column_names and dataset_spec(ds["test"]).tasks == ("depth",)
    with pytest.raises(ValueError, match="no labels for"):
        BananaExamples(ds["test"], tasks=("normals",))


# ------------------------------------------------------------------------------------------ consumers
def test_training_examples_use_the_dataset_classes_and_tasks(cityscapes, nyu):
    examples = BananaExamples(cityscapes[1]["train"], seed=0, random_palette_prob=0.5)
    assert examples.tasks == ("segmentation",)
    seen_random = seen_canonical = False
    for draw in range(6):
        example = examples.vision(0, draw)
        assert example["kind"] == "segmentation" and example["target"].shape == (3, 32, 32)
        assert "traffic light" in example["prompt"] and "banana" not in example["prompt"]
        # the target decodes back to the labels with the palette its prompt names (ignore -> black -> 255)
        palette = CITYSCAPES_PALETTE if "<128,64,128>" in example["prompt"] else None
        seen_canonical |= palette is not None
        seen_random |= palette is None
        if palette is not None:
            decoded = decode_prediction("segmentation", (example["target"].numpy() + 1) / 2, palette)
            assert np.array_equal(decoded, cityscapes[1]["train"][0]["semantic"])
    assert seen_random and seen_canonical
    assert examples.generation(1)["prompt"] == cityscapes[1]["train"][1]["description"]
    with pytest.raises(ValueError, match="no labels for"):
        BananaExamples(cityscapes[1]["train"], tasks=("depth",))

    depth_examples = BananaExamples(nyu[1]["train"], seed=0)
    assert depth_examples.tasks == ("depth", "normals")
    assert {depth_examples.vision(0, d)["kind"] for d in range(8)} == {"depth", "normals"}
    sampler = MixedBatchSampler(len(depth_examples), len(depth_examples), batch_size=4, mixing_ratio=0.5,
                                num_batches=1, seed=0)
    batch = next(iter(make_dataloader(depth_examples, sampler)))
    assert batch["target"].shape == (4, 3, 48, 48) and torch.isfinite(batch["target"]).all()


class Oracle:
    """A stand-in pipeline answering with each image's ground truth drawn by the task's codec."""

    last_timing = 0.0

    def __init__(self, split):
        self.truth = {np.ascontiguousarray(row["image"]).tobytes(): row for row in split}

    def predict(self, images, task, palette=None, generator=None, **sampling):
        rows = [self.truth[np.ascontiguousarray(image).tobytes()] for image in np.asarray(images)]
        rgb = np.stack([encode_target(task, row, palette) for row in rows])
        return {"prediction": torch.as_tensor(decode_prediction(task, rgb, palette))}


def test_harness_scores_real_datasets_with_their_palettes(cityscapes, nyu, tmp_path):
    out, ds = cityscapes
    results = evaluate_pipeline(Oracle(ds["val"]), ds["val"], batch_size=1, progress=False)
    assert list(results["metrics"]) == ["segmentation", "segmentation_unseen_palette"]
    assert results["metrics"]["segmentation"]["miou"] == 1.0
    assert results["metrics"]["segmentation_unseen_palette"]["miou"] == 1.0
    assert set(results["metrics"]["segmentation"]["per_class"]) == set(CITYSCAPES_CLASSES)
    assert list(unseen_palette(0, 1, CITYSCAPES_CLASSES)) == list(CITYSCAPES_CLASSES)
    written = write_evaluation(tmp_path / "eval-cs", results, split="val", world_dir=out)
    stored = json.loads((written / "metrics.json").read_text())["metrics"]
    assert recompute_metrics(written) == stored

    out, ds = nyu
    results = evaluate_pipeline(Oracle(ds["test"]), ds["test"], batch_size=2, progress=False)
    assert list(results["metrics"]) == ["depth", "normals"]
    assert results["metrics"]["depth"]["metric"]["abs_rel"] < 1e-4
    assert results["metrics"]["normals"]["mean"] < 0.5
    written = write_evaluation(tmp_path / "eval-nyu", results, split="test", world_dir=out)
    assert recompute_metrics(written) == json.loads((written / "metrics.json").read_text())["metrics"]
    with pytest.raises(ValueError, match="no labels for"):
        evaluate_pipeline(Oracle(ds["test"]), ds["test"], tasks=("segmentation",), progress=False)


def test_train_and_evaluate_a_run_on_cityscapes(tmp_path, cityscapes_root):
    """`train` and `banana evaluate --split val` run unchanged on a real dataset (smoke generator, 16 px)."""
    from banana.models import BananaGenerator
    from banana.training import TrainConfig, train

    build_cityscapes(cityscapes_root, tmp_path / "cs16", resolution=16, progress=False)
    # the pixel generator's vocabulary takes the dataset's class names (and captions), so its prompts fit
    base = BananaGenerator.from_preset("smoke", seed=0, class_names=CITYSCAPES_CLASSES,
                                       texts=["a photo of a city street"]).save_pretrained(tmp_path / "base")
    config = TrainConfig(stage="tune", tuning="full", profile="smoke", max_steps=1, batch_size=2, checkpoint_every=1)
    run = train(config, tmp_path / "run", generator=base, world_dir=tmp_path / "cs16", progress=False)
    assert main(["evaluate", str(run), "--split", "val", "--steps", "1", "--limit", "2", "--batch-size", "2",
                 "--out", str(tmp_path / "eval"), "--no-progress"]) == 0
    record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert list(record["metrics"]) == ["segmentation", "segmentation_unseen_palette"]
    assert set(record["metrics"]["segmentation"]["per_class"]) == set(CITYSCAPES_CLASSES)
    assert recompute_metrics(tmp_path / "eval") == record["metrics"]


def test_world_spec_is_unchanged(split):
    from banana.world import CANONICAL_PALETTE, CLASS_NAMES

    spec = dataset_spec(split)
    assert spec.tasks == ALL_TASKS and spec.class_names == CLASS_NAMES and dict(spec.palette) == CANONICAL_PALETTE


def test_cli_builds_and_reports_errors(tmp_path, cityscapes_root, capsys):
    out = tmp_path / "cli"
    assert main(["data", "build-cityscapes", str(cityscapes_root), "--out", str(out), "--resolution", "16",
                 "--limit", "1", "--splits", "val", "--no-progress"]) == 0
    assert load_real(out)["val"][0]["image"].shape == (3, 16, 16)
    assert main(["data", "build-nyuv2", str(tmp_path / "nowhere"), "--out", str(tmp_path / "n"),
                 "--resolution", "16"]) == 2
    assert "NYUv2 root" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ clear errors
def test_cityscapes_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Cityscapes root .* does not exist"):
        build_cityscapes(tmp_path / "missing", tmp_path / "o", resolution=8)
    root = _cityscapes_tree(tmp_path / "a", splits=(("train", "aachen", 1),))
    with pytest.raises(FileNotFoundError, match="Cityscapes val image directory"):
        build_cityscapes(root, tmp_path / "o", resolution=8)                  # default splits need val
    (root / "leftImg8bit" / "val").mkdir()
    (root / "gtFine" / "val").mkdir()
    with pytest.raises(ValueError, match="val split is empty"):
        build_cityscapes(root, tmp_path / "o", resolution=8)
    with pytest.raises(ValueError, match="crop must be one of"):
        build_cityscapes(root, tmp_path / "o", resolution=8, crop="middle", splits=("train",))

    label = root / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    label.unlink()
    with pytest.raises(FileNotFoundError, match="aachen_000000_000019_leftImg8bit.png has no matching label"):
        build_cityscapes(root, tmp_path / "o", resolution=8, splits=("train",))
    _save(label, np.full((64, 128), 40, np.uint8))
    with pytest.raises(ValueError, match=r"labelIds.png: label ids \[40\] out of range 0..33"):
        build_cityscapes(root, tmp_path / "o", resolution=8, splits=("train",))
    label.unlink()
    trainids = label.with_name("aachen_000000_000019_gtFine_labelTrainIds.png")
    _save(trainids, np.full((64, 128), 19, np.uint8))
    with pytest.raises(ValueError, match=r"labelTrainIds.png: train ids \[19\] out of range"):
        build_cityscapes(root, tmp_path / "o", resolution=8, splits=("train",))
    _save(trainids, np.zeros((32, 64), np.uint8))
    with pytest.raises(ValueError, match="size mismatch: image .* is 64x128 but its label"):
        build_cityscapes(root, tmp_path / "o", resolution=8, splits=("train",))
    _save(trainids, np.zeros((64, 128, 3), np.uint8))
    with pytest.raises(ValueError, match="colour image"):
        build_cityscapes(root, tmp_path / "o", resolution=8, splits=("train",))
    assert not (tmp_path / "o").exists()                                       # nothing half-written
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    _save(trainids, np.zeros((64, 128), np.uint8))
    with pytest.raises(FileExistsError, match="not a banana dataset"):
        build_cityscapes(root, tmp_path / "busy", resolution=8, splits=("train",))


def test_nyu_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="NYUv2 root"):
        build_nyuv2(tmp_path / "missing", tmp_path / "o", resolution=8)
    root = _nyu_tree(tmp_path / "a", splits=(("train", 1), ("test", 1)), size=(48, 64))
    with pytest.raises(ValueError, match="Eigen crop .* 480x640"):
        build_nyuv2(root, tmp_path / "o", resolution=8)
    (root / "test" / "depth" / "00000.png").unlink()
    with pytest.raises(FileNotFoundError, match="00000.png has no matching depth"):
        build_nyuv2(root, tmp_path / "o", resolution=8, eigen_crop=False)
    _save(root / "test" / "depth" / "00000.png", np.zeros((48, 64), np.uint8))
    with pytest.raises(ValueError, match="expected a 16-bit PNG"):
        build_nyuv2(root, tmp_path / "o", resolution=8, eigen_crop=False)
    _save(root / "test" / "depth" / "00000.png", np.zeros((40, 64), np.uint16))
    with pytest.raises(ValueError, match="size mismatch: .* is 48x64 but .*depth.* is 40x64"):
        build_nyuv2(root, tmp_path / "o", resolution=8, eigen_crop=False)
    (root / "test" / "normals" / "00000.png").unlink()
    with pytest.raises(FileNotFoundError, match="has no matching normals"):
        build_nyuv2(root, tmp_path / "o", resolution=8, eigen_crop=False)
    (root / "test" / "normals").rmdir()
    with pytest.raises(ValueError, match="only some splits have a normals/ folder"):
        build_nyuv2(root, tmp_path / "o", resolution=8, eigen_crop=False)
    for name in ("rgb", "depth"):
        for f in (root / "test" / name).iterdir():
            f.unlink()
    with pytest.raises(ValueError, match="test split is empty"):
        build_nyuv2(root, tmp_path / "o", resolution=8, eigen_crop=False, splits=("test",))
    assert not (tmp_path / "o").exists()

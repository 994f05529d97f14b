"""Cityscapes semantic segmentation (gtFine, 19 training classes) in banana's example format.

Expected layout (the official download: ``leftImg8bit_trainvaltest.zip`` + ``gtFine_trainvaltest.zip``
unpacked into one ROOT)::

    ROOT/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
                                       (and/or ..._gtFine_labelTrainIds.png)

Labels: ``_labelIds.png`` (ids 0..33) are preferred and mapped to the 19 train ids with the
table of cityscapesScripts' ``labels.py`` (:data:`LABEL_ID_TO_TRAIN_ID`); every other id becomes
255 (ignore). Without a ``_labelIds.png`` the ``_labelTrainIds.png`` (0..18, 255) is used as is.

Protocol: the paper scores Cityscapes **val** (500 images, 19 classes, mIoU from one confusion
matrix over all pixels, ignore pixels excluded). Here it is scored at the built resolution (labels
nearest-downsampled, see :mod:`banana.real.common`), not at 1024x2048; the test split's public
labels are placeholders, so the default splits are ``train`` and ``val``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .common import (CROP_POLICIES, IGNORE_INDEX, REAL_VERSION, DatasetSpec, check_dir, crop_box,
                     output_size, read_gray, read_rgb, resize_nearest, resize_rgb, split_paths, write_dataset)

__all__ = ["CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "LABEL_ID_TO_TRAIN_ID", "NUM_LABEL_IDS",
           "CITYSCAPES_SPLITS", "label_ids_to_train_ids", "find_pairs", "build_cityscapes", "cityscapes_spec"]

#: The 19 evaluated classes in train-id order, with their official colours (cityscapesScripts labels.py).
CITYSCAPES_PALETTE: dict[str, tuple[int, int, int]] = {
    "road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70), "wall": (102, 102, 156),
    "fence": (190, 153, 153), "pole": (153, 153, 153), "traffic light": (250, 170, 30),
    "traffic sign": (220, 220, 0), "vegetation": (107, 142, 35), "terrain": (152, 251, 152),
    "sky": (70, 130, 180), "person": (220, 20, 60), "rider": (255, 0, 0), "car": (0, 0, 142),
    "truck": (0, 0, 70), "bus": (0, 60, 100), "train": (0, 80, 100), "motorcycle": (0, 0, 230),
    "bicycle": (119, 11, 32),
}
CITYSCAPES_CLASSES: tuple[str, ...] = tuple(CITYSCAPES_PALETTE)
#: label id -> train id for the 19 evaluated classes; the other ids of 0..33 map to 255.
LABEL_ID_TO_TRAIN_ID: dict[int, int] = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                                        23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
#: label ids run 0..33 (license plate, id -1, is not drawn into the id images).
NUM_LABEL_IDS = 34
CITYSCAPES_SPLITS = ("train", "val", "test")
_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIXES = ("_gtFine_labelIds.png", "_gtFine_labelTrainIds.png")
_LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _id, _train in LABEL_ID_TO_TRAIN_ID.items():
    _LUT[_id] = _train
_LAYOUT = ("expected the official layout ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png and "
           "ROOT/gtFine/<split>/<city>/*_gtFine_labelIds.png (see data/README.md)")
LICENSE = ("Cityscapes terms of use: non-commercial research; download requires registration at "
           "https://www.cityscapes-dataset.com and the data may not be redistributed")
CITATION = ("Cordts et al., The Cityscapes Dataset for Semantic Urban Scene Understanding, CVPR 2016")


def cityscapes_spec() -> DatasetSpec:
    return DatasetSpec("cityscapes", ("segmentation",), CITYSCAPES_CLASSES, dict(CITYSCAPES_PALETTE), IGNORE_INDEX)


def label_ids_to_train_ids(ids: np.ndarray, path: str | os.PathLike = "<array>") -> np.ndarray:
    """Cityscapes label ids ``[H, W]`` (0..33) -> train ids (0..18, 255 = ignore), uint8.
    Ids outside 0..33 are a ValueError naming ``path``."""
    ids = np.asarray(ids)
    bad = (ids < 0) | (ids >= NUM_LABEL_IDS)
    if bad.any():
        raise ValueError(f"{path}: label ids {np.unique(ids[bad])[:10].tolist()} out of range 0..{NUM_LABEL_IDS - 1} "
                         "(is this a _labelIds.png file?)")
    return _LUT[ids]


def _check_train_ids(train_ids: np.ndarray, path) -> np.ndarray:
    bad = (train_ids >= len(CITYSCAPES_CLASSES)) & (train_ids != IGNORE_INDEX)
    if bad.any() or (train_ids < 0).any():
        values = np.unique(train_ids[bad | (train_ids < 0)])[:10].tolist()
        raise ValueError(f"{path}: train ids {values} out of range 0..{len(CITYSCAPES_CLASSES) - 1} (or 255)")
    return train_ids.astype(np.uint8)


def find_pairs(root: str | os.PathLike, split: str) -> list[tuple[Path, Path]]:
    """``(image, label)`` paths of one split, sorted by image path. Raises FileNotFoundError when
    a directory or an image's label is missing, ValueError when the split has no images."""
    root = check_dir(Path(root), "Cityscapes root")
    if split not in CITYSCAPES_SPLITS:
        raise ValueError(f"unknown Cityscapes split {split!r}; choose from {CITYSCAPES_SPLITS}")
    image_dir = check_dir(root / "leftImg8bit" / split, f"Cityscapes {split} image directory", _LAYOUT)
    label_dir = check_dir(root / "gtFine" / split, f"Cityscapes {split} label directory", _LAYOUT)
    images = sorted(image_dir.glob(f"*/*{_IMAGE_SUFFIX}"))
    if not images:
        raise ValueError(f"the Cityscapes {split} split is empty: no <city>/*{_IMAGE_SUFFIX} under {image_dir}")
    pairs = []
    for image in images:
        stem = image.name[:-len(_IMAGE_SUFFIX)]
        candidates = [label_dir / image.parent.name / (stem + suffix) for suffix in _LABEL_SUFFIXES]
        label = next((c for c in candidates if c.is_file()), None)
        if label is None:
            raise FileNotFoundError(f"{image} has no matching label: expected {candidates[0]} "
                                    f"(or {candidates[1].name})")
        pairs.append((image, label))
    return pairs


def _read_pair(image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = read_rgb(image_path)
    raw = read_gray(label_path, bits=8)
    if raw.shape != image.shape[:2]:
        raise ValueError(f"size mismatch: image {image_path} is {image.shape[0]}x{image.shape[1]} but its label "
                         f"{label_path} is {raw.shape[0]}x{raw.shape[1]}")
    if label_path.name.endswith("_labelTrainIds.png"):
        return image, _check_train_ids(raw, label_path)
    return image, label_ids_to_train_ids(raw, label_path)


def describe(semantic: np.ndarray, min_share: float = 0.01) -> str:
    """A caption for generation examples: the classes covering at least ``min_share`` of the
    labelled pixels, in train-id order ("a photo of a city street with road, building and car")."""
    valid = semantic[semantic != IGNORE_INDEX]
    counts = np.bincount(valid.ravel(), minlength=len(CITYSCAPES_CLASSES)) if valid.size else np.zeros(1)
    names = [CITYSCAPES_CLASSES[k] for k in range(len(CITYSCAPES_CLASSES))
             if valid.size and k < len(counts) and counts[k] >= min_share * valid.size]
    if not names:
        return "a photo of a city street"
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"a photo of a city street with {listed}"


def _examples(pairs: Sequence[tuple[Path, Path]], root: Path, resolution: int, crop: str, split: str,
              progress: bool) -> Iterator[dict]:
    from tqdm.auto import tqdm

    for index, (image_path, label_path) in enumerate(tqdm(pairs, desc=f"cityscapes {split}", unit="img",
                                                          disable=not progress)):
        image, semantic = _read_pair(image_path, label_path)
        h, w = semantic.shape
        r0, r1, c0, c1 = crop_box(h, w, crop)
        size = output_size(r1 - r0, c1 - c0, resolution, crop)
        image = resize_rgb(image[r0:r1, c0:c1], size)
        semantic = resize_nearest(semantic[r0:r1, c0:c1], size)
        yield {"image": np.ascontiguousarray(image.transpose(2, 0, 1)), "semantic": semantic,
               "description": describe(semantic), "index": index,
               "source": str(image_path.relative_to(root))}


def build_cityscapes(root: str | os.PathLike, out_dir: str | os.PathLike, resolution: int, crop: str = "center",
                     splits: Sequence[str] = ("train", "val"), limit: int | None = None, overwrite: bool = False,
                     progress: bool = True):
    """Build a Cityscapes ``DatasetDict`` (``image``, ``semantic``, ``description``, ``index``,
    ``source``) at ``resolution`` into ``out_dir`` and return it (numpy format).

    Every split is scanned before anything is written, so a missing directory or label fails
    fast. ``limit`` keeps the first N images of each split (sorted by path) for quick builds.
    An identical existing build is reused; a different one needs ``overwrite=True``.
    """
    from datasets import Array2D, Array3D, Features, Value

    if crop not in CROP_POLICIES:
        raise ValueError(f"crop must be one of {CROP_POLICIES}, got {crop!r}")
    if not splits:
        raise ValueError("no splits requested")
    root = check_dir(Path(root), "Cityscapes root", _LAYOUT)
    pairs = {split: split_paths(find_pairs(root, split), limit) for split in splits}
    # Every image must have the first image's size (the features are fixed-shape arrays).
    first_image, first_label = next(iter(pairs.values()))[0]
    image, _ = _read_pair(first_image, first_label)
    r0, r1, c0, c1 = crop_box(image.shape[0], image.shape[1], crop)
    h, w = output_size(r1 - r0, c1 - c0, resolution, crop)
    from PIL import Image

    for split_pairs in pairs.values():
        for image_path, _ in split_pairs:
            with Image.open(image_path) as im:
                if (im.height, im.width) != image.shape[:2]:
                    raise ValueError(f"size mismatch: {image_path} is {im.height}x{im.width}, but {first_image} "
                                     f"is {image.shape[0]}x{image.shape[1]}; all images of a build must share a size")
    spec = cityscapes_spec()
    record = {
        **spec.to_dict(), "real_version": REAL_VERSION, "source_dir": str(root.resolve()),
        "config": {"resolution": int(resolution), "crop": crop, "splits": list(splits), "limit": limit},
        "image_size": [h, w], "input_size": list(image.shape[:2]),
        "splits": {split: len(p) for split, p in pairs.items()},
        "label_mapping": {"label_id_to_train_id": {str(k): v for k, v in LABEL_ID_TO_TRAIN_ID.items()},
                          "other_label_ids": IGNORE_INDEX},
        "protocol": ("Cityscapes val (500 images in full), 19 classes, mIoU over one confusion matrix of all pixels, "
                     "ignore 255 excluded; scored at the built resolution (labels nearest-downsampled)"),
        "license": LICENSE,
        "fields": {"image": f"uint8 [3, {h}, {w}]", "semantic": f"uint8 [{h}, {w}] train ids, 255 = ignore",
                   "description": "string (classes covering >= 1% of labelled pixels)", "index": "int32",
                   "source": "string (image path relative to the Cityscapes root)"},
    }
    features = Features({"image": Array3D(shape=(3, h, w), dtype="uint8"),
                         "semantic": Array2D(shape=(h, w), dtype="uint8"),
                         "description": Value("string"), "index": Value("int32"), "source": Value("string")})
    generators = {split: (_examples, {"pairs": p, "root": root, "resolution": int(resolution), "crop": crop,
                                      "split": split, "progress": progress})
                  for split, p in pairs.items()}
    return write_dataset(out_dir, record, spec, generators, features, license=LICENSE,
                         homepage="https://www.cityscapes-dataset.com", citation=CITATION, overwrite=overwrite)

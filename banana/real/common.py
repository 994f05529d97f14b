"""Shared pieces of the real-dataset builders: the dataset spec, image I/O, crop/resize, writing.

The dataset spec
----------------
A built real dataset is the world's ``DatasetDict`` format (channels-first uint8 ``image``,
float32 ``depth`` in metres with ``inf`` = no valid depth, float32 ``normals`` with zero vectors =
no normal, uint8 ``semantic`` with 255 = ignore) **minus the columns of the tasks it has no labels
for**. What it offers travels with it in two places, written from one dict:

* ``world_config.json`` (``"format": "banana-real"``) next to the splits, like a world's;
* every split's ``DatasetInfo.description`` (a JSON string), so code that only holds a split
  (:class:`banana.training.data.BananaExamples`, :mod:`banana.evaluation`) can read it back
  with :func:`dataset_spec`.

:func:`dataset_spec` returns a :class:`DatasetSpec` (``tasks``, ``class_names``, ``palette``,
``ignore_index``). A split without a banana-real description is the synthetic world, and gets
the world's spec (``CLASS_NAMES``, ``CANONICAL_PALETTE``, all three tasks), so nothing changes for it.

Crop and resize policy (:func:`output_size`, :func:`crop_box`)
--------------------------------------------------------------
* ``crop="center"`` (default): cut the largest centred square (Cityscapes 1024x2048 -> the middle
  1024x1024; NYUv2 480x640 -> columns 80:560), then resize it to ``R x R`` - square, like the world
  and the generators.
* ``crop="full"``: keep the whole frame and resize it to ``R x round(R * W / H)`` (aspect kept).

RGB images are resized with area averaging (PIL ``BOX``) when shrinking and bilinearly when
enlarging; label maps, depth and normals with **nearest neighbour** (:func:`resize_nearest`:
output pixel ``i`` takes input pixel ``floor((i + 0.5) * H_in / H_out)``), so class ids and invalid
markers are never interpolated.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

__all__ = ["REAL_FORMAT", "REAL_VERSION", "IGNORE_INDEX", "CROP_POLICIES", "DatasetSpec", "dataset_spec", "world_spec",
           "output_size", "crop_box", "resize_rgb", "resize_nearest", "read_rgb", "read_gray", "check_dir",
           "write_dataset", "load_real"]

#: ``format`` of a real dataset's ``world_config.json`` (the world's is ``banana-world``).
REAL_FORMAT = "banana-real"
#: Bumped whenever the bytes a builder writes for the same input change.
REAL_VERSION = 1
#: Segmentation "ignore" id in targets (and "rejected" in decoded predictions).
IGNORE_INDEX = 255
CROP_POLICIES = ("center", "full")


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset offers: its ``tasks``, for segmentation its ``class_names`` (id order),
    canonical ``palette`` (class -> RGB) and ``ignore_index``, and for depth the valid range
    ``[min_depth, max_depth]`` in metres that evaluation scores inside (predictions are clipped into
    it, ground truth outside it is not scored: :func:`banana.evaluation.metrics.depth_metrics`)."""

    name: str
    tasks: tuple[str, ...]
    class_names: tuple[str, ...] = ()
    palette: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)
    ignore_index: int = IGNORE_INDEX
    min_depth: float = 1e-3
    max_depth: float = 10.0

    def __post_init__(self):
        if not 0 <= self.min_depth < self.max_depth < float("inf"):
            raise ValueError(f"a dataset's depth range needs 0 <= min_depth < max_depth < inf, got "
                             f"[{self.min_depth}, {self.max_depth}]")

    @property
    def depth_range(self) -> tuple[float, float]:
        return float(self.min_depth), float(self.max_depth)

    def to_dict(self) -> dict[str, Any]:
        return {"format": REAL_FORMAT, "dataset": self.name, "tasks": list(self.tasks),
                "class_names": list(self.class_names),
                "canonical_palette": {k: list(v) for k, v in self.palette.items()},
                "ignore_index": self.ignore_index, "min_depth": self.min_depth, "max_depth": self.max_depth}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "DatasetSpec":
        palette = {str(k): tuple(int(c) for c in v) for k, v in record.get("canonical_palette", {}).items()}
        return cls(name=str(record["dataset"]), tasks=tuple(record["tasks"]),
                   class_names=tuple(record.get("class_names", ())), palette=palette,
                   ignore_index=int(record.get("ignore_index", IGNORE_INDEX)),
                   min_depth=float(record.get("min_depth", 1e-3)), max_depth=float(record.get("max_depth", 10.0)))


def world_spec() -> DatasetSpec:
    """The synthetic world's spec: every task (query tasks too), ``CLASS_NAMES``, the canonical palette, its depth range."""
    from banana.tasks import ALL_TASKS
    from banana.world import CANONICAL_PALETTE, CLASS_NAMES, MAX_DEPTH, MIN_DEPTH

    return DatasetSpec("world", tuple(ALL_TASKS), tuple(CLASS_NAMES), CANONICAL_PALETTE,
                       min_depth=MIN_DEPTH, max_depth=MAX_DEPTH)


def dataset_spec(split) -> DatasetSpec:
    """The :class:`DatasetSpec` of a split (or of a ``DatasetDict``: its first split).

    Real datasets carry it as JSON in ``split.info.description``; anything else is the synthetic
    world (all tasks, ``banana.world.CLASS_NAMES`` and ``CANONICAL_PALETTE``).
    """
    if hasattr(split, "keys") and hasattr(split, "values") and not hasattr(split, "info"):   # a DatasetDict
        split = next(iter(split.values()))
    description = getattr(getattr(split, "info", None), "description", None) or ""
    if description.lstrip().startswith("{"):
        try:
            record = json.loads(description)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and record.get("format") == REAL_FORMAT:
            return DatasetSpec.from_dict(record)
    return world_spec()


# --------------------------------------------------------------------------- geometry
def output_size(height: int, width: int, resolution: int, crop: str) -> tuple[int, int]:
    """``(H_out, W_out)`` for an input of ``height x width`` (see the module docstring)."""
    if crop not in CROP_POLICIES:
        raise ValueError(f"crop must be one of {CROP_POLICIES}, got {crop!r}")
    if int(resolution) < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    if crop == "center":
        return int(resolution), int(resolution)
    return int(resolution), max(1, int(round(resolution * width / height)))


def crop_box(height: int, width: int, crop: str) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)`` of the region that is resized (the centred square for
    ``"center"``, the whole frame for ``"full"``)."""
    if crop not in CROP_POLICIES:
        raise ValueError(f"crop must be one of {CROP_POLICIES}, got {crop!r}")
    if crop == "full":
        return 0, height, 0, width
    side = min(height, width)
    r0, c0 = (height - side) // 2, (width - side) // 2
    return r0, r0 + side, c0, c0 + side


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> uint8 ``[h, w, 3]``: area averaging when shrinking, bilinear otherwise."""
    from PIL import Image

    h, w = size
    if image.shape[:2] == (h, w):
        return np.ascontiguousarray(image)
    shrinking = h <= image.shape[0] and w <= image.shape[1]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), resample=resample))


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of ``[H, W, ...]``: output ``(i, j)`` takes input
    ``(floor((i + 0.5) H / h), floor((j + 0.5) W / w))``. Never mixes values."""
    h, w = size
    H, W = array.shape[:2]
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return np.ascontiguousarray(array[rows][:, cols])


# --------------------------------------------------------------------------- reading files
def check_dir(path: Path, what: str, hint: str = "") -> Path:
    """``path`` as a directory, or FileNotFoundError naming ``what`` it should have been."""
    path = Path(path)
    if not path.is_dir():
        state = "is not a directory" if path.exists() else "does not exist"
        raise FileNotFoundError(f"{what} {path} {state}." + (f" {hint}" if hint else ""))
    return path


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path} is not a readable image: {error}") from error
    return image


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit colour image as uint8 ``[H, W, 3]`` (grey/RGBA/palette images are converted)."""
    image = _open(path)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        raise ValueError(f"{path}: expected an 8-bit colour image, got mode {image.mode!r}")
    return np.asarray(image.convert("RGB"))


def read_gray(path: Path, bits: int) -> np.ndarray:
    """A single-channel PNG as int64 ``[H, W]``: ``bits=8`` (label ids) or ``bits=16`` (uint16
    depth). A colour image, or an 8-bit image where 16 bits are required, is a ValueError."""
    image = _open(path)
    if image.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA"):
        raise ValueError(f"{path}: expected a single-channel {bits}-bit image, got a colour image "
                         f"(mode {image.mode!r}); is this a colour visualisation instead of the id/depth file?")
    if bits == 16 and image.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise ValueError(f"{path}: expected a 16-bit PNG (uint16), got mode {image.mode!r}")
    if bits == 8 and image.mode not in ("L", "P"):
        raise ValueError(f"{path}: expected an 8-bit single-channel PNG (mode L), got mode {image.mode!r}")
    array = np.asarray(image).astype(np.int64)
    if bits == 16 and (array.min() < 0 or array.max() > 65535):
        raise ValueError(f"{path}: values outside 0..65535 (min {array.min()}, max {array.max()})")
    return array


# --------------------------------------------------------------------------- writing
def _check_out(out: Path, record: dict, overwrite: bool):
    """``"reuse"`` when ``out`` already holds this exact build, ``"write"`` otherwise; raises
    FileExistsError on a different build (without ``overwrite``) or on a foreign directory."""
    from banana.world import CONFIG_FILE

    if not out.exists():
        return "write"
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    config = out / CONFIG_FILE
    if config.is_file():
        existing = json.loads(config.read_text())
        if existing == record and (out / "dataset_dict.json").is_file():
            return "reuse"
        if overwrite and existing.get("format") == REAL_FORMAT:
            return "write"
        if existing.get("format") != REAL_FORMAT:
            raise FileExistsError(f"{out} holds a {existing.get('format')!r} dataset, not a banana-real one; "
                                  "refusing to replace it. Choose another output directory.")
        diffs = sorted(k for k in set(existing) | set(record) if existing.get(k) != record.get(k))
        raise FileExistsError(f"{out} already holds a different {existing.get('dataset')} build (differs in "
                              f"{', '.join(diffs)}). Pass overwrite=True (CLI: --overwrite) to replace it.")
    if any(out.iterdir()):
        raise FileExistsError(f"{out} exists, is not empty and is not a banana dataset (no {CONFIG_FILE}); "
                              "refusing to write into it. Choose another output directory.")
    return "write"


def write_dataset(out_dir: str | os.PathLike, record: dict, spec: DatasetSpec,
                  splits: Mapping[str, tuple[Callable[..., Iterator[dict]], dict]], features,
                  license: str = "", homepage: str = "", citation: str = "", overwrite: bool = False):
    """Write ``splits`` (``name -> (generator, gen_kwargs)``) with ``features`` as a
    ``DatasetDict`` into ``out_dir``, with ``record`` as ``world_config.json`` (written last) and
    ``spec`` in every split's ``info.description``. Built in a hidden sibling directory and
    renamed when complete; an identical existing build is reused. Returns :func:`load_real`."""
    import datasets

    out = Path(out_dir)
    if _check_out(out, record, overwrite) == "reuse":
        return load_real(out)
    from banana.world.dataset import staged_build

    info = datasets.DatasetInfo(description=json.dumps(spec.to_dict()), license=license, homepage=homepage,
                                citation=citation)
    with staged_build(out, record) as tmp:
        built = {}
        for name, (generator, kwargs) in splits.items():
            try:
                built[name] = datasets.Dataset.from_generator(generator, features=features, gen_kwargs=kwargs,
                                                              cache_dir=str(tmp / ".cache"), info=info.copy())
            except datasets.exceptions.DatasetGenerationError as error:
                # datasets wraps what the generator raised; a bad input file is the user's error to read.
                if isinstance(error.__cause__, (ValueError, FileNotFoundError)):
                    raise error.__cause__ from None
                raise
        datasets.DatasetDict(built).save_to_disk(str(tmp))
        del built
    return load_real(out)


def load_real(path: str | os.PathLike):
    """Load a built real dataset (numpy format, stored dtypes), like :func:`banana.world.load_world`
    (which loads it too). FileNotFoundError when ``path`` is not a complete banana-real build."""
    from banana.world import CONFIG_FILE, load_world

    path = Path(path)
    config = path / CONFIG_FILE
    if not config.is_file():
        raise FileNotFoundError(f"{path} is not a built real dataset (no {CONFIG_FILE}); build it with "
                                "`banana data build-cityscapes` or `banana data build-nyuv2`")
    fmt = json.loads(config.read_text()).get("format")
    if fmt != REAL_FORMAT:
        raise ValueError(f"{path} holds a {fmt!r} dataset, not {REAL_FORMAT!r}")
    return load_world(path)


def split_paths(paths: Sequence[Path], limit: int | None) -> list[Path]:
    """The first ``limit`` paths (all with ``None``); ``limit < 1`` is a ValueError."""
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be >= 1 (or None for all), got {limit}")
    return list(paths) if limit is None else list(paths)[:int(limit)]

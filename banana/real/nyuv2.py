"""NYU Depth v2 (metric depth; surface normals when you have them) in banana's example format.

Expected layout (one folder per split; files matched by name stem)::

    ROOT/{train,test}/rgb/<name>.png          8-bit RGB (.jpg also accepted), 480x640
    ROOT/{train,test}/depth/<name>.png        16-bit PNG, depth in millimetres (0 = no measurement)
    ROOT/{train,test}/normals/<name>.png      optional: 8-bit RGB, n = 2 * c / 255 - 1 per channel,
                                              (0, 0, 0) = no normal; or <name>.npy float [H, W, 3]
                                              (zeros or NaN = no normal)

``test`` should hold the official 654 test images of the labeled set (``splits.mat``'s
``testNdxs``, the Eigen split); data/README.md shows how to write this layout from
``nyu_depth_v2_labeled.mat``. Normals must be camera space in banana's frame (+x right, +y up,
+z toward the viewer) or, with ``normals_frame="opencv"``, in OpenCV's (+x right, +y down,
+z forward), which is converted by flipping y and z.

Depth protocol, applied at 480x640 before any resizing: a pixel is valid when its measurement is
non-zero, within ``[min_depth, max_depth]`` (1e-3 .. 10 m) and - with ``eigen_crop=True``, the
default - inside the Eigen crop (rows 45:471, columns 41:601). Invalid pixels get ``inf``, the
world's "no depth" value, which every depth metric skips (:func:`banana.evaluation.depth_metrics`
scores finite targets only) and the depth codec paints white. The mask is applied to every split,
so training targets and evaluation agree. There are no semantic labels (the task is absent).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .common import (CROP_POLICIES, REAL_VERSION, DatasetSpec, check_dir, crop_box, output_size, read_gray,
                     read_rgb, resize_nearest, resize_rgb, split_paths, write_dataset)

__all__ = ["EIGEN_CROP", "NYU_SIZE", "NYU_TEST_SIZE", "NORMALS_FRAMES", "find_triples", "depth_from_png",
           "normals_from_file", "build_nyuv2", "nyuv2_spec"]

#: ``(row0, row1, col0, col1)`` of the Eigen evaluation crop on 480x640 frames.
EIGEN_CROP = (45, 471, 41, 601)
NYU_SIZE = (480, 640)
#: Images in the official labeled test split (the Eigen split).
NYU_TEST_SIZE = 654
NORMALS_FRAMES = ("banana", "opencv")
_RGB_EXTENSIONS = (".png", ".jpg", ".jpeg")
_NORMAL_EXTENSIONS = (".png", ".npy")
_LAYOUT = ("expected ROOT/<split>/rgb/<name>.png and ROOT/<split>/depth/<name>.png (uint16 millimetres), "
           "optionally ROOT/<split>/normals/<name>.png (see data/README.md)")
LICENSE = ("NYU Depth Dataset V2 (Silberman et al.): free for research use; download it from the authors' site, "
           "it is not redistributed here")
CITATION = "Silberman, Hoiem, Kohli, Fergus, Indoor Segmentation and Support Inference from RGBD Images, ECCV 2012"
DESCRIPTION = "a photo of a room"


def nyuv2_spec(with_normals: bool, min_depth: float = 1e-3, max_depth: float = 10.0) -> DatasetSpec:
    """NYUv2's spec; its valid depth range (the peers' 1e-3..10 m) is also the evaluation range."""
    return DatasetSpec("nyuv2", ("depth", "normals") if with_normals else ("depth",),
                       min_depth=float(min_depth), max_depth=float(max_depth))


def _by_stem(directory: Path, extensions: Sequence[str]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix.lower() in extensions:
            if path.stem in files:
                raise ValueError(f"{directory} holds two files named {path.stem!r}: "
                                 f"{files[path.stem].name}, {path.name}")
            files[path.stem] = path
    return files


def find_triples(root: str | os.PathLike, split: str) -> tuple[list[tuple[Path, Path, Path | None]], bool]:
    """``[(rgb, depth, normals or None)]`` of one split sorted by name, and whether the split has a
    ``normals/`` folder. FileNotFoundError for missing folders or partner files, ValueError for
    an empty split."""
    root = check_dir(Path(root), "NYUv2 root", _LAYOUT)
    split_dir = check_dir(root / split, f"NYUv2 {split} split directory", _LAYOUT)
    rgb_dir = check_dir(split_dir / "rgb", f"NYUv2 {split} image directory", _LAYOUT)
    depth_dir = check_dir(split_dir / "depth", f"NYUv2 {split} depth directory", _LAYOUT)
    normals_dir = split_dir / "normals"
    has_normals = normals_dir.is_dir()
    images = _by_stem(rgb_dir, _RGB_EXTENSIONS)
    if not images:
        raise ValueError(f"the NYUv2 {split} split is empty: no {'/'.join(_RGB_EXTENSIONS)} files in {rgb_dir}")
    depths = _by_stem(depth_dir, (".png",))
    normals = _by_stem(normals_dir, _NORMAL_EXTENSIONS) if has_normals else {}
    triples = []
    for stem, image in images.items():
        if stem not in depths:
            raise FileNotFoundError(f"{image} has no matching depth: expected {depth_dir / (stem + '.png')}")
        if has_normals and stem not in normals:
            raise FileNotFoundError(f"{image} has no matching normals: expected {normals_dir / (stem + '.png')} "
                                    "(or .npy); remove the normals/ folder to build without normals")
        triples.append((image, depths[stem], normals.get(stem)))
    return triples, has_normals


def depth_from_png(path: str | os.PathLike, depth_scale: float = 1000.0, min_depth: float = 1e-3,
                   max_depth: float = 10.0, eigen_crop: bool = True) -> np.ndarray:
    """A uint16 depth PNG -> float32 metres ``[H, W]`` with ``inf`` where invalid (zero, outside
    ``[min_depth, max_depth]``, or outside the Eigen crop)."""
    raw = read_gray(Path(path), bits=16)
    if eigen_crop and raw.shape != NYU_SIZE:
        raise ValueError(f"{path} is {raw.shape[0]}x{raw.shape[1]}, but the Eigen crop {EIGEN_CROP} is defined on "
                         f"{NYU_SIZE[0]}x{NYU_SIZE[1]} frames; pass eigen_crop=False (CLI: --no-eigen-crop) for "
                         "other sizes")
    metres = raw.astype(np.float64) / float(depth_scale)
    valid = (raw > 0) & (metres >= min_depth) & (metres <= max_depth)
    if eigen_crop:
        r0, r1, c0, c1 = EIGEN_CROP
        inside = np.zeros_like(valid)
        inside[r0:r1, c0:c1] = True
        valid &= inside
    return np.where(valid, metres, np.inf).astype(np.float32)


def normals_from_file(path: str | os.PathLike, frame: str = "banana") -> np.ndarray:
    """An 8-bit RGB normals PNG or a float ``.npy`` -> float32 ``[3, H, W]`` unit vectors in banana's
    camera frame, zero vectors where there is no normal."""
    path = Path(path)
    if frame not in NORMALS_FRAMES:
        raise ValueError(f"normals_frame must be one of {NORMALS_FRAMES}, got {frame!r}")
    if path.suffix.lower() == ".npy":
        n = np.load(path).astype(np.float64)
        if n.ndim != 3 or 3 not in (n.shape[0], n.shape[-1]):
            raise ValueError(f"{path}: expected normals [H, W, 3] or [3, H, W], got shape {n.shape}")
        n = n if n.shape[-1] == 3 and n.shape[0] != 3 else np.moveaxis(n, 0, -1)
        n = np.where(np.isfinite(n).all(-1, keepdims=True), n, 0.0)
    else:
        rgb = read_rgb(path).astype(np.float64)
        n = np.where((rgb == 0).all(-1, keepdims=True), 0.0, rgb / 255.0 * 2.0 - 1.0)
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    n = np.where(length > 1e-6, n / np.maximum(length, 1e-12), 0.0)
    if frame == "opencv":
        n = n * np.array([1.0, -1.0, -1.0])
    return np.ascontiguousarray(np.moveaxis(n, -1, 0).astype(np.float32))


def _examples(triples, resolution: int, crop: str, split: str, depth_scale: float, min_depth: float,
              max_depth: float, eigen_crop: bool, normals_frame: str, root: Path, progress: bool) -> Iterator[dict]:
    from tqdm.auto import tqdm

    for index, (rgb_path, depth_path, normals_path) in enumerate(tqdm(triples, desc=f"nyuv2 {split}", unit="img",
                                                                      disable=not progress)):
        image = read_rgb(rgb_path)
        depth = depth_from_png(depth_path, depth_scale, min_depth, max_depth, eigen_crop)
        if depth.shape != image.shape[:2]:
            raise ValueError(f"size mismatch: {rgb_path} is {image.shape[0]}x{image.shape[1]} but {depth_path} is "
                             f"{depth.shape[0]}x{depth.shape[1]}")
        h, w = depth.shape
        r0, r1, c0, c1 = crop_box(h, w, crop)
        size = output_size(r1 - r0, c1 - c0, resolution, crop)
        example = {"image": np.ascontiguousarray(resize_rgb(image[r0:r1, c0:c1], size).transpose(2, 0, 1)),
                   "depth": resize_nearest(depth[r0:r1, c0:c1], size)}
        if normals_path is not None:
            normals = normals_from_file(normals_path, normals_frame)
            if normals.shape[1:] != (h, w):
                raise ValueError(f"size mismatch: {rgb_path} is {h}x{w} but {normals_path} is "
                                 f"{normals.shape[1]}x{normals.shape[2]}")
            example["normals"] = np.ascontiguousarray(
                resize_nearest(normals[:, r0:r1, c0:c1].transpose(1, 2, 0), size).transpose(2, 0, 1))
        example.update(description=DESCRIPTION, index=index, source=str(rgb_path.relative_to(root)))
        yield example


def build_nyuv2(root: str | os.PathLike, out_dir: str | os.PathLike, resolution: int, crop: str = "center",
                splits: Sequence[str] = ("train", "test"), limit: int | None = None, eigen_crop: bool = True,
                min_depth: float = 1e-3, max_depth: float = 10.0, depth_scale: float = 1000.0,
                normals_frame: str = "banana", overwrite: bool = False, progress: bool = True):
    """Build an NYUv2 ``DatasetDict`` (``image``, ``depth``, [``normals``], ``description``,
    ``index``, ``source``) at ``resolution`` into ``out_dir`` and return it (numpy format).

    Normals are built when every requested split has a ``normals/`` folder (a ValueError when only
    some do). Every split is scanned before anything is written. ``limit`` keeps the first N
    images per split (sorted by name); an identical existing build is reused.
    """
    from datasets import Array2D, Array3D, Features, Value
    from PIL import Image

    if crop not in CROP_POLICIES:
        raise ValueError(f"crop must be one of {CROP_POLICIES}, got {crop!r}")
    if normals_frame not in NORMALS_FRAMES:
        raise ValueError(f"normals_frame must be one of {NORMALS_FRAMES}, got {normals_frame!r}")
    if not 0 <= min_depth < max_depth:
        raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
    if not splits:
        raise ValueError("no splits requested")
    root = check_dir(Path(root), "NYUv2 root", _LAYOUT)
    found = {split: find_triples(root, split) for split in splits}
    with_normals = {split: has for split, (_, has) in found.items()}
    if len(set(with_normals.values())) > 1:
        raise ValueError(f"only some splits have a normals/ folder ({with_normals}); a build's splits must offer "
                         "the same tasks: add the missing folders or remove the others")
    normals = next(iter(with_normals.values()))
    triples = {split: split_paths(t, limit) for split, (t, _) in found.items()}
    first = next(iter(triples.values()))[0][0]
    with Image.open(first) as im:
        input_size = (im.height, im.width)
    for split_triples in triples.values():
        for rgb_path, _, _ in split_triples:
            with Image.open(rgb_path) as im:
                if (im.height, im.width) != input_size:
                    raise ValueError(f"size mismatch: {rgb_path} is {im.height}x{im.width}, but {first} is "
                                     f"{input_size[0]}x{input_size[1]}; all images of a build must share a size")
    r0, r1, c0, c1 = crop_box(*input_size, crop)
    h, w = output_size(r1 - r0, c1 - c0, resolution, crop)
    spec = nyuv2_spec(normals, min_depth, max_depth)
    sizes = {split: len(t) for split, t in triples.items()}
    record = {
        **spec.to_dict(), "real_version": REAL_VERSION, "source_dir": str(root.resolve()),
        "config": {"resolution": int(resolution), "crop": crop, "splits": list(splits), "limit": limit,
                   "eigen_crop": bool(eigen_crop), "min_depth": float(min_depth), "max_depth": float(max_depth),
                   "depth_scale": float(depth_scale), "normals_frame": normals_frame if normals else None},
        "image_size": [h, w], "input_size": list(input_size), "splits": sizes,
        "eigen_crop": list(EIGEN_CROP) if eigen_crop else None,
        "eigen_test_split_complete": sizes.get("test") == NYU_TEST_SIZE if "test" in sizes else None,
        "protocol": (f"NYUv2 test = the official {NYU_TEST_SIZE}-image labeled test split (Eigen); valid depth "
                     f"{min_depth:g}..{max_depth:g} m" + (" inside the Eigen crop rows 45:471, cols 41:601 of 480x640"
                                                          if eigen_crop else "")
                     + ", applied at full resolution as a mask (inf = invalid); metric depth scored per image, "
                       "averaged over images, at the built resolution (depth nearest-downsampled)"),
        "license": LICENSE,
        "fields": {"image": f"uint8 [3, {h}, {w}]", "depth": f"float32 [{h}, {w}] metres, inf = no valid depth",
                   **({"normals": f"float32 [3, {h}, {w}] camera space (+x right, +y up, +z to viewer), "
                                  "zeros = no normal"} if normals else {}),
                   "description": "string", "index": "int32", "source": "string (rgb path relative to ROOT)"},
    }
    columns = {"image": Array3D(shape=(3, h, w), dtype="uint8"), "depth": Array2D(shape=(h, w), dtype="float32")}
    if normals:
        columns["normals"] = Array3D(shape=(3, h, w), dtype="float32")
    columns.update(description=Value("string"), index=Value("int32"), source=Value("string"))
    generators = {split: (_examples, {"triples": t, "resolution": int(resolution), "crop": crop, "split": split,
                                      "depth_scale": float(depth_scale), "min_depth": float(min_depth),
                                      "max_depth": float(max_depth), "eigen_crop": bool(eigen_crop),
                                      "normals_frame": normals_frame, "root": root, "progress": progress})
                  for split, t in triples.items()}
    return write_dataset(out_dir, record, spec, generators, Features(columns), license=LICENSE,
                         homepage="https://cs.nyu.edu/~fergus/datasets/nyu_depth_v2.html", citation=CITATION,
                         overwrite=overwrite)

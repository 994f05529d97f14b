"""Real datasets in banana's example format: Cityscapes (segmentation) and NYUv2 (depth, normals).

Each builder reads the dataset from a local directory the user downloaded (nothing is fetched or
redistributed), crops/resizes it to one resolution and writes the world's ``DatasetDict`` format,
so training (:class:`banana.training.data.BananaExamples`), evaluation (:mod:`banana.evaluation`)
and the grids use it unchanged::

    from banana.real import build_cityscapes, build_nyuv2, load_real, dataset_spec
    ds = build_cityscapes("~/data/cityscapes", "data/real/cityscapes-64", resolution=64)
    dataset_spec(ds["val"])  # DatasetSpec(name='cityscapes', tasks=('segmentation',), class_names=(...19...), ...)

CLI: ``banana data build-cityscapes ROOT --out DIR --resolution R`` and ``banana data build-nyuv2 ...``.

A dataset lacks the columns of the tasks it has no labels for (Cityscapes: no ``depth``/
``normals``; NYUv2: no ``semantic``, ``normals`` only when supplied) and says which tasks it has,
with its class names and canonical palette, in ``world_config.json`` and in each split's
``info.description`` (:func:`dataset_spec`). Layouts, classes and protocols: ``data/README.md``.
"""

from .cityscapes import (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, LABEL_ID_TO_TRAIN_ID, build_cityscapes,
                         cityscapes_spec, label_ids_to_train_ids)
from .common import (CROP_POLICIES, IGNORE_INDEX, REAL_FORMAT, DatasetSpec, crop_box, dataset_spec, load_real,
                     output_size, resize_nearest, resize_rgb)
from .nyuv2 import EIGEN_CROP, NYU_TEST_SIZE, build_nyuv2, depth_from_png, normals_from_file, nyuv2_spec

__all__ = [
    "DatasetSpec", "dataset_spec", "load_real", "REAL_FORMAT", "IGNORE_INDEX", "CROP_POLICIES",
    "output_size", "crop_box", "resize_rgb", "resize_nearest",
    "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "LABEL_ID_TO_TRAIN_ID", "build_cityscapes", "cityscapes_spec",
    "label_ids_to_train_ids",
    "EIGEN_CROP", "NYU_TEST_SIZE", "build_nyuv2", "depth_from_png", "normals_from_file", "nyuv2_spec",
]

"""Task-as-image codecs: dense vision outputs <-> RGB images.

Vision Banana answers vision tasks by *generating an image*. These codecs
define what that image means:

* :class:`SegmentationCodec` - class labels <-> colours named in the prompt
  (decoded by nearest colour, with one rejection radius, :data:`REJECT_RADIUS`,
  for canonical and random palettes alike).
* :class:`DepthCodec` - metres <-> a colour path (default: the paper's power
  warp followed by a walk over the RGB cube's edges).
* :class:`InstanceCodec` - the instances of one prompted class <-> a colour each on
  a named background (decoded by clustering colours under a threshold).
* :class:`NormalsCodec` - camera-space unit normals <-> RGB
  (``R = (1-x)/2, G = (1+y)/2, B = (1+z)/2``).
* :func:`quantize` - simulate 8-bit PNG storage, to measure each codec's
  ceiling before any model is involved.

Conventions shared by all codecs: images are channel-first float
``[..., 3, H, W]`` in ``[0, 1]``; any leading batch dims (or none); numpy in ->
numpy out, torch in -> torch out on the same device; bad input raises
``ValueError`` naming the problem.
"""

from ._arrays import quantize
from .depth import (
    COLORMAPS,
    CUBE_PATH_VERTICES,
    WARPS,
    ColorPath,
    DepthCodec,
    colormap_path,
    cube_path,
    inverse_metric_warp,
    metric_warp,
)
from .instance import InstanceCodec, MaskCodec, same_partition
from .normals import NormalsCodec
from .segmentation import (
    BASIC_COLOR_NAMES,
    IGNORE_COLOR,
    MIN_PALETTE_DISTANCE,
    PROMPT_STYLES,
    REJECT_RADIUS,
    SegmentationCodec,
    random_palette,
    well_separated_palette,
)

__all__ = [
    "SegmentationCodec",
    "DepthCodec",
    "NormalsCodec",
    "InstanceCodec", "MaskCodec",
    "same_partition",
    "ColorPath",
    "well_separated_palette",
    "random_palette",
    "quantize",
    "metric_warp",
    "inverse_metric_warp",
    "cube_path",
    "colormap_path",
    "CUBE_PATH_VERTICES",
    "COLORMAPS",
    "WARPS",
    "PROMPT_STYLES",
    "BASIC_COLOR_NAMES",
    "REJECT_RADIUS",
    "MIN_PALETTE_DISTANCE",
    "IGNORE_COLOR",
]

"""The embedded synthetic world: seeded scenes with exact labels, rendered by a NumPy ray caster.

Public API::

    from banana.world import (CLASS_NAMES, CANONICAL_PALETTE, HELD_OUT_COMBINATIONS, SPLITS,
                              Scene, sample_scene, render_scene, render_sample,
                              WorldConfig, WORLD_PRESETS, build_world, load_world)

``sample_scene(seed, split, index)`` draws a :class:`Scene` (pure function of its inputs),
``render_scene(scene, resolution, spp)`` ray-casts it into a sample dict (image, depth, normals,
semantic, instance, description, objects), ``build_world(out_dir, config)`` renders every split
into a ``datasets.DatasetDict`` on disk and ``load_world(path)`` reads it back (numpy format).
Conventions (camera space, depth, normals, class ids, held-out rule) are documented in
:mod:`banana.world.scene`, :mod:`banana.world.render` and ``data/world/README.md``.
"""

from .dataset import (CONFIG_FILE, WORLD_PRESETS, WORLD_VERSION, WorldConfig, build_world, load_world,
                      read_world_config, world_features)
from .render import camera_intrinsics, object_pixel_counts, pixel_rays, render_scene
from .sampler import MAX_DEPTH, MIN_DEPTH, render_sample, sample_scene
from .scene import (CANONICAL_PALETTE, CLASS_IDS, CLASS_NAMES, COLOR_VOCABULARY, HELD_OUT_COMBINATIONS,
                    OBJECT_CLASS_IDS, OBJECT_SHAPES, SPLIT_ID, SPLITS, SURFACE_COLORS, Camera, Floor, Light,
                    ObjectSpec, Scene, Wall)

__all__ = [
    "CLASS_NAMES", "CLASS_IDS", "CANONICAL_PALETTE", "COLOR_VOCABULARY", "SURFACE_COLORS", "HELD_OUT_COMBINATIONS",
    "OBJECT_SHAPES", "OBJECT_CLASS_IDS", "SPLITS", "SPLIT_ID", "MIN_DEPTH", "MAX_DEPTH",
    "Scene", "ObjectSpec", "Floor", "Wall", "Camera", "Light", "sample_scene",
    "render_scene", "render_sample", "pixel_rays", "camera_intrinsics", "object_pixel_counts",
    "WorldConfig", "WORLD_PRESETS", "WORLD_VERSION", "CONFIG_FILE", "world_features", "build_world", "load_world",
    "read_world_config",
]

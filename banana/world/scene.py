"""Scene specification for the seeded synthetic world: vocabulary, sampling, descriptions.

A :class:`Scene` is a plain, JSON-serialisable description of one image: a floor, one or two
walls, 2-5 objects resting on the floor, a camera and one or two directional lights. It is a
pure function of ``(seed, split, index)``: :func:`banana.world.sampler.sample_scene` derives its random generator as
``numpy.random.default_rng(numpy.random.SeedSequence([seed, SPLIT_ID[split], index]))`` and draws
everything from it in a fixed order. Rendering (:mod:`banana.world.render`) adds the resolution and
the samples per pixel.

Conventions (shared with the renderer and the rest of the package)
------------------------------------------------------------------
* World units are metres. The world is right-handed with +y up; the floor is the plane ``y = 0``.
  The objects stand around the origin, walls are behind them (towards -z), and the camera looks at
  them from the +z side.
* Camera space is right-handed: +x right, +y up, +z towards the viewer (the camera looks along -z).
  Depth is the z-depth (distance along the optical axis), not the ray length.
* Semantic classes, in id order: :data:`CLASS_NAMES`. Instance ids are 1..k for the k objects
  (``ObjectSpec.instance_id``) and 0 for stuff (sky, floor, wall).

Held-out rule
-------------
:data:`HELD_OUT_COMBINATIONS` is a fixed set of (shape, colour name) pairs. Scenes of the ``train``,
``val`` and ``test`` splits never contain an object with one of these combinations (colours are
drawn from the vocabulary minus the held-out colours of that shape). Every ``held_out`` scene
contains exactly one object with a held-out combination (drawn uniformly from the set, at a random
slot); its other objects follow the training distribution. The held-out split therefore measures
compositional generalisation: every shape and every colour is seen in training, only these
pairings are new.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CLASS_NAMES", "CLASS_IDS", "OBJECT_SHAPES", "OBJECT_CLASS_IDS", "CANONICAL_PALETTE", "COLOR_VOCABULARY",
    "SURFACE_COLORS", "HELD_OUT_COMBINATIONS", "SPLITS", "SPLIT_ID", "FLOOR_HALF_SIZE",
    "ObjectSpec", "Floor", "Wall", "Camera", "Light", "Scene",
]

#: Semantic class names; a pixel's semantic id is the index in this tuple.
CLASS_NAMES: tuple[str, ...] = ("sky", "floor", "wall", "sphere", "box", "cylinder", "banana")
#: Class name -> semantic id.
CLASS_IDS: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}
#: The object shapes (the "thing" classes); sky, floor and wall are "stuff" (instance id 0).
OBJECT_SHAPES: tuple[str, ...] = ("sphere", "box", "cylinder", "banana")
#: Semantic ids of the object classes.
OBJECT_CLASS_IDS: tuple[int, ...] = tuple(CLASS_IDS[s] for s in OBJECT_SHAPES)

#: The canonical segmentation palette (class -> RGB), used to encode semantic maps as images.
#: Pairwise Euclidean distances are >= 172 in 0..255 RGB (the closest pair is floor/sphere).
CANONICAL_PALETTE: dict[str, tuple[int, int, int]] = {
    "sky": (135, 206, 235),      # sky blue
    "floor": (90, 50, 10),       # dark brown
    "wall": (190, 30, 210),      # purple
    "sphere": (255, 0, 0),       # red
    "box": (0, 0, 255),          # blue
    "cylinder": (0, 255, 0),     # green
    "banana": (255, 255, 0),     # yellow
}

#: Named object colours (base albedo, sRGB 0..255). Objects get a per-object brightness jitter.
COLOR_VOCABULARY: dict[str, tuple[int, int, int]] = {
    "red": (200, 35, 35),
    "orange": (235, 125, 25),
    "yellow": (235, 205, 40),
    "green": (45, 150, 60),
    "blue": (40, 80, 200),
    "purple": (125, 50, 165),
    "pink": (240, 135, 180),
    "white": (235, 235, 230),
    "black": (35, 35, 35),
    "brown": (125, 75, 35),
    "grey": (130, 130, 130),
}

#: Named base colours for the floor and walls (a second, darker tone is drawn per surface).
SURFACE_COLORS: dict[str, tuple[int, int, int]] = {
    "grey": (160, 160, 160),
    "beige": (215, 200, 165),
    "white": (228, 228, 222),
    "brown": (150, 110, 75),
    "slate": (115, 130, 155),
    "terracotta": (185, 100, 70),
    "sage": (150, 170, 140),
}

#: (shape, colour) pairs that never occur in train/val/test; each held_out scene has exactly one.
HELD_OUT_COMBINATIONS: frozenset[tuple[str, str]] = frozenset({
    ("sphere", "green"), ("box", "yellow"), ("cylinder", "red"), ("banana", "blue"),
})

#: Dataset splits, in order.
SPLITS: tuple[str, ...] = ("train", "val", "test", "held_out")
#: Split name -> the integer mixed into the seed sequence.
SPLIT_ID: dict[str, int] = {name: i for i, name in enumerate(SPLITS)}

#: The floor is the square |x|, |z| <= FLOOR_HALF_SIZE on y = 0 (beyond it: sky).
FLOOR_HALF_SIZE = 25.0

_PATTERN_WORDS = {"checker": "checkered", "stripes": "striped", "plain": "plain"}
_NEAR_FAR_MARGIN = 0.6      # metres in front of / behind the look-at depth for "near" / "far"
@dataclass
class ObjectSpec:
    """One object resting on the floor.

    ``position`` is the world centre of the object's bounding volume (x, mid-height, z). Shape
    parameters in ``size`` (metres):

    * sphere: ``radius``;
    * box: ``half_extents`` [hx, hy, hz] in the box frame, rotated by ``yaw_deg`` about +y;
    * cylinder: ``radius``, ``height`` (vertical axis, capped, base on the floor);
    * banana: ``points`` (world centre-line joints along a horizontal arc whose ends curl up) and
      ``joint_radii`` (tapering towards the tips). Each segment is a round cone: the spheres at its
      two joints plus the cone tangent to both (a capsule whose radius varies linearly).
    """

    instance_id: int
    shape: str
    color_name: str
    color_rgb: tuple[int, int, int]
    position: tuple[float, float, float]
    yaw_deg: float
    size: dict[str, Any]
    bound_radius: float                 # radius of the footprint's bounding circle (xz)
    sphere_radius: float                # radius of a 3D bounding sphere centred on ``position``
    texture: dict[str, Any] | None = None  # {"pattern": "stripes", "period": m, "tone_rgb": [r, g, b]}

    @property
    def held_out(self) -> bool:
        """Whether (shape, colour name) is one of :data:`HELD_OUT_COMBINATIONS`."""
        return (self.shape, self.color_name) in HELD_OUT_COMBINATIONS


@dataclass
class Floor:
    """The floor plane y = 0 (bounded by :data:`FLOOR_HALF_SIZE`) with a procedural texture."""

    color_name: str
    color_rgb: tuple[int, int, int]
    tone_rgb: tuple[int, int, int]
    pattern: str                 # "checker" | "stripes" | "plain"
    scale: float                 # pattern cell size in metres
    angle_deg: float             # pattern rotation about +y


@dataclass
class Wall:
    """A vertical rectangle: bottom-centre ``origin``, horizontal unit ``normal`` and ``tangent``.

    Points are ``origin + s * tangent + y * up`` with ``|s| <= half_width`` and ``0 <= y <= height``.
    The texture coordinates are (s, y); stripes run vertically when ``angle_deg`` is 0 and
    horizontally when it is 90.
    """

    role: str                    # "back" | "left" | "right"
    origin: tuple[float, float, float]
    normal: tuple[float, float, float]
    tangent: tuple[float, float, float]
    half_width: float
    height: float
    color_name: str
    color_rgb: tuple[int, int, int]
    tone_rgb: tuple[int, int, int]
    pattern: str
    scale: float
    angle_deg: float


@dataclass
class Camera:
    """A pinhole camera without roll.

    The viewing direction is given by ``yaw_deg`` (0 = looking along world -z, positive turns
    right, i.e. towards +x) and ``pitch_deg`` (positive looks up). ``look_at`` is the point it was
    aimed at before the small random yaw/pitch jitter. ``fov_deg`` is the vertical field of view;
    images are square, so the horizontal one is the same.
    """

    position: tuple[float, float, float]
    look_at: tuple[float, float, float]
    yaw_deg: float
    pitch_deg: float
    fov_deg: float

    def basis(self) -> tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]:
        """World-space unit vectors of the camera's +x (right), +y (up) and +z (back) axes."""
        yaw, pitch = math.radians(self.yaw_deg), math.radians(self.pitch_deg)
        cp = math.cos(pitch)
        fwd = (cp * math.sin(yaw), math.sin(pitch), -cp * math.cos(yaw))
        right = (math.cos(yaw), 0.0, math.sin(yaw))           # normalize(cross(fwd, +y))
        up = (right[1] * fwd[2] - right[2] * fwd[1],           # cross(right, fwd)
              right[2] * fwd[0] - right[0] * fwd[2],
              right[0] * fwd[1] - right[1] * fwd[0])
        back = (-fwd[0], -fwd[1], -fwd[2])
        return right, up, back

    def world_to_camera(self, point) -> tuple[float, float, float]:
        """Camera-space coordinates of a world point (z < 0 in front of the camera)."""
        right, up, back = self.basis()
        d = [point[i] - self.position[i] for i in range(3)]
        return (sum(d[i] * right[i] for i in range(3)), sum(d[i] * up[i] for i in range(3)),
                sum(d[i] * back[i] for i in range(3)))

    def project(self, point) -> tuple[float, float, float]:
        """(x_ndc, y_ndc, depth): normalised image coordinates in [-1, 1] (x right, y up) and z-depth."""
        x, y, z = self.world_to_camera(point)
        depth = -z
        tan_half = math.tan(math.radians(self.fov_deg) / 2)
        if depth <= 1e-9:
            return (math.inf, math.inf, depth)
        return (x / (depth * tan_half), y / (depth * tan_half), depth)


@dataclass
class Light:
    """A directional light; ``direction`` points from the scene towards the light (unit)."""

    direction: tuple[float, float, float]
    intensity: float


@dataclass
class Scene:
    """One sampled scene; a pure function of ``(seed, split, index)`` (see :func:`banana.world.sampler.sample_scene`)."""

    seed: int
    split: str
    index: int
    objects: list[ObjectSpec]
    floor: Floor
    walls: list[Wall]
    camera: Camera
    lights: list[Light]
    ambient: float
    sky_horizon_rgb: tuple[int, int, int]
    sky_zenith_rgb: tuple[int, int, int]

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists); :meth:`from_dict` inverts it."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scene":
        """Rebuild a :class:`Scene` from :meth:`to_dict` output."""
        tup = lambda v: tuple(v)  # noqa: E731
        objects = [ObjectSpec(**{**o, "color_rgb": tup(o["color_rgb"]), "position": tup(o["position"])})
                   for o in d["objects"]]
        floor = Floor(**{**d["floor"], "color_rgb": tup(d["floor"]["color_rgb"]),
                         "tone_rgb": tup(d["floor"]["tone_rgb"])})
        walls = [Wall(**{**w, **{k: tup(w[k]) for k in ("origin", "normal", "tangent", "color_rgb", "tone_rgb")}})
                 for w in d["walls"]]
        cam = d["camera"]
        camera = Camera(**{**cam, "position": tup(cam["position"]), "look_at": tup(cam["look_at"])})
        lights = [Light(direction=tup(li["direction"]), intensity=li["intensity"]) for li in d["lights"]]
        return cls(seed=d["seed"], split=d["split"], index=d["index"], objects=objects, floor=floor, walls=walls,
                   camera=camera, lights=lights, ambient=d["ambient"], sky_horizon_rgb=tup(d["sky_horizon_rgb"]),
                   sky_zenith_rgb=tup(d["sky_zenith_rgb"]))

    # ------------------------------------------------------------------ language
    def object_infos(self) -> list[dict[str, Any]]:
        """Per-object records for referring expressions, in instance-id order.

        Keys: ``instance_id``, ``shape``, ``color_name``, ``color_rgb`` (jittered albedo),
        ``position_3d`` (world centre, metres), ``position_camera`` (camera-space centre),
        ``image_xy`` (projected centre, x right / y down in [0, 1] of the image width/height),
        ``image_position`` ("left" / "middle" / "right", thirds of the image width) and
        ``distance`` ("near" / "middle" / "far": more than 0.6 m in front of / behind the
        camera's look-at depth, else "middle").
        """
        _, _, look_depth = self.camera.project(self.camera.look_at)
        infos = []
        for obj in self.objects:
            x_ndc, y_ndc, depth = self.camera.project(obj.position)
            horizontal = "left" if x_ndc < -1 / 3 else ("right" if x_ndc > 1 / 3 else "middle")
            if depth < look_depth - _NEAR_FAR_MARGIN:
                distance = "near"
            elif depth > look_depth + _NEAR_FAR_MARGIN:
                distance = "far"
            else:
                distance = "middle"
            infos.append({
                "instance_id": obj.instance_id, "shape": obj.shape, "color_name": obj.color_name,
                "color_rgb": list(obj.color_rgb), "position_3d": [round(v, 4) for v in obj.position],
                "position_camera": [round(v, 4) for v in self.camera.world_to_camera(obj.position)],
                "image_xy": [round((x_ndc + 1) / 2, 4), round((1 - y_ndc) / 2, 4)],
                "image_position": horizontal, "distance": distance,
            })
        return infos

    def describe(self) -> str:
        """A natural sentence naming every object (colour, shape, rough position), floor and walls.

        Objects are listed left to right, e.g. "a red sphere on the left, a yellow banana at the
        back and a blue box at the front right, on a checkered beige floor in front of a grey wall".
        """
        infos = sorted(self.object_infos(), key=lambda o: (o["image_xy"][0], o["instance_id"]))
        phrases = [f"{_article(o['color_name'])} {o['color_name']} {o['shape']} "
                   f"{_position_phrase(o['image_position'], o['distance'])}" for o in infos]
        objects = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
        floor = f"{_PATTERN_WORDS[self.floor.pattern]} {self.floor.color_name} floor"
        back = [w for w in self.walls if w.role == "back"][0]
        walls = f"{_article(back.color_name)} {back.color_name} wall"
        for side in (w for w in self.walls if w.role != "back"):
            walls += f" with {_article(side.color_name)} {side.color_name} wall on the {side.role}"
        return f"{objects}, on {_article(floor)} {floor} in front of {walls}"

    def objects_json(self) -> str:
        """:meth:`object_infos` as a JSON string (the dataset's ``objects`` field)."""
        return json.dumps(self.object_infos())


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _position_phrase(horizontal: str, distance: str) -> str:
    if distance == "middle":
        return {"left": "on the left", "middle": "in the middle", "right": "on the right"}[horizontal]
    prefix = "at the front" if distance == "near" else "at the back"
    return prefix if horizontal == "middle" else f"{prefix} {horizontal}"



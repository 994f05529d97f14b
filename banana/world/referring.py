"""Referring expressions of a world scene: free text that picks exactly one object.

Vision Banana's referring segmentation reads "the man in the pink t-shirt" and paints that object.
Our scenes store every object's shape, colour, image third and distance (``objects`` JSON), so
expressions are generated from those records and **checked**: an expression is kept only if
exactly one visible object of its scene satisfies it. Kinds, from the most to the least
specific reading:

* ``color_shape``: "the red sphere"
* ``shape_position``: "the box on the left" / "the box in the middle"
* ``color``: "the red object"
* ``shape``: "the cylinder"
* ``nearest`` / ``farthest``: "the object near the camera" / "the object far from the camera" (only
  when the runner-up is at least :data:`DEPTH_MARGIN` metres farther / nearer, so the answer is
  not a coin toss; worded with the generators' vocabulary, which has "near" and "far" but no
  superlatives: a pretrained base cannot learn new words)

A held-out scene's expressions that name one of :data:`~banana.world.HELD_OUT_COMBINATIONS` are
held-out expressions: text whose colour-shape pair no training scene contains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .scene import HELD_OUT_COMBINATIONS

#: Kinds of expression, in the order :func:`referring_expressions` lists them.
KINDS = ("color_shape", "shape_position", "color", "shape", "nearest", "farthest")
#: How much nearer (metres) the nearest object must be than the runner-up to be "the nearest".
DEPTH_MARGIN = 0.3
#: Fewest visible pixels of a referred object (at the scene's resolution): a speck is no answer.
MIN_PIXELS = 4
_POSITION_PHRASE = {"left": "on the left", "middle": "in the middle", "right": "on the right"}


@dataclass(frozen=True)
class Referral:
    """One checked expression: its text, the instance id it refers to, its kind, and whether it
    names a held-out colour-shape pair."""

    expression: str
    instance_id: int
    kind: str
    held_out: bool = False


def _objects(objects: str | Sequence[Mapping[str, Any]]) -> list[dict]:
    records = json.loads(objects) if isinstance(objects, str) else [dict(o) for o in objects]
    for o in records:
        missing = {"instance_id", "shape", "color_name", "image_position", "position_camera", "pixel_count"} - set(o)
        if missing:
            raise ValueError(f"object record lacks {sorted(missing)}: {o}")
    return records


def _matches(kind: str, candidate: Mapping, reference: Mapping) -> bool:
    if kind == "color_shape":
        return candidate["color_name"] == reference["color_name"] and candidate["shape"] == reference["shape"]
    if kind == "shape_position":
        return candidate["shape"] == reference["shape"] and candidate["image_position"] == reference["image_position"]
    if kind == "color":
        return candidate["color_name"] == reference["color_name"]
    if kind == "shape":
        return candidate["shape"] == reference["shape"]
    raise ValueError(f"unknown expression kind {kind!r}; known: {KINDS}")


def _text(kind: str, o: Mapping) -> str:
    return {"color_shape": f"the {o['color_name']} {o['shape']}",
            "shape_position": f"the {o['shape']} {_POSITION_PHRASE[o['image_position']]}",
            "color": f"the {o['color_name']} object", "shape": f"the {o['shape']}"}[kind]


def referring_expressions(objects: str | Sequence[Mapping[str, Any]], min_pixels: int = MIN_PIXELS) -> list[Referral]:
    """Every expression of :data:`KINDS` that picks exactly one visible object of a scene.

    ``objects``: the scene's ``objects`` JSON (or its parsed list). An object is visible when it
    has at least one pixel; only objects with ``min_pixels`` or more are referred to, but every
    visible object counts against uniqueness (a half-hidden second red sphere makes "the red
    sphere" ambiguous)."""
    visible = [o for o in _objects(objects) if int(o["pixel_count"]) > 0]
    out: list[Referral] = []
    for kind in KINDS[:4]:
        seen: set[str] = set()
        for o in visible:
            text = _text(kind, o)
            if text in seen or int(o["pixel_count"]) < min_pixels:
                continue
            seen.add(text)
            if sum(_matches(kind, other, o) for other in visible) == 1:
                held = kind == "color_shape" and (o["shape"], o["color_name"]) in set(map(tuple, HELD_OUT_COMBINATIONS))
                out.append(Referral(text, int(o["instance_id"]), kind, held))
    if len(visible) >= 2:
        by_depth = sorted(visible, key=lambda o: -float(o["position_camera"][2]))     # camera looks down -z
        depth = [-float(o["position_camera"][2]) for o in by_depth]
        if depth[1] - depth[0] >= DEPTH_MARGIN and int(by_depth[0]["pixel_count"]) >= min_pixels:
            out.append(Referral("the object near the camera", int(by_depth[0]["instance_id"]), "nearest"))
        if depth[-1] - depth[-2] >= DEPTH_MARGIN and int(by_depth[-1]["pixel_count"]) >= min_pixels:
            out.append(Referral("the object far from the camera", int(by_depth[-1]["instance_id"]), "farthest"))
    return out


def pick_referral(objects: str | Sequence[Mapping[str, Any]], seed: int, index: int) -> Referral | None:
    """One expression of a scene, drawn with ``(seed, index)`` (the same scene always gets the same
    expression); ``None`` when no expression picks exactly one object."""
    options = referring_expressions(objects)
    if not options:
        return None
    return options[int(np.random.default_rng([seed, index]).integers(len(options)))]


def referred_mask(instance: np.ndarray, referral: Referral) -> np.ndarray:
    """The boolean ``[H, W]`` mask of the referred object in a scene's instance map."""
    mask = np.asarray(instance) == referral.instance_id
    if not mask.any():
        raise ValueError(f"instance {referral.instance_id} ({referral.expression!r}) has no pixel in this instance map")
    return mask

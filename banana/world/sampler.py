"""Sampling the seeded world: ``sample_scene(seed, split, index)`` draws a :class:`~banana.world.scene.Scene`,
``render_sample`` renders it.

The scene's *vocabulary and types* live in :mod:`banana.world.scene`; the ray caster in
:mod:`banana.world.render`. The sampler sits above both because it needs the ray caster: a camera
is redrawn until every object covers enough pixels (:func:`~banana.world.render.object_pixel_counts`).
So imports point one way: scene <- render <- sampler.

Determinism and the held-out rule are as documented in :mod:`banana.world.scene`: the generator is
``numpy.random.default_rng(numpy.random.SeedSequence([seed, SPLIT_ID[split], index]))`` and every
draw happens in a fixed order.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .render import object_pixel_counts, render_scene
from .scene import (COLOR_VOCABULARY, FLOOR_HALF_SIZE, HELD_OUT_COMBINATIONS, OBJECT_SHAPES, SPLIT_ID, SPLITS,
                    SURFACE_COLORS, Camera, Floor, Light, ObjectSpec, Scene, Wall)

__all__ = ["MIN_DEPTH", "MAX_DEPTH", "sample_scene", "render_sample"]

_OBJECT_AREA = 1.3          # objects' footprint centres lie in [-A, A]^2 (metres)
_PLACEMENT_MARGIN = 0.08    # minimum gap between bounding circles
_VISIBILITY_RESOLUTION = 32  # cameras are retried until every object covers ...
_VISIBILITY_MIN_PIXELS = 4   # ... at least this many pixel centres at this resolution (if possible)
_CAMERA_DISTANCE = (2.5, 4.5)  # metres from the objects' centre, before backing off
_CAMERA_HEIGHT = (1.0, 2.0)    # metres above the floor
_CAMERA_TRIES = 30             # camera draws per scene ...
_CAMERA_BACKOFF = 0.2          # ... each failed one moves the next this much further back (metres)

#: The world's valid depth range in metres, the evaluation protocol's ``[min_depth, max_depth]``
#: (:func:`banana.evaluation.metrics.depth_metrics` clips predictions into it). ``MAX_DEPTH`` is a
#: bound from the geometry, not a measurement: the camera stands at most ``_OBJECT_AREA * sqrt 2 +
#: 4.5 + 29 * 0.2`` m from the origin horizontally and 2 m high, and every finite surface (floor,
#: walls, objects) lies within the floor square, at most ``FLOOR_HALF_SIZE * sqrt 2`` m from the
#: origin; a z-depth is at most the ray's length, so no finite ground-truth depth exceeds the
#: rounded-up distance between the two. ``MIN_DEPTH`` is the NYUv2 convention (1 mm).
MIN_DEPTH = 1e-3
MAX_DEPTH = float(math.ceil(math.hypot(
    (FLOOR_HALF_SIZE + _OBJECT_AREA) * math.sqrt(2) + _CAMERA_DISTANCE[1] + (_CAMERA_TRIES - 1) * _CAMERA_BACKOFF,
    _CAMERA_HEIGHT[1])))




def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * rng.random())


def _jitter_rgb(rgb, factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(c * factor)))) for c in rgb)


def _allowed_colors(shape: str) -> list[str]:
    return [c for c in COLOR_VOCABULARY if (shape, c) not in HELD_OUT_COMBINATIONS]


def _draw_color(rng: np.random.Generator, shape: str) -> str:
    allowed = _allowed_colors(shape)
    if shape == "banana" and rng.random() < 0.5:
        return "yellow"  # bananas are yellow half of the time, otherwise any allowed colour
    return allowed[int(rng.integers(len(allowed)))]


def _shape_geometry(rng: np.random.Generator, shape: str) -> tuple[dict[str, Any], float, float, float, float]:
    """Draw a shape's size in its own frame: (size, half_height, bound_radius, sphere_radius, yaw_deg).

    For the banana, ``size["points"]`` are local (centred on the footprint's bounding circle, unrotated);
    :func:`_place_banana` moves them into the world.
    """
    yaw = _u(rng, 0.0, 360.0)
    if shape == "sphere":
        r = _u(rng, 0.25, 0.5)
        return {"radius": r}, r, r, r, 0.0
    if shape == "box":
        hx, hy, hz = _u(rng, 0.18, 0.42), _u(rng, 0.18, 0.45), _u(rng, 0.18, 0.42)
        return ({"half_extents": [hx, hy, hz]}, hy, math.hypot(hx, hz), math.sqrt(hx * hx + hy * hy + hz * hz), yaw)
    if shape == "cylinder":
        r, h = _u(rng, 0.18, 0.38), _u(rng, 0.4, 1.2)
        return {"radius": r, "height": h}, h / 2, r, math.hypot(r, h / 2), 0.0
    if shape == "banana":
        n_seg = int(rng.integers(5, 7))
        arc_r, span = _u(rng, 0.5, 0.75), math.radians(_u(rng, 80.0, 120.0))
        r_max, lift = _u(rng, 0.13, 0.18), _u(rng, 0.2, 1.0)
        joint_r, pts = [], []
        for k in range(n_seg + 1):
            s = k / n_seg
            phi = -span / 2 + span * s
            rk = r_max * (0.45 + 0.55 * math.sin(math.pi * s))
            joint_r.append(rk)
            pts.append([arc_r * math.sin(phi), r_max + lift * r_max * (2 * s - 1) ** 2, arc_r * math.cos(phi)])
        xs, zs = [p[0] for p in pts], [p[2] for p in pts]
        cx, cz = (min(xs) + max(xs)) / 2, (min(zs) + max(zs)) / 2
        pts = [[p[0] - cx, p[1], p[2] - cz] for p in pts]
        bound = max(math.hypot(p[0], p[2]) + r for p, r in zip(pts, joint_r))
        ys = [p[1] for p in pts]
        half_h = (max(y + r for y, r in zip(ys, joint_r))) / 2
        sphere_r = max(math.sqrt(p[0] ** 2 + (p[1] - half_h) ** 2 + p[2] ** 2) + r for p, r in zip(pts, joint_r))
        size = {"points": pts, "joint_radii": joint_r, "arc_radius": arc_r,
                "span_deg": math.degrees(span), "thickness": 2 * r_max}
        return size, half_h, bound, sphere_r, yaw
    raise ValueError(f"unknown shape {shape!r}")


def _place_banana(size: dict[str, Any], x: float, z: float, yaw_deg: float) -> dict[str, Any]:
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    pts = [[x + c * p[0] - s * p[2], p[1], z + s * p[0] + c * p[2]] for p in size["points"]]
    return {**size, "points": pts}


def _draw_surface_texture(rng: np.random.Generator, color_name: str, wall: bool):
    base = SURFACE_COLORS[color_name]
    pattern = ("checker", "stripes", "plain")[int(rng.choice(3, p=[0.45, 0.35, 0.2]))]
    tone = _jitter_rgb(base, _u(rng, 0.55, 0.8))
    scale = _u(rng, 0.25, 0.9) if not wall else _u(rng, 0.2, 0.7)
    angle = _u(rng, 0.0, 90.0) if not wall else float(90.0 * int(rng.integers(2)))
    return base, tone, pattern, scale, angle


def _wall_from_angle(role, px, pz, angle_deg, half_width, height, surface) -> Wall:
    """A wall through (px, 0, pz) whose normal is +z (back) / +x (left) / -x (right) rotated by angle."""
    a = math.radians(angle_deg)
    if role == "back":
        normal = (math.sin(a), 0.0, math.cos(a))
    elif role == "left":
        normal = (math.cos(a), 0.0, math.sin(a))
    else:
        normal = (-math.cos(a), 0.0, math.sin(a))
    tangent = (normal[2], 0.0, -normal[0])  # horizontal, perpendicular to the normal
    color_name, (base, tone, pattern, scale, angle) = surface
    return Wall(role=role, origin=(px, 0.0, pz), normal=normal, tangent=tangent, half_width=half_width,
                height=height, color_name=color_name, color_rgb=base, tone_rgb=tone, pattern=pattern,
                scale=scale, angle_deg=angle)


def _signed_distance(wall: Wall, point) -> float:
    return sum((point[i] - wall.origin[i]) * wall.normal[i] for i in range(3))


def _in_frame(camera: Camera, objects: list[ObjectSpec]) -> bool:
    """Every object's centre projects well inside the frame, with most of its bounding sphere."""
    tan_half = math.tan(math.radians(camera.fov_deg) / 2)
    for obj in objects:
        x, y, depth = camera.project(obj.position)
        if depth < obj.sphere_radius + 0.5:
            return False
        r_ndc = obj.sphere_radius / (depth * tan_half)
        if abs(x) > 0.8 or abs(y) > 0.8 or abs(x) + 0.5 * r_ndc > 1.0 or abs(y) + 0.5 * r_ndc > 1.0:
            return False
    return True


def sample_scene(seed: int, split: str, index: int) -> Scene:
    """Sample the scene ``(seed, split, index)``; deterministic and independent of resolution.

    The generator is ``default_rng(SeedSequence([seed, SPLIT_ID[split], index]))`` and every draw
    happens in a fixed order, so the same inputs give the same :class:`Scene` on every run.
    ``train``/``val``/``test`` scenes never contain a :data:`HELD_OUT_COMBINATIONS` pair; ``held_out``
    scenes contain exactly one object with such a pair.
    """
    if split not in SPLIT_ID:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if int(seed) < 0 or int(index) < 0:
        raise ValueError("seed and index must be non-negative integers")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_ID[split], int(index)]))

    # ---- objects: shapes and colours
    n_objects = int(rng.integers(2, 6))
    shapes = [OBJECT_SHAPES[int(rng.integers(len(OBJECT_SHAPES)))] for _ in range(n_objects)]
    colors = [_draw_color(rng, s) for s in shapes]
    if split == "held_out":
        combos = sorted(HELD_OUT_COMBINATIONS)
        slot = int(rng.integers(n_objects))
        shapes[slot], colors[slot] = combos[int(rng.integers(len(combos)))]

    # ---- objects: sizes and non-overlapping placement (reject-sampling of bounding circles).
    # A held-out scene places its held-out object first so that it is never the one dropped when
    # the area is full; instance ids follow the slot order among the placed objects.
    drawn = []
    for shape in shapes:
        size, half_h, bound, sphere_r, yaw = _shape_geometry(rng, shape)
        brightness = _u(rng, 0.85, 1.15)
        textured = rng.random() < 0.25
        period = _u(rng, 0.08, 0.2)
        drawn.append((size, half_h, bound, sphere_r, yaw, brightness, textured, period))
    placement_order = list(range(n_objects))
    if split == "held_out":
        placement_order.remove(slot)
        placement_order.insert(0, slot)
    placed: dict[int, tuple[float, float, float]] = {}  # slot -> (x, z, bound)
    for i in placement_order:
        bound = drawn[i][2]
        for _attempt in range(200):
            x, z = _u(rng, -_OBJECT_AREA, _OBJECT_AREA), _u(rng, -_OBJECT_AREA, _OBJECT_AREA)
            if all(math.hypot(x - px, z - pz) >= bound + pb + _PLACEMENT_MARGIN for px, pz, pb in placed.values()):
                placed[i] = (x, z, bound)
                break
        # no position after 200 tries: the area is full and this object is dropped (rare)
    objects: list[ObjectSpec] = []
    for i in sorted(placed):
        shape, color = shapes[i], colors[i]
        size, half_h, bound, sphere_r, yaw, brightness, textured, period = drawn[i]
        x, z, _ = placed[i]
        position = (x, half_h, z)
        if shape == "banana":
            size = _place_banana(size, x, z, yaw)
        rgb = _jitter_rgb(COLOR_VOCABULARY[color], brightness)
        texture = ({"pattern": "stripes", "period": period, "tone_rgb": list(_jitter_rgb(rgb, 0.6))}
                   if textured else None)
        objects.append(ObjectSpec(instance_id=len(objects) + 1, shape=shape, color_name=color, color_rgb=rgb,
                                  position=position, yaw_deg=yaw, size=size, bound_radius=bound,
                                  sphere_radius=sphere_r, texture=texture))

    # ---- floor and walls
    surface_names = list(SURFACE_COLORS)
    order = [surface_names[i] for i in rng.permutation(len(surface_names))]
    floor_name, back_name, side_name = order[0], order[1], order[2]
    base, tone, pattern, scale, angle = _draw_surface_texture(rng, floor_name, wall=False)
    floor = Floor(color_name=floor_name, color_rgb=base, tone_rgb=tone, pattern=pattern, scale=scale,
                  angle_deg=angle)
    back_surface = (back_name, _draw_surface_texture(rng, back_name, wall=True))
    side_surface = (side_name, _draw_surface_texture(rng, side_name, wall=True))
    back_angle, back_gap, back_height = _u(rng, -20.0, 20.0), _u(rng, 0.5, 2.0), _u(rng, 1.2, 3.5)
    want_side, side_left = rng.random() < 0.5, rng.random() < 0.5
    side_angle, side_gap, side_height = _u(rng, -15.0, 15.0), _u(rng, 0.5, 1.5), _u(rng, 1.2, 3.5)

    # the back wall: behind every object by at least back_gap (+ its bounding radius)
    back = _wall_from_angle("back", 0.0, 0.0, back_angle, 10.0, back_height, back_surface)
    offset = min(_signed_distance(back, obj.position) - obj.bound_radius for obj in objects) - back_gap
    back = dataclasses.replace(back, origin=tuple(offset * n for n in back.normal))

    # ---- camera: aimed at the objects' centre, retried (moving back) until all objects are in view
    cx = sum(o.position[0] for o in objects) / len(objects)
    cz = sum(o.position[2] for o in objects) / len(objects)

    best, best_fewest = None, None
    distance_boost = 0.0
    for _attempt in range(_CAMERA_TRIES):
        az = math.radians(_u(rng, -30.0, 30.0))
        dist = _u(rng, *_CAMERA_DISTANCE) + distance_boost
        height = _u(rng, *_CAMERA_HEIGHT)
        target = (cx, _u(rng, 0.2, 0.45), cz)
        fov = _u(rng, 45.0, 65.0)
        yaw_jit, pitch_jit = _u(rng, -3.0, 3.0), _u(rng, -3.0, 3.0)
        pos = (cx + dist * math.sin(az), height, cz + dist * math.cos(az))
        f = [target[i] - pos[i] for i in range(3)]
        yaw = math.degrees(math.atan2(f[0], -f[2]))
        pitch = math.degrees(math.atan2(f[1], math.hypot(f[0], f[2])))
        camera = Camera(position=pos, look_at=target, yaw_deg=yaw + yaw_jit, pitch_deg=pitch + pitch_jit,
                        fov_deg=fov)
        if not (_in_frame(camera, objects) and _signed_distance(back, pos) > 1.0):
            distance_boost += _CAMERA_BACKOFF  # move back a little until everything fits
            if best is None:
                best = camera  # fallback, replaced by any framed camera
            continue
        # visibility: pixel-centre hits of each object (objects only) in a small render
        fewest = int(object_pixel_counts(objects, camera, _VISIBILITY_RESOLUTION).min())
        if best_fewest is None or fewest > best_fewest:
            best, best_fewest = camera, fewest
        if fewest >= _VISIBILITY_MIN_PIXELS:
            break
    camera = best

    # ---- optional side wall: on the chosen side of all objects, with the camera inside the room
    walls = [back]
    if want_side:
        role = "left" if side_left else "right"
        side = _wall_from_angle(role, 0.0, 0.0, side_angle, 10.0, side_height, side_surface)
        offset = min(_signed_distance(side, obj.position) - obj.bound_radius for obj in objects) - side_gap
        side = dataclasses.replace(side, origin=tuple(offset * n for n in side.normal))
        if _signed_distance(side, camera.position) > 0.5:
            walls.append(side)

    # ---- lights, ambient, sky
    n_lights = 1 + int(rng.random() < 0.5)
    ambient = _u(rng, 0.2, 0.35)
    lights = []
    for k in range(n_lights):
        el, az = math.radians(_u(rng, 30.0, 70.0)), math.radians(_u(rng, -100.0, 100.0))
        weight = _u(rng, 0.75, 1.0) if k == 0 else _u(rng, 0.15, 0.4)
        lights.append(Light(direction=(math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)),
                            intensity=weight * (1 - ambient)))
    sky_shift = _u(rng, -20.0, 20.0)
    sky_horizon = _jitter_rgb((205 + sky_shift / 2, 222, 240), 1.0)
    sky_zenith = _jitter_rgb((80 + sky_shift, 140 + sky_shift, 215), 1.0)

    return Scene(seed=int(seed), split=split, index=int(index), objects=objects, floor=floor, walls=walls,
                 camera=camera, lights=lights, ambient=ambient, sky_horizon_rgb=sky_horizon,
                 sky_zenith_rgb=sky_zenith)


def render_sample(seed: int, split: str, index: int, resolution: int = 32, spp: int = 1) -> dict[str, Any]:
    """``render_scene(sample_scene(seed, split, index), resolution, spp)``: a pure function of its inputs."""
    return render_scene(sample_scene(seed, split, index), resolution=resolution, spp=spp)

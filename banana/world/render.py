"""A vectorised NumPy analytic ray caster for :class:`~banana.world.scene.Scene`.

Every primitive is intersected in closed form (float64): spheres, the bounded floor plane, wall
rectangles, boxes (slabs in the box frame), vertical capped cylinders (tube + two discs) and the
banana (a chain of round cones: joint spheres plus tangent cone bodies, i.e. capsules
with a tapering radius). All pixels are processed at once;
the loop is over primitives. Objects are culled per ray with their bounding spheres.

Outputs (see :func:`render_scene`) follow the package conventions:

* ``image`` uint8 ``[3, H, W]``: Lambert shading + ambient, one or two directional lights with
  hard shadows (shadow rays against every primitive except the floor, which cannot occlude a light
  above it), procedural textures, a vertical sky gradient. With ``spp > 1`` the RGB averages
  ``spp`` stratified (N-rooks), jittered rays per pixel.
* Labels always come from the single ray through each pixel centre, so they are exact:
  ``depth`` float32 ``[H, W]`` z-depth in metres (``inf`` for sky); ``normals`` float32
  ``[3, H, W]`` unit camera-space normals facing the camera (exact zeros for sky); ``semantic``
  uint8 ``[H, W]`` class ids of :data:`~banana.world.scene.CLASS_NAMES`; ``instance`` uint8
  ``[H, W]`` (0 for sky/floor/wall, 1..k for objects).
* Row 0 is the top of the image; pixel ``(row i, column j)`` looks through the camera-space point
  ``((j + 0.5) / W * 2 - 1) * tan(fov/2), (1 - (i + 0.5) / H * 2) * tan(fov/2), -1)``, i.e. the
  intrinsics of :func:`camera_intrinsics`.

Determinism: only IEEE-exact operations (+, -, *, /, sqrt, floor, comparisons) are applied to
arrays; trigonometry is done on Python scalars. Pixel jitter (``spp > 1``) comes from
``default_rng(SeedSequence([seed, SPLIT_ID[split], index, resolution, spp]))``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from .primitives import EPS_OFFSET, T_MIN, Group, build_groups, column, dot, object_prims
from .scene import CLASS_IDS, SPLIT_ID, Camera, Scene

__all__ = ["render_scene", "camera_intrinsics", "pixel_rays", "object_pixel_counts"]


def _closest_hit(groups, o, d, dd, tmin):
    """Closest intersection per ray: (t, primitive index or -1, aux, primitive list)."""
    n = d.shape[1]
    best_t = np.full(n, np.inf)
    best_p = np.full(n, -1, dtype=np.int32)
    best_aux = np.zeros(n, dtype=np.int8)
    prims = []
    for g in groups:
        if g.bound is not None:
            idx = np.flatnonzero(g.candidates(o, d, dd, tmin))
            if idx.size == 0:
                prims.extend(g.prims)
                continue
            og = o if o.shape[1] == 1 else o[:, idx]
            dg = d[:, idx]
            ddg = dd if np.ndim(dd) == 0 or dd.shape[0] == 1 else dd[idx]
        else:
            idx, og, dg, ddg = None, o, d, dd
        for prim in g.prims:
            pid = len(prims)
            prims.append(prim)
            t, aux = prim.hit(og, dg, ddg, tmin)
            if idx is None:
                closer = t < best_t
                sel = closer
            else:
                closer = t < best_t[idx]
                sel = idx[closer]
            best_t[sel] = t[closer]
            best_p[sel] = pid
            if aux is not None:
                best_aux[sel] = aux[closer]
    return best_t, best_p, best_aux, prims


def _occluded(groups, o, d, tmin):
    """Any-hit test of rays o (3, N) along the single direction d (3, 1)."""
    n = o.shape[1]
    blocked = np.zeros(n, dtype=bool)
    active = np.arange(n)
    dd = dot(d, d)
    for g in groups:
        if not g.occluder or active.size == 0:
            continue
        oa = o[:, active]
        if g.bound is not None:
            cand = np.flatnonzero(g.candidates(oa, d, dd, tmin))
            if cand.size == 0:
                continue
            oa = oa[:, cand]
        else:
            cand = None
        hit = np.zeros(oa.shape[1], dtype=bool)
        for prim in g.prims:
            t, _ = prim.hit(oa, d, dd, tmin)
            hit |= t < np.inf
        local = np.flatnonzero(hit) if cand is None else cand[hit]
        blocked[active[local]] = True
        active = np.delete(active, local)
    return blocked


def _surface(prims, best_p, best_aux, p):
    """Outward normals and albedo at the hit points ``p`` (3, M) for rays with ``best_p >= 0``."""
    normals = np.empty_like(p)
    albedo = np.empty_like(p)
    order = np.argsort(best_p, kind="stable")
    sorted_ids = best_p[order]
    bounds = np.flatnonzero(np.diff(sorted_ids)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [sorted_ids.size]))
    for s, e in zip(starts, ends):
        sel = order[s:e]
        prim = prims[sorted_ids[s]]
        ps = p[:, sel]
        normals[:, sel] = prim.normal(ps, best_aux[sel])
        albedo[:, sel] = prim.material.albedo(ps)
    return normals, albedo


def pixel_rays(scene: Scene | Camera, resolution: int, offsets: np.ndarray | None = None):
    """World-space camera rays: (origin (3, 1), directions (3, H*W)) in row-major pixel order.

    Directions are *not* unit: their camera-space z component is -1, so a ray parameter ``t``
    equals the z-depth. ``offsets`` (2, k*H*W) are sub-pixel positions in [0, 1) (x, y) for k
    samples per pixel, sample-major; ``None`` means pixel centres (0.5, 0.5). Accepts a :class:`Scene` or its :class:`Camera`.
    """
    cam = scene.camera if isinstance(scene, Scene) else scene
    right, up, back = (column(v) for v in cam.basis())
    tan_half = math.tan(math.radians(cam.fov_deg) / 2)
    rows, cols = np.divmod(np.arange(resolution * resolution, dtype=np.float64), resolution)
    if offsets is None:
        ox = oy = 0.5
    else:
        ox, oy = offsets
        reps = ox.shape[0] // cols.shape[0]
        if reps > 1:  # several samples per pixel, sample-major
            rows, cols = np.tile(rows, reps), np.tile(cols, reps)
    xc = ((cols + ox) * (2.0 / resolution) - 1.0) * tan_half
    yc = (1.0 - (rows + oy) * (2.0 / resolution)) * tan_half
    d = xc * right + yc * up - back
    return column(cam.position), d


def object_pixel_counts(objects, camera: Camera, resolution: int) -> np.ndarray:
    """Pixel-centre ray hits per object (index i -> ``objects[i]``), objects alone (no floor/walls).

    Used by :func:`~banana.world.sampler.sample_scene` to choose a camera that sees every object.
    """
    groups = [Group(object_prims(obj), bound=(column(obj.position), obj.sphere_radius * 1.001 + 1e-6))
              for obj in objects]
    o, d = pixel_rays(camera, resolution)
    _, best_p, _, prims = _closest_hit(groups, o, d, dot(d, d), T_MIN)
    owner = np.array([-1] + [i for i, g in enumerate(groups) for _ in g.prims])
    return np.bincount(owner[best_p + 1] + 1, minlength=len(objects) + 1)[1:]


def camera_intrinsics(fov_deg: float, resolution: int) -> np.ndarray:
    """The 3x3 pinhole matrix K (pixel units, y down) matching :func:`pixel_rays`.

    Pixel ``(row i, column j)`` has its centre at ``(u, v) = (j + 0.5, i + 0.5)``; a camera-space point
    (x, y, z) with z < 0 projects to ``u = fx * x / -z + cx``, ``v = -fy * y / -z + cy``.
    """
    f = (resolution / 2) / math.tan(math.radians(fov_deg) / 2)
    return np.array([[f, 0.0, resolution / 2], [0.0, f, resolution / 2], [0.0, 0.0, 1.0]])


def _shade(scene, groups, prims, o, d, t, best_p, best_aux):
    """Shaded RGB (3, N) floats in 0..255 (unclipped) plus the facing normals of hit rays."""
    n_rays = d.shape[1]
    rgb = np.empty((3, n_rays))
    hit = best_p >= 0
    # sky: vertical gradient from the horizon colour to the zenith colour
    sky = ~hit
    if sky.any():
        ds = d[:, sky]
        s = np.clip(ds[1] / np.sqrt(dot(ds, ds)), 0.0, 1.0)
        s = s * (2.0 - s)
        horizon, zenith = column(scene.sky_horizon_rgb), column(scene.sky_zenith_rgb)
        rgb[:, sky] = horizon + (zenith - horizon) * s
    idx = np.flatnonzero(hit)
    normals_facing = None
    if idx.size:
        dh = d[:, idx]
        p = o + t[idx] * dh
        n, albedo = _surface(prims, best_p[idx], best_aux[idx], p)
        n = np.where(dot(n, dh) > 0.0, -n, n)
        normals_facing = n
        shade = np.full(idx.size, scene.ambient)
        origin = p + EPS_OFFSET * n
        for light in scene.lights:
            L = column(light.direction)
            lam = dot(n, L)
            lit = np.flatnonzero(lam > 0.0)
            if lit.size == 0:
                continue
            blocked = _occluded(groups, origin[:, lit], L, T_MIN)
            shade[lit] += np.where(blocked, 0.0, light.intensity * lam[lit])
        rgb[:, idx] = albedo * shade
    return rgb, idx, normals_facing


def render_scene(scene: Scene, resolution: int = 32, spp: int = 1) -> dict[str, Any]:
    """Render ``scene`` at ``resolution`` x ``resolution``; returns one dataset sample.

    Keys: ``image`` uint8 [3, H, W]; ``depth`` float32 [H, W] (z-depth in metres, ``inf`` for sky);
    ``normals`` float32 [3, H, W] (unit, camera space, facing the camera, zeros for sky);
    ``semantic`` uint8 [H, W]; ``instance`` uint8 [H, W]; ``description`` (str); ``objects``
    (JSON str: :meth:`Scene.object_infos` plus ``pixel_count`` and ``bbox`` = [row0, col0, row1, col1]
    inclusive, or null when the object is not visible); ``index`` (int); ``split`` (str);
    ``seed`` (int); ``fov_deg`` (float, vertical = horizontal field of view).

    ``spp`` > 1 averages that many stratified, jittered rays per pixel for the RGB only; labels
    always come from the pixel-centre ray.
    """
    resolution, spp = int(resolution), int(spp)
    if resolution < 1 or spp < 1:
        raise ValueError("resolution and spp must be positive")
    groups = build_groups(scene)
    o, d = pixel_rays(scene, resolution)
    dd = dot(d, d)
    t, best_p, best_aux, prims = _closest_hit(groups, o, d, dd, T_MIN)
    npix = resolution * resolution

    if spp == 1:
        rgb, idx, n_world = _shade(scene, groups, prims, o, d, t, best_p, best_aux)
    else:
        idx = np.flatnonzero(best_p >= 0)
        n_world = None
        if idx.size:
            p = o + t[idx] * d[:, idx]
            n_world, _ = _surface(prims, best_p[idx], best_aux[idx], p)
            n_world = np.where(dot(n_world, d[:, idx]) > 0.0, -n_world, n_world)
        rng = np.random.default_rng(np.random.SeedSequence(
            [scene.seed, SPLIT_ID[scene.split], scene.index, resolution, spp]))
        strata = rng.permuted(np.tile(np.arange(spp, dtype=np.float64), (npix, 1)), axis=1).T  # (spp, npix)
        jitter = rng.random((2, spp, npix))
        # all spp * npix rays in one batch (sample-major): x strata permuted per pixel, y strata in order
        offsets = np.stack([((strata + jitter[0]) / spp).reshape(-1),
                            ((np.arange(spp, dtype=np.float64)[:, None] + jitter[1]) / spp).reshape(-1)])
        _, dk = pixel_rays(scene, resolution, offsets)
        tk, pk, ak, prims_k = _closest_hit(groups, o, dk, dot(dk, dk), T_MIN)
        rgb_k, _, _ = _shade(scene, groups, prims_k, o, dk, tk, pk, ak)
        rgb_k = rgb_k.reshape(3, spp, npix)
        rgb = rgb_k[:, 0].copy()
        for k in range(1, spp):  # explicit, fixed-order accumulation
            rgb += rgb_k[:, k]
        rgb /= spp

    image = np.rint(np.clip(rgb, 0.0, 255.0)).astype(np.uint8).reshape(3, resolution, resolution)
    depth = t.astype(np.float32).reshape(resolution, resolution)
    normals = np.zeros((3, npix), dtype=np.float64)
    if idx.size:
        right, up, back = (column(v) for v in scene.camera.basis())
        normals[:, idx] = np.stack([dot(n_world, right), dot(n_world, up), dot(n_world, back)])
    normals = normals.astype(np.float32).reshape(3, resolution, resolution)
    sem_table = np.array([CLASS_IDS["sky"]] + [p.sem for p in prims], dtype=np.uint8)
    inst_table = np.array([0] + [p.inst for p in prims], dtype=np.uint8)
    semantic = sem_table[best_p + 1].reshape(resolution, resolution)
    instance = inst_table[best_p + 1].reshape(resolution, resolution)

    infos = scene.object_infos()
    for info in infos:
        mask = instance == info["instance_id"]
        info["pixel_count"] = int(mask.sum())
        if info["pixel_count"]:
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            info["bbox"] = [int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])]
        else:
            info["bbox"] = None
    return {
        "image": image, "depth": depth, "normals": normals, "semantic": semantic, "instance": instance,
        "description": scene.describe(), "objects": json.dumps(infos), "index": scene.index,
        "split": scene.split, "seed": scene.seed, "fov_deg": float(scene.camera.fov_deg),
    }

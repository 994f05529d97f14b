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

from .scene import CLASS_IDS, FLOOR_HALF_SIZE, SPLIT_ID, Camera, Scene

__all__ = ["render_scene", "camera_intrinsics", "pixel_rays", "object_pixel_counts"]

_EPS_OFFSET = 1e-4   # shadow-ray origin offset along the normal (metres)
_T_MIN = 1e-6        # smallest accepted ray parameter


def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _col(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).reshape(3, 1)


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.sqrt(_dot(v, v))


# ---------------------------------------------------------------------- materials
class _Material:
    """Albedo (0..255 floats) as a function of the world point: plain, checker or stripes."""

    def __init__(self, base, tone=None, pattern="plain", scale=1.0, mapping=None):
        self.base = _col(base)
        self.tone = _col(tone) if tone is not None else self.base
        self.pattern = pattern
        self.inv_scale = 1.0 / scale
        self.mapping = mapping  # p (3, M) -> (u, v)

    def albedo(self, p: np.ndarray) -> np.ndarray:
        if self.pattern == "plain":
            return np.broadcast_to(self.base, p.shape)
        u, v = self.mapping(p)
        cells = np.floor(u * self.inv_scale)
        if self.pattern == "checker":
            cells = cells + np.floor(v * self.inv_scale)
        odd = (cells - 2.0 * np.floor(cells * 0.5)) > 0.5
        return np.where(odd, self.tone, self.base)


# ---------------------------------------------------------------------- primitives
class _Prim:
    """A closed-form primitive. ``hit`` returns (t, aux) with ``inf`` for misses; ``normal`` is outward."""

    sem = 0
    inst = 0
    material: _Material

    def hit(self, o, d, dd, tmin):  # pragma: no cover - interface
        raise NotImplementedError

    def normal(self, p, aux):  # pragma: no cover - interface
        raise NotImplementedError


class _Sphere(_Prim):
    def __init__(self, center, radius):
        self.c, self.r = _col(center), float(radius)

    def hit(self, o, d, dd, tmin):
        oc = o - self.c
        b = _dot(oc, d)
        c = _dot(oc, oc) - self.r * self.r
        disc = b * b - dd * c
        ok = disc >= 0.0
        t = (-b - np.sqrt(np.where(ok, disc, 0.0))) / dd
        return np.where(ok & (t > tmin), t, np.inf), None

    def normal(self, p, aux):
        return (p - self.c) / self.r


class _Tube(_Prim):
    """The side of a finite cylinder with axis a -> b (only the entering root: closed shapes)."""

    def __init__(self, a, b, radius):
        self.a, self.ba, self.r = _col(a), _col(b) - _col(a), float(radius)
        self.baba = float(_dot(self.ba, self.ba)[0])

    def hit(self, o, d, dd, tmin):
        ba, baba = self.ba, self.baba
        oc = o - self.a
        bard, baoc = _dot(ba, d), _dot(ba, oc)
        k2 = baba * dd - bard * bard
        k1 = baba * _dot(oc, d) - baoc * bard
        k0 = baba * _dot(oc, oc) - baoc * baoc - self.r * self.r * baba
        h = k1 * k1 - k2 * k0
        ok = (h >= 0.0) & (k2 > 1e-12 * baba * dd)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (-k1 - np.sqrt(np.where(ok, h, 0.0))) / np.where(ok, k2, 1.0)
        y = baoc + t * bard
        ok &= (y >= 0.0) & (y <= baba) & (t > tmin)
        return np.where(ok, t, np.inf), None

    def normal(self, p, aux):
        v = p - self.a
        v = v - (_dot(v, self.ba) / self.baba) * self.ba
        return _normalize(v)


class _ConeBody(_Prim):
    """The tangent cone between spheres (pa, ra) and (pb, rb): the body of a round cone.

    Together with the two spheres it forms a sphere-swept segment with linearly varying radius
    (closed form after Inigo Quilez's round-cone intersector; only the entering root is used).
    """

    def __init__(self, pa, pb, ra, rb):
        self.a, self.ba = _col(pa), _col(pb) - _col(pa)
        self.ra, self.rr = float(ra), float(ra) - float(rb)
        self.m0 = float(_dot(self.ba, self.ba)[0])
        self.d2 = self.m0 - self.rr * self.rr

    def hit(self, o, d, dd, tmin):
        inv = 1.0 / np.sqrt(dd)
        rd = d * inv
        oa = o - self.a
        ba, ra, rr, d2 = self.ba, self.ra, self.rr, self.d2
        m1, m2, m3, m5 = _dot(ba, oa), _dot(ba, rd), _dot(rd, oa), _dot(oa, oa)
        k2 = d2 - m2 * m2
        k1 = d2 * m3 - m1 * m2 + m2 * rr * ra
        k0 = d2 * m5 - m1 * m1 + 2.0 * m1 * rr * ra - self.m0 * ra * ra
        h = k1 * k1 - k0 * k2
        ok = (h >= 0.0) & (k2 > 1e-12 * self.m0)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (-np.sqrt(np.where(ok, h, 0.0)) - k1) / np.where(ok, k2, 1.0)
        y = m1 - ra * rr + t * m2
        t = t * inv
        ok &= (y > 0.0) & (y < d2) & (t > tmin)
        return np.where(ok, t, np.inf), None

    def normal(self, p, aux):
        q = p - self.a
        y = _dot(self.ba, q) - self.ra * self.rr
        return _normalize(self.d2 * q - self.ba * y)


class _Disk(_Prim):
    """A horizontal disc y = height centred on (cx, cz), normal +y (top cap)."""

    def __init__(self, cx, height, cz, radius, up=True):
        self.cx, self.h, self.cz, self.r2 = float(cx), float(height), float(cz), float(radius) ** 2
        self.n = _col((0.0, 1.0 if up else -1.0, 0.0))

    def hit(self, o, d, dd, tmin):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.h - o[1]) / d[1]
        px, pz = o[0] + t * d[0] - self.cx, o[2] + t * d[2] - self.cz
        ok = (t > tmin) & (px * px + pz * pz <= self.r2)
        return np.where(ok, t, np.inf), None

    def normal(self, p, aux):
        return np.broadcast_to(self.n, p.shape)


class _Box(_Prim):
    """An oriented box (rotation about +y), intersected with slabs in its own frame."""

    def __init__(self, center, half_extents, yaw_deg):
        c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
        self.c = _col(center)
        self.axes = (_col((c, 0.0, s)), _col((0.0, 1.0, 0.0)), _col((-s, 0.0, c)))
        self.h = [float(v) for v in half_extents]

    def hit(self, o, d, dd, tmin):
        oc = o - self.c
        tn, tf = [], []
        with np.errstate(divide="ignore", invalid="ignore"):
            for e, h in zip(self.axes, self.h):
                lo, ld = _dot(oc, e), _dot(d, e)
                t1, t2 = (-h - lo) / ld, (h - lo) / ld
                tn.append(np.minimum(t1, t2))
                tf.append(np.maximum(t1, t2))
        tnear = np.maximum(np.maximum(tn[0], tn[1]), tn[2])
        tfar = np.minimum(np.minimum(tf[0], tf[1]), tf[2])
        ok = (tnear <= tfar) & (tnear > tmin)
        aux = np.where(tn[0] >= tn[1], np.where(tn[0] >= tn[2], 0, 2), np.where(tn[1] >= tn[2], 1, 2))
        return np.where(ok, tnear, np.inf), aux.astype(np.int8)

    def normal(self, p, aux):
        oc = p - self.c
        n = np.zeros_like(p)
        for axis, e in enumerate(self.axes):
            sel = aux == axis
            if sel.any():
                sign = np.where(_dot(oc[:, sel], e) >= 0.0, 1.0, -1.0)
                n[:, sel] = sign * e
        return n


class _Floor(_Prim):
    def __init__(self, half_size):
        self.half = float(half_size)
        self.n = _col((0.0, 1.0, 0.0))

    def hit(self, o, d, dd, tmin):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -o[1] / d[1]
        ok = (t > tmin) & (np.abs(o[0] + t * d[0]) <= self.half) & (np.abs(o[2] + t * d[2]) <= self.half)
        return np.where(ok, t, np.inf), None

    def normal(self, p, aux):
        return np.broadcast_to(self.n, p.shape)


class _WallRect(_Prim):
    def __init__(self, origin, normal, tangent, half_width, height):
        self.o, self.n, self.tg = _col(origin), _col(normal), _col(tangent)
        self.hw, self.height = float(half_width), float(height)

    def hit(self, o, d, dd, tmin):
        denom = _dot(d, self.n)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = _dot(self.o - o, self.n) / denom
        p = o + t * d
        s = _dot(p - self.o, self.tg)
        ok = (t > tmin) & (np.abs(s) <= self.hw) & (p[1] >= 0.0) & (p[1] <= self.height)
        return np.where(ok, t, np.inf), None

    def normal(self, p, aux):
        return np.broadcast_to(self.n, p.shape)


class _Group:
    """The primitives of one object (culled with a bounding sphere) or one stuff surface."""

    def __init__(self, prims, bound=None, occluder=True):
        self.prims = prims
        self.bound = bound  # (centre (3,1), radius) or None
        self.occluder = occluder

    def candidates(self, o, d, dd, tmin):
        """Boolean mask of rays that may hit the group (bounding sphere, either root beyond tmin)."""
        c, r = self.bound
        oc = o - c
        b = _dot(oc, d)
        disc = b * b - dd * (_dot(oc, oc) - r * r)
        return (disc >= 0.0) & (-b + np.sqrt(np.maximum(disc, 0.0)) > tmin * dd)


# ---------------------------------------------------------------------- scene -> primitives
def _object_prims(obj) -> list[_Prim]:
    x, y, z = obj.position
    size = obj.size
    if obj.shape == "sphere":
        prims = [_Sphere((x, y, z), size["radius"])]
    elif obj.shape == "box":
        prims = [_Box((x, y, z), size["half_extents"], obj.yaw_deg)]
    elif obj.shape == "cylinder":
        r, h = size["radius"], size["height"]
        prims = [_Tube((x, 0.0, z), (x, h, z), r), _Disk(x, h, z, r, up=True)]
    elif obj.shape == "banana":
        pts, jr = size["points"], size["joint_radii"]
        prims = [_Sphere(p, r) for p, r in zip(pts, jr)]
        prims += [_ConeBody(pts[k], pts[k + 1], jr[k], jr[k + 1]) for k in range(len(pts) - 1)]
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")
    if obj.texture is not None:
        tex = obj.texture
        material = _Material(obj.color_rgb, tex["tone_rgb"], tex["pattern"], tex["period"],
                             mapping=lambda p: (p[1], None))
    else:
        material = _Material(obj.color_rgb)
    for prim in prims:
        prim.sem, prim.inst, prim.material = CLASS_IDS[obj.shape], obj.instance_id, material
    return prims


def _floor_mapping(angle_deg):
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return lambda p: (c * p[0] + s * p[2], c * p[2] - s * p[0])


def _wall_mapping(wall):
    o, tg = _col(wall.origin), _col(wall.tangent)
    if wall.angle_deg == 0.0:
        return lambda p: (_dot(p - o, tg), p[1])
    return lambda p: (p[1], _dot(p - o, tg))


def _build_groups(scene: Scene) -> list[_Group]:
    groups = []
    for obj in scene.objects:
        groups.append(_Group(_object_prims(obj), bound=(_col(obj.position), obj.sphere_radius * 1.001 + 1e-6)))
    for wall in scene.walls:
        prim = _WallRect(wall.origin, wall.normal, wall.tangent, wall.half_width, wall.height)
        prim.sem, prim.inst = CLASS_IDS["wall"], 0
        prim.material = _Material(wall.color_rgb, wall.tone_rgb, wall.pattern, wall.scale, _wall_mapping(wall))
        groups.append(_Group([prim]))
    fl = scene.floor
    floor = _Floor(FLOOR_HALF_SIZE)
    floor.sem, floor.inst = CLASS_IDS["floor"], 0
    floor.material = _Material(fl.color_rgb, fl.tone_rgb, fl.pattern, fl.scale, _floor_mapping(fl.angle_deg))
    groups.append(_Group([floor], occluder=False))
    return groups


# ---------------------------------------------------------------------- tracing
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
    dd = _dot(d, d)
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
    right, up, back = (_col(v) for v in cam.basis())
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
    return _col(cam.position), d


def object_pixel_counts(objects, camera: Camera, resolution: int) -> np.ndarray:
    """Pixel-centre ray hits per object (index i -> ``objects[i]``), objects alone (no floor/walls).

    Used by :func:`~banana.world.sampler.sample_scene` to choose a camera that sees every object.
    """
    groups = [_Group(_object_prims(obj), bound=(_col(obj.position), obj.sphere_radius * 1.001 + 1e-6))
              for obj in objects]
    o, d = pixel_rays(camera, resolution)
    _, best_p, _, prims = _closest_hit(groups, o, d, _dot(d, d), _T_MIN)
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
        s = np.clip(ds[1] / np.sqrt(_dot(ds, ds)), 0.0, 1.0)
        s = s * (2.0 - s)
        horizon, zenith = _col(scene.sky_horizon_rgb), _col(scene.sky_zenith_rgb)
        rgb[:, sky] = horizon + (zenith - horizon) * s
    idx = np.flatnonzero(hit)
    normals_facing = None
    if idx.size:
        dh = d[:, idx]
        p = o + t[idx] * dh
        n, albedo = _surface(prims, best_p[idx], best_aux[idx], p)
        n = np.where(_dot(n, dh) > 0.0, -n, n)
        normals_facing = n
        shade = np.full(idx.size, scene.ambient)
        origin = p + _EPS_OFFSET * n
        for light in scene.lights:
            L = _col(light.direction)
            lam = _dot(n, L)
            lit = np.flatnonzero(lam > 0.0)
            if lit.size == 0:
                continue
            blocked = _occluded(groups, origin[:, lit], L, _T_MIN)
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
    groups = _build_groups(scene)
    o, d = pixel_rays(scene, resolution)
    dd = _dot(d, d)
    t, best_p, best_aux, prims = _closest_hit(groups, o, d, dd, _T_MIN)
    npix = resolution * resolution

    if spp == 1:
        rgb, idx, n_world = _shade(scene, groups, prims, o, d, t, best_p, best_aux)
    else:
        idx = np.flatnonzero(best_p >= 0)
        n_world = None
        if idx.size:
            p = o + t[idx] * d[:, idx]
            n_world, _ = _surface(prims, best_p[idx], best_aux[idx], p)
            n_world = np.where(_dot(n_world, d[:, idx]) > 0.0, -n_world, n_world)
        rng = np.random.default_rng(np.random.SeedSequence(
            [scene.seed, SPLIT_ID[scene.split], scene.index, resolution, spp]))
        strata = rng.permuted(np.tile(np.arange(spp, dtype=np.float64), (npix, 1)), axis=1).T  # (spp, npix)
        jitter = rng.random((2, spp, npix))
        # all spp * npix rays in one batch (sample-major): x strata permuted per pixel, y strata in order
        offsets = np.stack([((strata + jitter[0]) / spp).reshape(-1),
                            ((np.arange(spp, dtype=np.float64)[:, None] + jitter[1]) / spp).reshape(-1)])
        _, dk = pixel_rays(scene, resolution, offsets)
        tk, pk, ak, prims_k = _closest_hit(groups, o, dk, _dot(dk, dk), _T_MIN)
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
        right, up, back = (_col(v) for v in scene.camera.basis())
        normals[:, idx] = np.stack([_dot(n_world, right), _dot(n_world, up), _dot(n_world, back)])
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

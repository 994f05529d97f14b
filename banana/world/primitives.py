"""The scene's surfaces as ray-intersectable primitives, for :mod:`banana.world.render`.

Every primitive is intersected in closed form (float64): spheres, the bounded floor plane, wall
rectangles, boxes (slabs in the box frame), vertical capped cylinders (tube + two discs) and the
banana (a chain of round cones: joint spheres plus tangent cone bodies). :func:`build_groups`
turns a :class:`~banana.world.scene.Scene` into groups of primitives, one per object (culled per
ray with its bounding sphere) plus the floor and walls; materials give the albedo at a point.
Only IEEE-exact operations are applied to arrays (see :mod:`banana.world.render`).
"""

from __future__ import annotations

import math

import numpy as np

from .scene import CLASS_IDS, FLOOR_HALF_SIZE, Scene

__all__ = ["Group", "build_groups", "object_prims", "dot", "column", "normalize", "EPS_OFFSET", "T_MIN"]

EPS_OFFSET = 1e-4   # shadow-ray origin offset along the normal (metres)
T_MIN = 1e-6        # smallest accepted ray parameter


def dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def column(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).reshape(3, 1)


def normalize(v: np.ndarray) -> np.ndarray:
    return v / np.sqrt(dot(v, v))


# ---------------------------------------------------------------------- materials
class _Material:
    """Albedo (0..255 floats) as a function of the world point: plain, checker or stripes."""

    def __init__(self, base, tone=None, pattern="plain", scale=1.0, mapping=None):
        self.base = column(base)
        self.tone = column(tone) if tone is not None else self.base
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
        self.c, self.r = column(center), float(radius)

    def hit(self, o, d, dd, tmin):
        oc = o - self.c
        b = dot(oc, d)
        c = dot(oc, oc) - self.r * self.r
        disc = b * b - dd * c
        ok = disc >= 0.0
        t = (-b - np.sqrt(np.where(ok, disc, 0.0))) / dd
        return np.where(ok & (t > tmin), t, np.inf), None

    def normal(self, p, aux):
        return (p - self.c) / self.r


class _Tube(_Prim):
    """The side of a finite cylinder with axis a -> b (only the entering root: closed shapes)."""

    def __init__(self, a, b, radius):
        self.a, self.ba, self.r = column(a), column(b) - column(a), float(radius)
        self.baba = float(dot(self.ba, self.ba)[0])

    def hit(self, o, d, dd, tmin):
        ba, baba = self.ba, self.baba
        oc = o - self.a
        bard, baoc = dot(ba, d), dot(ba, oc)
        k2 = baba * dd - bard * bard
        k1 = baba * dot(oc, d) - baoc * bard
        k0 = baba * dot(oc, oc) - baoc * baoc - self.r * self.r * baba
        h = k1 * k1 - k2 * k0
        ok = (h >= 0.0) & (k2 > 1e-12 * baba * dd)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (-k1 - np.sqrt(np.where(ok, h, 0.0))) / np.where(ok, k2, 1.0)
        y = baoc + t * bard
        ok &= (y >= 0.0) & (y <= baba) & (t > tmin)
        return np.where(ok, t, np.inf), None

    def normal(self, p, aux):
        v = p - self.a
        v = v - (dot(v, self.ba) / self.baba) * self.ba
        return normalize(v)


class _ConeBody(_Prim):
    """The tangent cone between spheres (pa, ra) and (pb, rb): the body of a round cone.

    Together with the two spheres it forms a sphere-swept segment with linearly varying radius
    (closed form after Inigo Quilez's round-cone intersector; only the entering root is used).
    """

    def __init__(self, pa, pb, ra, rb):
        self.a, self.ba = column(pa), column(pb) - column(pa)
        self.ra, self.rr = float(ra), float(ra) - float(rb)
        self.m0 = float(dot(self.ba, self.ba)[0])
        self.d2 = self.m0 - self.rr * self.rr

    def hit(self, o, d, dd, tmin):
        inv = 1.0 / np.sqrt(dd)
        rd = d * inv
        oa = o - self.a
        ba, ra, rr, d2 = self.ba, self.ra, self.rr, self.d2
        m1, m2, m3, m5 = dot(ba, oa), dot(ba, rd), dot(rd, oa), dot(oa, oa)
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
        y = dot(self.ba, q) - self.ra * self.rr
        return normalize(self.d2 * q - self.ba * y)


class _Disk(_Prim):
    """A horizontal disc y = height centred on (cx, cz), normal +y (top cap)."""

    def __init__(self, cx, height, cz, radius, up=True):
        self.cx, self.h, self.cz, self.r2 = float(cx), float(height), float(cz), float(radius) ** 2
        self.n = column((0.0, 1.0 if up else -1.0, 0.0))

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
        self.c = column(center)
        self.axes = (column((c, 0.0, s)), column((0.0, 1.0, 0.0)), column((-s, 0.0, c)))
        self.h = [float(v) for v in half_extents]

    def hit(self, o, d, dd, tmin):
        oc = o - self.c
        tn, tf = [], []
        with np.errstate(divide="ignore", invalid="ignore"):
            for e, h in zip(self.axes, self.h):
                lo, ld = dot(oc, e), dot(d, e)
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
                sign = np.where(dot(oc[:, sel], e) >= 0.0, 1.0, -1.0)
                n[:, sel] = sign * e
        return n


class _Floor(_Prim):
    def __init__(self, half_size):
        self.half = float(half_size)
        self.n = column((0.0, 1.0, 0.0))

    def hit(self, o, d, dd, tmin):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -o[1] / d[1]
        ok = (t > tmin) & (np.abs(o[0] + t * d[0]) <= self.half) & (np.abs(o[2] + t * d[2]) <= self.half)
        return np.where(ok, t, np.inf), None

    def normal(self, p, aux):
        return np.broadcast_to(self.n, p.shape)


class _WallRect(_Prim):
    def __init__(self, origin, normal, tangent, half_width, height):
        self.o, self.n, self.tg = column(origin), column(normal), column(tangent)
        self.hw, self.height = float(half_width), float(height)

    def hit(self, o, d, dd, tmin):
        denom = dot(d, self.n)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = dot(self.o - o, self.n) / denom
        p = o + t * d
        s = dot(p - self.o, self.tg)
        ok = (t > tmin) & (np.abs(s) <= self.hw) & (p[1] >= 0.0) & (p[1] <= self.height)
        return np.where(ok, t, np.inf), None

    def normal(self, p, aux):
        return np.broadcast_to(self.n, p.shape)


class Group:
    """The primitives of one object (culled with a bounding sphere) or one stuff surface."""

    def __init__(self, prims, bound=None, occluder=True):
        self.prims = prims
        self.bound = bound  # (centre (3,1), radius) or None
        self.occluder = occluder

    def candidates(self, o, d, dd, tmin):
        """Boolean mask of rays that may hit the group (bounding sphere, either root beyond tmin)."""
        c, r = self.bound
        oc = o - c
        b = dot(oc, d)
        disc = b * b - dd * (dot(oc, oc) - r * r)
        return (disc >= 0.0) & (-b + np.sqrt(np.maximum(disc, 0.0)) > tmin * dd)


# ---------------------------------------------------------------------- scene -> primitives
def object_prims(obj) -> list[_Prim]:
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


def floor_mapping(angle_deg):
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return lambda p: (c * p[0] + s * p[2], c * p[2] - s * p[0])


def wall_mapping(wall):
    o, tg = column(wall.origin), column(wall.tangent)
    if wall.angle_deg == 0.0:
        return lambda p: (dot(p - o, tg), p[1])
    return lambda p: (p[1], dot(p - o, tg))


def build_groups(scene: Scene) -> list[Group]:
    groups = []
    for obj in scene.objects:
        groups.append(Group(object_prims(obj), bound=(column(obj.position), obj.sphere_radius * 1.001 + 1e-6)))
    for wall in scene.walls:
        prim = _WallRect(wall.origin, wall.normal, wall.tangent, wall.half_width, wall.height)
        prim.sem, prim.inst = CLASS_IDS["wall"], 0
        prim.material = _Material(wall.color_rgb, wall.tone_rgb, wall.pattern, wall.scale, wall_mapping(wall))
        groups.append(Group([prim]))
    fl = scene.floor
    floor = _Floor(FLOOR_HALF_SIZE)
    floor.sem, floor.inst = CLASS_IDS["floor"], 0
    floor.material = _Material(fl.color_rgb, fl.tone_rgb, fl.pattern, fl.scale, floor_mapping(fl.angle_deg))
    groups.append(Group([floor], occluder=False))
    return groups


# ---------------------------------------------------------------------- tracing

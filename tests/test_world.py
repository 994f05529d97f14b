"""Tests of banana.world: determinism, exact labels, held-out rule, descriptions, dataset build/load.

The label checks recompute geometry independently of the renderer: camera rays from the scene's
yaw/pitch/fov with their own trigonometry, then the 3D point ``C + depth * ray`` must lie on the
primitive the pixel is labelled with, and the normal must be that primitive's analytic normal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math

import numpy as np
import pytest

from banana.world import (CANONICAL_PALETTE, CLASS_NAMES, HELD_OUT_COMBINATIONS, SPLITS, WORLD_PRESETS, Scene,
                          WorldConfig, build_world, camera_intrinsics, load_world, render_sample, render_scene,
                          sample_scene)
from banana.world import dataset as world_dataset

OBJECT_IDS = {CLASS_NAMES.index(s) for s in ("sphere", "box", "cylinder", "banana")}

# sha256 over image, depth, normals, semantic, instance bytes and the description (see _digest).
# Recompute (and bump banana.world.WORLD_VERSION) only on an intentional change of the world.
GOLDEN = {
    (0, "train", 0, 1): "6c623579351cd99523f4151f22b6866aaea65e2b26b452a71f4d8f05a635fe6b",
    (3, "held_out", 5, 1): "7a9228098453d07aa07b6f75c5589063c295fa1610a9771807d2c3f5c696308f",
    (11, "val", 42, 2): "6531d0ef198e0c7b8943d112c3cbce6553ad6c6242a071192dabb71997670332",
}


def _digest(sample) -> str:
    h = hashlib.sha256()
    for key in ("image", "depth", "normals", "semantic", "instance"):
        h.update(np.ascontiguousarray(sample[key]).tobytes())
    h.update(sample["description"].encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- helpers
def _camera_frame(scene: Scene):
    """Independent camera basis (right, up, back) from yaw/pitch, via numpy cross products."""
    cam = scene.camera
    yaw, pitch = np.radians(cam.yaw_deg), np.radians(cam.pitch_deg)
    fwd = np.array([np.cos(pitch) * np.sin(yaw), np.sin(pitch), -np.cos(pitch) * np.cos(yaw)])
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    return right, up, -fwd


def _rays(scene: Scene, res: int):
    """(origin (3,), ray (H, W, 3) with camera-space z = -1, frame) for pixel centres, row 0 at the top."""
    right, up, back = _camera_frame(scene)
    th = np.tan(np.radians(scene.camera.fov_deg) / 2)
    j, i = np.meshgrid(np.arange(res), np.arange(res))
    x = ((j + 0.5) / res * 2 - 1) * th
    y = (1 - (i + 0.5) / res * 2) * th
    d = x[..., None] * right + y[..., None] * up - back
    return np.array(scene.camera.position), d, (right, up, back)


def _to_cam(v, frame):
    right, up, back = frame
    return np.stack([v @ right, v @ up, v @ back], axis=-1)


# ---------------------------------------------------------------------------------------------- palette, API
def test_palette_is_complete_and_well_separated():
    assert tuple(CANONICAL_PALETTE) == CLASS_NAMES
    colours = np.array(list(CANONICAL_PALETTE.values()), dtype=float)
    assert colours.min() >= 0 and colours.max() <= 255
    for (a, ca), (b, cb) in itertools.combinations(CANONICAL_PALETTE.items(), 2):
        assert np.linalg.norm(np.subtract(ca, cb)) >= 150, (a, b)
    assert len({tuple(c) for c in colours}) == len(CLASS_NAMES)


def test_presets_and_config():
    assert set(WORLD_PRESETS) >= {"smoke", "cpu", "gpu"}
    assert WORLD_PRESETS["smoke"].resolution == 16 and WORLD_PRESETS["gpu"].resolution == 64
    assert WORLD_PRESETS["cpu"].split_sizes() == {"train": 2000, "val": 200, "test": 200, "held_out": 200}
    assert tuple(WORLD_PRESETS["smoke"].split_sizes()) == SPLITS
    with pytest.raises(ValueError):
        WorldConfig(resolution=0)
    with pytest.raises(ValueError, match="at least one"):
        WorldConfig(n_held_out=0)


# ---------------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_golden_hashes(key):
    seed, split, index, spp = key
    assert _digest(render_sample(seed, split, index, resolution=16, spp=spp)) == GOLDEN[key]


def test_same_call_twice_is_identical_and_scene_roundtrips():
    a = render_sample(5, "test", 17, resolution=24, spp=3)
    b = render_sample(5, "test", 17, resolution=24, spp=3)
    assert _digest(a) == _digest(b) and a["objects"] == b["objects"]
    scene = sample_scene(5, "test", 17)
    d = scene.to_dict()
    text = json.dumps(d)  # JSON-serialisable
    again = Scene.from_dict(json.loads(text))
    assert again.to_dict() == d
    assert _digest(render_scene(again, resolution=24, spp=3)) == _digest(a)
    # other inputs give other samples
    assert _digest(render_sample(5, "test", 18, resolution=24, spp=3)) != _digest(a)
    assert _digest(render_sample(6, "test", 17, resolution=24, spp=3)) != _digest(a)


def test_labels_do_not_depend_on_spp_but_rgb_does():
    one = render_sample(2, "train", 9, resolution=32, spp=1)
    four = render_sample(2, "train", 9, resolution=32, spp=4)
    for key in ("depth", "normals", "semantic", "instance"):
        np.testing.assert_array_equal(one[key], four[key])
    assert not np.array_equal(one["image"], four["image"])
    assert np.abs(one["image"].astype(int) - four["image"].astype(int)).mean() < 20


# ---------------------------------------------------------------------------------------------- exact labels
@pytest.mark.parametrize("seed,split,index", [(0, "train", 1), (1, "val", 3), (4, "held_out", 2), (9, "test", 8)])
def test_label_exactness(seed, split, index):
    res = 40
    scene = sample_scene(seed, split, index)
    s = render_scene(scene, resolution=res, spp=1)
    image, depth, normals, sem, inst = s["image"], s["depth"], s["normals"], s["semantic"], s["instance"]
    assert image.dtype == np.uint8 and image.shape == (3, res, res)
    assert depth.dtype == np.float32 and depth.shape == (res, res)
    assert normals.dtype == np.float32 and normals.shape == (3, res, res)
    assert sem.dtype == np.uint8 and inst.dtype == np.uint8 and sem.shape == inst.shape == (res, res)

    origin, rays, frame = _rays(scene, res)
    d64 = depth.astype(np.float64)
    n_cam = np.moveaxis(normals, 0, -1).astype(np.float64)
    sky = sem == 0
    # sky: inf depth, exact zero normals, instance 0
    assert np.isinf(depth[sky]).all() and (normals[:, sky] == 0).all() and (inst[sky] == 0).all()
    # everything else: finite positive depth, unit normals facing the camera
    solid = ~sky
    assert np.isfinite(depth[solid]).all() and (depth[solid] > 0).all()
    assert np.allclose(np.linalg.norm(n_cam[solid], axis=-1), 1.0, atol=1e-5)
    ray_cam = _to_cam(rays, frame)
    assert np.allclose(ray_cam[..., 2], -1.0)
    assert ((n_cam[solid] * ray_cam[solid]).sum(-1) <= 1e-6).all()
    # instance > 0 iff the class is an object class; instance ids match the objects' shapes
    is_obj = np.isin(sem, list(OBJECT_IDS))
    assert ((inst > 0) == is_obj).all()
    objects = {o["instance_id"]: o for o in json.loads(s["objects"])}
    for obj in scene.objects:
        mask = inst == obj.instance_id
        assert (sem[mask] == CLASS_NAMES.index(obj.shape)).all()
        assert objects[obj.instance_id]["pixel_count"] == int(mask.sum())

    p = origin + np.where(np.isfinite(d64), d64, 0.0)[..., None] * rays  # 3D points (sky: the camera)
    checked = set()
    # floor: y = 0 and the normal is world up expressed in camera space
    floor = sem == CLASS_NAMES.index("floor")
    if floor.any():
        assert np.abs(p[floor][:, 1]).max() < 1e-4
        assert np.allclose(n_cam[floor], _to_cam(np.array([0.0, 1.0, 0.0]), frame), atol=1e-5)
        checked.add("floor")
    # walls: on one of the wall planes, normal = +-(wall normal)
    wall = sem == CLASS_NAMES.index("wall")
    if wall.any():
        pts, ns = p[wall], n_cam[wall]
        ok = np.zeros(len(pts), bool)  # on some wall's plane, with that wall's normal (corners: either)
        for w in scene.walls:
            on = np.abs((pts - np.array(w.origin)) @ np.array(w.normal)) < 1e-4
            ok |= on & (np.abs(np.abs(ns @ _to_cam(np.array(w.normal), frame)) - 1.0) < 1e-5)
        assert ok.all()
        checked.add("wall")
    for obj in scene.objects:
        mask = inst == obj.instance_id
        if not mask.any():
            continue
        pts, ns = p[mask], n_cam[mask]
        c = np.array(obj.position)
        if obj.shape == "sphere":
            r = obj.size["radius"]
            assert np.abs(np.linalg.norm(pts - c, axis=1) - r).max() < 1e-4
            assert np.allclose(ns, _to_cam((pts - c) / r, frame), atol=1e-4)
        elif obj.shape == "box":
            yaw = np.radians(obj.yaw_deg)
            axes = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
            local = (pts - c) @ axes.T / np.array(obj.size["half_extents"])
            assert np.abs(np.abs(local).max(axis=1) - 1.0).max() < 1e-4   # on the surface
            face = np.abs(local).argmax(axis=1)
            expected = np.sign(local[np.arange(len(local)), face])[:, None] * axes[face]
            assert np.allclose(ns, _to_cam(expected, frame), atol=1e-5)
        elif obj.shape == "cylinder":
            r, h = obj.size["radius"], obj.size["height"]
            radial = np.hypot(pts[:, 0] - c[0], pts[:, 2] - c[2])
            side = np.abs(radial - r) < 1e-4
            top = np.abs(pts[:, 1] - h) < 1e-4
            assert (side | top).all() and (radial <= r + 1e-4).all() and (pts[:, 1] <= h + 1e-4).all()
            side_n = np.stack([pts[:, 0] - c[0], np.zeros(len(pts)), pts[:, 2] - c[2]], 1) / r
            assert np.allclose(ns[side & ~top], _to_cam(side_n[side & ~top], frame), atol=1e-4)
            assert np.allclose(ns[top & ~side], _to_cam(np.array([0.0, 1.0, 0.0]), frame), atol=1e-5)
        else:  # banana: on the envelope of the spheres swept along the centre-line (radius linear per segment)
            line = np.array(obj.size["points"])
            radii = np.array(obj.size["joint_radii"])
            t = np.linspace(0.0, 1.0, 401)[:, None]
            sdf = np.full(len(pts), np.inf)
            for k in range(len(line) - 1):
                q = line[k] + t * (line[k + 1] - line[k])               # (401, 3)
                rr = radii[k] + t[:, 0] * (radii[k + 1] - radii[k])     # (401,)
                dist = np.linalg.norm(pts[:, None, :] - q[None], axis=-1) - rr[None]
                sdf = np.minimum(sdf, dist.min(axis=1))
            assert np.abs(sdf).max() < 1e-3
        checked.add(obj.shape)
    assert "floor" in checked


def test_image_orientation_and_projection():
    """Row 0 is the top (sky above floor); object centres project where their pixels are."""
    res = 48
    for index in range(6):
        scene = sample_scene(0, "train", index)
        s = render_scene(scene, resolution=res)
        rows = np.arange(res)[:, None].repeat(res, 1)
        if (s["semantic"] == 0).any():
            assert rows[s["semantic"] == 0].mean() < rows[s["semantic"] == 1].mean()
        K = camera_intrinsics(scene.camera.fov_deg, res)
        _, _, frame = _rays(scene, res)
        for obj in scene.objects:
            if obj.shape != "sphere":
                continue
            pc = _to_cam(np.array(obj.position) - np.array(scene.camera.position), frame)
            u = K[0, 0] * pc[0] / -pc[2] + K[0, 2]
            v = -K[1, 1] * pc[1] / -pc[2] + K[1, 2]
            i, j = int(v), int(u)
            if 0 <= i < res and 0 <= j < res:
                # either this sphere, or something nearer occludes its centre
                assert s["instance"][i, j] == obj.instance_id or s["depth"][i, j] < -pc[2]


# ---------------------------------------------------------------------------------------------- held-out rule
def test_held_out_rule():
    for split in ("train", "val", "test"):
        for index in range(150):
            for obj in sample_scene(0, split, index).objects:
                assert (obj.shape, obj.color_name) not in HELD_OUT_COMBINATIONS, (split, index)
    seen = set()
    for index in range(150):
        combos = [(o.shape, o.color_name) for o in sample_scene(0, "held_out", index).objects]
        held = [c for c in combos if c in HELD_OUT_COMBINATIONS]
        assert len(held) == 1, (index, combos)
        seen.update(held)
    assert seen == set(HELD_OUT_COMBINATIONS)


def test_scene_statistics():
    counts, shapes, colours = [], set(), set()
    for index in range(60):
        scene = sample_scene(0, "train", index)
        counts.append(len(scene.objects))
        shapes.update(o.shape for o in scene.objects)
        colours.update(o.color_name for o in scene.objects)
        assert [o.instance_id for o in scene.objects] == list(range(1, len(scene.objects) + 1))
        for a, b in itertools.combinations(scene.objects, 2):  # no interpenetration (bounding circles)
            gap = math.hypot(a.position[0] - b.position[0], a.position[2] - b.position[2])
            assert gap >= a.bound_radius + b.bound_radius
        assert 45 <= scene.camera.fov_deg <= 65 and 1.0 <= scene.camera.position[1] <= 2.0
        assert 1 <= len(scene.walls) <= 2 and 1 <= len(scene.lights) <= 2
    assert min(counts) >= 2 and max(counts) <= 5 and len(set(counts)) >= 3
    assert shapes == {"sphere", "box", "cylinder", "banana"} and len(colours) >= 9


# ---------------------------------------------------------------------------------------------- language
def test_description_mentions_every_object():
    for split, index in itertools.product(("train", "held_out"), range(25)):
        s = render_sample(3, split, index, resolution=16)
        text, objects = s["description"], json.loads(s["objects"])
        for obj in objects:
            phrase = f"{obj['color_name']} {obj['shape']}"
            assert text.count(phrase) >= sum(f"{o['color_name']} {o['shape']}" == phrase for o in objects), text
            assert obj["image_position"] in ("left", "middle", "right")
            assert obj["distance"] in ("near", "middle", "far")
            assert set(obj) >= {"instance_id", "shape", "color_name", "color_rgb", "position_3d", "image_position"}
            assert (obj["pixel_count"] == 0) == (obj["bbox"] is None)
        assert " floor" in text and " wall" in text
        assert text.count(" and ") >= (1 if len(objects) > 1 else 0)


def test_image_position_words_follow_the_image():
    lefts, rights = [], []
    for index in range(40):
        s = render_sample(0, "train", index, resolution=32)
        for o in json.loads(s["objects"]):
            if o["bbox"] is None:
                continue
            centre_col = (np.nonzero(s["instance"] == o["instance_id"])[1].mean() + 0.5) / 32
            (lefts if o["image_position"] == "left" else rights if o["image_position"] == "right" else []).append(
                centre_col)
    assert lefts and rights and np.mean(lefts) < 0.4 and np.mean(rights) > 0.6


# ---------------------------------------------------------------------------------------------- dataset
@pytest.fixture(scope="module")
def smoke_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "smoke"
    ds = build_world(out, WORLD_PRESETS["smoke"], progress=False)
    return out, ds


def test_build_world_smoke(smoke_world):
    out, ds = smoke_world
    cfg = WORLD_PRESETS["smoke"]
    assert list(ds) == list(SPLITS)
    assert {k: len(v) for k, v in ds.items()} == cfg.split_sizes()
    loaded = load_world(out)
    r = cfg.resolution
    row = loaded["held_out"][3]
    assert row["image"].dtype == np.uint8 and row["image"].shape == (3, r, r)
    assert row["depth"].dtype == np.float32 and row["depth"].shape == (r, r)
    assert row["normals"].dtype == np.float32 and row["normals"].shape == (3, r, r)
    assert row["semantic"].dtype == np.uint8 and row["instance"].dtype == np.uint8
    assert isinstance(row["description"], str) and isinstance(json.loads(row["objects"]), list)
    assert int(row["index"]) == 3
    batch = loaded["train"][:5]
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (5, 3, r, r)
    assert batch["normals"].shape == (5, 3, r, r) and batch["depth"].dtype == np.float32
    # stored bytes equal a fresh render
    fresh = render_sample(cfg.seed, "held_out", 3, resolution=r, spp=cfg.spp)
    for key in ("image", "depth", "normals", "semantic", "instance"):
        np.testing.assert_array_equal(row[key], fresh[key])
    assert row["description"] == fresh["description"] and row["objects"] == fresh["objects"]
    # world_config.json
    record = json.loads((out / "world_config.json").read_text())
    assert record["config"] == dataclasses.asdict(cfg) and record["seed"] == cfg.seed
    assert record["splits"] == cfg.split_sizes() and record["class_names"] == list(CLASS_NAMES)
    assert record["canonical_palette"] == {k: list(v) for k, v in CANONICAL_PALETTE.items()}
    assert sorted(map(tuple, record["held_out_combinations"])) == sorted(HELD_OUT_COMBINATIONS)
    # no build leftovers next to it
    assert [p.name for p in out.parent.iterdir()] == ["smoke"]


def test_build_world_reuses_and_refuses(smoke_world, monkeypatch):
    out, _ = smoke_world
    cfg = WORLD_PRESETS["smoke"]

    def boom(*args, **kwargs):
        raise AssertionError("must not render when reusing a world")

    monkeypatch.setattr(world_dataset, "render_sample", boom)
    again = build_world(out, cfg, progress=False)  # same config: loaded, not rebuilt
    assert {k: len(v) for k, v in again.items()} == cfg.split_sizes()
    with pytest.raises(FileExistsError, match="overwrite"):
        build_world(out, dataclasses.replace(cfg, seed=1), progress=False)
    with pytest.raises(FileExistsError, match="resolution"):
        build_world(out, dataclasses.replace(cfg, resolution=8), progress=False)


def test_build_world_overwrite_and_interrupted_build(tmp_path, monkeypatch):
    tiny = WorldConfig(resolution=8, n_train=3, n_val=1, n_test=1, n_held_out=1, spp=1, seed=0)
    out = tmp_path / "w"
    build_world(out, tiny, progress=False)
    other = dataclasses.replace(tiny, seed=2)
    ds = build_world(out, other, overwrite=True, progress=False)
    assert json.loads((out / "world_config.json").read_text())["config"]["seed"] == 2
    assert len(ds["held_out"]) == 1 and len(ds["train"]) == 3
    np.testing.assert_array_equal(ds["train"][1]["image"], render_sample(2, "train", 1, resolution=8)["image"])
    # an interrupted build leaves neither a world nor a temporary directory
    calls = {"n": 0}
    real = world_dataset.render_sample

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(world_dataset, "render_sample", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_world(tmp_path / "broken", tiny, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]
    # a non-empty directory that is not a world is never touched, even with overwrite=True
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a banana world"):
        build_world(foreign, tiny, overwrite=True, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_load_world_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No banana world"):
        load_world(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="world_config.json"):
        load_world(tmp_path / "empty")

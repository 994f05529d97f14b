"""Tests for banana.codecs: round trips, anchors, quantisation ceilings, noise, errors.

Each codec is checked three ways:
* float round trip (the codec itself loses nothing),
* round trip through 8-bit quantisation (the ceiling a generator emitting
  PNG-like images can reach), with bounds derived from the quantisation step,
* robustness to colour noise (a crude stand-in for generator drift).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from banana.codecs import (
    CUBE_PATH_VERTICES,
    MIN_PALETTE_DISTANCE,
    REJECT_RADIUS,
    ColorPath,
    DepthCodec,
    NormalsCodec,
    SegmentationCodec,
    inverse_metric_warp,
    metric_warp,
    quantize,
    random_palette,
    well_separated_palette,
)

SETTINGS = settings(max_examples=50, deadline=None)

#: Leading dims (batch shapes) + spatial size, kept tiny for speed.
shapes_hw = hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=5)


def pairwise_min(colors) -> float:
    c = np.asarray(colors, dtype=np.float64)
    d = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))
    d[np.diag_indices(len(c))] = np.inf
    return float(d.min())


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle between vectors along axis -3, in degrees. atan2 form: accurate near 0."""
    a = np.moveaxis(np.asarray(a, np.float64), -3, -1)
    b = np.moveaxis(np.asarray(b, np.float64), -3, -1)
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    dot = (a * b).sum(-1)
    return np.degrees(np.arctan2(cross, dot))


def f_of(d) -> np.ndarray:
    """The paper's metric warp in float64 numpy (independent of the codec's code)."""
    return 1.0 - (1.0 + np.asarray(d, np.float64) / 10.0) ** -2


# ==========================================================================
# Segmentation
# ==========================================================================
@SETTINGS
@given(data=st.data(), k=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_seg_float_roundtrip_exact(data, k, seed):
    rng = np.random.default_rng(seed)
    seg = SegmentationCodec.with_random_palette([f"c{i}" for i in range(k)], rng, min_distance=30.0)
    labels = data.draw(hnp.arrays(np.int64, shapes_hw, elements=st.sampled_from(list(range(k)) + [255])))
    rgb = seg.encode(labels)
    assert rgb.shape == labels.shape[:-2] + (3,) + labels.shape[-2:]
    assert rgb.dtype == np.float32 and rgb.min() >= 0 and rgb.max() <= 1
    np.testing.assert_array_equal(seg.decode(rgb), labels)


@SETTINGS
@given(data=st.data(), k=st.integers(1, 16))
def test_seg_8bit_roundtrip_exact_for_well_separated(data, k):
    seg = SegmentationCodec(
        {f"c{i}": c for i, c in enumerate(well_separated_palette(k, exclude=[(0, 0, 0)]))}
    )
    labels = data.draw(hnp.arrays(np.int64, shapes_hw, elements=st.sampled_from(list(range(k)) + [255])))
    np.testing.assert_array_equal(seg.decode(quantize(seg.encode(labels))), labels)


def test_seg_noise_robust_well_separated():
    seg = SegmentationCodec({f"c{i}": c for i, c in enumerate(well_separated_palette(7, exclude=[(0, 0, 0)]))})
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 7, (4, 64, 64), generator=gen)
    rgb = seg.encode(labels)
    noisy = (rgb + 0.02 * torch.randn(rgb.shape, generator=gen)).clamp(0, 1)
    assert torch.equal(seg.decode(quantize(noisy)), labels)


def test_seg_anchor_colors_and_ignore():
    seg = SegmentationCodec({"sky": (135, 206, 235), "floor": (255, 0, 0)}, ignore_color=(10, 20, 30))
    labels = np.array([[0, 1, 255]])
    rgb = seg.encode(labels)
    np.testing.assert_allclose(rgb[:, 0, 0], np.array([135, 206, 235]) / 255, atol=1e-7)
    np.testing.assert_allclose(rgb[:, 0, 1], [1, 0, 0], atol=1e-7)
    np.testing.assert_allclose(rgb[:, 0, 2], np.array([10, 20, 30]) / 255, atol=1e-7)
    np.testing.assert_array_equal(seg.decode(rgb), labels)
    assert seg.class_names == ["sky", "floor"] and seg.num_classes == 2
    assert seg.colors.dtype == np.uint8 and seg.colors.tolist() == [[135, 206, 235], [255, 0, 0]]
    assert seg.ignore_index == 255


def test_seg_reject_radius():
    pal = {"a": (255, 0, 0), "b": (0, 0, 255)}
    # Default: min(REJECT_RADIUS, half the smallest distance between candidates, ignore colour included).
    assert SegmentationCodec(pal).reject_radius == REJECT_RADIUS
    assert SegmentationCodec({"only": (9, 9, 9)}).reject_radius == pytest.approx(9 * math.sqrt(3) / 2)
    assert SegmentationCodec({"only": (200, 200, 200)}).reject_radius == REJECT_RADIUS
    seg = SegmentationCodec(pal, reject_radius=30.0)
    colours = np.array([[255, 0, 20], [255, 0, 40], [0, 15, 240], [128, 128, 128]], np.float32) / 255
    rgb = colours.T[:, None, :]  # [3, 1, 4]
    np.testing.assert_array_equal(seg.decode(rgb), [[0, 255, 1, 255]])
    # Custom ignore_index flows through.
    seg2 = SegmentationCodec(pal, reject_radius=30.0, ignore_index=-1)
    np.testing.assert_array_equal(seg2.decode(rgb), [[0, -1, 1, -1]])


def test_seg_decode_nearest_colour():
    pal = {"a": (200, 0, 0), "b": (0, 200, 0), "c": (0, 0, 200)}
    # 100 = half the closest candidate distance (each colour to black: 200), the largest allowed.
    seg = SegmentationCodec(pal, reject_radius=100)
    colours = np.array([[150, 60, 0], [60, 150, 0], [0, 70, 140], [30, 30, 30]], np.float32) / 255
    # (30,30,30) is nearest to the ignore colour black -> ignore.
    np.testing.assert_array_equal(seg.decode(colours.T[:, None, :]), [[0, 1, 2, 255]])
    with pytest.raises(ValueError, match=r"reject_radius 300 makes decision regions overlap.*<= 100"):
        SegmentationCodec(pal, reject_radius=300)


def test_seg_prompt_styles():
    seg = SegmentationCodec({"sky": (135, 206, 235), "floor": (255, 0, 0), "wall": (1, 2, 3)})
    assert seg.prompt() == (
        "Generate a semantic segmentation visualization image, using this color mapping: "
        '{"sky": <135,206,235>, "floor": <255,0,0>, "wall": <1,2,3>}'
    )
    assert seg.prompt("json") == seg.prompt()
    rgb = seg.prompt("rgb")
    assert "sky in rgb(135, 206, 235)" in rgb and "floor in rgb(255, 0, 0)" in rgb and "rgb(1, 2, 3)" in rgb
    hx = seg.prompt("hex")
    assert "#87ceeb" in hx and "#ff0000" in hx and "#010203" in hx
    nat = seg.prompt("natural")
    assert "sky in sky blue" in nat and "floor in red" in nat and "wall in rgb(1, 2, 3)" in nat
    for style in ("json", "rgb", "hex", "natural"):
        p = seg.prompt(style)
        assert p.startswith("Generate a semantic segmentation visualization image")
        assert all(name in p for name in seg.class_names)
    with pytest.raises(ValueError, match="unknown prompt style 'yaml'"):
        seg.prompt("yaml")
    # Free-text class names are JSON-escaped.
    assert '"a \\"quoted\\" thing": <1,1,1>' in SegmentationCodec({'a "quoted" thing': (1, 1, 1)}).prompt()


def test_seg_bad_inputs():
    seg = SegmentationCodec({"a": (255, 0, 0), "b": (0, 255, 0)})
    with pytest.raises(ValueError, match="integer array; got dtype float32"):
        seg.encode(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"values \[2, 7\] outside the palette.*0\.\.1"):
        seg.encode(np.array([[0, 7], [2, 255]]))
    with pytest.raises(ValueError, match=r"values \[-3\]"):
        seg.encode(torch.tensor([[0, -3]]))
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W\]; got shape \(4,\)"):
        seg.encode(np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"3 channels at dim -3\); got shape \(4, 2, 2\)"):
        seg.decode(np.zeros((4, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]; got min 255, max 255 \(an image in 0..255"):
        seg.decode(np.full((3, 2, 2), 255.0, np.float32))
    with pytest.raises(ValueError, match="2 NaN"):
        x = np.zeros((3, 2, 2), np.float32)
        x[0, 0, :] = np.nan
        seg.decode(x)
    seg.decode(np.full((3, 2, 2), 1 + 5e-7, np.float32))  # within tolerance: fine
    with pytest.raises(ValueError, match="duplicate colours.*'a' and 'b'"):
        SegmentationCodec({"a": (1, 2, 3), "b": (1, 2, 3)})
    with pytest.raises(ValueError, match="outside 0..255"):
        SegmentationCodec({"a": (1, 2, 300)})
    with pytest.raises(ValueError, match="3 integers"):
        SegmentationCodec({"a": (1, 2)})
    with pytest.raises(ValueError, match="at least 1 class"):
        SegmentationCodec({})
    with pytest.raises(ValueError, match="ignore_index 1 collides"):
        SegmentationCodec({"a": (255, 0, 0), "b": (0, 255, 0)}, ignore_index=1)
    with pytest.raises(ValueError, match="ignore_color .* equals the colour of class 'k'"):
        SegmentationCodec({"k": (0, 0, 0)})
    with pytest.raises(ValueError, match="reject_radius must be >= 0"):
        SegmentationCodec({"a": (1, 1, 1)}, reject_radius=-1)


def test_well_separated_palette():
    p8 = well_separated_palette(8)
    assert sorted(p8) == sorted((r, g, b) for r in (0, 255) for g in (0, 255) for b in (0, 255))
    assert pairwise_min(p8) == pytest.approx(255.0)
    assert pairwise_min(well_separated_palette(4)) == pytest.approx(255 * math.sqrt(2))
    assert pairwise_min(well_separated_palette(2)) >= 255 * math.sqrt(2) - 1e-9
    assert well_separated_palette(1) == [(255, 0, 0)]
    # Deterministic, distinct, and the min distance never increases as n grows.
    assert well_separated_palette(30) == well_separated_palette(30)
    prev = math.inf
    for n in range(2, 31):
        p = well_separated_palette(n)
        assert len(set(p)) == n and all(0 <= v <= 255 for c in p for v in c)
        assert well_separated_palette(n - 1) == p[:-1]  # prefixes are stable
        m = pairwise_min(p)
        assert m <= prev + 1e-9
        prev = m
    assert pairwise_min(well_separated_palette(27)) >= 100.0  # ~ a 3x3x3 grid (127.5) on the lattice
    # Excluded colours are avoided and kept at a distance.
    p7 = well_separated_palette(7, exclude=[(0, 0, 0)])
    assert (0, 0, 0) not in p7 and pairwise_min(p7 + [(0, 0, 0)]) == pytest.approx(255.0)
    p20 = well_separated_palette(20, exclude=[(0, 0, 0), (128, 128, 128)])
    assert pairwise_min(p20 + [(0, 0, 0), (128, 128, 128)]) >= 50.0
    assert len(well_separated_palette(300)) == 300  # falls back to a finer lattice
    with pytest.raises(ValueError, match="positive integer"):
        well_separated_palette(0)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 20), min_distance=st.floats(0.0, 80.0))
def test_random_palette_min_distance_and_determinism(seed, k, min_distance):
    names = [f"class {i}" for i in range(k)]
    pal = random_palette(names, np.random.default_rng(seed), min_distance, exclude=[(0, 0, 0)])
    assert list(pal) == names
    colours = list(pal.values())
    assert all(0 <= v <= 255 and isinstance(v, int) for c in colours for v in c)
    assert pairwise_min(colours + [(0, 0, 0)]) >= max(min_distance, 1e-9)
    assert random_palette(names, np.random.default_rng(seed), min_distance, exclude=[(0, 0, 0)]) == pal


def test_random_palette_impossible_and_bad_input():
    with pytest.raises(ValueError, match="could not place class"):
        random_palette([str(i) for i in range(10)], np.random.default_rng(0), min_distance=300)
    with pytest.raises(ValueError, match="duplicate class names"):
        random_palette(["a", "a"], np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least 1 class"):
        random_palette([], np.random.default_rng(0))
    assert random_palette(["a", "b"], np.random.default_rng(1)) != random_palette(["a", "b"], np.random.default_rng(2))


# --------------------------------------------------------------------------
# One rejection rule for canonical and unseen palettes
# --------------------------------------------------------------------------
def _probe_pixel(colors, ignore, k, distance):
    """A colour exactly ``distance`` from ``colors[k]``, inside the RGB cube, in a direction that
    keeps it farther than ``distance`` from every other candidate (other colours, ignore)."""
    c = np.asarray(colors[k], np.float64)
    others = np.asarray([x for i, x in enumerate(colors) if i != k] + [ignore], np.float64)
    best, best_margin = None, -np.inf
    for direction in np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1])).reshape(3, -1).T:
        if not direction.any():
            continue
        p = c + distance * direction / np.linalg.norm(direction)
        if p.min() < 0 or p.max() > 255:
            continue
        margin = np.sqrt(((others - p) ** 2).sum(1)).min() - distance
        if margin > best_margin:
            best, best_margin = p, margin
    assert best is not None and best_margin > 0
    return best


def _check_radius_edge(seg):
    """Every class: a pixel at radius - 1 decodes to it, one at radius + 1 is rejected."""
    r = seg.reject_radius
    colors = seg.colors.tolist()
    inside = [_probe_pixel(colors, seg.ignore_color, k, r - 1) for k in range(seg.num_classes)]
    outside = [_probe_pixel(colors, seg.ignore_color, k, r + 1) for k in range(seg.num_classes)]
    rgb = (np.asarray(inside + outside, np.float64) / 255).astype(np.float32).T[:, None, :]  # [3, 1, 2K]
    expected = list(range(seg.num_classes)) + [seg.ignore_index] * seg.num_classes
    np.testing.assert_array_equal(seg.decode(rgb), [expected])


def test_seg_same_rule_for_canonical_and_random_palettes():
    from banana.world import CANONICAL_PALETTE, CLASS_NAMES

    assert MIN_PALETTE_DISTANCE >= 2 * REJECT_RADIUS
    canonical = SegmentationCodec(CANONICAL_PALETTE)
    # The canonical palette keeps MIN_PALETTE_DISTANCE itself (closest: floor to black, ~103).
    assert pairwise_min(list(CANONICAL_PALETTE.values()) + [(0, 0, 0)]) >= MIN_PALETTE_DISTANCE
    assert canonical.reject_radius == REJECT_RADIUS
    _check_radius_edge(canonical)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        unseen = SegmentationCodec(random_palette(CLASS_NAMES, rng))
        assert unseen.reject_radius == canonical.reject_radius == REJECT_RADIUS
        assert pairwise_min(unseen.colors.tolist() + [(0, 0, 0)]) >= MIN_PALETTE_DISTANCE
        assert SegmentationCodec.with_random_palette(CLASS_NAMES, rng).reject_radius == REJECT_RADIUS
        if seed < 5:
            _check_radius_edge(unseen)


def test_random_palette_fits_19_classes_away_from_ignore():
    names = [f"class {i}" for i in range(19)]
    for seed in range(200):
        pal = random_palette(names, np.random.default_rng(seed))
        assert list(pal) == names
        colours = list(pal.values())
        assert pairwise_min(colours) >= MIN_PALETTE_DISTANCE
        assert min(math.dist(c, (0, 0, 0)) for c in colours) >= MIN_PALETTE_DISTANCE
    seg = SegmentationCodec(random_palette(names, np.random.default_rng(0)))
    assert seg.reject_radius == REJECT_RADIUS
    _check_radius_edge(seg)
    # Too many classes for the distance: a ValueError naming the problem, after bounded retries.
    with pytest.raises(ValueError, match=r"could not place class .* min_distance 96.*of 60 classes"):
        random_palette([f"c{i}" for i in range(60)], np.random.default_rng(0), max_restarts=2)


def test_seg_dense_official_palette_gets_half_its_closest_distance():
    from banana.real.cityscapes import CITYSCAPES_PALETTE

    seg = SegmentationCodec(CITYSCAPES_PALETTE)     # bus (0,60,100) and train (0,80,100): 20 apart
    assert seg.reject_radius == pytest.approx(10.0)
    labels = np.array([list(range(19)) + [255]])
    np.testing.assert_array_equal(seg.decode(quantize(seg.encode(labels))), labels)
    _check_radius_edge(seg)
    with pytest.raises(ValueError, match=r"overlap: class 'bus' \(0, 60, 100\) and class 'train'"):
        SegmentationCodec(CITYSCAPES_PALETTE, reject_radius=REJECT_RADIUS)


# ==========================================================================
# Depth
# ==========================================================================
depths_m = st.floats(0.0, 1000.0, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(depth=hnp.arrays(np.float64, shapes_hw, elements=st.one_of(depths_m, st.just(np.inf))))
def test_depth_float_roundtrip(depth):
    codec = DepthCodec()
    rgb = codec.encode(depth)
    assert rgb.shape == depth.shape[:-2] + (3,) + depth.shape[-2:] and rgb.dtype == np.float32
    out = codec.decode(rgb)
    assert out.dtype == np.float32 and out.shape == depth.shape
    fin = np.isfinite(depth)
    assert np.all(np.isinf(out[~fin]))
    np.testing.assert_array_less(np.abs(out[fin] - depth[fin]), 1e-4 * depth[fin] + 1e-6)


#: Worst-case error of the warped value f after 8-bit storage: half a level
#: along one channel, spread over 1/7 of the path per edge.
F_STEP_8BIT = 0.5 / 255 / 7


@SETTINGS
@given(depth=hnp.arrays(np.float64, shapes_hw, elements=st.floats(0.0, 1e4)))
def test_depth_8bit_warp_error_bounded(depth):
    codec = DepthCodec()
    rgb8 = quantize(codec.encode(depth))
    f_hat = codec.decode_unit(rgb8)
    assert np.max(np.abs(f_hat - f_of(depth))) <= F_STEP_8BIT + 1e-7
    # decode agrees with decode_unit through the inverse warp
    np.testing.assert_allclose(f_of(codec.decode(rgb8).astype(np.float64)), f_hat, atol=1e-6)


@SETTINGS
@given(depth=hnp.arrays(np.float64, shapes_hw, elements=st.floats(0.0, 10.0)))
def test_depth_8bit_relative_error_near_range(depth):
    codec = DepthCodec()
    out = codec.decode(quantize(codec.encode(depth)))
    # < 3 % relative error up to 10 m (plus 2 mm absolute for depths near 0).
    np.testing.assert_array_less(np.abs(out - depth), 0.03 * depth + 2e-3)


def test_depth_anchor_colours():
    codec = DepthCodec()
    rgb = codec.encode(torch.tensor([[0.0, 10.0, math.inf]]))
    torch.testing.assert_close(rgb[:, 0, 0], torch.tensor([0.0, 0.0, 0.0]))
    torch.testing.assert_close(rgb[:, 0, 1], torch.tensor([0.25, 0.0, 1.0]))
    torch.testing.assert_close(rgb[:, 0, 2], torch.tensor([1.0, 1.0, 1.0]))
    # Each cube vertex, in order, is hit at t = k/7.
    d_k = inverse_metric_warp(torch.arange(8, dtype=torch.float64) / 7).reshape(1, 8)
    rgb = codec.encode(d_k)
    torch.testing.assert_close(rgb[:, 0, :].T, torch.tensor(CUBE_PATH_VERTICES, dtype=torch.float32), atol=1e-6, rtol=0)
    assert codec.decode(torch.ones(3, 1, 1)).item() == math.inf
    assert codec.decode(torch.zeros(3, 1, 1)).item() == 0.0
    assert metric_warp(torch.tensor([10.0, 40.0])).tolist() == pytest.approx([0.75, 0.96])


def test_depth_noise_monotone():
    codec = DepthCodec()
    depth = torch.linspace(0.5, 50.0, 4096, dtype=torch.float64).reshape(1, 4096)
    gen = torch.Generator().manual_seed(0)
    rgb = codec.encode(depth)
    noisy = quantize((rgb + 0.02 * torch.randn(rgb.shape, generator=gen)).clamp(0, 1))
    f_hat = codec.decode_unit(noisy).flatten()
    f_true = metric_warp(depth).flatten()
    # No jumps to a far part of the path: the warped error stays small ...
    assert (f_hat - f_true).abs().max() < 0.03
    # ... and the decoded depths keep the ordering (Spearman rank correlation).
    out = codec.decode(noisy).flatten().double()
    ranks = out.argsort().argsort().double()
    rho = np.corrcoef(ranks.numpy(), np.arange(4096))[0, 1]
    assert rho > 0.995


@pytest.mark.parametrize("colormap", ["gray", "viridis", "plasma", "inferno", "cube"])
def test_depth_colormap_variants_roundtrip(colormap):
    codec = DepthCodec(colormap=colormap)
    assert codec.colormap == colormap and codec.is_metric
    depth = np.concatenate([np.linspace(0, 100, 997), [np.inf, 0.0, 1e-3]]).reshape(10, 100)
    rgb = codec.encode(depth)
    assert rgb.min() >= 0 and rgb.max() <= 1
    out = codec.decode(rgb)
    fin = np.isfinite(depth)
    assert np.all(np.isinf(out[~fin]))
    np.testing.assert_array_less(np.abs(out[fin] - depth[fin]), 1e-3 * depth[fin] + 1e-5)
    # 8-bit: the warped error stays within a few quantisation steps.
    f_err = np.abs(codec.decode_unit(quantize(rgb)) - f_of(depth))
    assert f_err.max() < 3 / 255


def test_depth_gray_8bit_step():
    codec = DepthCodec(colormap="gray")
    depth = np.linspace(0, 200, 1000).reshape(1, 1000)
    rgb = codec.encode(depth)
    np.testing.assert_allclose(rgb[0], rgb[1])  # grey: all channels equal
    err = np.abs(codec.decode_unit(quantize(rgb)) - f_of(depth))
    assert err.max() <= 0.5 / 255 + 1e-7


def np_affine_reference(depth, mask=None):
    """Per image: 2%/98% quantiles of finite (masked) depths -> 0/1, clipped."""
    lead = depth.shape[:-2]
    flat = depth.reshape(-1, depth.shape[-2] * depth.shape[-1])
    m = np.isfinite(flat) if mask is None else np.isfinite(flat) & mask.reshape(flat.shape)
    out = np.empty_like(flat)
    for i in range(len(flat)):
        lo, hi = np.quantile(flat[i][m[i]], [0.02, 0.98])
        out[i] = np.clip((flat[i] - lo) / (hi - lo), 0, 1)
    return out.reshape(*lead, *depth.shape[-2:])


def test_depth_affine_matches_quantile_normalisation():
    codec = DepthCodec(warp="affine")
    assert not codec.is_metric and codec.warp == "affine"
    rng = np.random.default_rng(0)
    depth = rng.gamma(2.0, 3.0, size=(2, 3, 24, 32))
    depth[0, 0, :2] = np.inf  # sky -> 1
    depth[1, 2, 5, 5] = 500.0  # an outlier the 98 % quantile ignores
    ref = np_affine_reference(depth)
    out = codec.decode(codec.encode(depth))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert np.all(out[0, 0, :2] == 1.0)
    # 8-bit on the cube path: error bounded by the quantisation step.
    assert np.abs(codec.decode(quantize(codec.encode(depth))) - ref).max() <= F_STEP_8BIT + 1e-6
    # A mask restricts which pixels the quantiles see.
    mask = np.ones(depth.shape, bool)
    mask[..., :12, :] = False
    depth[..., :12, :] *= 100.0
    np.testing.assert_allclose(
        codec.decode(codec.encode(depth, mask=mask)), np_affine_reference(depth, mask), atol=1e-5
    )
    # Sky-only image: everything white.
    assert np.all(codec.decode(codec.encode(np.full((4, 4), np.inf))) == 1.0)


def test_depth_is_metric_read_only():
    with pytest.raises(AttributeError):
        DepthCodec().is_metric = False  # type: ignore[misc]


def test_depth_bad_inputs():
    codec = DepthCodec()
    with pytest.raises(ValueError, match="3 NaN"):
        codec.encode(np.array([[np.nan, 1.0, np.nan], [np.nan, 0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"1 negative value\(s\) \(min -0\.5\)"):
        codec.encode(np.array([[1.0, -0.5]]))
    with pytest.raises(ValueError, match=r"-inf"):
        codec.encode(np.array([[1.0, -np.inf]]))
    with pytest.raises(ValueError, match="floating-point.*int64"):
        codec.encode(np.array([[1, 2]]))
    with pytest.raises(ValueError, match=r"got shape \(2, 5, 5\)"):
        codec.decode(np.zeros((2, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]; got min -0\.1"):
        codec.decode(np.full((3, 2, 2), -0.1, np.float32))
    with pytest.raises(ValueError, match="1 NaN"):
        x = np.zeros((3, 2, 2), np.float32)
        x[1, 1, 1] = np.nan
        codec.decode(x)
    with pytest.raises(ValueError, match="unknown colormap 'jet'"):
        DepthCodec(colormap="jet")
    with pytest.raises(ValueError, match="unknown warp 'log'"):
        DepthCodec(warp="log")
    with pytest.raises(ValueError, match="mask must be a bool"):
        DepthCodec(warp="affine").encode(np.ones((2, 2)), mask=np.ones((2, 2)))
    with pytest.raises(ValueError, match="mask shape"):
        DepthCodec(warp="affine").encode(np.ones((2, 2)), mask=np.ones((2, 3), bool))


def test_color_path_generic():
    path = ColorPath([(0, 0, 0), (1, 0, 0), (1, 1, 0)])
    t = np.linspace(0, 1, 101)
    rgb = path.encode(t)
    assert rgb.shape == (101, 3)
    np.testing.assert_allclose(rgb[50], [1, 0, 0], atol=1e-7)
    np.testing.assert_allclose(path.decode(rgb), t, atol=1e-6)
    # Off-path colours project onto the nearest segment.
    assert path.decode(np.array([0.5, 0.2, 0.0])) == pytest.approx(0.25)
    assert path.decode(np.array([0.9, 0.6, 0.3])) == pytest.approx(0.8)
    with pytest.raises(ValueError, match=r"shape \[V >= 2, 3\]"):
        ColorPath([(0, 0, 0)])
    with pytest.raises(ValueError, match="zero length"):
        ColorPath([(0, 0, 0), (0, 0, 0), (1, 1, 1)])


# ==========================================================================
# Normals
# ==========================================================================
@st.composite
def unit_normals(draw, allow_zero=True):
    """Arrays [..., 3, H, W] of unit vectors (and, optionally, exact zeros)."""
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    hw = draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=5))
    raw = draw(hnp.arrays(np.float64, lead + (3,) + hw, elements=st.floats(-1, 1)))
    norm = np.linalg.norm(raw, axis=-3, keepdims=True)
    n = np.where(norm < 0.1, np.array([0.0, 0.0, 1.0]).reshape(3, 1, 1), raw / np.maximum(norm, 1e-12))
    if allow_zero and draw(st.booleans()):
        n[..., 0, 0] = 0.0  # "no normal" pixels
    return n


@SETTINGS
@given(n=unit_normals())
def test_normals_float_roundtrip(n):
    codec = NormalsCodec()
    rgb = codec.encode(n)
    assert rgb.shape == n.shape and rgb.dtype == np.float32
    assert rgb.min() >= 0 and rgb.max() <= 1
    out = codec.decode(rgb)
    defined = np.linalg.norm(n, axis=-3) > 0
    assert np.all(angle_deg(out, n)[defined] < 1e-3)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-3)[defined], 1.0, atol=1e-6)
    assert np.all(out[..., 0, :, :][~defined] == 0) and np.all(out[..., 2, :, :][~defined] == 0)


@SETTINGS
@given(n=unit_normals(allow_zero=False))
def test_normals_8bit_roundtrip(n):
    codec = NormalsCodec()
    out = codec.decode(quantize(codec.encode(n)))
    # Each component is off by <= 1/255, so the angle is <= asin(sqrt(3)/255) ~ 0.39 deg.
    assert angle_deg(out, n).max() < 0.5


def test_normals_anchor_colours():
    codec = NormalsCodec()
    n = torch.tensor([[-1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0]]).T.reshape(3, 1, 5)
    rgb = codec.encode(n)
    expected = torch.tensor([[1.0, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 1.0], [0.5, 0.5, 0.5], [0.0, 0.5, 0.5]])
    torch.testing.assert_close(rgb[:, 0, :].T, expected)
    torch.testing.assert_close(codec.decode(rgb), n)


def test_normals_undefined_below():
    codec = NormalsCodec(undefined_below=0.1)
    rgb = torch.tensor([0.5, 0.5, 0.5 + 0.04]).reshape(3, 1, 1)  # decoded length 0.08
    assert torch.all(codec.decode(rgb) == 0)
    rgb = torch.tensor([0.5, 0.5, 0.5 + 0.06]).reshape(3, 1, 1)  # decoded length 0.12
    torch.testing.assert_close(codec.decode(rgb).flatten(), torch.tensor([0.0, 0.0, 1.0]))


def test_normals_noise_small_mean_angle():
    codec = NormalsCodec()
    gen = torch.Generator().manual_seed(0)
    n = torch.randn(2, 3, 64, 64, generator=gen)
    n = n / n.norm(dim=-3, keepdim=True)
    rgb = codec.encode(n)
    noisy = quantize((rgb + 0.02 * torch.randn(rgb.shape, generator=gen)).clamp(0, 1))
    ang = angle_deg(codec.decode(noisy).numpy(), n.numpy())
    # Noise of 0.04 per component after the *2 -> mean angle ~ 3 deg.
    assert ang.mean() < 5.0 and np.median(ang) < 5.0


def test_normals_bad_inputs():
    codec = NormalsCodec(unit_tolerance=1e-2)
    with pytest.raises(ValueError, match=r"not unit length.*worst norm 0\.5"):
        codec.encode(np.array([0.0, 0.0, 0.5]).reshape(3, 1, 1))
    with pytest.raises(ValueError, match="worst norm 2"):
        codec.encode(np.array([[0.0, 0.0, 0.995], [0.0, 0.0, 2.0]]).T.reshape(3, 1, 2))
    codec.encode(np.array([0.0, 0.0, 0.995]).reshape(3, 1, 1))  # within tolerance
    with pytest.raises(ValueError, match="1 NaN"):
        codec.encode(np.array([0.0, np.nan, 1.0]).reshape(3, 1, 1))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, H, W\].*got shape \(2, 4, 4\)"):
        codec.encode(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match=r"got shape \(4, 4\)"):
        codec.decode(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"max 1\.5"):
        codec.decode(np.full((3, 2, 2), 1.5, np.float32))


# ==========================================================================
# Shared behaviour: array kinds, leading dims, quantize
# ==========================================================================
SEG = SegmentationCodec({"a": (255, 0, 0), "b": (0, 255, 0), "c": (0, 0, 255)})


def _cases():
    """(name, encode, decode, make_input(lead, as_torch)) for each codec."""
    def labels(lead, torch_):
        x = np.arange(int(np.prod(lead, dtype=int)) * 12).reshape(*lead, 3, 4) % 3
        return torch.from_numpy(x) if torch_ else x

    def depth(lead, torch_):
        x = np.linspace(0, 30, int(np.prod(lead, dtype=int)) * 12).reshape(*lead, 3, 4)
        return torch.from_numpy(x).float() if torch_ else x.astype(np.float32)

    def normals(lead, torch_):
        x = np.zeros((*lead, 3, 3, 4), np.float32)
        x[..., 2, :, :] = 1.0
        return torch.from_numpy(x) if torch_ else x

    yield "seg", SEG.encode, SEG.decode, labels
    yield "depth", DepthCodec().encode, DepthCodec().decode, depth
    yield "depth-affine", DepthCodec("affine").encode, DepthCodec("affine").decode, depth
    yield "normals", NormalsCodec().encode, NormalsCodec().decode, normals


@pytest.mark.parametrize("lead", [(), (2,), (2, 3), (1, 2, 1)])
@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[0])
def test_kinds_and_leading_dims(case, lead, as_torch):
    _, encode, decode, make = case
    x = make(lead, as_torch)
    rgb = encode(x)
    kind = torch.Tensor if as_torch else np.ndarray
    assert isinstance(rgb, kind) and tuple(rgb.shape) == (*lead, 3, 3, 4)
    out = decode(rgb)
    assert isinstance(out, kind) and tuple(out.shape) == tuple(x.shape)
    if as_torch:
        assert rgb.device == x.device and out.device == x.device


def test_seg_decode_dtype_int64_both_kinds():
    rgb = SEG.encode(np.zeros((2, 2), np.int32))
    assert SEG.decode(rgb).dtype == np.int64
    assert SEG.decode(torch.from_numpy(rgb)).dtype == torch.int64
    assert SEG.encode(np.zeros((2, 2), np.uint16)).shape == (3, 2, 2)  # wide unsigned ok


def test_8bit_distinct_colour_route_matches_direct():
    """Large 8-bit images are decoded once per distinct colour; results must not change."""
    gen = torch.Generator().manual_seed(1)
    # Random 8-bit colours all over the cube (mostly off the path), 64 x 64 pixels.
    rgb = torch.randint(0, 256, (3, 64, 64), generator=gen).float() / 255
    pixels = rgb.movedim(0, -1).reshape(-1, 3).double()
    for colormap in ("cube", "viridis"):
        codec = DepthCodec(colormap=colormap)
        via_distinct = codec.decode_unit(rgb).flatten()
        direct = codec.path._project(pixels)  # the per-pixel core, no deduplication
        # Lattice colours can be exactly equidistant from two segments (e.g.
        # (248, 7, 31)/255 from black-red and red-yellow); float rounding then
        # picks either, and both are correct. So: same distance to the path
        # everywhere, same t almost everywhere.
        def dist_to(t):
            return (pixels - codec.path._encode(t)).norm(dim=1)

        torch.testing.assert_close(dist_to(via_distinct), dist_to(direct), atol=1e-6, rtol=0)
        assert ((via_distinct - direct).abs() < 1e-6).float().mean() > 0.99
    labels = torch.randint(0, 3, (64, 64), generator=gen)
    # sigma 0.05 (~13 RGB units per channel) lands a few of 4096 pixels beyond REJECT_RADIUS; the
    # largest radius this palette allows (127.5: half the corner spacing) keeps every pixel.
    seg = SegmentationCodec(SEG.palette, reject_radius=127.5)
    noisy = quantize((seg.encode(labels) + 0.05 * torch.randn(3, 64, 64, generator=gen)).clamp(0, 1))
    pixels = noisy.movedim(0, -1).reshape(-1, 3).double()
    direct = seg._nearest_labels(pixels).reshape(64, 64)
    assert torch.equal(seg.decode(noisy), direct) and torch.equal(direct, labels)
    assert torch.equal(SEG.decode(noisy), SEG._nearest_labels(pixels).reshape(64, 64))  # default radius too


def test_non_array_input_raises_type_error():
    with pytest.raises(TypeError):
        DepthCodec().encode([[1.0, 2.0]])  # type: ignore[arg-type]


def test_quantize():
    x = np.array([0.0, 0.1, 0.5, 1.0, 1.2, -0.3], np.float32)
    q = quantize(x)
    assert isinstance(q, np.ndarray) and q.dtype == np.float32 and q.shape == x.shape
    np.testing.assert_allclose(q * 255, [0, 26, 128, 255, 255, 0], atol=1e-4)  # 25.5->26, 127.5->128
    qt = quantize(torch.tensor(x, dtype=torch.float64), bits=1)
    assert isinstance(qt, torch.Tensor) and qt.dtype == torch.float64
    assert qt.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    # idempotent, and every value sits on one of the 256 levels
    r = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    q = quantize(r)
    np.testing.assert_array_equal(quantize(q), q)
    assert np.abs(q * 255 - np.round(q * 255)).max() < 1e-4 and np.abs(q - r).max() <= 0.5 / 255 + 1e-7
    with pytest.raises(ValueError, match="bits must be an integer in 1..16"):
        quantize(x, bits=0)
    with pytest.raises(ValueError, match="floating-point"):
        quantize(np.zeros(3, np.uint8))


# ==========================================================================
# Fast paths: bit-identical to straightforward reference implementations
# ==========================================================================
def _seg_reference(seg: SegmentationCodec, rgb: np.ndarray) -> np.ndarray:
    """The decoding rule written out plainly: float32 colours in 0..255, squared distances to
    every candidate (palette + ignore colour) in float64, first nearest wins, rejected if it is
    the ignore colour or farther than the radius (compared in float32, as the codec does)."""
    x = np.moveaxis(np.asarray(rgb), -3, -1).reshape(-1, 3)
    p = x.astype(np.float32) * np.float32(255.0)
    cand = np.concatenate([seg.colors, np.asarray([seg.ignore_color])]).astype(np.float64)
    d = ((p[:, None, :].astype(np.float64) - cand[None]) ** 2).sum(-1)
    nearest = d.argmin(1)
    diff = p - cand[nearest].astype(np.float32)
    near_sq = (diff[:, 0] ** 2 + diff[:, 1] ** 2) + diff[:, 2] ** 2
    out = np.where((nearest == seg.num_classes) | (near_sq > np.float32(seg.reject_radius**2)),
                   seg.ignore_index, nearest)
    return out.reshape(np.asarray(rgb).shape[:-3] + np.asarray(rgb).shape[-2:])


def _seg_codecs():
    rng = np.random.default_rng(3)
    yield SegmentationCodec({f"c{i}": c for i, c in enumerate(well_separated_palette(7, exclude=[(0, 0, 0)]))})
    yield SegmentationCodec(random_palette([f"c{i}" for i in range(19)], rng))
    yield SegmentationCodec({"a": (200, 0, 0), "b": (0, 200, 0), "c": (0, 0, 200)}, reject_radius=100)
    yield SegmentationCodec({"bus": (0, 60, 100), "train": (0, 80, 100), "car": (0, 0, 142)})  # r = 10
    yield SegmentationCodec({"a": (255, 0, 0), "b": (10, 200, 60)}, ignore_index=-1, ignore_color=(10, 20, 30),
                            reject_radius=30.0)


@pytest.mark.parametrize("n_pix", [1000, 5000])  # below / above the per-distinct-colour threshold
def test_seg_fast_decode_matches_reference_on_8bit_colours(n_pix):
    rng = np.random.default_rng(n_pix)
    for seg in _seg_codecs():
        cand = np.concatenate([seg.colors, np.asarray([seg.ignore_color])]).astype(np.int64)
        # Uniform colours, colours near every candidate (inside, on and outside the radius),
        # and exact midpoints between candidates (ties).
        uniform = rng.integers(0, 256, (n_pix, 3))
        near = cand[rng.integers(0, len(cand), n_pix)] + rng.integers(-60, 61, (n_pix, 3))
        mids = (cand[:, None] + cand[None]) // 2
        colours = np.clip(np.concatenate([uniform, near, mids.reshape(-1, 3)]), 0, 255)
        rgb = (colours / 255.0).astype(np.float32).T.reshape(3, 1, -1)
        expected = _seg_reference(seg, rgb)
        np.testing.assert_array_equal(seg.decode(rgb), expected)
        np.testing.assert_array_equal(seg.decode(rgb.astype(np.float64)), expected)
        out_t = seg.decode(torch.from_numpy(rgb))
        assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.int64
        np.testing.assert_array_equal(out_t.numpy(), expected)
        # The integer table agrees with brute force on every colour of a coarse lattice too.
        lat = np.stack(np.meshgrid(*[np.arange(0, 256, 5)] * 3, indexing="ij"), 0).reshape(3, 1, -1)
        lat_rgb = (lat / 255.0).astype(np.float32)
        np.testing.assert_array_equal(seg.decode(lat_rgb), _seg_reference(seg, lat_rgb))


def test_seg_encode_matches_table_lookup():
    seg = SegmentationCodec({"a": (255, 0, 0), "b": (0, 9, 200)}, ignore_color=(1, 2, 3))
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 1, 255], (2, 3, 7, 9))
    table = np.concatenate([seg.colors, [seg.ignore_color]]).astype(np.float32) / np.float32(255)
    expected = np.moveaxis(table[np.where(labels == 255, 2, labels)], -1, -3)
    np.testing.assert_array_equal(seg.encode(labels), expected)
    np.testing.assert_array_equal(seg.encode(torch.from_numpy(labels)).numpy(), expected)
    np.testing.assert_array_equal(seg.encode(labels[..., :0]), expected[..., :0])


def _cube_reference(p: np.ndarray) -> np.ndarray:
    """Nearest-segment projection onto every segment of the cube path, float64, written out
    per channel in the order ColorPath._project's exact pass uses; first nearest wins."""
    v = np.asarray(CUBE_PATH_VERTICES, np.float64)
    a, d = v[:-1], v[1:] - v[:-1]
    dist, u = [], []
    for s in range(len(a)):
        diff = p - a[s]
        w = (diff[:, 0] * d[s, 0] + diff[:, 1] * d[s, 1]) + diff[:, 2] * d[s, 2]
        us = np.clip(w / (d[s] ** 2).sum(), 0.0, 1.0)
        e = diff - us[:, None] * d[s]
        dist.append((e[:, 0] ** 2 + e[:, 1] ** 2) + e[:, 2] ** 2)
        u.append(us)
    best = np.argmin(np.stack(dist, 1), 1)
    return (best + np.stack(u, 1)[np.arange(len(p)), best]) / len(a)


def test_cube_fast_decode_matches_reference():
    codec = DepthCodec()
    path = codec.path
    assert path._edges is not None  # the closed form is in use for the paper's path
    rng = np.random.default_rng(0)
    t = np.concatenate([rng.random(3000), np.arange(8) / 7, [1 - 1e-12, 1e-15]])
    on_path = path.encode(t)
    near = np.clip(on_path + rng.normal(0, 0.05, on_path.shape), 0, 1)
    q8 = np.floor(near * 255 + 0.5) / 255
    for p in (on_path, near, q8, on_path.astype(np.float32).astype(np.float64)):
        np.testing.assert_array_equal(path.decode(p), _cube_reference(p))
        # channel-first, through the codec, numpy and torch, float32 and float64
        img = np.ascontiguousarray(p.T.reshape(3, 1, -1))
        ref = _cube_reference(p).reshape(1, -1)
        np.testing.assert_array_equal(codec.decode_unit(img), ref)
        np.testing.assert_array_equal(codec.decode_unit(torch.from_numpy(img)).numpy(), ref)
        img32 = img.astype(np.float32)
        np.testing.assert_array_equal(codec.decode_unit(img32), _cube_reference(img32.reshape(3, -1).T.astype(np.float64)).reshape(1, -1))
    # Anywhere in the cube the fast path equals the general decoder bit for bit (the reference
    # above too, except where non-neighbouring edges are within ~1e-6 of a tie; there the
    # general decoder's float32 pass decides, and the fast path asks it).
    for n in (1000, 5000):
        p = rng.random((n, 3))
        for x in (p, np.floor(p * 255 + 0.5) / 255):
            direct = path._project(torch.from_numpy(x)).numpy()
            np.testing.assert_array_equal(path.decode(x), direct)
    ties = np.array([[0.5, 0.5, 0.5], [0.25, 0.5, 0.75], [0.5, 0.5, 0.25], [0.5, 0.25, 0.5]])
    np.testing.assert_array_equal(path.decode(ties), path._project(torch.from_numpy(ties)).numpy())


def _normals_reference_encode(n: torch.Tensor) -> torch.Tensor:
    n = n.to(torch.float32)
    length = torch.linalg.vector_norm(n, dim=-3, keepdim=True)
    n = torch.where(length == 0, n, n / length.clamp(min=1e-12))
    sign = torch.tensor([-1.0, 1.0, 1.0]).view(3, 1, 1)
    return (0.5 + 0.5 * sign * n).clamp(0.0, 1.0)


def _normals_reference_decode(rgb: torch.Tensor, undefined_below: float = 0.1) -> torch.Tensor:
    x = rgb.clamp(0.0, 1.0).to(torch.float32)
    n = torch.tensor([-1.0, 1.0, 1.0]).view(3, 1, 1) * (2.0 * x - 1.0)
    length = torch.linalg.vector_norm(n, dim=-3, keepdim=True)
    return torch.where(length < undefined_below, torch.zeros_like(n), n / length.clamp(min=1e-12))


def test_normals_fast_path_matches_reference():
    codec = NormalsCodec()
    gen = torch.Generator().manual_seed(0)
    n = torch.randn(3, 3, 40, 50, generator=gen, dtype=torch.float64)
    n = n / n.norm(dim=-3, keepdim=True) * (1 + 0.009 * (2 * torch.rand(3, 1, 40, 50, generator=gen) - 1))
    n[0, :, :3] = 0.0
    for x in (n, n.float()):
        assert torch.equal(codec.encode(x), _normals_reference_encode(x))
        assert np.array_equal(codec.encode(x.numpy()), _normals_reference_encode(x).numpy())
    rgb = torch.rand(2, 3, 30, 20, generator=gen)
    for x in (rgb, rgb.double(), quantize(rgb), codec.encode(n)):
        assert torch.equal(codec.decode(x), _normals_reference_decode(x))
    assert torch.equal(NormalsCodec(undefined_below=0.5).decode(rgb), _normals_reference_decode(rgb, 0.5))


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[0])
def test_torch_path_stays_in_torch(case, monkeypatch):
    """Torch in, torch out, without a numpy round trip (so CUDA tensors stay on their device)."""
    _, encode, decode, make = case
    x = make((2,), True)
    expected = decode(encode(make((2,), False)))

    def no_numpy(*args, **kwargs):
        raise AssertionError("the torch path converted to numpy")

    monkeypatch.setattr(torch.Tensor, "numpy", no_numpy)
    out = decode(encode(x))
    monkeypatch.undo()
    assert isinstance(out, torch.Tensor) and np.array_equal(out.numpy(), expected)

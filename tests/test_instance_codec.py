"""The instance codec (issue 14): one class's instances as colours on a named background, decoded
by clustering colours under a threshold. Property tests over random instance maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from banana.codecs import quantize
from banana.codecs.instance import InstanceCodec, same_partition


@st.composite
def instance_maps(draw, max_instances=8):
    """[H, W] maps of up to ``max_instances`` rectangles (overlaps: the later wins) with arbitrary
    positive ids: what a world scene's instance map of one class looks like."""
    h, w = draw(st.integers(4, 20)), draw(st.integers(4, 20))
    image = np.zeros((h, w), np.int64)
    for _ in range(draw(st.integers(0, max_instances))):
        y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        y1, x1 = draw(st.integers(y0 + 1, h)), draw(st.integers(x0 + 1, w))
        image[y0:y1, x0:x1] = draw(st.integers(1, 250))
    return image


def _ranks(image):
    """The encoder's ids: instances numbered left to right by centroid column."""
    from banana.codecs.instance import _left_to_right

    out = np.zeros_like(image)
    for rank, i in enumerate(_left_to_right(image), start=1):
        out[image == i] = rank
    return out


@settings(max_examples=60, deadline=None)
@given(image=instance_maps())
def test_round_trip_is_exact_in_float_and_8_bit(image):
    codec = InstanceCodec()
    rgb = codec.encode(image)
    assert rgb.shape == (3, *image.shape) and rgb.dtype == np.float32
    for picture in (rgb, quantize(rgb)):
        decoded = codec.decode(picture)
        assert same_partition(decoded, image)
        np.testing.assert_array_equal(decoded, _ranks(image))     # the encoder's ids, left to right


@settings(max_examples=40, deadline=None)
@given(image=instance_maps(), seed=st.integers(0, 2**31 - 1))
def test_mild_colour_noise_keeps_the_partition(image, seed):
    codec = InstanceCodec()
    rgb = codec.encode(image)
    noisy = quantize(np.clip(rgb + np.random.default_rng(seed).normal(0, 0.02, rgb.shape), 0, 1).astype(np.float32))
    assert same_partition(codec.decode(noisy), image)


def test_arbitrary_colours_are_clustered_not_matched_to_the_palette():
    """A generator picks its own colours: two instances in two near-but-distinct shades of one
    hue merge only when closer than the threshold."""
    codec = InstanceCodec(threshold=20)
    rgb = np.zeros((3, 4, 6), np.float32)
    rgb[:, :, :2] = np.array([200, 40, 40])[:, None, None] / 255       # left: a red
    rgb[:, :, 4:] = np.array([40, 40, 200])[:, None, None] / 255       # right: a blue
    rgb[:, 0, 2] = np.array([205, 45, 38]) / 255                       # a red-ish speck joins the left one
    decoded = codec.decode(rgb)
    assert decoded[0, 0] == 1 and decoded[0, 5] == 2 and decoded[0, 2] == 1 and decoded[1, 2] == 0
    assert InstanceCodec(min_pixels=2).decode(rgb[:, :1, 2:3]).max() == 0, "a lone speck is not an instance"


def test_batches_torch_and_background_colour():
    codec = InstanceCodec(background=(255, 255, 255))
    batch = np.stack([np.eye(5, dtype=np.int64) * 3, np.zeros((5, 5), np.int64)])
    rgb = codec.encode(torch.from_numpy(batch))
    assert isinstance(rgb, torch.Tensor) and rgb.shape == (2, 3, 5, 5)
    assert torch.all(rgb[1] == 1.0), "background is the named colour"
    decoded = codec.decode(rgb)
    assert isinstance(decoded, torch.Tensor) and same_partition(decoded[0].numpy(), batch[0])


@pytest.mark.parametrize("bad, message", [
    (np.full((4, 4), 0.5), "integer array"),
    (-np.ones((4, 4), np.int64), ">= 0"),
    (np.arange(40).reshape(5, 8), "at most 16"),
    (np.zeros(4, np.int64), r"\[\.\.\., H, W\]"),
])
def test_bad_instance_maps_are_refused_with_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        InstanceCodec().encode(bad)


def test_bad_settings_and_pictures_are_refused():
    with pytest.raises(ValueError, match="threshold must be in"):
        InstanceCodec(threshold=500)
    with pytest.raises(ValueError, match="max_instances"):
        InstanceCodec(max_instances=0)
    with pytest.raises(ValueError):
        InstanceCodec().decode(np.full((3, 4, 4), 2.0, np.float32))        # outside [0, 1]


def test_world_scenes_round_trip_per_class():
    from banana.world import CLASS_NAMES, render_sample

    codec = InstanceCodec()
    for index in range(4):
        scene = render_sample(0, "train", index, resolution=32, spp=1)
        for name in ("sphere", "box", "cylinder", "banana"):
            of_class = np.where(scene["semantic"] == CLASS_NAMES.index(name), scene["instance"], 0).astype(np.int64)
            assert same_partition(codec.decode(quantize(codec.encode(of_class))), of_class)

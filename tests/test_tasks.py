"""banana.tasks: the depth-codec choice travels from training targets to decoded predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from banana.tasks import DEPTH_CODECS, decode_prediction, depth_codec, encode_target


def test_depth_codecs_round_trip_and_affine_gray_is_relative():
    depth = np.linspace(1.0, 9.0, 64, dtype=np.float32).reshape(8, 8)
    metric = encode_target("depth", {"depth": depth})
    assert np.allclose(decode_prediction("depth", metric), depth, rtol=1e-4)
    gray = encode_target("depth", {"depth": depth}, depth="affine-gray")
    assert np.allclose(gray[0], gray[1]) and np.allclose(gray[1], gray[2]), "a grey ramp has R = G = B"
    relative = decode_prediction("depth", gray, depth="affine-gray")
    assert 0.0 <= relative.min() and relative.max() <= 1.0
    assert np.corrcoef(relative.ravel(), depth.ravel())[0, 1] > 0.99
    with pytest.raises(ValueError, match="unknown depth codec"):
        depth_codec("turbo")
    assert set(DEPTH_CODECS) == {"metric", "affine-gray"}


def test_training_examples_and_config_use_the_chosen_depth_codec(split):
    from banana.training import BananaExamples, TrainConfig

    with pytest.raises(ValueError, match="depth_codec"):
        TrainConfig(depth_codec="turbo")
    assert TrainConfig.from_dict({"stage": "tune"}).depth_codec == "metric"   # old config.json files load
    metric = BananaExamples(split, seed=0).vision(0, task="depth")["target"]
    gray = BananaExamples(split, seed=0, depth_codec="affine-gray").vision(0, task="depth")["target"]
    assert not torch.equal(metric, gray)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    with pytest.raises(ValueError, match="unknown depth codec"):
        BananaExamples(split, seed=0, depth_codec="turbo")


def test_pipeline_predict_decodes_with_the_depth_codec_it_is_given(one_thread):
    from banana.models import BananaGenerator
    from banana.pipeline import BananaPipeline

    pipe = BananaPipeline(BananaGenerator.from_preset("smoke", seed=0))
    images = np.zeros((1, 3, 16, 16), np.uint8)
    out = pipe.predict(images, "depth", depth_codec="affine-gray", num_inference_steps=1,
                       generator=torch.Generator().manual_seed(0))
    expected = decode_prediction("depth", out["rgb"][0], depth="affine-gray")
    assert torch.equal(out["prediction"], expected)
    assert float(out["prediction"].max()) <= 1.0

"""The tuning recipe's levers (banana.training.recipe): what each one does to the model and the
draw, that the defaults are the old recipe bit for bit, and that a tiny model learns through the
real training code with each of them ("can learn").
"""

from __future__ import annotations

import pytest
import torch

from banana.adapters import trainable_parameters
from banana.models import BananaGenerator
from banana.training import BananaExamples, BananaModule, TrainConfig, collate_examples
from banana.training.data import ExampleKey, VISION
from banana.training.recipe import LORA_PRESETS, draw_timesteps, init_condition_channels

pytestmark = pytest.mark.usefixtures("one_thread")

T = 1000


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    noisy, cond = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 3, 16, 16, generator=g)
    return noisy, cond, torch.tensor([10, 900])


def _out(gen, noisy, cond, t):
    states, mask = gen.encode_prompts(["segment the image", "estimate depth"])
    with torch.no_grad():
        return gen(noisy, t, cond, states, mask)


def test_condition_init_zeros_makes_the_output_ignore_the_condition():
    gen = BananaGenerator.from_preset("smoke", seed=0).eval()
    noisy, cond, t = _inputs()
    assert not torch.allclose(_out(gen, noisy, cond, t), _out(gen, noisy, torch.zeros_like(cond), t))
    init_condition_channels(gen.unet, "zeros")
    torch.testing.assert_close(_out(gen, noisy, cond, t), _out(gen, noisy, torch.zeros_like(cond), t))


def test_condition_init_copy_half_sees_the_condition_as_the_target():
    gen = BananaGenerator.from_preset("smoke", seed=0).eval()
    noisy, _, t = _inputs()
    init_condition_channels(gen.unet, "zeros")
    before = _out(gen, noisy, torch.zeros_like(noisy), t)      # the target half's filters alone
    init_condition_channels(gen.unet, "copy-half")
    torch.testing.assert_close(_out(gen, noisy, noisy, t), before, atol=1e-5, rtol=1e-4)


def test_condition_init_keep_and_bad_names():
    gen = BananaGenerator.from_preset("smoke", seed=0)
    weight = gen.unet.conv_in.weight.clone()
    init_condition_channels(gen.unet, "keep")
    assert torch.equal(gen.unet.conv_in.weight, weight)
    with pytest.raises(ValueError, match="condition_init"):
        init_condition_channels(gen.unet, "random")
    with pytest.raises(ValueError, match="condition_init"):
        TrainConfig(condition_init="ones")
    with pytest.raises(ValueError, match="pretrain"):
        TrainConfig(stage="pretrain", mixing_ratio=0.0, condition_init="zeros")
    with pytest.raises(ValueError, match="vision_timesteps"):
        TrainConfig(vision_timesteps="low")
    with pytest.raises(ValueError, match="lora_preset"):
        TrainConfig(lora_preset="everything")


def test_uniform_timesteps_are_the_old_draw_and_terminal_keeps_the_noise():
    kinds = ["generation", "segmentation", "depth", "generation", "normals", "generation"]
    old = torch.Generator().manual_seed(3)
    expected = torch.randint(0, T, (6,), generator=old)
    expected_noise = torch.randn(4, generator=old)
    for mode in ("uniform", "terminal"):
        rng = torch.Generator().manual_seed(3)
        steps = draw_timesteps(kinds, 0, 6, T, mode, rng, "cpu")
        assert torch.equal(torch.randn(4, generator=rng), expected_noise)   # the noise after it is unchanged
        vision = torch.tensor([k != "generation" for k in kinds])
        assert torch.equal(steps[~vision], expected[~vision])
        assert torch.equal(steps[vision], expected[vision] if mode == "uniform" else torch.full((3,), T - 1))


@pytest.mark.parametrize("mode", ["uniform", "terminal", "high"])
def test_timesteps_of_rank_slices_are_slices_of_the_global_draw(mode):
    kinds = ["generation", "depth"] * 4
    whole = draw_timesteps(kinds, 0, 8, T, mode, torch.Generator().manual_seed(5), "cpu")
    parts = [draw_timesteps(kinds[o:o + 4], o, 8, T, mode, torch.Generator().manual_seed(5), "cpu") for o in (0, 4)]
    assert torch.equal(torch.cat(parts), whole)
    assert whole.min() >= 0 and whole.max() <= T - 1


def test_high_timesteps_lean_toward_the_end():
    steps = draw_timesteps(["depth"] * 4000, 0, 4000, T, "high", torch.Generator().manual_seed(0), "cpu")
    assert 0.62 < steps.float().mean().item() / T < 0.71                # E[sqrt(u)] = 2/3


def test_lora_preset_reaches_the_full_resolution_path():
    counts = {}
    for preset in LORA_PRESETS:
        gen = BananaGenerator.from_preset("smoke", seed=0)
        BananaModule(gen, TrainConfig(tuning="lora", lora_preset=preset, profile="smoke"))
        names = [n for n in trainable_parameters(gen) if ".lora_" in n]
        counts[preset] = sum(p.numel() for n, p in trainable_parameters(gen).items() if ".lora_" in n)
        has_conv = any(".resnets." in n for n in names) and any("conv_out" in n for n in names)
        assert has_conv == (preset == "attention+conv")
    assert counts["attention+conv"] > 2 * counts["attention"]
    default = BananaGenerator.from_preset("smoke", seed=0)
    BananaModule(default, TrainConfig(tuning="lora", profile="smoke"))
    assert sum(p.numel() for n, p in trainable_parameters(default).items() if ".lora_" in n) == counts["attention"]


# --------------------------------------------------------------------------------------- can learn
def _vision_batch(split, n=4):
    examples = BananaExamples(split, seed=0, random_palette_prob=0.0, drop_text_prob=0.0, drop_image_prob=0.0,
                              drop_both_prob=0.0)
    return collate_examples([examples[ExampleKey(VISION, i % 3, 0)] for i in range(n)])


@pytest.mark.parametrize("recipe", [
    {"tuning": "full", "vision_timesteps": "terminal", "condition_init": "zeros"},
    {"tuning": "full", "vision_timesteps": "high", "condition_init": "copy-half"},
    {"tuning": "lora", "lora_preset": "attention+conv", "vision_timesteps": "terminal", "condition_init": "zeros"},
])
def test_a_tiny_model_overfits_a_few_vision_examples(split, recipe):
    """Through BananaModule.training_step and its optimiser: the loss on four fixed vision examples
    falls to a fifth, and the 1-step x0 prediction at t = T-1 moves toward the targets."""
    torch.manual_seed(0)
    gen = BananaGenerator.from_preset("smoke", seed=0)
    config = TrainConfig(stage="tune", mixing_ratio=1.0, learning_rate=3e-3, ema_decay=0.0, profile="smoke",
                         batch_size=4, lora_rank=8, **recipe)
    module = BananaModule(gen, config)
    optimizer = module.configure_optimizers()["optimizer"]
    batch = _vision_batch(split)

    def x0_error():
        states, mask = gen.encode_prompts(batch["prompt"])
        noise = torch.randn(batch["target"].shape, generator=torch.Generator().manual_seed(9))
        t = torch.full((4,), T - 1)
        noisy = module.noise_scheduler.add_noise(batch["target"], noise, t)
        with torch.no_grad():
            return (gen(noisy, t, batch["condition"], states, mask) - batch["target"]).pow(2).mean().item()

    start_error = x0_error()
    losses = []
    for step in range(80):
        loss = module.training_step(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.2 * sum(losses[:5]) / 5, losses[::10]
    assert x0_error() < 0.5 * start_error

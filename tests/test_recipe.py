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
def _vision_batch(split, n=4, **options):
    options = {"random_palette_prob": 0.0, **options}
    examples = BananaExamples(split, seed=0, drop_text_prob=0.0, drop_image_prob=0.0, drop_both_prob=0.0, **options)
    tasks = ("segmentation", "depth", "normals")             # every task in the handful
    return collate_examples([examples.vision(i % 3, 0, task=tasks[i % 3]) for i in range(n)])


@pytest.mark.parametrize("recipe", [
    {"tuning": "full", "vision_timesteps": "terminal", "condition_init": "zeros"},
    {"tuning": "full", "vision_timesteps": "high", "condition_init": "copy-half"},
    {"tuning": "lora", "lora_preset": "attention+conv", "vision_timesteps": "terminal", "condition_init": "zeros"},
    {"tuning": "full", "vision_timesteps": "terminal", "condition_init": "zeros", "loss_normalisation": "per-task"},
    {"tuning": "full", "vision_timesteps": "terminal", "condition_init": "zeros", "task_loss_weight": 0.1},
    {"tuning": "full", "vision_timesteps": "terminal", "condition_init": "zeros", "binary_prompt_prob": 1.0,
     "absent_class_prob": 0.25, "random_palette_prob": 1.0},
], ids=["terminal-zeros", "high-copy-half", "lora-conv", "per-task-loss", "task-space-loss", "binary-prompts"])
def test_a_tiny_model_overfits_a_few_vision_examples(split, recipe, fit_steps):
    """Through BananaModule.training_step and its optimiser: the loss on four fixed vision examples
    falls to a fifth, and the 1-step x0 prediction at t = T-1 moves toward the targets."""
    torch.manual_seed(0)
    gen = BananaGenerator.from_preset("smoke", seed=0)
    config = TrainConfig(stage="tune", mixing_ratio=1.0, learning_rate=3e-3, ema_decay=0.0, profile="smoke",
                         batch_size=4, lora_rank=8, **recipe)
    module = BananaModule(gen, config)
    palette_options = ("binary_prompt_prob", "absent_class_prob", "random_palette_prob")
    batch = _vision_batch(split, **{k: v for k, v in recipe.items() if k in palette_options})

    def x0_error():
        states, mask = gen.encode_prompts(batch["prompt"])
        noise = torch.randn(batch["target"].shape, generator=torch.Generator().manual_seed(9))
        t = torch.full((4,), T - 1)
        noisy = module.noise_scheduler.add_noise(batch["target"], noise, t)
        with torch.no_grad():
            return (gen(noisy, t, batch["condition"], states, mask) - batch["target"]).pow(2).mean().item()

    start_error = x0_error()
    losses = fit_steps(module, batch, 80)
    if recipe.get("loss_normalisation") != "per-task":     # that loss is 1 by construction: judge x0 only
        assert sum(losses[-5:]) / 5 < 0.2 * sum(losses[:5]) / 5, losses[::10]
    # "high" spreads its noise levels below T - 1, so its one-step answer at T - 1 improves less
    assert x0_error() < (0.6 if recipe["vision_timesteps"] == "high" else 0.5) * start_error


# --------------------------------------------------------------------------------------- losses
def test_per_task_normalisation_gives_every_kind_the_same_gradient_scale():
    from banana.training.losses import combine_losses

    scale = torch.tensor([1.0, 1.0, 100.0, 100.0], requires_grad=True)
    per_example = scale * torch.tensor([0.01, 0.03, 0.5, 0.7])       # two kinds, losses 50x apart
    kinds = ["segmentation", "segmentation", "depth", "depth"]
    grad, = torch.autograd.grad(combine_losses(per_example, kinds, "per-task"), scale)
    seg, depth = grad[:2].sum(), grad[2:].sum()                       # d/d log(scale) of each kind's term
    assert float(seg * 1.0) == pytest.approx(float(depth * 100.0), rel=1e-5)
    assert float(combine_losses(per_example, kinds, "batch").detach()) == pytest.approx(float(per_example.detach().mean()))
    with pytest.raises(ValueError, match="loss_normalisation"):
        combine_losses(per_example, kinds, "median")


def test_task_space_loss_is_zero_at_the_target_and_grows_away_from_it(split):
    from banana.training.losses import task_space_loss

    examples = BananaExamples(split, seed=0, random_palette_prob=0.0)
    batch = collate_examples([examples.vision(i, 0, task=task) for i, task in
                              enumerate(["segmentation", "depth", "normals"] * 2)])
    kinds = batch["kind"]
    assert set(kinds) == {"segmentation", "depth", "normals"}
    target = batch["target"]
    at_target = task_space_loss(target, target, kinds)
    assert at_target.abs().max() < 1e-3              # cross-entropy at a finite temperature is not quite 0
    noisy = (target + 0.3 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    assert (task_space_loss(noisy, target, kinds) > 10 * at_target.abs() + 1e-3).all()
    assert task_space_loss(noisy, target, ["generation"] * 6).abs().max() == 0


def test_the_soft_walk_decode_agrees_with_the_codec_on_the_walk():
    from banana.codecs.depth import CUBE_PATH_VERTICES, cube_path
    from banana.training.losses import soft_walk_parameter

    t = torch.linspace(0.01, 0.99, 97, dtype=torch.float64)
    rgb = cube_path().encode(t)
    soft = soft_walk_parameter(rgb, torch.tensor(CUBE_PATH_VERTICES, dtype=torch.float64))
    assert torch.allclose(soft, t, atol=5e-3)        # near a vertex the two segments blend: < 0.5% of the walk


def test_task_loss_needs_the_metric_depth_walk():
    with pytest.raises(ValueError, match="depth_codec='metric'"):
        TrainConfig(task_loss_weight=0.1, depth_codec="affine-gray")
    with pytest.raises(ValueError, match="task_loss_weight"):
        TrainConfig(task_loss_weight=-1.0)

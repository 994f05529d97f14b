"""The instruction-tuning recipe's levers, each one :class:`~banana.training.TrainConfig` field and
one ablation axis (issue 12). Every default is today's recipe, so a run that names none of them
is the run it always was.

* ``condition_init`` - what the condition channels of ``conv_in`` hold when tuning starts.
  Pretraining always feeds a zero condition, so those input channels never receive a gradient
  and stay at their random init; tuning then starts by injecting a random projection of the
  image at full strength. ``"zeros"`` (InstructPix2Pix) makes the UNet's output independent of
  the condition at step 0; ``"copy-half"`` (Marigold) gives the condition the target channels'
  filters and halves both, so an image and its noisy copy look alike to the first layer.
  ``"keep"``: leave them as they are (the recipe before this option).
* ``vision_timesteps`` - the noise levels of *vision* examples (generation examples always draw
  uniform ``t``). ``"uniform"`` over ``[0, T)``; ``"terminal"``: ``t = T - 1`` (Lotus, E2E-FT: at
  low noise the noisy target gives the answer away, at ``T - 1`` the model must read the image;
  with the x0 target this is a single-step predictor); ``"high"``: density rising linearly in
  ``t`` (``t = floor(T * sqrt(u))``), a middle way.
* ``lora_preset`` - which UNet layers get LoRA: ``"attention"`` (``to_q/k/v/out.0``: at the cpu
  preset's 32x32 only the attention levels adapt, every ResNet block and ``conv_out`` stay frozen)
  or ``"attention+conv"`` (also every ResNet convolution, the shortcuts and ``conv_out``: the
  full-resolution path adapts too). ``conv_in`` and the text encoder train in both.

Named recipes (:data:`RECIPES`) bundle the levers. ``"paper"`` is the paper's recipe as banana
first implemented it (the :class:`~banana.training.TrainConfig` defaults with LoRA at lr 1e-3: old
run folders mean what they meant). ``"best"`` (:data:`BEST_RECIPE`) is the one chosen on val, and
what notebooks 04-07, ``banana tune`` and :func:`banana.profiles.tuning_config` use by default.
"""

from __future__ import annotations

import torch

from banana.adapters import DEFAULT_LORA_TARGETS

__all__ = ["CONDITION_INITS", "VISION_TIMESTEPS", "LORA_PRESETS", "BEST_RECIPE", "RECIPES", "init_condition_channels",
           "draw_timesteps"]

CONDITION_INITS = ("keep", "zeros", "copy-half")
VISION_TIMESTEPS = ("uniform", "terminal", "high")
#: LoRA target module names (peft matches them as suffixes of the UNet's module names).
LORA_PRESETS: dict[str, tuple[str, ...]] = {
    "attention": DEFAULT_LORA_TARGETS,
    "attention+conv": DEFAULT_LORA_TARGETS + ("conv1", "conv2", "conv_shortcut", "conv_out"),
}

#: The recipe chosen on val (issue 12; 48 val images, 1-step decoding, 6,400 vision images):
#: terminal timesteps lifted val mIoU from 0.220 to 0.357 and normals from 27.1 to 21.8 deg; LoRA
#: on attention + convolutions scored 0.345 (within noise, below full tuning); 90% random palettes
#: learned no segmentation at all, so every prompt names the canonical palette; at lr 3e-4 and
#: without EMA, ratio-0 tuning keeps the held-out generation loss within noise of the base
#: (+0.8% [-0.3, +1.8], where lr 1e-3 gave +9.4%). The task-space loss and per-task normalisation
#: were measured on val too (``reports/recipe_levers``) and are not adopted.
BEST_RECIPE: dict[str, object] = {"tuning": "full", "vision_timesteps": "terminal", "condition_init": "zeros",
                                  "learning_rate": 3e-4, "random_palette_prob": 0.0, "ema_decay": 0.0}
#: name -> TrainConfig overrides of a tuning run.
RECIPES: dict[str, dict[str, object]] = {"paper": {"tuning": "lora", "learning_rate": 1e-3}, "best": BEST_RECIPE}


def init_condition_channels(unet, mode: str) -> None:
    """Set the condition half of ``unet.conv_in`` (its last ``in_channels // 2`` inputs) in place.

    ``"zeros"``: zero them (the output then ignores the condition until tuning teaches it);
    ``"copy-half"``: both halves become half the target half's filters; ``"keep"``: no change.
    """
    if mode not in CONDITION_INITS:
        raise ValueError(f"condition_init must be one of {CONDITION_INITS}, got {mode!r}")
    if mode == "keep":
        return
    weight = unet.conv_in.weight
    if weight.shape[1] % 2:
        raise ValueError(f"conv_in has {weight.shape[1]} input channels: expected target + condition halves")
    half = weight.shape[1] // 2
    with torch.no_grad():
        if mode == "zeros":
            weight[:, half:].zero_()
        else:
            target = weight[:, :half].clone()
            weight[:, :half].copy_(target * 0.5)
            weight[:, half:].copy_(target * 0.5)


def draw_timesteps(kinds, offset: int, total: int, num_train_timesteps: int, mode: str,
                   generator: torch.Generator, device) -> torch.Tensor:
    """Timesteps of rows ``offset .. offset + len(kinds)`` of a global batch of ``total`` rows
    (``kinds``: those rows' example kinds), drawn for the whole global batch and sliced, so a rank
    gets what one device drawing the whole batch would have given it.

    Every mode draws the same uniform integers first, so ``"uniform"`` is bitwise the recipe's
    old draw, and so is the noise drawn after it under ``"terminal"``; ``"high"`` draws one more
    uniform number per row (``t = floor(T * sqrt(u))`` for the vision rows).
    """
    if mode not in VISION_TIMESTEPS:
        raise ValueError(f"vision_timesteps must be one of {VISION_TIMESTEPS}, got {mode!r}")
    rows = slice(offset, offset + len(kinds))
    steps = torch.randint(0, num_train_timesteps, (total,), generator=generator, device=device)[rows]
    if mode == "uniform":
        return steps
    vision = torch.as_tensor([str(k) != "generation" for k in kinds], device=device)
    if mode == "terminal":
        replaced = torch.full_like(steps, num_train_timesteps - 1)
    else:
        u = torch.rand((total,), generator=generator, device=device)[rows]
        replaced = (num_train_timesteps * u.sqrt()).long().clamp_(max=num_train_timesteps - 1)
    return torch.where(vision, replaced, steps)

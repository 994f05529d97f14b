"""Sampling's building blocks, below :mod:`banana.pipeline`: the samplers (:data:`SCHEDULERS`,
:func:`build_scheduler`, all built from the generator's training noise schedule), the saved
sampling defaults (:class:`SamplingDefaults`) and the validation of what a caller passes in
(:func:`prepare_images`, :func:`prepare_prompts`, :func:`check_positive_int`,
:func:`check_guidance`). Why the samplers look the way they do: :mod:`banana.pipeline`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from banana.config import SerializableConfig
from banana.models.pixel import build_noise_scheduler

__all__ = ["SCHEDULERS", "build_scheduler", "scheduler_name", "fresh_copy", "load_scheduler", "SamplingDefaults",
           "check_positive_int", "check_guidance", "prepare_images", "prepare_prompts"]


# --------------------------------------------------------------------------- samplers
def _sampler_overrides(training_config: Mapping) -> dict:
    """What every sampler inherits from (or forces over) the training schedule.

    ``prediction_type`` must match what the UNet was trained to output; ``trailing`` spacing
    is what makes 1-4 step sampling work (see the module docstring)."""
    return {"prediction_type": training_config["prediction_type"], "timestep_spacing": "trailing"}


def _ddim(training_config: Mapping) -> DDIMScheduler:
    # clip_sample=False: clipping the x0 estimate at every step biases few-step sampling;
    # the pipeline clamps only the final image. set_alpha_to_one: the last step lands on x0.
    return DDIMScheduler.from_config(training_config, clip_sample=False, set_alpha_to_one=True,
                                     **_sampler_overrides(training_config))


def _dpmpp(training_config: Mapping) -> DPMSolverMultistepScheduler:
    # Multistep DPM-Solver++ (2nd order, data-prediction form): the usual 10-25 step sampler.
    # It falls back to first order on the last steps when few steps are used (lower_order_final).
    return DPMSolverMultistepScheduler.from_config(training_config, algorithm_type="dpmsolver++",
                                                   **_sampler_overrides(training_config))


def _euler(training_config: Mapping) -> EulerDiscreteScheduler:
    # Euler works in the "sigma" parameterisation: x = x0 + sigma * noise. Its starting noise is
    # therefore scaled by init_noise_sigma (huge for the squaredcos schedule's last timestep) and
    # its UNet input must be rescaled by scale_model_input; the sampling loop does both.
    # Cost of that huge sigma (~2e4 at t=999): float32 state loses ~1e-3 absolute precision, so
    # Euler differs from DDIM by up to ~0.003 (in [0, 1]) where they should agree exactly.
    return EulerDiscreteScheduler.from_config(training_config, **_sampler_overrides(training_config))


#: Sampler name -> constructor taking the generator's *training* noise-schedule config
#: (``build_noise_scheduler(config).config``) and returning a fresh diffusers scheduler.
SCHEDULERS: dict[str, Callable[[Mapping], SchedulerMixin]] = {
    "ddim": _ddim,
    "dpm++": _dpmpp,
    "euler": _euler,
}
_SCHEDULER_NAMES = {DDIMScheduler: "ddim", DPMSolverMultistepScheduler: "dpm++", EulerDiscreteScheduler: "euler"}


def build_scheduler(name: str, generator_config) -> SchedulerMixin:
    """The sampler ``name`` (a key of :data:`SCHEDULERS`) for a generator's
    :class:`~banana.models.GeneratorConfig`."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose from {sorted(SCHEDULERS)}")
    return SCHEDULERS[name](build_noise_scheduler(generator_config).config)


def scheduler_name(scheduler: SchedulerMixin) -> str:
    return _SCHEDULER_NAMES.get(type(scheduler), type(scheduler).__name__)


def fresh_copy(scheduler: SchedulerMixin) -> SchedulerMixin:
    """A new scheduler with the same config. Schedulers are stateful (step index, the
    multistep solver's history), so each sampling run gets its own instance: calls never leak
    state into each other, and the pipeline's own instance is never mutated."""
    return type(scheduler).from_config(scheduler.config)


# --------------------------------------------------------------------------- defaults
@dataclass(frozen=True)
class SamplingDefaults(SerializableConfig):
    """Per-pipeline defaults for the sampling arguments (a call's explicit argument wins).

    ``max_batch_size`` caps the rows of one UNet call (inputs x ensemble members x guidance
    branches); ``None`` = everything in one call. Lower it when memory runs out: the result does
    not depend on it beyond float rounding, because all noise is drawn before chunking.
    """

    num_inference_steps: int = 10
    text_guidance: float = 1.0
    image_guidance: float = 1.0
    ensemble_size: int = 1
    max_batch_size: int | None = None

    def __post_init__(self):
        check_positive_int(self.num_inference_steps, "num_inference_steps")
        check_positive_int(self.ensemble_size, "ensemble_size")
        check_guidance(self.text_guidance, "text_guidance")
        check_guidance(self.image_guidance, "image_guidance")
        if self.max_batch_size is not None:
            check_positive_int(self.max_batch_size, "max_batch_size")



# --------------------------------------------------------------------------- validation helpers
def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_guidance(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def prepare_images(images, resolution: int) -> torch.Tensor:
    """Any accepted image input -> float32 ``[B, 3, H, W]`` in [0, 1] (CPU or its device).

    Accepted: torch tensors or numpy arrays, ``uint8`` (0..255) or floating point in [0, 1],
    ``[B, 3, H, W]`` or one image ``[3, H, W]``. Anything else is refused loudly: a float image
    in 0..255, a channel-last array or a NaN would otherwise become a plausible-looking but
    meaningless condition, and the model's answer would be silently wrong.
    """
    if isinstance(images, np.ndarray):
        if images.dtype == object:
            raise ValueError("images must be a numeric array, got dtype=object")
        images = torch.from_numpy(np.ascontiguousarray(images))
    elif not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor or numpy.ndarray [B, 3, H, W], got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(0)                    # one image -> a batch of one
    if images.ndim != 4 or images.shape[1] != 3:
        hint = (" (it looks channel-last: use .permute(0, 3, 1, 2) / np.moveaxis(x, -1, 1))"
                if images.ndim in (3, 4) and images.shape[-1] == 3 else "")
        raise ValueError(f"images must have shape [B, 3, H, W] (or [3, H, W]), got {tuple(images.shape)}{hint}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0)")
    if tuple(images.shape[-2:]) != (resolution, resolution):
        raise ValueError(f"images must be {resolution}x{resolution} (the generator's resolution), got "
                         f"{images.shape[-2]}x{images.shape[-1]}; resize them first")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 (0..255) or floating point in [0, 1], got dtype {images.dtype}")
    images = images.float()
    if torch.isnan(images).any():
        raise ValueError("images contain NaN")
    low, high = float(images.min()), float(images.max())
    if low < -1e-6 or high > 1 + 1e-6:               # tolerate resampling overshoot of a few ulps
        hint = " (looks like 0..255: divide by 255 or pass uint8)" if high > 1.5 else ""
        raise ValueError(f"float images must have values in [0, 1], got min {low:.4g}, max {high:.4g}{hint}")
    return images.clamp(0.0, 1.0)


def prepare_prompts(prompts, batch_size: int | None) -> list[str]:
    """``str`` (broadcast to the batch) or a list with one prompt per image."""
    if isinstance(prompts, str):
        return [prompts] * (batch_size or 1)
    if not isinstance(prompts, Sequence) or isinstance(prompts, bytes):
        raise ValueError(f"prompts must be a string or a list of strings, got {type(prompts).__name__}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is an empty list")
    bad = [p for p in prompts if not isinstance(p, str)]
    if bad:
        raise ValueError(f"prompts must be strings, got {type(bad[0]).__name__} ({bad[0]!r})")
    if batch_size is not None and len(prompts) != batch_size:
        raise ValueError(f"got {len(prompts)} prompts for a batch of {batch_size} images: pass one string "
                         f"(used for every image) or exactly one prompt per image")
    return prompts


def load_scheduler(folder: Path) -> SchedulerMixin:
    """A saved sampler, refusing classes outside diffusers' schedulers (the class name is data)."""
    import diffusers

    name = json.loads((folder / "scheduler_config.json").read_text()).get("_class_name", "")
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ValueError(f"{folder} holds an unknown scheduler class {name!r}")
    return cls.from_pretrained(folder)

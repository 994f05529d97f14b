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
from banana.models.images import prepare_images  # noqa: F401  (re-exported: the pipeline's input check)
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

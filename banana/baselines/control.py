"""The no-generative-pretraining control: the generalist's recipe, unchanged, from random weights
(:func:`control_config`, :func:`train_control`), and the trainable set both must share
(:func:`trainable_parameter_names`). Why, and the LoRA generalist's two controls: :mod:`banana.baselines`."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from banana.models.config import GENERATOR_PRESETS, GeneratorConfig
from banana.models.pixel import BananaGenerator
from banana.training.module import TUNINGS, TrainConfig
from banana.training.run import read_config, train

CONTROL_FILE = "control.json"


def trainable_parameter_names(module: nn.Module) -> set[str]:
    """The names of the parameters that train.

    A training module (:class:`~banana.training.module.BananaModule`, :class:`SpecialistModule`):
    the keys of its ``trainable`` dict, i.e. exactly what its optimiser updates (names relative to
    the generator / specialist). Any other module (a generator after :func:`banana.adapters.add_lora`,
    a specialist): its parameters with ``requires_grad``. The control's claim "same trainable set
    as the generalist" is equality of this set (and so of its parameter count).
    """
    trainable = getattr(module, "trainable", None)
    if isinstance(trainable, Mapping):
        return set(trainable)
    return {name for name, p in module.named_parameters() if p.requires_grad}


def _base_generator_config(base) -> tuple[GeneratorConfig, str | None]:
    if isinstance(base, BananaGenerator):
        return base.config, None
    path = Path(base) / "generator_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {base} is not a saved BananaGenerator")
    return GeneratorConfig.from_dict(json.loads(path.read_text())), str(Path(base).resolve())


def _pretraining_seed(base_path: str | None) -> int | None:
    """The seed of the pretraining run that produced ``base_path`` (``<run>/model``), if it is one."""
    if base_path is None:
        return None
    try:
        train_config, _ = read_config(Path(base_path).parent)
    except (FileNotFoundError, ValueError, KeyError):
        return None
    return train_config.seed if train_config.stage == "pretrain" and train_config.base_model is None else None


def control_config(tune_config: TrainConfig, base=None, init_seed: int | None = None, tuning: str | None = None
                   ) -> tuple[TrainConfig, BananaGenerator]:
    """The no-generative-pretraining control of a tuning recipe: ``(config, fresh generator)``.

    The generator has the base's exact :class:`GeneratorConfig` (architecture, vocabulary,
    prediction type) but freshly initialised weights; the config is ``tune_config`` with
    ``base_model=None`` (and ``tuning`` when given), nothing else changed. Train it with the
    unchanged :func:`banana.training.train` (or use :func:`train_control`, which also saves the
    initial weights so the run can be reloaded and resumed).

    ``tuning``: ``None`` (default) keeps the generalist's own mode, so the control trains exactly
    its parameter set (LoRA on the random init for a LoRA generalist, every weight for a full one);
    ``"full"`` gives a LoRA generalist its fully tuned control (see the module docstring, 2.).

    ``base``: the pretrained base (directory or :class:`BananaGenerator`; default
    ``tune_config.base_model``; with neither, the ``tune_config.profile`` preset).
    ``init_seed``: the initial weights' seed. Default: the seed of the pretraining run that made
    ``base`` when ``base`` is a ``<run>/model`` directory of one, so the control starts from **the
    very weights pretraining started from** (control = base minus its pretraining); else
    ``tune_config.seed``. The caller's global torch RNG is left as it was.
    """
    if tune_config.stage != "tune":
        raise ValueError(f"the control replaces the base of a tuning run; got stage={tune_config.stage!r}")
    tuning = tune_config.tuning if tuning is None else tuning
    if tuning not in TUNINGS:
        raise ValueError(f"tuning must be None (the generalist's own, {tune_config.tuning!r}) or one of {TUNINGS}, "
                         f"got {tuning!r}")
    base = base if base is not None else tune_config.base_model
    if base is None:
        generator_config, base_path = GENERATOR_PRESETS[tune_config.profile], None
    else:
        generator_config, base_path = _base_generator_config(base)
    if init_seed is None:
        init_seed = _pretraining_seed(base_path)
    if init_seed is None:
        init_seed = tune_config.seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        generator = BananaGenerator(generator_config)
    return dataclasses.replace(tune_config, base_model=None, tuning=tuning), generator


def train_control(tune_config: TrainConfig, run_dir: str | Path, world_dir: str | Path | None = None, base=None,
                  init_seed: int | None = None, tuning: str | None = None, **train_kwargs) -> Path:
    """Train the no-pretraining control of ``tune_config`` in ``run_dir`` with :func:`banana.training.train`.

    The fresh generator of :func:`control_config` is saved to ``run_dir/init_model`` first and
    passed to ``train`` as the "base", so ``config.json`` records the random init as
    ``base_model`` (honest provenance), LoRA controls can be reloaded (``load_run``), and a resumed
    run finds the same starting point. ``control.json`` records the base it replaces, the seed and
    the tuning mode (``tuning`` / ``generalist_tuning``). ``tuning``: as in :func:`control_config`
    (``"full"``: the fully tuned control of a LoRA generalist; give it its own ``run_dir``).
    """
    run_dir = Path(run_dir)
    control, generator = control_config(tune_config, base=base, init_seed=init_seed, tuning=tuning)
    if (run_dir / "config.json").is_file():
        # checked before control.json is rewritten: train() would refuse to resume it anyway
        stored = read_config(run_dir)[0]           # (a non-training config.json fails here, not later)
        if stored.tuning != control.tuning:
            raise ValueError(f"{run_dir} holds a control with tuning={stored.tuning!r}, this one is "
                             f"tuning={control.tuning!r}: use another run directory")
    init_dir = run_dir / "init_model"
    if (init_dir / "generator_config.json").is_file():
        saved = BananaGenerator.from_pretrained(init_dir)
        same = saved.config == generator.config and all(
            torch.equal(a, b) for a, b in zip(saved.state_dict().values(), generator.state_dict().values()))
        if not same:
            raise ValueError(f"{init_dir} holds another initialisation than this control's: use another run directory")
    else:
        generator.save_pretrained(init_dir)
    replaced = base if base is not None else tune_config.base_model
    replaced_path = None if replaced is None or isinstance(replaced, BananaGenerator) else str(Path(replaced).resolve())
    if replaced_path is not None:
        _warn_if_untrained_base(replaced_path, generator)
    (run_dir / CONTROL_FILE).write_text(json.dumps(
        {"replaces_base": replaced_path, "init_seed": _resolved_seed(tune_config, replaced_path, init_seed),
         "init_model": str(init_dir.resolve()), "tuning": control.tuning, "generalist_tuning": tune_config.tuning},
        indent=1) + "\n")
    return train(control, run_dir, generator=init_dir, world_dir=world_dir, **train_kwargs)


def _resolved_seed(tune_config: TrainConfig, base_path: str | None, init_seed: int | None) -> int:
    if init_seed is not None:
        return init_seed
    seed = _pretraining_seed(base_path)
    return tune_config.seed if seed is None else seed


def _warn_if_untrained_base(base_path: str, generator: BananaGenerator) -> None:
    """A control identical to its base means the base was never trained (or the seeds collide)."""
    from safetensors.torch import load_file

    weights = Path(base_path) / "unet" / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        return
    stored = load_file(str(weights))
    current = generator.unet.state_dict()
    if stored.keys() == current.keys() and all(torch.equal(stored[k], current[k]) for k in stored):
        warnings.warn(f"the control's initial weights equal the base at {base_path}: the base looks untrained, so "
                      "this control isolates nothing (pass init_seed= to draw other weights)", stacklevel=3)

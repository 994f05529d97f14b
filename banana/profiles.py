"""Per-notebook sizes for the three profiles.

Every notebook has a ``profile`` parameter (``smoke`` | ``cpu`` | ``gpu``) and a few size
parameters that default to ``None``; ``None`` means "take this profile's value". Keeping the
table here (not in the notebooks) gives one place to read what each profile runs, and keeps
the notebooks' parameters cells flat literals, as papermill needs.

* ``smoke``: seconds; what the tests execute.
* ``cpu``: the committed reports; ``banana reproduce`` (notebooks 01-07) within 20 minutes on a
  2-core laptop, which is what sizes these numbers.
* ``gpu``: sized for one H100-class card.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from banana.paths import PROFILES

NOTEBOOK_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "01_task_as_image": {
        "smoke": {"n_scenes": 4},
        "cpu": {"n_scenes": 64},
        "gpu": {"n_scenes": 256},
    },
    "02_synthetic_world": {
        "smoke": {"n_preview": 2},
        "cpu": {"n_preview": 4},
        "gpu": {"n_preview": 6},
    },
    "03_pretrain_generator": {
        "smoke": {"max_steps": 20, "batch_size": 16},
        "cpu": {"max_steps": 1500, "batch_size": 16},
        "gpu": {"max_steps": 20000, "batch_size": 64},
    },
    "05_evaluate": {
        "smoke": {"n_eval": 8, "sampling_steps": 2, "n_retention": 4},
        "cpu": {"n_eval": 48, "sampling_steps": 10, "n_retention": 16},
        "gpu": {"n_eval": 500, "sampling_steps": 10, "n_retention": 256},
    },
    "06_ablate_mixing_ratio": {
        "smoke": {"max_steps": 4, "n_eval": 4, "n_retention": 4, "sampling_steps": 2},
        "cpu": {"max_steps": 32, "n_eval": 16, "n_retention": 16, "sampling_steps": 10},
        "gpu": {"max_steps": 4000, "n_eval": 200, "n_retention": 128, "sampling_steps": 10},
    },
    "07_ablate_decoding": {
        "smoke": {"n_eval": 4},
        "cpu": {"n_eval": 16},
        "gpu": {"n_eval": 200},
    },
    "04_instruction_tune": {
        "smoke": {"max_steps": 10, "batch_size": 16, "n_eval": 8, "sampling_steps": 2},
        "cpu": {"max_steps": 150, "batch_size": 16, "n_eval": 32, "sampling_steps": 10},
        "gpu": {"max_steps": 10000, "batch_size": 64, "n_eval": 500, "sampling_steps": 10},
    },
}


def notebook_settings(notebook: str, profile: str, **given: Any) -> SimpleNamespace:
    """Resolve a notebook's size parameters: values given as ``None`` take the profile's.

    Also adds ``world``, the profile's :class:`banana.world.WorldConfig`, since every
    notebook reads the embedded world at that profile's size.
    """
    from banana.world import WORLD_PRESETS

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {PROFILES}")
    if notebook not in NOTEBOOK_SETTINGS:
        raise ValueError(f"no settings for notebook {notebook!r}; known: {sorted(NOTEBOOK_SETTINGS)}")
    defaults = NOTEBOOK_SETTINGS[notebook][profile]
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"{notebook} has no size parameter(s) {sorted(unknown)}; known: {sorted(defaults)}")
    resolved = {name: (given[name] if given.get(name) is not None else value) for name, value in defaults.items()}
    return SimpleNamespace(profile=profile, world=WORLD_PRESETS[profile], **resolved)


def base_generator_dir(profile: str) -> Path:
    """The base generator every tuning notebook starts from: the shipped one for ``profile``
    (``data/generators/base-PROFILE``) when it exists, else notebook 03's run."""
    from banana.paths import REPO_ROOT
    from banana.training.publish import shipped_generator_dir

    shipped = Path(shipped_generator_dir(profile))
    return shipped if shipped.is_dir() else REPO_ROOT / "runs" / f"pretrain-{profile}" / "model"


def tuned_run_dir(profile: str, tuning: str = "lora", mixing_ratio: float = 0.5) -> Path:
    """Notebook 04's default run directory (``runs/tune-PROFILE-TUNING-rRATIO``)."""
    from banana.paths import REPO_ROOT

    return REPO_ROOT / "runs" / f"tune-{profile}-{tuning}-r{mixing_ratio}"


def tuning_config(profile: str, tuning: str = "lora", mixing_ratio: float = 0.5, seed: int = 0,
                  learning_rate: float = 1e-3, max_steps: int | None = None):
    """The instruction-tuning :class:`~banana.training.TrainConfig` of notebook 04 (and of every
    later notebook that needs the same tuned model, so they agree on what "the" run is)."""
    from banana.training import TrainConfig

    settings = notebook_settings("04_instruction_tune", profile, max_steps=max_steps)
    return TrainConfig(stage="tune", tuning=tuning, mixing_ratio=mixing_ratio, profile=profile, seed=seed,
                       max_steps=settings.max_steps, batch_size=settings.batch_size, learning_rate=learning_rate,
                       checkpoint_every=max(1, settings.max_steps // 5))

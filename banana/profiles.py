"""Per-notebook sizes for the three profiles.

Every notebook has a ``profile`` parameter (``smoke`` | ``cpu`` | ``gpu``) and a few size
parameters that default to ``None``; ``None`` means "take this profile's value". Keeping the
table here (not in the notebooks) gives one place to read what each profile runs, and keeps
the notebooks' parameters cells flat literals, as papermill needs.

* ``smoke``: seconds; what the tests execute.
* ``cpu``: the committed reports; ``banana reproduce`` (notebooks 01-07) within 20 minutes on a
  2-core laptop, which is what sizes these numbers.
* ``gpu``: sized for one H100-class card.

:func:`notebook_setup` is every notebook's setup cell in one call: the profile's settings, the
resolved folders (world, base generator, runs, reports) and the world itself.
"""

from __future__ import annotations

import dataclasses
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
        "smoke": {"n_eval": 8, "sampling_steps": 1, "n_retention": 4, "generation_steps": 2},
        "cpu": {"n_eval": 48, "sampling_steps": 1, "n_retention": 16, "generation_steps": 10},
        "gpu": {"n_eval": 500, "sampling_steps": 1, "n_retention": 256, "generation_steps": 25},
    },
    "06_ablate_mixing_ratio": {
        "smoke": {"max_steps": 4, "n_eval": 4, "n_retention": 4, "sampling_steps": 1},
        "cpu": {"max_steps": 32, "n_eval": 16, "n_retention": 16, "sampling_steps": 1},
        "gpu": {"max_steps": 4000, "n_eval": 200, "n_retention": 128, "sampling_steps": 1},
    },
    "07_ablate_decoding": {
        "smoke": {"n_eval": 4},
        "cpu": {"n_eval": 16},
        "gpu": {"n_eval": 200},
    },
    "08_learning_curves": {
        "smoke": {"max_steps": 3, "batch_size": 4, "n_eval": 4},
        "cpu": {"max_steps": 150, "batch_size": 16, "n_eval": 200},
        "gpu": {"max_steps": 4000, "batch_size": 64, "n_eval": 1000},
    },
    "04_instruction_tune": {
        "smoke": {"max_steps": 10, "batch_size": 16, "n_eval": 8, "sampling_steps": 1},
        "cpu": {"max_steps": 150, "batch_size": 16, "n_eval": 32, "sampling_steps": 1},
        "gpu": {"max_steps": 10000, "batch_size": 64, "n_eval": 500, "sampling_steps": 1},
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
    from banana.paths import RUNS_DIR, pretrain_run_name, shipped_generator_dir

    shipped = shipped_generator_dir(profile)
    return shipped if shipped.is_dir() else RUNS_DIR / pretrain_run_name(profile) / "model"


def tuned_run_dir(profile: str, tuning: str = "full", mixing_ratio: float = 0.5, recipe: str = "best") -> Path:
    """Notebook 04's default run directory (``runs/tune-PROFILE-RECIPE-TUNING-rRATIO``)."""
    from banana.paths import RUNS_DIR, tune_run_name

    return RUNS_DIR / tune_run_name(profile, tuning, mixing_ratio, recipe)


def tuning_config(profile: str, tuning: str | None = None, mixing_ratio: float = 0.5, seed: int = 0,
                  learning_rate: float | None = None, max_steps: int | None = None, recipe: str = "best"):
    """The instruction-tuning :class:`~banana.training.TrainConfig` of notebook 04 (and of every
    later notebook that needs the same tuned model, so they agree on what "the" run is).

    ``recipe`` names the levers (:data:`banana.training.recipe.RECIPES`: ``"best"``, chosen on val,
    or ``"paper"``); ``tuning`` and ``learning_rate`` override the recipe's when given."""
    from banana.training import TrainConfig
    from banana.training.recipe import RECIPES

    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose from {sorted(RECIPES)}")
    chosen = dict(RECIPES[recipe])
    chosen.update({k: v for k, v in (("tuning", tuning), ("learning_rate", learning_rate)) if v is not None})
    settings = notebook_settings("04_instruction_tune", profile, max_steps=max_steps)
    return TrainConfig(stage="tune", mixing_ratio=mixing_ratio, profile=profile, seed=seed,
                       max_steps=settings.max_steps, batch_size=settings.batch_size,
                       checkpoint_every=max(1, settings.max_steps // 5), **chosen)


#: The default folders of the parameters cells (``../runs/...``, ``../data/world/PROFILE``):
#: relative to the folder a notebook runs in (``notebooks/``, papermill's cwd), as they always were;
#: ``banana reproduce --runs-dir/--world-dir`` passes explicit paths instead.
NOTEBOOK_RUNS_DIR = Path("../runs")
NOTEBOOK_WORLD_DIR = Path("../data/world")

#: What :func:`notebook_setup` resolves for each notebook:
#:
#: * ``world``: ``None`` (no world), ``"path"`` (only ``world_dir``; the notebook builds it in view),
#:   ``"build"`` (:func:`~banana.world.build_world`, its result is the world), ``"load"``
#:   (:func:`~banana.world.load_world`; it must exist), ``"build+load"`` (build if missing, then load);
#: * ``base``: ``None``, ``"optional"`` or ``"required"`` (must exist): the base generator folder,
#:   by default :func:`base_generator_dir`;
#: * ``runs``: run-folder parameters and their default name under :data:`NOTEBOOK_RUNS_DIR`
#:   (formatted with ``profile``, ``tuning``, ``mixing_ratio``);
#: * ``reports``: the folders created under ``reports_dir``; ``output``: a grid point's ``output_dir``
#:   (created).
NOTEBOOK_SETUP: dict[str, dict[str, Any]] = {
    "01_task_as_image": {"reports": ("figures", "tables")},
    "02_synthetic_world": {"world": "path", "reports": ("figures", "tables")},
    "03_pretrain_generator": {"world": "build", "runs": {"run_dir": "pretrain-{profile}"}, "reports": ("figures",)},
    "04_instruction_tune": {"world": "build+load", "base": "required", "reports": ("figures", "tables"),
                            "runs": {"run_dir": "tune-{profile}-{recipe}-{tuning}-r{mixing_ratio}"}},
    "05_evaluate": {"world": "load", "base": "optional", "reports": ("figures", "tables"),
                    "runs": {"tune_run_dir": "tune-{profile}-{recipe}-{tuning}-r{mixing_ratio}",
                             "baseline_dir": "baselines-{profile}-{recipe}-{tuning}-r{mixing_ratio}"}},
    "06_ablate_mixing_ratio": {"world": "build", "base": "optional", "output": True},
    "07_ablate_decoding": {"world": "build", "base": "optional", "output": True},
    "08_learning_curves": {"world": "build", "base": "required", "output": True},
}


def notebook_setup(notebook: str, profile: str, *, world_seed: int = 0, tuning: str = "full",
                   mixing_ratio: float = 0.5, recipe: str = "best", world_dir: str | Path | None = None, base_dir: str | Path | None = None,
                   reports_dir: str | Path = "../reports", output_dir: str | Path | None = None,
                   **parameters: Any) -> SimpleNamespace:
    """A notebook's setup cell: settings, folders and world, as :data:`NOTEBOOK_SETUP` says.

    ``parameters`` are the notebook's run-folder parameters (``run_dir``, ``tune_run_dir``, ...;
    ``None`` takes the default name under ``../runs``) and its size parameters (``None`` takes the
    profile's, see :func:`notebook_settings`). Returns a namespace with, as they apply:
    ``settings``, ``world_config`` (the profile's world with ``seed=world_seed``), ``output_dir``,
    ``world_dir``, each run folder, ``base_dir``, ``figures``/``tables`` (created) and ``world``.
    """
    from banana.style import use_style
    from banana.world import build_world, load_world

    if notebook not in NOTEBOOK_SETUP:
        raise ValueError(f"no setup for notebook {notebook!r}; known: {sorted(NOTEBOOK_SETUP)}")
    plan = NOTEBOOK_SETUP[notebook]
    use_style()                      # every figure the notebook draws is in the house style
    runs = {name: parameters.pop(name, None) for name in plan.get("runs", {})}
    settings = notebook_settings(notebook, profile, **parameters)
    out = SimpleNamespace(settings=settings, world_config=dataclasses.replace(settings.world, seed=world_seed))
    if plan.get("output"):
        if output_dir is None:
            raise ValueError(f"{notebook} is a grid point: it needs an output_dir")
        out.output_dir = Path(output_dir)
        out.output_dir.mkdir(parents=True, exist_ok=True)
    world = plan.get("world")
    if world is not None:
        out.world_dir = Path(world_dir) if world_dir is not None else NOTEBOOK_WORLD_DIR / profile
    for name, default in plan.get("runs", {}).items():
        given = runs[name]
        setattr(out, name, Path(given) if given is not None else
                NOTEBOOK_RUNS_DIR / default.format(profile=profile, recipe=recipe, tuning=tuning,
                                                   mixing_ratio=mixing_ratio))
    if plan.get("base") is not None:
        out.base_dir = Path(base_dir) if base_dir is not None else base_generator_dir(profile)
        if plan["base"] == "required" and not out.base_dir.is_dir():
            raise FileNotFoundError(f"no base generator at {out.base_dir}: run notebook 03 with profile={profile!r} "
                                    "first")
    for folder in plan.get("reports", ()):
        setattr(out, folder, Path(reports_dir) / folder)
        getattr(out, folder).mkdir(parents=True, exist_ok=True)
    if world in ("build", "build+load"):
        out.world = build_world(out.world_dir, out.world_config)
    if world in ("load", "build+load"):
        out.world = load_world(out.world_dir)
    return out


def decoding_run(profile: str, depth_codec: str = "metric", world_seed: int = 0,
                 runs_dir: str | Path | None = None):
    """``(TrainConfig, run folder, shipped)`` of the tuned run notebook 07 decodes.

    The shipped study generalist (``data/generators/generalist-PROFILE``) when it was tuned with
    notebook 04's recipe (:func:`banana.training.publish.shipped_study_run`; ``shipped`` is then
    True and nothing is trained), else notebook 04's run (:func:`tuned_run_dir`, or that name under
    ``runs_dir``). For another ``depth_codec``: that model's exact config with those depth targets,
    in a run of its own (``<name>-CODEC``), so the codecs are compared at the same training."""
    from banana.training.publish import shipped_study_run
    from banana.training.run import read_config

    config = tuning_config(profile, mixing_ratio=0.5, seed=world_seed)
    run_dir = tuned_run_dir(profile)
    study = shipped_study_run(profile, config)
    if study is not None:
        config, run_dir = read_config(study)[0], run_dir.with_name(study.name)
    if runs_dir is not None:
        run_dir = Path(runs_dir) / run_dir.name
    if depth_codec == "metric":
        return (config, study, True) if study is not None else (config, run_dir, False)
    config = dataclasses.replace(config, depth_codec=depth_codec)
    return config, run_dir.with_name(f"{run_dir.name}-{depth_codec}"), False

"""Where things live, defined once: the repository root, its standard folders, the profile names.

Everything that builds a default path (the CLI, notebooks' setup, the grid runner, ``reproduce``,
``profiles``) takes it from here, so moving a folder is one edit.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["REPO_ROOT", "NOTEBOOK_DIR", "GRID_DIR", "RUNS_DIR", "REPORTS_DIR", "WORLD_DIR", "GENERATORS_DIR",
           "PROFILES", "notebook_path", "check_profile", "world_dir", "shipped_generator_dir",
           "STUDY_MODELS", "study_model_dir", "pretrain_run_name", "tune_run_name", "repo_relative", "resolve_recorded"]

#: The checkout (an editable install's repository; the folder above the package).
REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
GRID_DIR = REPO_ROOT / "grids"
#: Training runs and grid folders (git-ignored).
RUNS_DIR = REPO_ROOT / "runs"
#: Figures, tables and executed notebooks of real runs.
REPORTS_DIR = REPO_ROOT / "reports"
#: Built worlds, one folder per profile (git-ignored).
WORLD_DIR = REPO_ROOT / "data" / "world"
#: Shipped generators (``base-PROFILE``).
GENERATORS_DIR = REPO_ROOT / "data" / "generators"

#: The size profiles every notebook, grid and command takes.
PROFILES: tuple[str, ...] = ("smoke", "cpu", "gpu")


def check_profile(profile: str) -> str:
    """``profile`` if it is one of :data:`PROFILES`, else a ValueError naming the choices."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {PROFILES}")
    return profile


def notebook_path(name: str) -> Path:
    """``notebooks/<name>.ipynb``, with a clear error when it is missing."""
    path = NOTEBOOK_DIR / f"{name}.ipynb" if not str(name).endswith(".ipynb") else Path(name)
    if not path.is_file():
        known = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
        raise FileNotFoundError(f"notebook {path} does not exist; known notebooks: {known}")
    return path


def world_dir(profile: str) -> Path:
    """The default built world of ``profile`` (``data/world/PROFILE``)."""
    return WORLD_DIR / check_profile(profile)


def shipped_generator_dir(profile: str) -> Path:
    """Where the shipped base generator of ``profile`` lives (``data/generators/base-PROFILE``; it may not exist)."""
    return GENERATORS_DIR / f"base-{profile}"


#: The study models ``banana.study_models`` ships for a profile: name -> what it is.
STUDY_MODELS: dict[str, str] = {"generalist": "the best-recipe generalist (a run folder)",
                                "control": "the no-pretraining control (a run folder)",
                                "specialists": "one random-init specialist per task",
                                "specialists-pretrained": "one specialist per task from the base's UNet"}


def study_model_dir(name: str, profile: str) -> Path:
    """Where the shipped study model ``name`` (:data:`STUDY_MODELS`) of ``profile`` lives:
    ``data/generators/NAME-PROFILE`` (it may be absent)."""
    if name not in STUDY_MODELS:
        raise ValueError(f"unknown study model {name!r}; choose from {sorted(STUDY_MODELS)}")
    return GENERATORS_DIR / f"{name}-{profile}"


def pretrain_run_name(profile: str) -> str:
    """The folder name (under :data:`RUNS_DIR`) of a profile's pretraining run."""
    return f"pretrain-{profile}"


def tune_run_name(profile: str, tuning: str = "full", mixing_ratio: float = 0.5, recipe: str = "best") -> str:
    """The folder name (under :data:`RUNS_DIR`) of an instruction-tuning run
    (``recipe``: :data:`banana.training.recipe.RECIPES`)."""
    return f"tune-{profile}-{recipe}-{tuning}-r{mixing_ratio}"


def repo_relative(path) -> str:
    """``path`` relative to the repository when it lies inside it (how shipped artefacts record
    paths, so a fresh clone anywhere finds them), else the absolute path."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def resolve_recorded(path) -> Path:
    """A path recorded by a run or a shipped artefact: absolute as it is, relative to the repository."""
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path

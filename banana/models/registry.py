"""Which generator a folder or a config dict holds, and one loader for every kind.

* :class:`GeneratorConfig` and :data:`GENERATOR_PRESETS` (defined in :mod:`banana.models.config`,
  re-exported here) size a pixel generator;
* :func:`generator_config_from_dict` reads a saved config dict of either kind (``kind == "latent"``
  -> :class:`~banana.models.latent.LatentGeneratorConfig`);
* :func:`is_saved_generator` / :func:`is_sd_checkpoint` tell a saved banana generator from a
  Stable-Diffusion-family checkpoint, and :func:`load_generator` loads either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from banana.models.config import GENERATOR_PRESETS, GeneratorConfig
from banana.models.io import GENERATOR_CONFIG, read_json
from banana.models.latent import LatentGenerator, LatentGeneratorConfig
from banana.models.pixel import BananaGenerator

__all__ = ["GeneratorConfig", "GENERATOR_PRESETS", "GENERATOR_CONFIG", "generator_config_from_dict",
           "is_saved_generator", "is_sd_checkpoint", "load_generator"]


def generator_config_from_dict(data: Mapping[str, Any]):
    """A saved generator config dict -> :class:`LatentGeneratorConfig` (``kind == "latent"``) or
    :class:`GeneratorConfig` (strict, as ever)."""
    if data.get("kind") == "latent":
        return LatentGeneratorConfig.from_dict(data)
    return GeneratorConfig.from_dict(data)


def is_saved_generator(directory: str | Path) -> bool:
    """A directory written by ``BananaGenerator`` / ``LatentGenerator.save_pretrained``."""
    return (Path(directory) / GENERATOR_CONFIG).is_file()


def is_sd_checkpoint(directory: str | Path) -> bool:
    """A diffusers SD-family pipeline directory (has ``model_index.json`` or a ``vae/`` folder)
    that is not a saved banana generator."""
    directory = Path(directory)
    return (directory.is_dir() and not is_saved_generator(directory)
            and ((directory / "model_index.json").is_file() or (directory / "vae").is_dir()))


def load_generator(directory: str | Path, resolution: int | None = None,
                   generator_config: Mapping | None = None, **checkpoint_kwargs):
    """Load whatever generator ``directory`` holds.

    * a saved banana generator (``generator_config.json``): ``BananaGenerator.from_pretrained`` or
      ``LatentGenerator.from_pretrained``, by the config's ``kind``;
    * an SD-family checkpoint (``model_index.json`` / ``vae/``): ``LatentGenerator.from_checkpoint``
      (``resolution`` and ``checkpoint_kwargs`` passed on), or, with ``generator_config`` (a saved
      latent config, e.g. an adapter's), :meth:`LatentGenerator.for_config`.

    Anything else raises ``FileNotFoundError`` saying what was expected.
    """
    directory = Path(directory)
    if is_saved_generator(directory):
        data = read_json(directory / GENERATOR_CONFIG)
        if data.get("kind") == "latent":
            return LatentGenerator.from_pretrained(directory)
        return BananaGenerator.from_pretrained(directory)
    if is_sd_checkpoint(directory):
        if generator_config is not None and generator_config.get("kind") == "latent":
            return LatentGenerator.for_config(directory, generator_config)
        return LatentGenerator.from_checkpoint(directory, resolution=resolution, **checkpoint_kwargs)
    if not directory.exists():
        raise FileNotFoundError(f"generator directory {directory} does not exist")
    raise FileNotFoundError(f"{directory} is neither a saved banana generator ({GENERATOR_CONFIG}) nor a "
                            "Stable-Diffusion-family checkpoint (model_index.json, unet/, vae/, text_encoder/, "
                            "tokenizer/, scheduler/)")

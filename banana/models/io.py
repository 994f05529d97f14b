"""One save/load convention for every banana model (BananaGenerator, LatentGenerator, Specialist).

A saved model is a folder in diffusers' layout: a config JSON at its top (``generator_config.json``,
``specialist_config.json``), one ``save_pretrained`` subfolder per diffusers / transformers
component (``unet/``, ``text_encoder/``, ``vae/``, ``tokenizer/``: their own ``config.json`` +
``*.safetensors``) and, for tensors that are no component (a specialist's weights), plain
``*.safetensors`` files. :func:`save_model_folder` writes such a folder, :func:`read_model_config`,
:func:`load_component` and :func:`load_tensors` read it back. What each model's folder holds:

* ``BananaGenerator``: ``generator_config.json``, ``unet/``, ``text_encoder/``, ``tokenizer.json``;
* ``LatentGenerator``: ``generator_config.json`` (``"kind": "latent"``), ``unet/``, ``vae/``,
  ``text_encoder/``, ``tokenizer/`` (+ ``adapter/`` when saved with LoRA);
* ``Specialist``: ``specialist_config.json`` and ``model.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

#: The config file of a saved banana generator (pixel or latent); its ``kind`` tells them apart.
GENERATOR_CONFIG = "generator_config.json"


def read_json(path: str | Path) -> dict:
    """``path``'s JSON; a file that is not valid JSON is a ``ValueError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def save_model_folder(directory: str | Path, config_file: str, config: Mapping[str, Any],
                      components: Mapping[str, Any] = {}, tensors: Mapping[str, Mapping[str, Any]] = {},
                      tensor_metadata: Mapping[str, str] | None = None, newline: bool = False) -> Path:
    """Write a model folder: ``config_file`` (``config`` as JSON, indent 1, a final newline with
    ``newline``), ``name/`` for every component (``save_pretrained``; safetensors for modules) and
    ``file`` for every tensor dict of ``tensors`` (safetensors, CPU copies, ``tensor_metadata``)."""
    from torch import nn

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / config_file).write_text(json.dumps(dict(config), indent=1) + ("\n" if newline else ""))
    for name, component in components.items():
        if isinstance(component, nn.Module):
            component.save_pretrained(directory / name, safe_serialization=True)
        else:                                             # a tokenizer
            component.save_pretrained(directory / name)
    if tensors:
        from safetensors.torch import save_file

        for file, state in tensors.items():
            (directory / file).parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(directory / file),
                      metadata=None if tensor_metadata is None else dict(tensor_metadata))
    return directory


def read_model_config(directory: str | Path, config_file: str, what: str) -> dict:
    """The config JSON of a saved model folder; ``FileNotFoundError`` saying ``directory`` is not a
    saved ``what`` when it has none."""
    directory = Path(directory)
    path = directory / config_file
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {directory} is not a saved {what}")
    return read_json(path)


def load_component(cls, directory: str | Path, name: str, **kwargs):
    """Component ``name`` of a saved model folder: ``cls.from_pretrained(directory / name)`` (from
    safetensors for modules)."""
    from torch import nn

    if isinstance(cls, type) and issubclass(cls, nn.Module):
        kwargs.setdefault("use_safetensors", True)
    return cls.from_pretrained(Path(directory) / name, **kwargs)


def load_tensors(directory: str | Path, file: str) -> dict:
    """The tensors of a safetensors file of a saved model folder (on CPU)."""
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / file))

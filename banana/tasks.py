"""The vision tasks as instructions: prompt wording, targets as RGB, decoding and ensembling.

A task is everything that differs between "draw the depth of this image" and "draw its
classes": the instruction text, the codec that turns the world's exact label into the target
picture (and the generated picture back into a label), and how several sampled answers are
combined. Training (:mod:`banana.training`) and prediction (:mod:`banana.pipeline`) both go
through this module, so the two can never disagree on a prompt or a codec.

Ensembling follows what the peers found works (DIGEST.md): segmentation by per-pixel vote,
depth by the median, normals by the member nearest the mean direction.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

TASKS: tuple[str, ...] = ("segmentation", "depth", "normals")

#: Instruction wordings per task; training draws one at random so the model learns the
#: meaning rather than one string. Every word is in the tokenizer's vocabulary (tested).
DEPTH_PROMPTS: tuple[str, ...] = (
    "Generate a metric depth map of this image.",
    "Estimate the depth of the scene as a colour coded depth image.",
    "Draw the distance of each pixel from the camera as a metric depth map.",
    "Render the depth of this picture.",
)
NORMALS_PROMPTS: tuple[str, ...] = (
    "Generate a surface normal map of this image.",
    "Estimate the surface normals of the scene as an rgb image.",
    "Draw the orientation of each surface as a normal map.",
    "Render the surface normals of this picture.",
)
#: Depth codecs a generator can be trained with (``TrainConfig.depth_codec``): the paper's metric
#: power warp + RGB-cube walk, or Marigold's per-image affine-normalised grey ramp (relative depth:
#: decodes to [0, 1], scored after affine alignment).
DEPTH_CODECS: dict[str, dict[str, str]] = {
    "metric": {"warp": "metric", "colormap": "cube"},
    "affine-gray": {"warp": "affine", "colormap": "gray"},
}
#: Palette formats used in training prompts (the paper: natural language, JSON, hex or RGB).
SEGMENTATION_PROMPT_STYLES: tuple[str, ...] = ("json", "rgb", "hex")


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")


def task_prompt(task: str, rng: np.random.Generator | None = None, palette: Mapping | None = None) -> str:
    """The instruction for ``task``. With ``rng``, a random wording (training); without, the
    first, canonical wording (evaluation). Segmentation needs the ``palette`` it names."""
    from banana.codecs import SegmentationCodec

    _check_task(task)
    if task == "segmentation":
        if palette is None:
            raise ValueError("the segmentation prompt names a palette: pass palette={class: (r, g, b)}")
        style = SEGMENTATION_PROMPT_STYLES[0] if rng is None else rng.choice(SEGMENTATION_PROMPT_STYLES)
        return SegmentationCodec(dict(palette)).prompt(style=str(style))
    wordings = DEPTH_PROMPTS if task == "depth" else NORMALS_PROMPTS
    return wordings[0] if rng is None else wordings[int(rng.integers(len(wordings)))]


def depth_codec(name: str = "metric"):
    """The :class:`~banana.codecs.DepthCodec` called ``name`` in :data:`DEPTH_CODECS`."""
    from banana.codecs import DepthCodec

    if name not in DEPTH_CODECS:
        raise ValueError(f"unknown depth codec {name!r}; choose from {sorted(DEPTH_CODECS)}")
    return DepthCodec(**DEPTH_CODECS[name])


def encode_target(task: str, sample: Mapping[str, np.ndarray], palette: Mapping | None = None,
                  depth: str = "metric") -> np.ndarray:
    """The world sample's exact label for ``task`` as the RGB picture the generator must draw
    (float32 ``[3, H, W]`` in [0, 1]). ``depth`` names the depth codec (:data:`DEPTH_CODECS`)."""
    from banana.codecs import NormalsCodec, SegmentationCodec

    _check_task(task)
    if task == "segmentation":
        if palette is None:
            raise ValueError("encoding a segmentation target needs its palette")
        return SegmentationCodec(dict(palette)).encode(np.asarray(sample["semantic"]).astype(np.int64))
    if task == "depth":
        return depth_codec(depth).encode(np.asarray(sample["depth"], dtype=np.float32))
    return NormalsCodec().encode(np.asarray(sample["normals"], dtype=np.float32))


def decode_prediction(task: str, rgb: np.ndarray | torch.Tensor, palette: Mapping | None = None,
                      depth: str = "metric"):
    """A generated picture ``[..., 3, H, W]`` -> labels ``[..., H, W]`` / metres ``[..., H, W]``
    (relative depth in [0, 1] for ``depth="affine-gray"``) / unit normals ``[..., 3, H, W]``."""
    from banana.codecs import NormalsCodec, SegmentationCodec

    _check_task(task)
    if task == "segmentation":
        if palette is None:
            raise ValueError("decoding a segmentation picture needs the palette its prompt named")
        return SegmentationCodec(dict(palette)).decode(rgb)
    if task == "depth":
        return depth_codec(depth).decode(rgb)
    return NormalsCodec().decode(rgb)


def ensemble(task: str, members: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Combine decoded answers stacked on dim 0 (``[E, ...]``) into one.

    * segmentation: per-pixel majority vote; rejected pixels (``ignore_index``) only win
      where every member rejected; ties go to the lowest class id.
    * depth: per-pixel median (metres; inf counts as the largest value).
    * normals (``[E, ..., 3, H, W]``): per pixel, the member nearest the mean direction.
    """
    _check_task(task)
    if members.ndim < 3:
        raise ValueError(f"ensemble expects members stacked on dim 0, got shape {tuple(members.shape)}")
    if members.shape[0] == 1:
        return members[0]
    if task == "segmentation":
        labels = members.long()
        valid = labels != ignore_index
        num_classes = int(labels[valid].max()) + 1 if valid.any() else 1
        votes = torch.nn.functional.one_hot(labels.where(valid, torch.zeros_like(labels)), num_classes)
        votes = (votes * valid.unsqueeze(-1)).sum(0)
        winner = votes.argmax(-1)
        return winner.where(valid.any(0), torch.full_like(winner, ignore_index))
    if task == "depth":
        return members.median(dim=0).values
    mean = members.mean(0, keepdim=True)
    mean = mean / mean.norm(dim=-3, keepdim=True).clamp(min=1e-8)
    agreement = (members * mean).sum(dim=-3)          # cosine to the mean, [E, ..., H, W]
    best = agreement.argmax(0, keepdim=True)           # [1, ..., H, W]
    index = best.unsqueeze(-3).expand(1, *members.shape[1:])
    return members.gather(0, index)[0]

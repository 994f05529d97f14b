"""The vision tasks as instructions: prompt wording, targets as RGB, decoding and ensembling.

A task is everything that differs between "draw the depth of this image" and "draw its
classes": the instruction text, the codec that turns the world's exact label into the target
picture (and the generated picture back into a label), and how several sampled answers are
combined. Training (:mod:`banana.training`) and prediction (:mod:`banana.pipeline`) both go
through this module, so the two can never disagree on a prompt or a codec.

Ensembling follows what the peers found works (DIGEST.md): segmentation by per-pixel vote,
depth by the median, normals by the member nearest the mean direction.

Two more tasks are *query* tasks (:data:`QUERY_TASKS`): their prompt carries something about the
image besides the task, so every image has its own prompt.

* ``instance``: the query is one object class ("sphere"); the target paints each instance of it
  its own colour on a black background (:class:`~banana.codecs.InstanceCodec`), decoded by
  colour clustering. The ensemble keeps the member whose foreground agrees most with the
  members' per-pixel foreground vote (instance ids of two members do not correspond).
* ``referring``: the query is a checked referring expression (:mod:`banana.world.referring`);
  the target is the referred object in white, everything else black
  (:class:`~banana.codecs.MaskCodec`); the ensemble is a per-pixel vote.

:data:`TASKS` (the three dense tasks) stays the default training mix, so every run trained
before the query tasks existed draws exactly the same examples; ``TrainConfig.tasks`` opts in.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

TASKS: tuple[str, ...] = ("segmentation", "depth", "normals")
#: Tasks whose prompt names a per-image query: a class (instance) or an expression (referring).
QUERY_TASKS: tuple[str, ...] = ("instance", "referring")
#: Every task a generator can be tuned on (``TrainConfig.tasks``).
ALL_TASKS: tuple[str, ...] = TASKS + QUERY_TASKS

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
#: Instance instructions; ``{name}`` is the prompted class. Every word is in the vocabulary of a
#: world generator (a pretrained base cannot learn new words), which is why "background" is not.
INSTANCE_PROMPTS: tuple[str, ...] = (
    "Generate instance masks of each {name} on black.",
    "Segment every {name} instance in a colour on black.",
    "Draw each {name} instance as a coloured mask on black.",
    "Render the {name} instances on black.",
)
#: Referring instructions; ``{expression}`` is e.g. "the red sphere".
REFERRING_PROMPTS: tuple[str, ...] = (
    "Segment {expression} in white on black.",
    "Draw {expression} as a white mask on black.",
    "Generate a white mask of {expression} on black.",
    "Render {expression} white on black.",
)
#: Colours the query tasks' prompts name: the instance background; the referred object and the rest.
INSTANCE_BACKGROUND = (0, 0, 0)
REFERRING_COLORS = {"referred": (255, 255, 255), "rest": (0, 0, 0)}
#: Decoded instance clusters smaller than this are speckle, not instances. Measured on 48 cpu test
#: scenes (8-bit, PQ of the exact answer): 1 px gives 1.000 / 0.807 / 0.300 at colour noise
#: std 0 / 0.05 / 0.1, 4 px 1.000 / 1.000 / 0.437 (6 px loses small true instances: 0.985 at 0).
INSTANCE_MIN_PIXELS = 4
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
    if task not in ALL_TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {ALL_TASKS}")


def _check_query(task: str, query) -> None:
    if task in QUERY_TASKS and (not isinstance(query, str) or not query.strip()):
        what = "an object class, e.g. 'sphere'" if task == "instance" else "a referring expression, e.g. 'the red box'"
        raise ValueError(f"the {task} task needs query= {what}; got {query!r}")


def task_prompt(task: str, rng: np.random.Generator | None = None, palette: Mapping | None = None,
                query: str | None = None) -> str:
    """The instruction for ``task``. With ``rng``, a random wording (training); without, the
    first, canonical wording (evaluation). Segmentation needs the ``palette`` it names; the query
    tasks their ``query`` (the class of ``instance``, the expression of ``referring``)."""
    from banana.codecs import SegmentationCodec

    _check_task(task)
    _check_query(task, query)
    if task in QUERY_TASKS:
        wordings = INSTANCE_PROMPTS if task == "instance" else REFERRING_PROMPTS
        wording = wordings[0] if rng is None else wordings[int(rng.integers(len(wordings)))]
        return wording.format(name=query, expression=query)
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


def query_codec(task: str):
    """The codec of a query task, as its prompts name it: :class:`~banana.codecs.InstanceCodec` on
    :data:`INSTANCE_BACKGROUND` (speckle under :data:`INSTANCE_MIN_PIXELS` dropped) or
    :class:`~banana.codecs.MaskCodec` in :data:`REFERRING_COLORS`."""
    from banana.codecs import InstanceCodec, MaskCodec

    if task == "instance":
        return InstanceCodec(INSTANCE_BACKGROUND, min_pixels=INSTANCE_MIN_PIXELS)
    if task == "referring":
        return MaskCodec(REFERRING_COLORS["referred"], REFERRING_COLORS["rest"])
    raise ValueError(f"{task!r} is not a query task; those are {QUERY_TASKS}")


def query_prompts(task: str, query, count: int) -> list[str]:
    """The canonical prompts of a query task for ``count`` images: ``query`` is one string for all
    of them or one per image (a clear error otherwise, and for a missing query)."""
    queries = [query] * count if isinstance(query, str) or query is None else list(query)
    if len(queries) != count:
        raise ValueError(f"got {len(queries)} queries for {count} images: pass one, or one per image")
    return [task_prompt(task, None, query=q) for q in queries]


def query_target(task: str, sample: Mapping[str, np.ndarray], query: str) -> np.ndarray:
    """The exact answer to a query task on one world sample: the prompted class's instance ids
    (``[H, W]`` int64, 0 = not that class; instances under :data:`INSTANCE_MIN_PIXELS` pixels are
    left out, as referring expressions leave out objects that small) or the referred object's
    mask (``[H, W]`` bool)."""
    from banana.world import CLASS_IDS
    from banana.world.referring import referring_expressions

    _check_query(task, query)
    instance = np.asarray(sample["instance"]).astype(np.int64)
    if task == "instance":
        if query not in CLASS_IDS:
            raise ValueError(f"unknown class {query!r} for the instance task; the world has {sorted(CLASS_IDS)}")
        ids = np.where(np.asarray(sample["semantic"]) == CLASS_IDS[query], instance, 0)
        # instances the decoder would drop as speckle are not part of the answer (nor of the target)
        values, counts = np.unique(ids[ids > 0], return_counts=True)
        return np.where(np.isin(ids, values[counts < INSTANCE_MIN_PIXELS]), 0, ids)
    if task != "referring":
        raise ValueError(f"{task!r} is not a query task; those are {QUERY_TASKS}")
    matches = [r for r in referring_expressions(sample["objects"]) if r.expression == query]
    if not matches:
        raise ValueError(f"{query!r} picks no single object of this scene (banana.world.referring_expressions)")
    return instance == matches[0].instance_id


def draw_query(task: str, sample: Mapping[str, np.ndarray], rng: np.random.Generator) -> str | None:
    """A random query of a query task for one scene: an object class present in it (any object
    class when none is: an all-black target) or one of its checked expressions (``None`` when
    no expression picks exactly one object)."""
    from banana.world import CLASS_NAMES, OBJECT_CLASS_IDS
    from banana.world.referring import referring_expressions

    if task == "instance":
        present = sorted(set(np.unique(np.asarray(sample["semantic"])).tolist()) & set(OBJECT_CLASS_IDS))
        pool = present or list(OBJECT_CLASS_IDS)
        return CLASS_NAMES[int(pool[int(rng.integers(len(pool)))])]
    if task != "referring":
        raise ValueError(f"{task!r} is not a query task; those are {QUERY_TASKS}")
    options = referring_expressions(sample["objects"])
    return options[int(rng.integers(len(options)))].expression if options else None


def encode_target(task: str, sample: Mapping[str, np.ndarray], palette: Mapping | None = None,
                  depth: str = "metric", query: str | None = None) -> np.ndarray:
    """The world sample's exact label for ``task`` as the RGB picture the generator must draw
    (float32 ``[3, H, W]`` in [0, 1]). ``depth`` names the depth codec (:data:`DEPTH_CODECS`);
    ``query`` is the query tasks' class or expression (:func:`query_target`)."""
    from banana.codecs import NormalsCodec, SegmentationCodec

    _check_task(task)
    if task in QUERY_TASKS:
        return query_codec(task).encode(query_target(task, sample, query))
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
    (relative depth in [0, 1] for ``depth="affine-gray"``) / unit normals ``[..., 3, H, W]`` /
    instance ids ``[..., H, W]`` (0 = background) / referred mask ``[..., H, W]`` (bool)."""
    from banana.codecs import NormalsCodec, SegmentationCodec

    _check_task(task)
    if task in QUERY_TASKS:
        return query_codec(task).decode(rgb)
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
    * referring (bool masks): per-pixel majority vote (ties: not referred).
    * instance: per image, the member whose foreground (id > 0) agrees with the members'
      per-pixel foreground vote on the most pixels (ties: the first member).
    """
    _check_task(task)
    if members.ndim < 3:
        raise ValueError(f"ensemble expects members stacked on dim 0, got shape {tuple(members.shape)}")
    if members.shape[0] == 1:
        return members[0]
    if task == "referring":
        return members.bool().sum(0) * 2 > members.shape[0]
    if task == "instance":
        foreground = members > 0                                        # [E, ..., H, W]
        vote = foreground.sum(0) * 2 > members.shape[0]
        agreement = (foreground == vote).flatten(-2).sum(-1)           # [E, ...]
        best = agreement.argmax(0)                                      # [...]
        index = best[None, ..., None, None].expand(1, *members.shape[1:])
        return members.gather(0, index)[0]
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

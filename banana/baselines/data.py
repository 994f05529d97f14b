"""The specialist's data: the generalist's vision examples of one task, replayed in training order
(:func:`replay_vision_stream`), the examples themselves (:class:`SpecialistExamples`) and the
resumable batch order (:class:`SpecialistBatchSampler`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

import lightning as L

from banana.models.images import to_model_range
from banana.tasks import ALL_TASKS, QUERY_TASKS, TASKS
from banana.training.data import VISION, BananaExamples, ExampleKey, MixedBatchSampler
from banana.training.module import TrainConfig
from banana.training.run import read_config

_SAMPLER_TAG = 0x5BEC


def replay_vision_stream(generalist: TrainConfig | str | Path, task: str, split=None,
                         world_dir: str | Path | None = None) -> list[ExampleKey]:
    """The vision examples of ``task`` a generalist run saw, in training order.

    ``generalist`` is its :class:`TrainConfig` or run directory (``config.json``). The run's
    :class:`MixedBatchSampler` is rebuilt exactly as :func:`banana.training.train` builds it
    (``n_generation = len(split)``, ``n_vision = config.vision_pool_size(len(split))``, same batch size, mixing ratio, ``max_steps`` and seed,
    one device) and every vision slot is kept whose task, drawn by
    :meth:`BananaExamples.drawn_task` with the run's seed, equals ``task``. No example is built.

    ``split``: the world split the run trained on (default: ``load_world(world_dir or
    config.world_dir)[config.split]``); only its length is read.
    """
    from banana.world import load_world

    if task not in ALL_TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {ALL_TASKS}")
    config = generalist if isinstance(generalist, TrainConfig) else read_config(generalist)[0]
    if split is None:
        world_dir = world_dir if world_dir is not None else config.world_dir
        if world_dir is None:
            raise ValueError("the generalist config names no world: pass split= or world_dir=")
        split = load_world(world_dir)[config.split]
    # only drawn_task is used; the run's mix decides what each slot drew (default: the dense tasks)
    examples = BananaExamples(split, seed=config.seed, in_memory=False, tasks=None if config.tasks == TASKS else config.tasks)
    n = len(examples)
    sampler = MixedBatchSampler(n, config.vision_pool_size(n), config.batch_size, config.mixing_ratio, num_batches=config.max_steps,
                                seed=config.seed)
    return [key for batch in sampler for key in batch
            if key.source == VISION and examples.drawn_task(key.index, key.draw)[0] == task]


class SpecialistExamples(Dataset):
    """``index -> {"image": float32 [3, H, W] in [-1, 1], "target": label}`` over a world split.

    Targets: segmentation int64 ``[H, W]`` class ids; depth float32 ``[H, W]`` metres (``inf`` =
    sky); normals float32 ``[3, H, W]`` (zeros = sky). Columns are read into memory once.
    """

    FIELDS = {"segmentation": "semantic", "depth": "depth", "normals": "normals"}

    def __init__(self, split, task: str):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
        self.task = task
        field = self.FIELDS[task]
        columns = split.select_columns(["image", field])[:]
        self.images = to_model_range(np.asarray(columns["image"], dtype=np.uint8))
        dtype = np.int64 if task == "segmentation" else np.float32
        self.targets = torch.from_numpy(np.ascontiguousarray(columns[field], dtype=dtype))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "target": self.targets[index]}


class QueryExamples(Dataset):
    """The query-task examples a generalist saw, by position in its replayed stream (``keys``:
    :func:`replay_vision_stream`; ``seed`` and ``tasks``: the generalist's) -> ``{"image", "target",
    "prompt"}`` with the generalist's own query and wording (:meth:`BananaExamples.vision` of the same ``(index, draw)``). Targets:
    instance, the codec's RGB ``[3, H, W]`` in [0, 1]; referring, the referred mask ``[H, W]``.
    A slot whose scene had no expression (the generalist was asked for instances there) is left out."""

    def __init__(self, split, task: str, keys: Sequence[ExampleKey], seed: int, tasks: Sequence[str]):
        from banana.tasks import decode_prediction

        if task not in QUERY_TASKS or task not in tasks:
            raise ValueError(f"QueryExamples serve a query task of the generalist's mix {tuple(tasks)}, got {task!r}")
        # the generalist's mix: the task draw consumes the example's RNG as it did for the generalist
        source = BananaExamples(split, seed=seed, tasks=tasks, drop_text_prob=0.0, drop_image_prob=0.0)
        self.task, self.items = task, []
        for key in keys:
            example = source.vision(key.index, key.draw, task=task)
            if example["kind"] != task:
                continue
            rgb = (example["target"] + 1) / 2                   # model range -> [0, 1]
            target = rgb if task == "instance" else torch.as_tensor(decode_prediction(task, rgb))
            self.items.append({"image": example["condition"], "target": target, "prompt": example["prompt"]})
        if not self.items:
            raise ValueError(f"no {task} example in the replayed stream")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


class SpecialistBatchSampler(Sampler):
    """Batches of split indices; batch ``b`` is a pure function of ``b`` (exact resumption).

    * With a ``stream`` (the replayed generalist examples): one pass is the stream cut into
      ``ceil(len / batch_size)`` consecutive batches (the last may be shorter); batch ``b`` is batch
      ``b mod passes`` of it.
    * Without: ``batch_size`` indices drawn uniformly (without replacement inside a batch) from
      ``numpy`` ``SeedSequence([seed, b, tag])``.

    ``trainer``: when given, every ``iter()`` starts at its live ``global_step`` (as the generalist's
    sampler does), so a resumed run continues with the batch an uninterrupted run would have used.
    """

    def __init__(self, n: int, batch_size: int, num_batches: int, seed: int, stream: Sequence[int] | None = None,
                 start_batch: int = 0, trainer=None):
        if batch_size < 1 or n < 1:
            raise ValueError(f"need batch_size >= 1 and a non-empty split, got {batch_size}, {n}")
        if stream is not None and len(stream) == 0:
            raise ValueError("the replayed stream is empty")
        self.n, self.batch_size, self.num_batches, self.seed = int(n), int(batch_size), int(num_batches), int(seed)
        self.stream = None if stream is None else [int(i) for i in stream]
        self.start_batch, self.trainer = int(start_batch), trainer

    @property
    def batches_per_pass(self) -> int | None:
        return None if self.stream is None else math.ceil(len(self.stream) / self.batch_size)

    def batch(self, b: int) -> list[int]:
        if self.stream is not None:
            j = b % self.batches_per_pass
            return self.stream[j * self.batch_size:(j + 1) * self.batch_size]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(b), _SAMPLER_TAG]))
        return [int(i) for i in rng.choice(self.n, size=self.batch_size, replace=self.batch_size > self.n)]

    def images_in(self, start: int, stop: int) -> int:
        """Images in batches ``start .. stop - 1``."""
        return sum(len(self.batch(b)) for b in range(start, stop))

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start_batch)

    def __iter__(self):
        if self.trainer is not None:
            self.start_batch = int(self.trainer.global_step)
        for b in range(self.start_batch, self.num_batches):
            yield self.batch(b)


class SpecialistDataModule(L.LightningDataModule):
    """Builds the DataLoader after a checkpoint is restored (so the sampler starts at its step)."""

    def __init__(self, examples: SpecialistExamples, sampler_kwargs: dict, num_workers: int):
        super().__init__()
        self.examples, self.sampler_kwargs, self.num_workers = examples, sampler_kwargs, num_workers

    def train_dataloader(self):
        sampler = SpecialistBatchSampler(**self.sampler_kwargs, trainer=self.trainer)
        return DataLoader(self.examples, batch_sampler=sampler, num_workers=self.num_workers,
                          pin_memory=torch.cuda.is_available())

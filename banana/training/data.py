"""Training examples and the mixed batch sampler: how "a little vision data" gets into the batches.

Why this module exists
----------------------
Vision Banana's recipe is a *data* recipe: keep training the generator on its own generation
data, and mix in vision-task examples whose targets are labels rendered as RGB. Nothing about
the model changes. So the two knobs that matter live here:

* :class:`BananaExamples` turns one world sample into a training example of either kind:

  - **generation** (text -> image, the "original generation data"): target = the world image,
    condition = zeros, prompt = the scene's description.
  - **vision** (image + instruction -> label picture): condition = the image, target =
    ``encode_target(task, sample, palette)``, prompt = ``task_prompt(task, rng, palette)``.
    The task is drawn uniformly from ``tasks`` (default :data:`banana.tasks.TASKS`, those the split
    has labels for: :func:`banana.real.dataset_spec`; the query tasks ``instance`` and
    ``referring`` draw their class or expression with :func:`banana.tasks.draw_query`); for segmentation the palette is a fresh
    :func:`banana.codecs.random_palette` of the split's classes with probability
    ``random_palette_prob`` (so the model must *read* colours from the prompt), else the split's
    canonical palette (the world's: :data:`banana.world.CANONICAL_PALETTE`).

  Optionally (``drop_*_prob``) the InstructPix2Pix condition dropout is applied here too: the
  prompt becomes ``""`` and/or the condition becomes zeros, so the model also learns the
  unconditional branches that dual classifier-free guidance needs.

* :class:`MixedBatchSampler` decides, batch by batch, how many slots go to vision examples:
  ``floor(r * B)`` plus one more with probability ``frac(r * B)`` (stochastic rounding), where
  ``r`` is the ``mixing_ratio``. So ``r = 0.01`` at ``B = 16`` puts a vision example in 16% of
  batches, and the long-run vision fraction is exactly ``r`` in expectation.

Determinism (the property everything else leans on)
---------------------------------------------------
* Global batch ``b`` of the sampler is a **pure function of** ``(seed, b)``: its own
  ``numpy.random.Generator`` from ``SeedSequence([seed, b, tag])`` draws the vision count and the
  indices. Examples are drawn uniformly (without replacement inside a batch, with replacement
  across batches) instead of epoch-wise permutations; that is what makes batch ``b`` computable
  without replaying batches ``0..b-1``, so a resumed run (``start_batch``) sees exactly the
  batches an uninterrupted run would have seen.
* Every slot carries a globally unique ``draw`` number (``b * batch_size + slot``); all the
  example's randomness (task, palette, wording, dropout) comes from
  ``SeedSequence([seed, index, draw])``. The data are therefore identical whatever the number of
  data-loader workers, and an image seen twice gets fresh task/palette draws each time.
* Multi-device: at step ``s`` every rank draws global batch ``s`` and keeps its own contiguous
  slice of it (rank ``k`` of ``W``: slots ``k * B/W`` to ``(k + 1) * B/W``). The slices are disjoint
  and together exactly the single-device batch, so ``batch_size`` is the *global* batch size and
  the data a run sees do not depend on how many devices it ran on.
"""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from banana.models.images import to_model_range

__all__ = ["GENERATION", "VISION", "KINDS", "ExampleKey", "BananaExamples", "MixedBatchSampler",
           "collate_examples", "make_dataloader"]

#: The two sources of a batch slot.
GENERATION, VISION = "generation", "vision"
#: The ``kind`` an example reports: the generation kind or its vision task.
KINDS: tuple[str, ...] = (GENERATION, "segmentation", "depth", "normals", "instance", "referring")

_SAMPLER_TAG = 0xBA7C4
_FIELDS = ("image", "depth", "normals", "semantic", "description", "instance", "objects")  # separates the sampler's seed stream from the examples' streams


class ExampleKey(NamedTuple):
    """What the sampler yields per slot: ``(source, index)`` plus the slot's unique ``draw`` number
    (the seed of the example's own random choices)."""

    source: str   # GENERATION or VISION
    index: int    # row of the world split
    draw: int = 0


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(e) for e in entropy]))


class BananaExamples(Dataset):
    """Generation and vision examples over one world split (``load_world(path)["train"]``).

    Index it with an :class:`ExampleKey` (or a ``(source, index[, draw])`` tuple). Returns::

        {"target": float32 [3, H, W] in [-1, 1], "condition": float32 [3, H, W] in [-1, 1],
         "prompt": str, "kind": "generation" | "segmentation" | "depth" | "normals",
         "drop_text": bool, "drop_image": bool}

    Columns are read into memory once (a 32px world of 2,000 scenes is ~40 MB); ``in_memory=False``
    reads row by row instead (for big worlds).
    """

    def __init__(self, split, seed: int = 0, random_palette_prob: float = 0.5,
                 drop_text_prob: float = 0.0, drop_image_prob: float = 0.0, drop_both_prob: float = 0.0,
                 tasks: Sequence[str] | None = None, in_memory: bool = True, depth_codec: str = "metric",
                 binary_prompt_prob: float = 0.0, absent_class_prob: float = 0.0):
        from banana.tasks import ALL_TASKS, TASKS

        for name, value in (("random_palette_prob", random_palette_prob), ("binary_prompt_prob", binary_prompt_prob),
                            ("absent_class_prob", absent_class_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        drops = (drop_text_prob, drop_image_prob, drop_both_prob)
        if min(drops) < 0 or sum(drops) > 1:
            raise ValueError(f"drop probabilities must be >= 0 and sum to <= 1, got {drops}")
        from banana.real.common import dataset_spec

        #: what the split offers (real datasets: banana.real; the world: every task, CLASS_NAMES)
        self.spec = dataset_spec(split)
        self.tasks = tuple(tasks) if tasks is not None else tuple(t for t in TASKS if t in self.spec.tasks)
        unknown = set(self.tasks) - set(ALL_TASKS)
        if not self.tasks or unknown:
            raise ValueError(f"tasks must be a non-empty subset of {ALL_TASKS}, got {self.tasks}")
        missing = sorted(set(self.tasks) - set(self.spec.tasks))
        if missing:
            raise ValueError(f"the {self.spec.name} split has no labels for {missing}; it offers {self.spec.tasks}")
        from banana.tasks import depth_codec as check_depth_codec

        check_depth_codec(depth_codec)
        self.depth_codec = depth_codec        # how depth targets are drawn (banana.tasks.DEPTH_CODECS)
        self.split = split
        self.seed = int(seed)
        self.random_palette_prob = float(random_palette_prob)
        self.binary_prompt_prob, self.absent_class_prob = float(binary_prompt_prob), float(absent_class_prob)
        self.drop_text_prob, self.drop_image_prob, self.drop_both_prob = map(float, drops)
        self._columns = None
        if in_memory:
            # split[:] materialises whole columns as numpy arrays; split["image"] would be a lazy
            # datasets Column whose per-row access costs ~1 ms.
            self._columns = split.select_columns([f for f in _FIELDS if f in split.column_names])[:]

    def __len__(self) -> int:
        return len(self.split)

    def sample(self, index: int) -> dict:
        """The raw world sample (numpy arrays) at ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a split of {len(self)} scenes")
        if self._columns is not None:
            return {name: column[index] for name, column in self._columns.items()}
        return self.split[int(index)]

    def __getitem__(self, key) -> dict:
        key = ExampleKey(*key)
        if key.source == GENERATION:
            return self.generation(key.index, key.draw)
        if key.source == VISION:
            return self.vision(key.index, key.draw)
        raise ValueError(f"unknown example source {key.source!r}; expected {GENERATION!r} or {VISION!r}")

    # ------------------------------------------------------------------ the two kinds
    def generation(self, index: int, draw: int = 0) -> dict:
        """Text -> image: target = the world image, condition = zeros, prompt = its description."""
        sample = self.sample(index)
        image = to_model_range(np.asarray(sample["image"], dtype=np.uint8))
        example = {"target": image, "condition": torch.zeros_like(image),
                   "prompt": str(sample["description"]), "kind": GENERATION}
        return self._dropout(example, index, draw)

    def vision(self, index: int, draw: int = 0, task: str | None = None) -> dict:
        """Image + instruction -> the label drawn as RGB. ``task=None`` draws one uniformly."""
        from banana.codecs import random_palette
        from banana.tasks import QUERY_TASKS, draw_query, encode_target, task_prompt

        sample = self.sample(index)
        drawn, rng = self.drawn_task(index, draw)
        task = task or drawn
        if task not in self.spec.tasks:
            raise ValueError(f"the {self.spec.name} split has no {task!r} labels; it offers {self.spec.tasks}")
        if task in QUERY_TASKS:
            query = draw_query(task, sample, rng)
            if query is None:               # no expression picks one object of this scene: ask for instances
                task, query = "instance", draw_query("instance", sample, rng)
            target = encode_target(task, sample, query=query)
            example = {"target": to_model_range(torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))),
                       "condition": to_model_range(np.asarray(sample["image"], dtype=np.uint8)),
                       "prompt": task_prompt(task, rng, query=query), "kind": task}
            return self._dropout(example, index, draw)
        palette = None
        # (no draw when the option is off: the stream of every earlier recipe is unchanged)
        if task == "segmentation" and self.binary_prompt_prob > 0 and rng.random() < self.binary_prompt_prob:
            return self._dropout(self._binary_example(sample, rng), index, draw)
        if task == "segmentation":   # the split's classes and palette (the world's: CLASS_NAMES, CANONICAL_PALETTE)
            use_random = rng.random() < self.random_palette_prob
            palette = random_palette(self.spec.class_names, rng) if use_random else dict(self.spec.palette)
        prompt = task_prompt(task, rng, palette)
        target = torch.from_numpy(np.ascontiguousarray(encode_target(task, sample, palette, depth=self.depth_codec), dtype=np.float32))
        condition = to_model_range(np.asarray(sample["image"], dtype=np.uint8))
        example = {"target": to_model_range(target), "condition": condition, "prompt": prompt, "kind": task}
        return self._dropout(example, index, draw)

    def _binary_example(self, sample: dict, rng: np.random.Generator) -> dict:
        """One class, one random colour (SegGPT / InstructDiffusion-style palette reading): the prompt
        names a single class and colour; the target paints that class's pixels in it, the rest
        black. With probability ``absent_class_prob`` the class is one the scene lacks (a negative:
        the target is all black), so the colour must come from the prompt, not from the scene."""
        from banana.codecs import random_palette
        from banana.tasks import task_prompt

        semantic = np.asarray(sample["semantic"]).astype(np.int64)
        names = list(self.spec.class_names)
        present = sorted(set(int(c) for c in np.unique(semantic)) & set(range(len(names))))
        absent = sorted(set(range(len(names))) - set(present))
        pool = absent if absent and rng.random() < self.absent_class_prob else present
        chosen = int(pool[int(rng.integers(len(pool)))])
        palette = random_palette([names[chosen]], rng)
        colour = np.asarray(palette[names[chosen]], dtype=np.float32) / 255.0
        target = (semantic == chosen)[None].astype(np.float32) * colour[:, None, None]
        condition = to_model_range(np.asarray(sample["image"], dtype=np.uint8))
        return {"target": to_model_range(torch.from_numpy(target)), "condition": condition,
                "prompt": task_prompt("segmentation", rng, palette), "kind": "segmentation"}

    def drawn_task(self, index: int, draw: int = 0) -> tuple[str, np.random.Generator]:
        """The task :meth:`vision` draws for ``(index, draw)``, and the example's RNG just after that
        draw (``vision`` goes on with it for the palette and the wording).

        Cheap (no data is read), so :mod:`banana.baselines` can ask which task every vision slot of
        a generalist's stream drew, and train its specialists on exactly those images.
        """
        choice_rng, _ = np.random.SeedSequence([self.seed, int(index), int(draw)]).spawn(2)
        rng = np.random.default_rng(choice_rng)
        return self.tasks[int(rng.integers(len(self.tasks)))], rng

    def _dropout(self, example: dict, index: int, draw: int) -> dict:
        """InstructPix2Pix condition dropout: one uniform number picks text / image / both / none."""
        _, drop_seq = np.random.SeedSequence([self.seed, int(index), int(draw)]).spawn(2)
        u = np.random.default_rng(drop_seq).random()
        p_text, p_image, p_both = self.drop_text_prob, self.drop_image_prob, self.drop_both_prob
        drop_text = u < p_text or p_text + p_image <= u < p_text + p_image + p_both
        drop_image = p_text <= u < p_text + p_image + p_both
        if drop_text:
            example["prompt"] = ""
        if drop_image:
            example["condition"] = torch.zeros_like(example["condition"])
        example["drop_text"], example["drop_image"] = bool(drop_text), bool(drop_image)
        return example


class MixedBatchSampler(Sampler):
    """Batches of :class:`ExampleKey` mixing generation and vision examples at ``mixing_ratio``.

    Args:
        n_generation, n_vision: sizes of the two sources (rows of the world split for each).
        batch_size: slots per *global* batch (all ranks together; must be divisible by ``world_size``).
        mixing_ratio: fraction of slots that are vision examples, in [0, 1]; 0 = pure generation
            (pretraining), 1 = pure vision. Per batch: ``floor(r * B)`` vision slots plus one more
            with probability ``frac(r * B)`` (stochastic rounding; see the module docstring).
        num_batches: batches yielded in a full pass (the run's ``max_steps``).
        seed: the stream's seed. Global batch ``b`` is a pure function of ``(seed, b)``.
        rank, world_size: rank ``k`` yields slots ``[k * B/W, (k + 1) * B/W)`` of every global batch
            (``B/W`` = :attr:`per_rank` examples per step on each rank).
        start_batch: the first batch to yield (resume: the trainer's ``global_step``).

    Within a batch the generation slots come first, then the vision slots; indices are drawn
    uniformly without replacement inside the batch (with replacement when a source is smaller
    than its slot count) and independently across batches.
    """

    def __init__(self, n_generation: int, n_vision: int, batch_size: int, mixing_ratio: float,
                 num_batches: int, seed: int, rank: int = 0, world_size: int = 1, start_batch: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= mixing_ratio <= 1.0:
            raise ValueError(f"mixing_ratio must be in [0, 1], got {mixing_ratio}")
        if mixing_ratio < 1 and n_generation < 1:
            raise ValueError("mixing_ratio < 1 needs generation examples (n_generation >= 1)")
        if mixing_ratio > 0 and n_vision < 1:
            raise ValueError("mixing_ratio > 0 needs vision examples (n_vision >= 1)")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if batch_size % world_size:
            raise ValueError(f"batch_size={batch_size} (the global batch) must be divisible by the number of "
                             f"devices, world_size={world_size}: each rank takes batch_size // world_size")
        if num_batches < 0 or not 0 <= start_batch:
            raise ValueError(f"need num_batches >= 0 and start_batch >= 0, got {num_batches}, {start_batch}")
        self.n_generation, self.n_vision = int(n_generation), int(n_vision)
        self.batch_size, self.mixing_ratio = int(batch_size), float(mixing_ratio)
        self.num_batches, self.seed = int(num_batches), int(seed)
        self.rank, self.world_size, self.start_batch = int(rank), int(world_size), int(start_batch)

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start_batch)

    @property
    def per_rank(self) -> int:
        """Examples per step on each rank: ``batch_size // world_size``."""
        return self.batch_size // self.world_size

    def __iter__(self) -> Iterator[list[ExampleKey]]:
        first = self.rank * self.per_rank
        for b in range(self.start_batch, self.num_batches):
            yield self.global_batch(b)[first:first + self.per_rank]

    def num_vision(self, rng: np.random.Generator) -> int:
        """Stochastic rounding of ``mixing_ratio * batch_size`` (one uniform draw from ``rng``)."""
        expected = self.mixing_ratio * self.batch_size
        whole = math.floor(expected)
        return min(self.batch_size, whole + int(rng.random() < expected - whole))

    def global_batch(self, b: int) -> list[ExampleKey]:
        """Global batch ``b`` of the stream (pure function of ``(seed, b)``)."""
        rng = _rng(self.seed, b, _SAMPLER_TAG)
        k = self.num_vision(rng)
        slots = [(GENERATION, i) for i in _choose(rng, self.n_generation, self.batch_size - k)]
        slots += [(VISION, i) for i in _choose(rng, self.n_vision, k)]
        first = b * self.batch_size
        return [ExampleKey(source, int(index), first + s) for s, (source, index) in enumerate(slots)]


def _choose(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    return rng.choice(n, size=size, replace=size > n)


def collate_examples(examples: list[dict]) -> dict:
    """Stack tensors, keep strings as lists, bools as a bool tensor."""
    batch = {}
    for name in examples[0]:
        values = [e[name] for e in examples]
        if isinstance(values[0], torch.Tensor):
            batch[name] = torch.stack(values)
        elif isinstance(values[0], bool):
            batch[name] = torch.tensor(values)
        else:
            batch[name] = values
    return batch


def make_dataloader(examples: BananaExamples, sampler: MixedBatchSampler, num_workers: int = 0,
                    pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """The DataLoader of a run: the sampler decides every slot, so no shuffling happens here."""
    return torch.utils.data.DataLoader(examples, batch_sampler=sampler, collate_fn=collate_examples,
                                       num_workers=num_workers, pin_memory=pin_memory,
                                       persistent_workers=False)

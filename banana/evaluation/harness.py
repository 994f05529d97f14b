"""Evaluate a training run directory: predict every task on a world split, write what was measured.

Why a harness on top of :func:`~banana.evaluation.generalist.evaluate_generalist`
--------------------------------------------------------------------------------
A number in a table is only worth as much as the ability to check it. So an evaluation is a
*directory*, not a printout (default ``RUN_DIR/eval-<split>``)::

    metrics.json       every metric, the per-image inference cost, the sampling settings
    predictions.npz    the decoded answers (compressed) + the palettes the prompts named
    run_info.json      provenance (banana.provenance): config, seed, versions, git SHA, machine

and :func:`recompute_metrics` re-scores ``predictions.npz`` against the world split from scratch
(without the model) and must return exactly ``metrics.json["metrics"]``: anybody can check the
numbers, or score the stored answers with another metric, without sampling again.

Two segmentation settings
-------------------------
* ``segmentation``: the prompt names :data:`banana.world.CANONICAL_PALETTE`, the palette seen
  most often in training.
* ``segmentation_unseen_palette``: each batch's prompt names a fresh
  :func:`banana.codecs.random_palette` that the model never saw, and the answer is decoded with
  *that* palette. This is the claim that the model *reads* the colour mapping from the prompt
  (Vision Banana's classes and colours are free text), rather than having memorised one table.
  The palette of batch ``k`` comes from :func:`unseen_palette` ``(seed, k)``, i.e.
  ``numpy.random.default_rng(SeedSequence([UNSEEN_PALETTE_TAG, seed, k]))``. Training draws its
  random palettes from *children* spawned off ``SeedSequence([train_seed, index, draw])``, whose
  hashed input is five words long (entropy padded to the pool size, then the spawn key); ours is
  a three-word root input starting with a fixed 32-bit tag, so the two streams never hash the
  same input. Batch ``k`` uses the same sampling noise (``seed + k``) in both settings, so their
  difference is due to the palette alone.

Depth is scored in metres and after per-image affine alignment; normals by angular error
(protocol: :mod:`banana.evaluation.metrics`). Inference cost is the pipeline's wall-clock
seconds per image per task (:attr:`BananaPipeline.last_timing`: sampling + decoding +
ensembling); :func:`time_predict` measures the same for any ``.predict(images)`` object, such as
a task specialist, and :func:`evaluate_specialist` scores one with the same metrics.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from banana.evaluation.scoring import label_arrays, score_task   # score_task re-exported: the one scoring function

__all__ = ["evaluate_run", "evaluate_pipeline", "evaluate_specialist", "write_evaluation", "recompute_metrics",
           "score_task", "time_predict", "unseen_palette", "UNSEEN_PALETTE_TAG", "METRICS_FILE",
           "PREDICTIONS_FILE", "UNSEEN_TASK", "EVAL_TASKS", "QUERY_EVAL_TASKS"]

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.npz"
#: The key of the unseen-palette segmentation setting in metrics and predictions.
UNSEEN_TASK = "segmentation_unseen_palette"
#: Everything an evaluation scores by default, in the order it is run.
EVAL_TASKS: tuple[str, ...] = ("segmentation", UNSEEN_TASK, "depth", "normals")
#: The query tasks (scored when asked: a generator tuned without them cannot answer them;
#: protocol: :mod:`banana.evaluation.prompted`).
QUERY_EVAL_TASKS: tuple[str, ...] = ("instance", "referring")
#: First entropy word of the evaluation palettes' seed sequence (see the module docstring).
UNSEEN_PALETTE_TAG = 0xE7A1_9A1E


# --------------------------------------------------------------------------- small pieces
def unseen_palette(seed: int, batch: int, class_names: Sequence[str] | None = None) -> dict[str, tuple[int, int, int]]:
    """The evaluation palette of ``batch``: ``random_palette(class_names, rng)`` with ``rng`` from
    ``SeedSequence([UNSEEN_PALETTE_TAG, seed, batch])`` (a stream training never draws from).
    ``class_names`` default: the world's ``CLASS_NAMES`` (a real dataset passes its own)."""
    from banana.codecs import random_palette
    from banana.world import CLASS_NAMES

    rng = np.random.default_rng(np.random.SeedSequence([UNSEEN_PALETTE_TAG, int(seed), int(batch)]))
    return random_palette(CLASS_NAMES if class_names is None else class_names, rng)


def _spec(split):
    from banana.real.common import dataset_spec

    return dataset_spec(split)


def _json_clean(value: Any) -> Any:
    """NaN/inf -> ``None`` (strict JSON has no NaN; a class absent from a split has IoU NaN),
    numpy scalars -> Python, tuples -> lists. Applied to written and recomputed metrics alike, so
    the two compare with ``==``."""
    if isinstance(value, Mapping):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_clean(v) for v in value]
    if isinstance(value, (np.generic, torch.Tensor)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_predict(model, images, batch_size: int = 16, repeats: int = 1, warmup: bool = True,
                 **kwargs) -> dict[str, float]:
    """Wall-clock seconds per image of ``model.predict(batch, **kwargs)`` over ``images``.

    For any object with ``.predict(images)`` (a specialist, or ``BananaPipeline`` with
    ``task=...`` in ``kwargs``), so the generalist's cost (:attr:`BananaPipeline.last_timing`)
    can be put next to a specialist's on the same images. ``warmup`` runs one untimed batch
    first (lazy initialisation and allocator warm-up are not the steady-state cost); CUDA is
    synchronised around the timed region.
    """
    n = len(images)
    if n == 0:
        raise ValueError("time_predict got no images")
    if batch_size < 1 or repeats < 1:
        raise ValueError(f"batch_size and repeats must be >= 1, got {batch_size}, {repeats}")
    if warmup:
        model.predict(images[:batch_size], **kwargs)
    _sync()
    start = time.perf_counter()
    for _ in range(repeats):
        for lo in range(0, n, batch_size):
            model.predict(images[lo:lo + batch_size], **kwargs)
    _sync()
    seconds = time.perf_counter() - start
    return {"seconds_per_image": seconds / (n * repeats), "seconds": seconds, "images": n,
            "batch_size": batch_size, "repeats": repeats}


# --------------------------------------------------------------------------- evaluating
def _available(split, tasks: Sequence[str] | None) -> list[str]:
    """``tasks`` (``None``: every :data:`EVAL_TASKS` entry the split has labels for), checked
    against what the split offers (:func:`banana.real.dataset_spec`)."""
    offered = _spec(split).tasks
    every = EVAL_TASKS + QUERY_EVAL_TASKS
    has = {t: (t if t != UNSEEN_TASK else "segmentation") in offered for t in every}
    if tasks is None:
        return [t for t in EVAL_TASKS if has[t]]
    unknown = set(tasks) - set(every)
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {every}, got {list(tasks)}")
    missing = [t for t in tasks if not has[t]]
    if missing:
        raise ValueError(f"the {_spec(split).name} split has no labels for {missing}; it offers {offered}")
    return list(tasks)


def evaluate_pipeline(pipe, split, tasks: Sequence[str] | None = None, limit: int | None = None,
                      batch_size: int = 16, seed: int = 0, progress: bool = True, **sampling) -> dict:
    """:func:`evaluate_generalist` over ``tasks`` plus the unseen-palette segmentation setting.

    ``tasks=None``: every task of :data:`EVAL_TASKS` the split has labels for (the world: all;
    Cityscapes: the two segmentation settings; NYUv2: depth and, when built with them, normals).
    Segmentation uses the split's classes and canonical palette (:func:`banana.real.dataset_spec`).

    ``tasks`` may contain :data:`UNSEEN_TASK`: batch ``k`` (rows ``k*batch_size`` onward) is then
    prompted with :func:`unseen_palette` ``(seed, k)``, decoded with it, and sampled with the
    same noise (``seed + k``) as the canonical setting's batch ``k``. Returns
    :func:`evaluate_generalist`'s dict (``metrics``, ``predictions``, ``seconds_per_image``,
    ``n_images``) with the unseen setting added and ``palettes``: ``{"canonical": {...},
    "unseen": [one palette per batch], "unseen_batch": row -> batch index}``.
    """
    from banana.evaluation.generalist import evaluate_generalist

    tasks = _available(split, tasks)
    spec = _spec(split)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(split) if limit is None else min(limit, len(split))
    if n == 0:
        raise ValueError("evaluate_pipeline got an empty split (or limit=0)")
    standard = [t for t in tasks if t != UNSEEN_TASK and t not in QUERY_EVAL_TASKS]
    results: dict = {"metrics": {}, "predictions": {}, "seconds_per_image": {}, "n_images": n,
                     "palettes": {"canonical": dict(spec.palette)}, "class_names": list(spec.class_names)}
    if standard:
        results.update({k: v for k, v in evaluate_generalist(
            pipe, split, tasks=standard, palette=dict(spec.palette), limit=n, batch_size=batch_size, seed=seed,
            progress=progress, **sampling).items() if k in ("metrics", "predictions", "seconds_per_image")})
    if UNSEEN_TASK in tasks:
        outputs, palettes, batch_of, seconds = [], [], [], 0.0
        for k, start in enumerate(range(0, n, batch_size)):
            stop = min(n, start + batch_size)
            palette = unseen_palette(seed, k, spec.class_names)
            # One batch of evaluate_generalist on the rows [start, stop): its batch 0 uses seed + k.
            part = evaluate_generalist(pipe, split.select(range(start, stop)), tasks=("segmentation",),
                                       palette=palette, batch_size=batch_size, seed=seed + k, progress=False,
                                       **sampling)
            outputs.append(part["predictions"]["segmentation"])
            seconds += part["seconds_per_image"]["segmentation"] * (stop - start)
            palettes.append(palette)
            batch_of += [k] * (stop - start)
        prediction = np.concatenate(outputs)
        results["predictions"][UNSEEN_TASK] = prediction
        results["seconds_per_image"][UNSEEN_TASK] = seconds / n
        results["metrics"][UNSEEN_TASK] = score_task(UNSEEN_TASK, prediction, label_arrays(split, n), spec.class_names,
                                                     spec.depth_range)
        results["palettes"]["unseen"] = palettes
        results["palettes"]["unseen_batch"] = np.asarray(batch_of, dtype=np.int64)   # row -> its batch
    asked = [t for t in tasks if t in QUERY_EVAL_TASKS]
    if asked:
        _evaluate_queries(pipe, split, asked, n, batch_size, seed, progress, results, sampling)
    results["metrics"] = {t: results["metrics"][t] for t in tasks}     # the order asked for
    return results


def _evaluate_queries(pipe, split, tasks, n, batch_size, seed, progress, results, sampling) -> None:
    """The query tasks of :func:`evaluate_pipeline`: the same queries for every model
    (:func:`~banana.evaluation.prompted.evaluation_queries`), batch ``k`` sampled with ``seed + k``."""
    from banana.evaluation.prompted import answer_queries, evaluation_queries, pipeline_answer, query_truth, score_query_task

    queries = evaluation_queries(split, n, seed)
    results.setdefault("queries", {})
    for task in tasks:
        asked = queries[task]
        start = time.perf_counter()
        prediction = answer_queries(pipeline_answer(pipe, task, seed=seed, **sampling), split, task, asked, batch_size)
        results["seconds_per_image"][task] = (time.perf_counter() - start) / len(asked["rows"])
        results["predictions"][task] = prediction
        results["queries"][task] = asked
        results["metrics"][task] = score_query_task(task, prediction, query_truth(split, task, asked["rows"], asked["queries"]))


def evaluate_specialist(model, split, task: str, limit: int | None = None, batch_size: int = 16,
                        progress: bool = False) -> dict:
    """Score any ``model.predict(images)`` (a task specialist) on ``task`` the way the generalist
    is scored, timing it per image. Segmentation labels must be ids in :data:`CLASS_NAMES` order
    (255 = rejected). Returns the same shape as :func:`evaluate_pipeline`, so
    :func:`write_evaluation` and :func:`recompute_metrics` work on it too. Images go in as the
    world stores them (uint8 ``[B, 3, H, W]`` numpy)."""
    from tqdm.auto import tqdm

    if task not in ("segmentation", "depth", "normals"):
        raise ValueError(f"a specialist answers segmentation, depth or normals, got {task!r}")
    n = len(split) if limit is None else min(limit, len(split))
    if n == 0:
        raise ValueError("evaluate_specialist got an empty split (or limit=0)")
    images = np.asarray(split[0:n]["image"])
    outputs, seconds = [], 0.0
    for lo in tqdm(range(0, n, batch_size), desc=f"specialist {task}", disable=not progress):
        _sync()
        start = time.perf_counter()
        out = model.predict(images[lo:lo + batch_size])
        _sync()
        seconds += time.perf_counter() - start
        outputs.append(_as_numpy(out))
    prediction = np.concatenate(outputs)
    spec = _spec(split)
    names = list(spec.class_names)
    return {"metrics": {task: score_task(task, prediction, label_arrays(split, n), names, spec.depth_range)}, "predictions": {task: prediction},
            "seconds_per_image": {task: seconds / n}, "n_images": n, "class_names": names}


# --------------------------------------------------------------------------- writing / re-scoring
def _compact(task: str, prediction: np.ndarray) -> np.ndarray:
    """Labels as uint8 when they fit (0..K-1 and 255 = rejected): 8x smaller, same scores."""
    prediction = np.asarray(prediction)
    if task in ("segmentation", UNSEEN_TASK, "instance") and prediction.size and 0 <= prediction.min() and prediction.max() <= 255:
        return prediction.astype(np.uint8)
    return prediction


def write_evaluation(out_dir: str | Path, results: Mapping, *, split: str, world_dir: str | Path,
                     info: Mapping[str, Any] | None = None) -> Path:
    """Write ``metrics.json``, ``predictions.npz`` and ``run_info.json`` into ``out_dir``.

    ``predictions.npz`` holds one array per task (labels ``[N, H, W]`` uint8, metres
    ``[N, H, W]`` float32 with ``inf`` = "beyond the path", unit normals ``[N, 3, H, W]``) for
    rows ``0..N-1`` of the split, plus ``class_names``, ``palette_canonical`` ``[K, 3]`` and, for
    the unseen setting, ``palettes_unseen`` ``[N, K, 3]`` (row ``i``: the palette image ``i``'s
    prompt named and its answer was decoded with). ``info`` (sampling settings etc.) goes into
    both ``metrics.json`` and ``run_info.json``.
    """
    from banana.evaluation.generalist import headline_metrics
    from banana.provenance import write_run_info
    from banana.world import CLASS_NAMES

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = int(results["n_images"])
    arrays: dict[str, np.ndarray] = {task: _compact(task, pred) for task, pred in results["predictions"].items()}
    class_names = list(results.get("class_names", CLASS_NAMES))   # the dataset's (world: CLASS_NAMES)
    arrays["class_names"] = np.asarray(class_names, dtype=str)
    arrays["indices"] = np.arange(n, dtype=np.int64)
    palettes = results.get("palettes", {})
    if "canonical" in palettes:
        arrays["palette_canonical"] = np.asarray([palettes["canonical"][c] for c in class_names], np.uint8)
    if "unseen" in palettes:
        per_batch = np.asarray([[p[c] for c in class_names] for p in palettes["unseen"]], np.uint8)
        arrays["palettes_unseen"] = per_batch[np.asarray(palettes["unseen_batch"])]
    for task, asked in results.get("queries", {}).items():      # the query tasks: which row was asked what
        arrays[f"{task}_rows"] = np.asarray(asked["rows"], np.int64)
        arrays[f"{task}_queries"] = np.asarray(asked["queries"], dtype=str)
    np.savez_compressed(out_dir / PREDICTIONS_FILE, **arrays)

    metrics = results["metrics"]
    headline = headline_metrics(metrics)
    if UNSEEN_TASK in metrics:
        headline["segmentation mIoU (unseen palette)"] = metrics[UNSEEN_TASK]["miou"]
    record = {"split": split, "world_dir": str(Path(world_dir).resolve()), "n_images": n,
              "metrics": metrics, "headline": headline, "seconds_per_image": dict(results["seconds_per_image"]),
              "unseen_palette_rule": (f"batch k: random_palette(CLASS_NAMES, default_rng(SeedSequence("
                                      f"[{UNSEEN_PALETTE_TAG:#x}, seed, k])))") if "unseen" in palettes else None,
              **dict(info or {})}
    (out_dir / METRICS_FILE).write_text(json.dumps(_json_clean(record), indent=1) + "\n")
    write_run_info(out_dir, {"evaluation": {"split": split, "world_dir": record["world_dir"], "n_images": n,
                                            **dict(info or {})}, "seed": (info or {}).get("seed")})
    return out_dir


def recompute_metrics(eval_dir: str | Path, world_dir: str | Path | None = None) -> dict:
    """Re-score ``predictions.npz`` of an evaluation directory against its world split.

    Uses only the stored answers and the world labels (``world_dir`` default: the one recorded in
    ``metrics.json``) - no model. Returns ``{task: metrics}``, equal (``==``) to
    ``metrics.json["metrics"]`` when the files are what the harness wrote.
    """
    from banana.evaluation.prompted import query_truth, score_query_task
    from banana.world import load_world

    eval_dir = Path(eval_dir)
    record = json.loads((eval_dir / METRICS_FILE).read_text())
    split = load_world(world_dir or record["world_dir"])[record["split"]]
    spec = _spec(split)
    class_names = list(spec.class_names)
    with np.load(eval_dir / PREDICTIONS_FILE, allow_pickle=False) as stored:
        if list(stored["class_names"]) != class_names:
            raise ValueError(f"{eval_dir} was scored with classes {list(stored['class_names'])}, "
                             f"the dataset has {class_names}")
        n = int(len(stored["indices"]))
        if not np.array_equal(stored["indices"], np.arange(n)):
            raise ValueError(f"{eval_dir}/{PREDICTIONS_FILE} does not hold rows 0..{n - 1} of the split")
        truth = label_arrays(split, n)
        metrics = {task: score_task(task, stored[task], truth, class_names, spec.depth_range)
                   for task in record["metrics"] if task not in QUERY_EVAL_TASKS}
        for task in (t for t in record["metrics"] if t in QUERY_EVAL_TASKS):
            rows, queries = stored[f"{task}_rows"].tolist(), stored[f"{task}_queries"].tolist()
            metrics[task] = score_query_task(task, stored[task], query_truth(split, task, rows, queries))
        metrics = {task: metrics[task] for task in record["metrics"]}
    return _json_clean(metrics)


def _built_world(recorded: str | Path) -> Path:
    """The world a run recorded: relative paths (shipped study models) are the repository's; the
    embedded world of a profile (``data/world/PROFILE``) is built when missing (seeded, exact)."""
    from banana.paths import PROFILES, WORLD_DIR, resolve_recorded
    from banana.world import WORLD_PRESETS, build_world

    path = resolve_recorded(recorded)
    if not path.exists() and path.parent == WORLD_DIR and path.name in PROFILES:
        build_world(path, WORLD_PRESETS[path.name], progress=False)
    return path


def evaluate_run(run_dir: str | Path, split: str = "test", out_dir: str | Path | None = None, *,
                 tasks: Sequence[str] | None = None, num_inference_steps: int | None = None, scheduler: str = "ddim",
                 ensemble_size: int | None = None, text_guidance: float | None = None,
                 image_guidance: float | None = None, limit: int | None = None, batch_size: int = 16, seed: int = 0,
                 base_dir: str | Path | None = None, world_dir: str | Path | None = None,
                 device: str | None = None, progress: bool = True) -> Path:
    """Load a finished training run, evaluate it on a world split and write the evaluation.

    Args:
        run_dir: a :func:`banana.training.train` run directory (``model/`` or ``adapter/``).
        split: ``"test"`` (in distribution) or ``"held_out"`` (unseen shape/colour pairings), or
            any other split of the world (a real dataset: Cityscapes ``"val"``, NYUv2 ``"test"``).
        out_dir: default ``run_dir/eval-<split>``.
        tasks: default every task the dataset has labels for (see :func:`evaluate_pipeline`).
        num_inference_steps, ensemble_size, text_guidance, image_guidance: ``None`` = the
            pipeline's :class:`~banana.pipeline.SamplingDefaults`; the resolved values are recorded.
        base_dir: the base generator of a LoRA run whose base path was not recorded.
        world_dir: default the run's ``config.json`` ``world_dir``.
        device: default CUDA when available, else CPU.

    One untimed warm-up prediction runs first, so ``seconds_per_image`` is the steady-state cost.

    Returns ``out_dir`` holding ``metrics.json``, ``predictions.npz`` and ``run_info.json``.
    """
    from banana.pipeline import BananaPipeline
    from banana.training.run import load_run, read_config
    from banana.world import load_world

    run_dir = Path(run_dir)
    train_config, _ = read_config(run_dir)
    world_dir = world_dir or train_config.world_dir
    if world_dir is None:
        raise ValueError(f"{run_dir}/config.json records no world_dir: pass world_dir=")
    world = load_world(_built_world(world_dir))
    if split not in world:
        raise ValueError(f"the world at {world_dir} has no split {split!r}; it has {list(world)}")
    generator = load_run(run_dir, base_dir=base_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = BananaPipeline(generator.to(device), scheduler=scheduler)
    sampling = {"num_inference_steps": num_inference_steps, "ensemble_size": ensemble_size,
                "text_guidance": text_guidance, "image_guidance": image_guidance}
    given = {k: v for k, v in sampling.items() if v is not None}
    # One untimed 1-step answer first: lazy initialisation (and CUDA start-up) would otherwise be
    # charged to whichever task runs first, skewing the per-task inference cost.
    pipe.predict(world[split][0:1]["image"], "depth", num_inference_steps=1, generator=torch.Generator().manual_seed(0))
    results = evaluate_pipeline(pipe, world[split], tasks=tasks, limit=limit, batch_size=batch_size, seed=seed,
                                progress=progress, **given)
    resolved = {k: (v if v is not None else getattr(pipe.defaults, k)) for k, v in sampling.items()}
    info = {"run_dir": str(run_dir.resolve()), "seed": seed, "batch_size": batch_size, "device": str(device),
            "sampling": {"scheduler": pipe.scheduler_name, **resolved}, "train_config": train_config.to_dict()}
    out_dir = Path(out_dir) if out_dir is not None else run_dir / f"eval-{split}"
    return write_evaluation(out_dir, results, split=split, world_dir=world_dir, info=info)

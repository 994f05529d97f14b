"""Floor baselines: what a model scores that learned nothing from the image.

A number means something only next to what a trivial predictor scores. Each floor here is
fitted on the **train** split and then answers every image with the same map, ignoring the
input:

* ``majority class`` (segmentation): per pixel position, the class most frequent at that
  position over the train split (ties: the lowest id). On the world it paints the typical
  layout - sky on top, wall in the middle, floor below.
* ``median depth``: per pixel position, the median train depth (``inf`` included, so a
  position that is sky in most train images is answered "sky").
* ``mean normal``: per pixel position, the mean of the train normals there, renormalised (the
  zero vector where the mean vanishes).

The fourth floor is a model: the **untuned base generator** prompted with each task (notebook 05
scores it with the same harness as the generalist). It shows what generative pretraining alone
gives before any vision example.

Each floor is an object with ``.predict(images)``, so
:func:`banana.evaluation.harness.evaluate_specialist` scores it exactly as it scores a specialist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FLOOR_NAMES", "ConstantPredictor", "fit_floors"]

#: Display names of the per-task trivial floors (the keys of :func:`fit_floors`' result).
FLOOR_NAMES = {"segmentation": "floor: majority class", "depth": "floor: median depth",
               "normals": "floor: mean normal"}


@dataclass
class ConstantPredictor:
    """Answers every image with one fixed map ``answer`` (``[H, W]`` or ``[3, H, W]``)."""

    task: str
    answer: np.ndarray

    def predict(self, images) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-2:] != self.answer.shape[-2:]:
            raise ValueError(f"the {self.task} floor answers [B, 3, {self.answer.shape[-2]}, {self.answer.shape[-1]}] "
                             f"images, got {images.shape}")
        return np.broadcast_to(self.answer, (images.shape[0], *self.answer.shape)).copy()


def _majority(semantic: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    counts = np.stack([(semantic == c).sum(axis=0) for c in range(num_classes)])
    answer = counts.argmax(axis=0)
    # a position that is "ignore" in every train image has no majority: answer "rejected"
    return np.where(counts.sum(axis=0) > 0, answer, ignore_index).astype(np.int64)


def fit_floors(train_split, tasks=None, limit: int | None = None) -> dict[str, ConstantPredictor]:
    """The per-task floors of :data:`FLOOR_NAMES` fitted on ``train_split`` (its first ``limit``
    rows; default all), for every task of ``tasks`` (default: what the split has labels for)."""
    from banana.real.common import dataset_spec

    spec = dataset_spec(train_split)
    tasks = [t for t in ("segmentation", "depth", "normals") if t in spec.tasks] if tasks is None else list(tasks)
    n = len(train_split) if limit is None else min(limit, len(train_split))
    if n == 0:
        raise ValueError("fit_floors got an empty train split")
    rows = train_split[0:n]
    floors = {}
    for task in tasks:
        if task not in spec.tasks:
            raise ValueError(f"the {spec.name} split has no {task} labels; it offers {spec.tasks}")
        if task == "segmentation":
            answer = _majority(np.asarray(rows["semantic"]), len(spec.class_names), spec.ignore_index)
        elif task == "depth":
            answer = np.median(np.asarray(rows["depth"], dtype=np.float64), axis=0).astype(np.float32)
        elif task == "normals":
            mean = np.asarray(rows["normals"], dtype=np.float64).mean(axis=0)
            norm = np.linalg.norm(mean, axis=0, keepdims=True)
            answer = np.where(norm > 1e-6, mean / np.maximum(norm, 1e-12), 0.0).astype(np.float32)
        else:
            raise ValueError(f"no floor for task {task!r}")
        floors[task] = ConstantPredictor(task, answer)
    return floors

"""Small helpers for the worked solutions of the notebooks' exercises (``notebooks/solutions/``).

The solution notebooks narrate; the few computations longer than a handful of lines live here,
built only from banana's public functions (codecs, world, training, evaluation, grid), so a
solution reads the same library the numbered notebooks use. Nothing here changes a library
default: a permuted cube walk, a recoloured scene or an extended grid is built as a new object.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["segmentation_noise_errors", "cube_walk_orders", "walk_report", "cube_walk_step", "depth_of_cube_walk_step",
           "recolor_objects", "floor_depth_by_hand", "point_scores", "find_or_train", "palette_following",
           "smallest_within_sd", "extended_grid", "curve_row", "train_generalist_and_specialists", "finished_contestants"]


# --------------------------------------------------------------------------- notebook 01: codecs
def segmentation_noise_errors(codec, labels: np.ndarray, noise_stds: Sequence[float], seed: int = 0):
    """Encode ``labels`` with ``codec`` (a :class:`~banana.codecs.SegmentationCodec`), add Gaussian RGB
    noise of each std (0..1 units), store in 8 bits, decode: the share of pixels decoded exactly, decoded
    to **another class** (confused) and **rejected** (farther than the reject radius from every colour)."""
    import pandas as pd

    from banana.codecs import quantize

    painted = codec.encode(labels.astype(np.int64))
    rng, rows = np.random.default_rng(seed), []
    for std in noise_stds:
        noisy = np.clip(painted + rng.normal(0, std, painted.shape).astype(np.float32), 0, 1)
        decoded = codec.decode(quantize(noisy))
        rejected = decoded == codec.ignore_index
        rows.append({"noise_std": std, "exact": float((decoded == labels).mean()), "rejected": float(rejected.mean()),
                     "confused": float(((decoded != labels) & ~rejected).mean())})
    return pd.DataFrame(rows)


def cube_walk_orders(n: int, seed: int = 0) -> list[np.ndarray]:
    """The paper's cube walk followed by ``n`` random reorderings of its six middle vertices (black
    stays first, white last): ``[8, 3]`` vertex arrays for :class:`~banana.codecs.ColorPath`."""
    from banana.codecs import CUBE_PATH_VERTICES

    paper = np.asarray(CUBE_PATH_VERTICES, np.float64)
    rng = np.random.default_rng(seed)
    return [paper] + [np.concatenate([paper[:1], paper[1:-1][rng.permutation(6)], paper[-1:]]) for _ in range(n)]


def _segment_gap(a0, a1, b0, b1, samples: int = 65) -> float:
    """The smallest distance between two segments of RGB space (dense sampling; exact enough here)."""
    s = np.linspace(0, 1, samples)[:, None]
    p, q = a0 + s * (a1 - a0), b0 + s * (b1 - b0)
    return float(np.sqrt(((p[:, None] - q[None]) ** 2).sum(-1)).min())


def walk_report(vertices: np.ndarray, noise_std: float = 0.1, seed: int = 0, n: int = 20000) -> dict:
    """How a colour walk behaves as a depth path, in the warped unit ``t`` (the depth codec's ``f``;
    errors in 8-bit steps of ``1 / (segments * 255)``): whether each step flips one channel (a Gray
    code), its longest segment, the smallest gap between segments that are not neighbours on the walk,
    the worst error after 8 bits, and with Gaussian colour noise the median error and the share of
    colours decoded more than one segment away (a jump to another part of the walk)."""
    from banana.codecs import ColorPath, quantize

    v = np.asarray(vertices, np.float64)
    path, steps = ColorPath(v), np.abs(np.diff(v, axis=0))
    gaps = [_segment_gap(v[i], v[i + 1], v[j], v[j + 1]) for i in range(len(v) - 1) for j in range(i + 2, len(v) - 1)]
    t = np.linspace(0, 1, n)
    rgb = path.encode(t.astype(np.float32))                                   # [n, 3], channel-last
    noisy = np.clip(rgb + np.random.default_rng(seed).normal(0, noise_std, rgb.shape), 0, 1).astype(np.float32)
    step = 1.0 / (path.num_segments * 255)
    error = {name: np.abs(path.decode(quantize(x)) - t) for name, x in (("8-bit", rgb), ("noisy", noisy))}
    return {"order": "-".join("".join(str(int(c)) for c in row) for row in v), "gray code": bool((steps.sum(1) == 1).all()),
            "longest segment": float(np.sqrt((np.diff(v, axis=0) ** 2).sum(1)).max()),
            "smallest non-neighbour gap": min(gaps), "8-bit worst error (steps)": float(error["8-bit"].max() / step),
            f"noise {noise_std}: median error (steps)": float(np.median(error["noisy"]) / step),
            f"noise {noise_std}: share jumping > 1 segment": float((error["noisy"] > 1 / path.num_segments).mean())}


#: One 8-bit step of the cube walk, in the warped unit: 7 edges of 255 steps each.
CUBE_STEP = 1.0 / (7 * 255)


def cube_walk_step(depth_m):
    """Metres spanned by one 8-bit step of the cube walk at ``depth_m``: ``dd/df * CUBE_STEP`` with
    ``d = 10((1 - f)^-1/2 - 1)``, i.e. ``5 (1 + d/10)^3 / 1785``."""
    return 5.0 * (1.0 + np.asarray(depth_m, np.float64) / 10.0) ** 3 * CUBE_STEP


def depth_of_cube_walk_step(step_m):
    """The depth at which one 8-bit step of the cube walk spans ``step_m`` metres (inverse of
    :func:`cube_walk_step`): ``d = 10 ((step / (5 * CUBE_STEP))^(1/3) - 1)``."""
    return 10.0 * ((np.asarray(step_m, np.float64) / (5.0 * CUBE_STEP)) ** (1.0 / 3.0) - 1.0)


# --------------------------------------------------------------------------- notebook 02: the world
def recolor_objects(scene, shape: str, color_name: str):
    """A copy of ``scene`` (:class:`~banana.world.Scene`) in which every object of ``shape`` has the
    vocabulary colour ``color_name`` (what a held-out rule such as "every banana is purple" draws)."""
    from banana.world import COLOR_VOCABULARY

    objects = [dataclasses.replace(o, color_name=color_name, color_rgb=tuple(COLOR_VOCABULARY[color_name]))
               if o.shape == shape else o for o in scene.objects]
    return dataclasses.replace(scene, objects=objects)


def floor_depth_by_hand(camera: Mapping[str, Any], row: int, col: int, resolution: int) -> float:
    """The z-depth of pixel ``(row, col)`` where its ray meets the floor plane ``y = 0``, computed from
    the data card's pinhole model alone (``camera``: ``Scene.to_dict()["camera"]``)."""
    yaw, pitch = math.radians(camera["yaw_deg"]), math.radians(camera["pitch_deg"])
    forward = np.array([math.cos(pitch) * math.sin(yaw), math.sin(pitch), -math.cos(pitch) * math.cos(yaw)])
    right = np.array([math.cos(yaw), 0.0, math.sin(yaw)])
    up = np.cross(right, forward)
    tan_half = math.tan(math.radians(camera["fov_deg"]) / 2)
    x_c = ((col + 0.5) / resolution * 2 - 1) * tan_half          # camera-space ray (x_c, y_c, -1)
    y_c = (1 - (row + 0.5) / resolution * 2) * tan_half
    direction = x_c * right + y_c * up + forward                  # world space; camera z = -1 means t = z-depth
    return float(-camera["position"][1] / direction[1])          # origin_y + t * dir_y = 0


# --------------------------------------------------------------------------- notebooks 04-07: models
def point_scores(model, split, train_split, n: int, seed: int = 0, tasks: Sequence[str] | None = None,
                 palette: Mapping | None = None, **sampling) -> dict[str, float]:
    """A generator (or a pipeline) scored on the first ``n`` rows of ``split`` the way the grid points
    are (:func:`~banana.evaluation.comparison.point_record`: value, 95% interval, best floor, above it or
    not), plus ``seconds_per_image`` (mean over the tasks asked)."""
    from banana.evaluation.comparison import floor_results, point_record
    from banana.evaluation.generalist import evaluate_generalist
    from banana.pipeline import BananaPipeline

    pipe = model if isinstance(model, BananaPipeline) else BananaPipeline(model, scheduler="ddim")
    result = evaluate_generalist(pipe, split, tasks=tasks, palette=palette, limit=n, seed=seed, progress=False,
                                 **sampling)
    record = point_record(result, split, floor_results(train_split, split, limit=n, tasks=tasks))
    return {**record, "seconds_per_image": float(np.mean(list(result["seconds_per_image"].values())))}


def find_or_train(config, name: str, runs_dir: str | Path, output_dir: str | Path, base_dir, world_dir) -> Path:
    """The finished run ``runs_dir/name`` when it was trained with ``config`` (only its world and base
    may be recorded differently), else ``output_dir/name`` trained (or resumed, or reused) there: a
    solution reuses a notebook's run without ever writing into it."""
    from banana.training import read_config, train

    mine = {k: v for k, v in config.to_dict().items() if k not in ("world_dir", "base_model")}
    found = Path(runs_dir) / name
    if (found / "metrics.json").is_file():
        stored = {k: v for k, v in read_config(found)[0].to_dict().items() if k not in ("world_dir", "base_model")}
        if stored == mine:
            return found
    return train(config, Path(output_dir) / name, generator=base_dir, world_dir=world_dir, progress=False)


def palette_following(rgb: np.ndarray, semantic: np.ndarray, prompted: Mapping, canonical: Mapping) -> float:
    """Of the pixels whose class has different prompted and canonical colours, the share the model painted
    nearer to the **prompted** colour of their true class than to its canonical colour (0.5: no
    preference; 1: it reads the prompt; 0: it paints from memory). ``rgb``: ``[B, 3, H, W]`` in [0, 1]."""
    names = list(canonical)
    wanted = np.asarray([prompted[c] for c in names], np.float64)[semantic]        # [B, H, W, 3]
    memory = np.asarray([canonical[c] for c in names], np.float64)[semantic]
    painted = np.moveaxis(np.asarray(rgb, np.float64) * 255.0, -3, -1)
    near_prompt = ((painted - wanted) ** 2).sum(-1) < ((painted - memory) ** 2).sum(-1)
    differs = (wanted != memory).any(-1)
    return float(near_prompt[differs].mean()) if differs.any() else float("nan")


def train_generalist_and_specialists(config, out_dir: str | Path, base_dir, world_dir, specialist_steps=None):
    """The generalist ``config`` tuned from ``base_dir`` into ``out_dir/generalist`` and one random-init
    specialist per task replaying its vision images (``out_dir/specialist-TASK``; ``specialist_steps``:
    ``None`` one pass over that stream, else that many steps). Returns ``(generalist, {task: specialist})``."""
    from banana.baselines import load_specialist, matched_config, train_specialist
    from banana.tasks import TASKS
    from banana.training import load_run, train

    out_dir = Path(out_dir)
    run = train(config, out_dir / "generalist", generator=base_dir, world_dir=world_dir, progress=False)
    for task in TASKS:
        train_specialist(matched_config(run, task, max_steps=specialist_steps), out_dir / f"specialist-{task}",
                         world_dir=world_dir, progress=False)
    return load_run(run), {task: load_specialist(out_dir / f"specialist-{task}") for task in TASKS}


def finished_contestants(tune_run_dir: str | Path, baseline_dir: str | Path):
    """Notebook 05's generalist and random-init specialists from finished runs (``tune_run_dir`` and
    ``baseline_dir/specialist-TASK``), loaded without touching them, in the namespace of
    :func:`banana.evaluation.contest.shipped_contestants` (``generalist``, ``specialists``,
    ``images_seen``, ``folders``). A missing run is a FileNotFoundError saying to run notebook 05."""
    from types import SimpleNamespace

    from banana.baselines import load_specialist
    from banana.tasks import TASKS
    from banana.training import load_run

    tune_run_dir, baseline_dir = Path(tune_run_dir), Path(baseline_dir)
    runs = [tune_run_dir, *(baseline_dir / f"specialist-{t}" for t in TASKS)]
    missing = [str(r) for r in runs if not (r / "metrics.json").is_file()]
    if missing:
        raise FileNotFoundError(f"no finished run at {missing}: run notebook 05 (profile and runs folder as here) first")
    return SimpleNamespace(
        generalist=load_run(tune_run_dir), specialists={t: load_specialist(baseline_dir / f"specialist-{t}") for t in TASKS},
        images_seen={t: json.loads((baseline_dir / f"specialist-{t}" / "metrics.json").read_text())["images_seen"]
                     for t in TASKS}, folders={"generalist": tune_run_dir, "specialists": baseline_dir})


# --------------------------------------------------------------------------- notebooks 06-08: grids
def smallest_within_sd(results, x: str, metrics: Mapping[str, bool]):
    """Per metric (name -> higher is better) of a grid's ``results.csv``: the best mean over seeds, the
    seed sd there, and the smallest ``x`` whose mean is within one sd of that best."""
    import pandas as pd

    rows = []
    for metric, higher in metrics.items():
        stats = results.groupby(x)[metric].agg(["mean", "std"]).sort_index()
        best = stats["mean"].idxmax() if higher else stats["mean"].idxmin()
        sd = float(np.nan_to_num(stats.loc[best, "std"]))
        close = stats.index[(stats["mean"] - stats.loc[best, "mean"]).abs() <= sd]
        rows.append({"metric": metric, f"best {x}": best, "best mean": stats.loc[best, "mean"], "seed sd": sd,
                     f"smallest {x} within 1 sd": close.min()})
    return pd.DataFrame(rows)


def extended_grid(notebook: str | Path, grid_file: str | Path, profile: str, axis: str, value, grid_dir=None):
    """The grid of ``grid_file`` for ``profile`` with ``value`` added to ``axis`` (the grid folder's stored
    spec when ``grid_dir`` holds one, so its fixed parameters match) and each point's state there:
    ``(GridSpec, {point name: "done" | "failed" | "pending" ...})``. ``run_grid(notebook, spec,
    out_dir=grid_dir, profile=profile)`` would then run only the pending points."""
    from banana.grid import expand_grid, load_grid, notebook_defaults, point_status

    stored = Path(grid_dir) / "grid.json" if grid_dir is not None else None
    if stored is not None and stored.is_file():
        record = json.loads(stored.read_text())
        name, parameters, axes, points = record["name"], record["parameters"], record["axes"], record["points"]
    else:
        spec = load_grid(grid_file, profile, defaults=notebook_defaults(notebook))
        name, parameters, axes, points = spec.name, spec.parameters, spec.axes, spec.points
    values = {a: list(dict.fromkeys(p[a] for p in points)) for a in axes}
    values[axis] = sorted(set(values[axis]) | {value})
    spec = expand_grid(name, parameters, {"product": values}, profile=profile, defaults=notebook_defaults(notebook))
    folder = Path(grid_dir) if grid_dir is not None else Path("/nonexistent")
    return spec, {spec.point_name(p): point_status(folder / spec.point_name(p)) for p in spec.points}


def curve_row(results_csv: str | Path, arm: str, labeled_scenes: int, seed: int, images_seen: int):
    """The finished learning-curve point of ``arm`` at ``labeled_scenes`` and ``seed`` in an aggregated
    ``results.csv`` when it was trained as long as asked (``images_seen`` = steps x batch size: a point of
    another profile does not match), as a ``pandas.Series``; else ``None``."""
    import pandas as pd

    path = Path(results_csv)
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    match = table[(table["arm"] == arm) & (table["labeled_scenes"] == labeled_scenes) & (table["seed"] == seed)
                  & (table["status"] == "done") & (table["images_seen"] == images_seen)]
    if "overrides" in match:
        match = match[match["overrides"].fillna("{}").isin(["{}", ""])]
    return match.iloc[0] if len(match) else None

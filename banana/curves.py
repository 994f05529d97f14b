"""Learning curves: task accuracy against the number of **labeled** scenes, per training arm.

Why
---
Vision Banana's premise is that generation data are plentiful and dense labels are scarce, and
its thesis that a generator's pretraining turns a little labeled data into a generalist. At our
scale the question that can be answered is: *where, if anywhere, does generative pretraining
pay?* So every arm here trains on the same labeled pool (the first ``labeled_scenes`` scenes of
the world's train split; :attr:`banana.training.TrainConfig.labeled_scenes`) for the same number
of steps, and is scored on the same images with the same intervals and floors. The base
generator was pretrained on all 2,000 train images with their descriptions and **no dense
label**: the unlabeled pool is every scene, the labeled pool a small part of it.

The arms (:data:`ARMS`)
-----------------------
* ``generalist-paper``: the paper's recipe as banana first implemented it (LoRA on the attention,
  uniform timesteps, the random condition channels kept, half the segmentation prompts with a
  random palette; :func:`banana.profiles.tuning_config`).
* ``generalist-best``: the recipe chosen on val (:data:`BEST_RECIPE`: full tuning, vision examples
  at the terminal timestep t = T-1, condition channels zeroed, lr 3e-4, canonical palette).
* ``control``: ``generalist-best`` from a random init (no generative pretraining; same trainable
  set, :func:`banana.baselines.train_control`).
* ``specialist-random`` / ``specialist-pretrained``: one specialist per task (a UNet with a
  task head) trained on exactly the vision images of that task the ``generalist-best`` arm sees
  (:func:`banana.baselines.replay_vision_stream`), from a random init or from the base's UNet.

Every arm is decoded in one step (the terminal-timestep recipe is a one-step predictor; for
``generalist-paper`` the decoding grid found 1 step within noise of 10). :func:`run_curve_point`
trains and scores one ``(arm, labeled_scenes)`` point, :func:`plot_learning_curves` draws the
aggregated grid (``grids/learning_curves.yaml``, notebook 08) and :func:`curve_verdict` reads it
out; :mod:`banana.study_models` ships the models of a study grid's points.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from banana.training.recipe import BEST_RECIPE
from banana.style import floor_line, panel_layout, slide_size, use_style

__all__ = ["ARMS", "BEST_RECIPE", "CURVE_METRICS", "parse_overrides", "arm_config", "run_curve_point",
           "plot_learning_curves", "curve_verdict", "interval_outcome"]

#: arm -> (kind, description); kind is "generalist", "control" or "specialist".
ARMS: dict[str, tuple[str, str]] = {
    "generalist-paper": ("generalist", "generalist, first recipe (LoRA, uniform t)"),
    "generalist-best": ("generalist", "generalist, best recipe (full, t = T-1)"),
    "control": ("control", "no pretraining (best recipe, random init)"),
    "specialist-random": ("specialist", "specialists, random init"),
    "specialist-pretrained": ("specialist", "specialists, pretrained UNet"),
}

#: The metrics a curve shows: record key -> (panel title, higher is better).
CURVE_METRICS: dict[str, tuple[str, bool]] = {
    "segmentation_miou": ("segmentation mIoU (canonical palette)", True),
    "segmentation_miou_unseen": ("segmentation mIoU (unseen palette)", True),
    "depth_delta1": ("depth δ1 (metric)", True),
    "depth_abs_rel": ("depth AbsRel (metric)", False),
    "normals_mean_deg": ("normals mean angular error (deg)", False),
}


def parse_overrides(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """``"task_loss_weight=0.1,mixing_ratio=1.0"`` (a grid-friendly string; ``""``: none) or a mapping
    -> ``{field: value}`` of :class:`~banana.training.TrainConfig` fields, values parsed as Python
    literals (bare words stay strings). Unknown fields and the point's own fields are errors."""
    import ast

    from banana.training import TrainConfig

    if text is None or isinstance(text, Mapping):
        pairs = dict(text or {})
    else:
        pairs = {}
        for item in filter(None, (part.strip() for part in str(text).split(","))):
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"recipe override {item!r} is not NAME=VALUE")
            try:
                pairs[name.strip()] = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                pairs[name.strip()] = value.strip()
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(pairs) - fields)
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown} in the recipe overrides")
    owned = sorted(set(pairs) & {"labeled_scenes", "max_steps", "batch_size", "seed", "stage", "base_model", "world_dir"})
    if owned:
        raise ValueError(f"{owned} are set by the curve point itself, not by recipe overrides")
    return pairs


def arm_config(arm: str, labeled_scenes: int, *, profile: str, max_steps: int, batch_size: int = 16,
               seed: int = 0, overrides: str | Mapping[str, Any] | None = None):
    """The generalist :class:`~banana.training.TrainConfig` of ``arm`` (a specialist arm: the
    ``generalist-best`` config whose vision stream it replays), with ``overrides``
    (:func:`parse_overrides`) applied last. The mixing ratio is 0.5 unless overridden."""
    from banana.profiles import tuning_config

    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose from {sorted(ARMS)}")
    recipe = "paper" if arm == "generalist-paper" else "best"
    config = tuning_config(profile, mixing_ratio=0.5, seed=seed, max_steps=max_steps, recipe=recipe)
    return dataclasses.replace(config, labeled_scenes=int(labeled_scenes), batch_size=batch_size,
                               **parse_overrides(overrides))


def _write_matched_generalist(config, base_dir: Path, world_dir: Path, out: Path) -> Path:
    """The config record of the ``generalist-best`` run a specialist arm replays (the stream is a
    pure function of the config, so no training is needed to know which images it sees)."""
    generator = json.loads((Path(base_dir) / "generator_config.json").read_text())
    resolved = dataclasses.replace(config, world_dir=str(Path(world_dir).resolve()),
                                   base_model=str(Path(base_dir).resolve()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"train": resolved.to_dict(), "generator": generator}, indent=1) + "\n")
    return out


def _train_arm(arm: str, config, out: Path, base_dir: Path, world_dir: Path, progress: bool):
    """Train one arm in ``out``; returns ``(generator | {task: Specialist}, training metrics)``."""
    from banana.baselines import SpecialistConfig, load_specialist, train_control, train_specialist
    from banana.training import load_run, train

    kind = ARMS[arm][0]
    if kind == "generalist":
        run = train(config, out / "run", generator=base_dir, world_dir=world_dir, progress=progress)
        return load_run(run), json.loads((run / "metrics.json").read_text())
    if kind == "control":
        run = train_control(dataclasses.replace(config, base_model=str(base_dir)), out / "run", world_dir=world_dir,
                            progress=progress)
        return load_run(run), json.loads((run / "metrics.json").read_text())
    matched = _write_matched_generalist(config, base_dir, world_dir, out / "matched-generalist")
    backbone = json.loads((Path(base_dir) / "generator_config.json").read_text())
    init_from = str(base_dir) if arm == "specialist-pretrained" else None
    models, seen, seconds = {}, 0, 0.0
    for task in ("segmentation", "depth", "normals"):
        spec = SpecialistConfig(task=task, backbone=backbone, match_run=str(matched), init_from=init_from,
                                ema_decay=0.0, batch_size=config.batch_size, seed=config.seed)
        run = train_specialist(spec, out / f"run-{task}", world_dir=world_dir, progress=progress)
        metrics = json.loads((run / "metrics.json").read_text())
        models[task] = load_specialist(run)
        seen += metrics["images_seen"]
        seconds += metrics["wall_seconds"]
    return models, {"images_seen": seen, "vision_images_seen": seen, "wall_seconds": seconds}


def _evaluate_arm(arm: str, model, split, limit: int, seed: int) -> dict:
    from banana.evaluation.comparison import merge_results
    from banana.evaluation.harness import evaluate_pipeline, evaluate_specialist
    from banana.pipeline import BananaPipeline

    if isinstance(model, dict):                         # the specialist arms: task -> Specialist
        return merge_results([evaluate_specialist(model[task], split, task, limit=limit) for task in model])
    pipe = BananaPipeline(model, scheduler="ddim")
    return evaluate_pipeline(pipe, split, limit=limit, seed=seed, progress=False, num_inference_steps=1)


def run_curve_point(arm: str, labeled_scenes: int, output_dir: str | Path, *, base_dir: str | Path,
                    world_dir: str | Path, profile: str, max_steps: int, batch_size: int = 16, seed: int = 0,
                    overrides: str | Mapping[str, Any] | None = None, eval_split: str = "test",
                    n_eval: int | None = None, also_val: bool = False, progress: bool = False) -> dict:
    """Train ``arm`` on the first ``labeled_scenes`` train scenes and score it on ``eval_split``.

    Writes (and returns) ``output_dir/metrics.json``: :func:`~banana.evaluation.comparison.point_record`
    (each metric with its 95% bootstrap interval over images, the best floor on the same images and
    whether the arm is above it) plus ``arm``, ``labeled_scenes``, ``vision_images_seen``,
    ``images_seen`` and ``train_seconds``. Training resumes from the arm's checkpoints.
    ``also_val``: the same record on the val split too, in ``output_dir/val_metrics.json`` (what a
    shipped study model's card reports beside test)."""
    from banana.evaluation.comparison import floor_results, point_record
    from banana.world import load_world

    output_dir, base_dir, world_dir = Path(output_dir), Path(base_dir), Path(world_dir)
    config = arm_config(arm, labeled_scenes, profile=profile, max_steps=max_steps, batch_size=batch_size, seed=seed,
                        overrides=overrides)
    world = load_world(world_dir)
    config.vision_pool_size(len(world["train"]))          # a pool larger than the split fails here
    model, train_metrics = _train_arm(arm, config, output_dir, base_dir, world_dir, progress)
    def score(split: str) -> dict:
        result = _evaluate_arm(arm, model, world[split], n_eval, seed)
        floors = floor_results(world["train"], world[split], limit=n_eval)
        return {**point_record(result, world[split], floors), "eval_split": split, "n_eval": int(result["n_images"])}

    if also_val:
        (output_dir / "val_metrics.json").write_text(json.dumps(score("val"), indent=1) + "\n")
    record = score(eval_split)
    if ARMS[arm][0] == "generalist":
        record.update(retention_record(model, base_dir, world, seed))
    vision_seen = train_metrics.get("vision_images_seen")
    if vision_seen is None:                                # a generalist run: its vision share of the stream
        vision_seen = _vision_images(config, len(world["train"]))
    record.update({"arm": arm, "labeled_scenes": int(labeled_scenes), "vision_images_seen": int(vision_seen),
                   "overrides": json.dumps(parse_overrides(overrides), sort_keys=True),
                   "images_seen": int(train_metrics["images_seen"]),
                   "train_seconds": float(train_metrics["wall_seconds"])})
    (output_dir / "metrics.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


#: Held-out scenes of the generation-retention measure (:func:`retention_record`).
RETENTION_SCENES = 64


def retention_record(tuned, base_dir: str | Path, world, seed: int = 0) -> dict[str, float]:
    """The held-out generation loss of a tuned generalist against its base (in percent, with its
    paired interval over :data:`RETENTION_SCENES` held-out scenes;
    :func:`banana.evaluation.retention.retention_increase`)."""
    from banana.evaluation.retention import retention_increase
    from banana.models import load_generator

    return retention_increase(load_generator(base_dir), tuned, world["held_out"], n=RETENTION_SCENES, seed=seed)


def _vision_images(config, n_scenes: int) -> int:
    from banana.training.data import VISION, MixedBatchSampler

    sampler = MixedBatchSampler(n_scenes, config.vision_pool_size(n_scenes), config.batch_size, config.mixing_ratio,
                                num_batches=config.max_steps, seed=config.seed)
    return sum(key.source == VISION for batch in sampler for key in batch)


def plot_learning_curves(results, metrics: Mapping[str, tuple[str, bool]] | None = None):
    """One panel per metric: x = labeled scenes (log), a line per arm with its 95% interval band,
    the best floor as a dashed reference line. ``results``: a DataFrame of point records (one row
    per arm and pool size; several seeds are averaged, their intervals pooled by the widest)."""
    import matplotlib.pyplot as plt

    metrics = dict(metrics or CURVE_METRICS)
    shown = [m for m in metrics if m in results.columns and results[m].notna().any()]
    use_style()
    n_rows, n_cols = panel_layout(len(shown))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=slide_size(), squeeze=False, layout="constrained")
    for ax, name in zip(axes.flat, shown):
        title, higher = metrics[name]
        for arm in [a for a in ARMS if a in set(results["arm"])]:
            rows = results[results["arm"] == arm].groupby("labeled_scenes").agg(
                value=(name, "mean"), lo=(f"{name}_ci_lo", "min"), hi=(f"{name}_ci_hi", "max")).dropna()
            if rows.empty:
                continue
            line, = ax.plot(rows.index, rows["value"], marker="o", label=ARMS[arm][1])
            ax.fill_between(rows.index, rows["lo"], rows["hi"], color=line.get_color(), alpha=0.2)
        if f"{name}_floor" in results.columns:
            floor = results.groupby("labeled_scenes")[f"{name}_floor"].mean().dropna()
            if not floor.empty:
                floor_line(ax, float(np.mean(floor)))
        ax.set_xscale("log", base=2)
        sizes = sorted(set(results["labeled_scenes"]))
        ax.set_xticks(sizes, [str(int(n)) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("labeled scenes for tuning")
        ax.set_title(title + ("  (↑)" if higher else "  (↓)"))
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", frameon=False)
    return fig


# --------------------------------------------------------------------------- the computed verdict
#: What a curve's verdict compares: (arm, against, the question it answers).
VERDICT_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("generalist-best", "control", "does generative pretraining pay? (same recipe, random init)"),
    ("generalist-best", "specialist-random", "does the generalist match same-data specialists?"),
    ("generalist-best", "generalist-paper", "does the recipe matter?"),
    ("specialist-pretrained", "specialist-random", "does the pretrained UNet help a specialist?"),
)
VERDICT_METRICS = ("segmentation_miou", "depth_delta1", "normals_mean_deg")


def interval_outcome(a: tuple[float, float], b: tuple[float, float], higher: bool) -> str:
    """``"beats"`` / ``"trails"`` when the 95% intervals ``a`` and ``b`` do not overlap (in favour of
    ``a`` / of ``b``), else ``"overlaps"``. Stricter than a paired test on the same images."""
    if (a[0] > b[1]) if higher else (a[1] < b[0]):
        return "beats"
    if (a[1] < b[0]) if higher else (a[0] > b[1]):
        return "trails"
    return "overlaps"


def curve_verdict(results) -> str:
    """The learning curve read out in Markdown, from the points alone: for each comparison of
    :data:`VERDICT_PAIRS` and each task metric, per pool size, both values and whether the
    intervals separate; then where each comparison is won. Used as the grid report's verdict."""
    cells = results.groupby(["arm", "labeled_scenes"]).mean(numeric_only=True)
    arms = set(results["arm"])
    lines = ["## Verdict (computed from the points)", "",
             "\"beats\" / \"trails\" only where the two 95% bootstrap intervals over test images do not overlap "
             "(stricter than the paired test of notebook 05); \"(at floor)\" marks a value not above the best "
             "floor on the same images.", ""]
    for arm, other, question in VERDICT_PAIRS:
        if arm not in arms or other not in arms:
            continue
        sizes = sorted(set(cells.loc[arm].index) & set(cells.loc[other].index))
        header = "| labeled scenes | " + " | ".join(CURVE_METRICS[m][0] for m in VERDICT_METRICS) + " |"
        rows, wins = [header, "|---" * (len(VERDICT_METRICS) + 1) + "|"], {m: ([], []) for m in VERDICT_METRICS}
        for n in sizes:
            row = [str(int(n))]
            for metric in VERDICT_METRICS:
                higher = CURVE_METRICS[metric][1]
                a, b = cells.loc[(arm, n)], cells.loc[(other, n)]
                if metric not in a or np.isnan(a[metric]) or np.isnan(b[metric]):
                    row.append("-")
                    continue
                outcome = interval_outcome((a[f"{metric}_ci_lo"], a[f"{metric}_ci_hi"]),
                                           (b[f"{metric}_ci_lo"], b[f"{metric}_ci_hi"]), higher)
                above = a.get(f"{metric}_above_floor", 1) >= 1
                row.append(f"{a[metric]:.3f}{'' if above else ' (at floor)'} vs {b[metric]:.3f}: **{outcome}**")
                if outcome == "beats":
                    wins[metric][0 if above else 1].append(str(int(n)))
            rows.append("| " + " | ".join(row) + " |")
        won = "; ".join(f"{CURVE_METRICS[m][0]}: {', '.join(w) or 'nowhere'}"
                        + (f" (and at floor, so no finding: {', '.join(f)})" if f else "") for m, (w, f) in wins.items())
        lines += [f"### `{arm}` vs `{other}`: {question}", "", *rows, "",
                  f"`{arm}` beats `{other}` above the floor at (labeled scenes): {won}.", ""]
    return "\n".join(lines)

"""The contest of notebooks 04 and 05: the generalist against its controls, the specialists, the
floors, and the codec ceiling.

* :func:`train_contestants` trains (or reuses, or resumes) every contestant of notebook 05 and
  loads them; :func:`shipped_contestants` loads the shipped study models instead, when they are
  that experiment (``data/generators/*-PROFILE``, :mod:`banana.study_models`);
* :func:`evaluate_contestants` scores them all on the same images of each split;
* :func:`comparison_figure` draws one panel per metric of :func:`~banana.evaluation.comparison.comparison_table`;
* :func:`ceiling_values` looks up the codec ceiling (notebook 01's ``codec_ceiling.csv``) of each
  headline metric of :func:`~banana.evaluation.generalist.headline_metrics`, through
  :data:`CEILING_OF_HEADLINE` rather than row labels spelled out in a notebook.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Mapping, Sequence

from banana.evaluation.ceiling import DEFAULT_DEPTH_VARIANTS

#: Row labels (``codec`` column) of :func:`banana.evaluation.ceiling.codec_ceiling`'s table: the
#: segmentation and normals codecs (written there as these literals) and the paper's depth codec
#: (the first of ``DEFAULT_DEPTH_VARIANTS``).
SEGMENTATION_CODEC = "palette, nearest colour"
NORMALS_CODEC = "(1-x, 1+y, 1+z)/2"
PAPER_DEPTH_CODEC = DEFAULT_DEPTH_VARIANTS[0][0]

#: Headline metric (a key of ``headline_metrics``) -> the ``(codec, metric)`` row of the codec
#: ceiling that bounds it: what a generator that drew the exact target would score.
CEILING_OF_HEADLINE: dict[str, tuple[str, str]] = {
    "segmentation mIoU": (SEGMENTATION_CODEC, "miou"),
    "depth AbsRel": (PAPER_DEPTH_CODEC, "abs_rel"),
    "depth delta1": (PAPER_DEPTH_CODEC, "delta1"),
    "normals mean angle (deg)": (NORMALS_CODEC, "mean"),
}


def ceiling_values(ceiling, names: Sequence[str], bits: str = "8") -> list[float]:
    """The codec ceiling at ``bits`` of each headline metric in ``names``, in that order.

    ``ceiling`` is :func:`~banana.evaluation.ceiling.codec_ceiling`'s tidy frame (or the
    ``codec_ceiling.csv`` notebook 01 writes, read back with pandas)."""
    values = ceiling[ceiling["bits"] == bits].set_index(["codec", "metric"])["value"]
    return [values[CEILING_OF_HEADLINE[name]] for name in names]


def train_contestants(config, tune_run_dir: str | Path, baseline_dir: str | Path, base_dir: str | Path,
                      world_dir: str | Path) -> SimpleNamespace:
    """Train every contestant of notebook 05, each reused when finished and resumed when interrupted,
    and load them.

    The generalist (``config``, tuned from ``base_dir`` into ``tune_run_dir``); the no-pretraining
    control (and, for LoRA tuning, its fully tuned twin: a frozen random UNet would confound
    pretraining with capacity); per task a specialist from scratch and one initialised from the
    base, each replaying the generalist's vision examples of its task (under ``baseline_dir``).

    Returns a namespace: ``generalist``, ``controls`` (name -> generator), ``specialists`` and
    ``pretrained_specialists`` (task -> specialist), ``images_seen`` (task -> images each
    specialist saw).
    """
    import json

    from banana.baselines import load_specialist, matched_config, train_control, train_specialist
    from banana.tasks import TASKS
    from banana.training import load_run, train

    tune_run_dir, baseline_dir = Path(tune_run_dir), Path(baseline_dir)
    train(config, tune_run_dir, generator=base_dir, world_dir=world_dir, progress=False)
    controls = {"no-pretraining control": train_control(config, baseline_dir / "control", world_dir=world_dir,
                                                        base=base_dir, progress=False)}
    if config.tuning == "lora":
        controls["no-pretraining control (full)"] = train_control(config, baseline_dir / "control-full",
                                                                  world_dir=world_dir, base=base_dir, tuning="full",
                                                                  progress=False)
    for task in TASKS:
        train_specialist(matched_config(tune_run_dir, task), baseline_dir / f"specialist-{task}", progress=False)
        train_specialist(matched_config(tune_run_dir, task, init_from=str(base_dir)),
                         baseline_dir / f"specialist-pretrained-{task}", progress=False)
    return SimpleNamespace(
        generalist=load_run(tune_run_dir),
        controls={name: load_run(run) for name, run in controls.items()},
        specialists={task: load_specialist(baseline_dir / f"specialist-{task}") for task in TASKS},
        pretrained_specialists={task: load_specialist(baseline_dir / f"specialist-pretrained-{task}")
                                for task in TASKS},
        images_seen={task: json.loads((baseline_dir / f"specialist-{task}" / "metrics.json").read_text())["images_seen"]
                     for task in TASKS},
    )


def shipped_contestants(profile: str, config) -> SimpleNamespace | None:
    """Notebook 05's contestants from the shipped study models of ``profile`` (generalist,
    no-pretraining control, specialists from random init and from the base), in the namespace
    :func:`train_contestants` returns; ``None`` unless all four are shipped and the generalist and
    the control were trained with ``config``'s recipe (the specialists replay the generalist's
    vision stream by construction). The study models train longer than a notebook's tuning run:
    their cards say how long."""
    import json

    from banana.baselines import Specialist
    from banana.paths import study_model_dir
    from banana.tasks import TASKS
    from banana.training import load_run
    from banana.training.publish import shipped_study_run

    generalist = shipped_study_run(profile, config, "generalist")
    control = shipped_study_run(profile, config, "control")
    specialists, pretrained = (study_model_dir(name, profile) for name in ("specialists", "specialists-pretrained"))
    if None in (generalist, control) or not all((d / t).is_dir() for d in (specialists, pretrained) for t in TASKS):
        return None
    return SimpleNamespace(
        generalist=load_run(generalist), controls={"no-pretraining control": load_run(control)},
        specialists={task: Specialist.from_pretrained(specialists / task) for task in TASKS},
        pretrained_specialists={task: Specialist.from_pretrained(pretrained / task) for task in TASKS},
        images_seen={task: json.loads((specialists / task / "training_metrics.json").read_text())["images_seen"]
                     for task in TASKS},
        folders={"generalist": generalist, "control": control, "specialists": specialists,
                 "specialists-pretrained": pretrained},
    )


def evaluate_contestants(world, generators: Mapping[str, object], specialists: Mapping[str, Mapping[str, object]],
                         limit: int | None, seed: int = 0, splits: Sequence[str] = ("test", "held_out"),
                         **sampling) -> dict[str, dict[str, dict]]:
    """``{split: {contestant: result}}`` over the same ``limit`` images of each split.

    ``generators`` (name -> generator) are asked through :class:`~banana.pipeline.BananaPipeline`
    for every task and once more for segmentation with unseen palettes (``sampling``: e.g.
    ``num_inference_steps``); ``specialists`` (name -> {task: specialist}) answer their own task;
    the per-pixel floors come from ``world["train"]``.
    """
    from banana.evaluation.comparison import floor_results, merge_results
    from banana.evaluation.harness import UNSEEN_TASK, evaluate_pipeline, evaluate_specialist
    from banana.pipeline import BananaPipeline
    from banana.tasks import TASKS

    results: dict[str, dict[str, dict]] = {}
    for split in splits:
        results[split] = {name: evaluate_pipeline(BananaPipeline(model), world[split], tasks=(*TASKS, UNSEEN_TASK),
                                                  limit=limit, seed=seed, progress=False, **sampling)
                          for name, model in generators.items()}
        for name, models in specialists.items():
            results[split][name] = merge_results([evaluate_specialist(models[t], world[split], t, limit=limit)
                                                  for t in TASKS])
        results[split].update(floor_results(world["train"], world[split], limit=limit))
    return results


def comparison_figure(table, split: str = "test", title: str | None = None):
    """One panel per metric of a comparison table: every model on ``split`` with its 95%
    interval (model names on the y axis, the first model on top), floors in grey and the best
    floor as a dashed reference line, ↑/↓ for which way is better. 16:9, the house style
    (:mod:`banana.style`). Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    from banana.style import floor_line, panel_layout, slide_size, use_style

    rows_of_split = table[table["split"] == split]
    if rows_of_split.empty:
        raise ValueError(f"the comparison table has no rows for split {split!r}; splits: {sorted(set(table['split']))}")
    metrics = list(dict.fromkeys(rows_of_split["metric"]))
    use_style()
    n_rows, n_cols = panel_layout(len(metrics))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=slide_size(), sharey=True, squeeze=False, layout="constrained")
    order = list(dict.fromkeys(rows_of_split["model"]))
    for ax, metric in zip(axes.flat, metrics):
        rows = rows_of_split[rows_of_split["metric"] == metric].set_index("model").reindex(order)
        floors = [m for m in order if m.startswith("floor")]
        colors = ["0.7" if m in floors else "C0" for m in order]
        ax.barh(order, rows["value"], color=colors,
                xerr=[rows["value"] - rows["ci_lo"], rows["ci_hi"] - rows["value"]], capsize=3)
        higher = bool(rows["higher_is_better"].dropna().iloc[0]) if "higher_is_better" in rows else True
        if floors and rows.loc[floors, "value"].notna().any():
            best = rows.loc[floors, "value"].max() if higher else rows.loc[floors, "value"].min()
            floor_line(ax, best, vertical=True)
        ax.set_title(f"{metric} ({'↑' if higher else '↓'})")
        ax.grid(axis="y", visible=False)
    axes.flat[0].invert_yaxis()   # shared y axis: the first model on top
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles[:1], labels[:1], loc="outside lower center", frameon=False)
    if title:
        fig.suptitle(title)
    return fig

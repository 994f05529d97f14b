"""The query-task study: instance and referring segmentation by prompt, for generalist, control and specialists.

Why a study of its own
----------------------
The shipped study models (:mod:`banana.study_models`) were tuned on the three dense tasks, so
they have never seen an instance or referring prompt. Adding the query tasks to *their* mix
would change every example they drew (the task draw is over the mix), so the query tasks get
their own, otherwise identical, arms:

* ``generalist``: notebook 04's best recipe (:func:`banana.profiles.tuning_config`) from the
  shipped base, with ``tasks = ALL_TASKS`` and :data:`STEPS` steps: as many as the shipped
  generalist, so each of the five tasks sees 3/5 of the examples each of its three tasks saw.
* ``control``: the same run from a random init (:func:`banana.baselines.train_control`).
* ``specialist-instance`` / ``specialist-referring``: one UNet per query task with a task head,
  reading the prompt through the same text encoder as the generalist (it must read the class or
  the expression), trained on exactly the vision images of that task the generalist saw
  (:func:`banana.baselines.replay_vision_stream`).

Every arm is scored on the same test rows with the same queries
(:func:`banana.evaluation.prompted.evaluation_queries`), next to the floors of
:mod:`banana.evaluation.prompted`, with 95% bootstrap intervals over images.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

__all__ = ["STEPS", "ARMS", "THRESHOLDS", "MIN_PIXELS", "query_config", "train_arm", "train_study", "evaluate_study",
           "write_report", "threshold_sweep", "threshold_figure"]

#: Tuning steps of the query-task arms per profile (the shipped generalist's: 600 at cpu).
STEPS: dict[str, int] = {"smoke": 4, "cpu": 600, "gpu": 10000}
#: The arms of the study, in table order.
ARMS: tuple[str, ...] = ("generalist", "control", "specialist-instance", "specialist-referring")


def query_config(profile: str, seed: int = 0, max_steps: int | None = None, base_dir: str | Path | None = None):
    """The generalist's :class:`~banana.training.TrainConfig`: notebook 04's best recipe at ratio
    0.5 on every task of :data:`banana.tasks.ALL_TASKS`, from ``base_dir`` (default: the profile's
    base generator, :func:`banana.profiles.base_generator_dir`)."""
    from banana.profiles import base_generator_dir, tuning_config
    from banana.tasks import ALL_TASKS

    steps = STEPS[profile] if max_steps is None else int(max_steps)
    config = tuning_config(profile, mixing_ratio=0.5, seed=seed, max_steps=steps)
    base = base_dir if base_dir is not None else base_generator_dir(profile)
    return dataclasses.replace(config, tasks=ALL_TASKS, base_model=str(base),
                               checkpoint_every=max(1, steps // 5))


def train_arm(arm: str, config, out_dir: str | Path, world_dir: str | Path, progress: bool = True) -> Path:
    """Train (or load, when finished) one arm of the study into ``out_dir/ARM``; returns that folder."""
    from banana.runs import ensure_run

    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose from {ARMS}")
    run_dir = Path(out_dir) / arm
    if arm == "generalist":
        return ensure_run(config, run_dir, world_dir=world_dir, progress=progress)
    if arm == "control":
        from banana.baselines import train_control

        if (run_dir / "metrics.json").is_file() and (run_dir / "model").is_dir():
            return run_dir
        return train_control(config, run_dir, world_dir=world_dir, progress=progress)
    from banana.baselines import matched_config, train_specialist

    generalist = train_arm("generalist", config, out_dir, world_dir, progress)
    if (run_dir / "metrics.json").is_file() and (run_dir / "model").is_dir():
        return run_dir
    return train_specialist(matched_config(generalist, arm.removeprefix("specialist-")), run_dir,
                            world_dir=world_dir, progress=progress)


def train_study(profile: str, out_dir: str | Path, world_dir: str | Path, seed: int = 0,
                max_steps: int | None = None, base_dir: str | Path | None = None,
                progress: bool = True) -> dict[str, Path]:
    """Every arm of :data:`ARMS` (finished ones are loaded): ``{arm: run folder}``."""
    config = query_config(profile, seed=seed, max_steps=max_steps, base_dir=base_dir)
    return {arm: train_arm(arm, config, out_dir, world_dir, progress) for arm in ARMS}


def evaluate_study(runs: dict[str, Path], world, n: int, seed: int = 0, split: str = "test",
                   num_inference_steps: int = 1) -> dict[str, dict[str, dict]]:
    """``{split: {model: result}}``: the generalist and the control on all five tasks (and unseen palettes), each query
    specialist on its task, the dense floors and the query floors, on the first ``n`` rows of
    ``split`` with the queries of ``seed`` (:func:`banana.evaluation.prompted.evaluation_queries`)."""
    from banana.baselines import load_specialist
    from banana.baselines.specialist import SpecialistPipeline
    from banana.evaluation.comparison import floor_results
    from banana.evaluation.harness import UNSEEN_TASK, evaluate_pipeline
    from banana.evaluation.prompted import evaluate_answer
    from banana.pipeline import BananaPipeline
    from banana.tasks import ALL_TASKS
    from banana.training import load_run

    names = {"generalist": "generalist (5 tasks)", "control": "no-pretraining control"}
    tasks = (*ALL_TASKS, UNSEEN_TASK)            # and the unseen-palette setting, as notebook 05 asks it
    results = {names[arm]: evaluate_pipeline(BananaPipeline(load_run(runs[arm])), world[split], tasks=tasks,
                                             limit=n, seed=seed, progress=False, num_inference_steps=num_inference_steps)
               for arm in ("generalist", "control") if arm in runs}
    for arm in (a for a in ARMS if a.startswith("specialist-") and a in runs):
        task, pipe = arm.removeprefix("specialist-"), SpecialistPipeline(load_specialist(runs[arm]))

        def answer(images, queries, rows, task=task, pipe=pipe):
            return pipe.predict(images, task, query=list(queries))["prediction"].cpu().numpy()
        results[f"specialist ({task})"] = evaluate_answer(answer, world[split], task, n, seed)
    results.update(floor_results(world["train"], world[split], limit=n, tasks=ALL_TASKS, seed=seed))
    return {split: results}


def write_report(results: dict, world, out_dir: str | Path, note: str = "") -> Path:
    """``comparison.csv`` / ``comparison.md``, ``verdict.md`` and ``comparison.png`` of
    :func:`evaluate_study`'s results into ``out_dir``."""
    from banana.evaluation.comparison import comparison_markdown, comparison_table, verdict
    from banana.evaluation.contest import comparison_figure
    from banana.evaluation.floors import FLOOR_NAMES
    from banana.evaluation.prompted import QUERY_FLOOR_NAMES

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = {split: world[split] for split in results}
    table = comparison_table(results, splits)
    table.to_csv(out_dir / "comparison.csv", index=False)
    (out_dir / "comparison.md").write_text(comparison_markdown(table, note) + "\n")
    floors = [*FLOOR_NAMES.values(), *QUERY_FLOOR_NAMES.values()]
    models = [m for m in next(iter(results.values())) if not m.startswith("floor")]
    lines = verdict(results, splits, models[0], models[1:], floors=floors)
    (out_dir / "verdict.md").write_text("\n".join(f"- {line}" for line in lines) + "\n")
    split = next(iter(results))
    fig = comparison_figure(table, split, title=f"Query tasks, {split} split: value and 95% interval (grey: floors)")
    fig.savefig(out_dir / "comparison.png", dpi=110)
    return out_dir


#: The clustering settings the instance decoder is swept over on val: radius (RGB units, at most
#: half the codec's closest colour pair, 57) x the speckle size below which a cluster is dropped.
THRESHOLDS: tuple[float, ...] = (12.0, 24.0, 36.0, 48.0, 56.0)
MIN_PIXELS: tuple[int, ...] = (1, 4, 8)


def threshold_sweep(run_dir: str | Path, split, n: int, seed: int = 0, num_inference_steps: int = 1):
    """PQ (with its 95% interval) of a generalist's instance answers on the first ``n`` rows of
    ``split`` (use val: this chooses a decoding setting) under every :data:`THRESHOLDS` x
    :data:`MIN_PIXELS` setting of the instance decoder. The pictures are sampled once (seed ``seed``
    per batch as in the harness) and decoded each way, so only the decoder differs."""
    import pandas as pd
    import torch

    from banana.codecs import InstanceCodec
    from banana.evaluation.prompted import evaluation_queries, query_truth, score_query_task
    from banana.pipeline import BananaPipeline
    from banana.tasks import INSTANCE_BACKGROUND
    from banana.training import load_run

    pipe = BananaPipeline(load_run(run_dir))
    asked = evaluation_queries(split, n, seed)["instance"]
    pictures = []
    for k, lo in enumerate(range(0, len(asked["rows"]), 16)):
        rows, queries = asked["rows"][lo:lo + 16], asked["queries"][lo:lo + 16]
        images = np.stack([np.asarray(split[int(r)]["image"]) for r in rows])
        out = pipe.predict(images, "instance", query=queries, num_inference_steps=num_inference_steps,
                           generator=torch.Generator().manual_seed(seed + k))
        pictures.append(out["rgb"][0].cpu().numpy())
    pictures = np.concatenate(pictures)
    truth = query_truth(split, "instance", asked["rows"], asked["queries"])
    rows = []
    for threshold in THRESHOLDS:
        for min_pixels in MIN_PIXELS:
            decoded = InstanceCodec(INSTANCE_BACKGROUND, threshold=threshold, min_pixels=min_pixels).decode(pictures)
            scored = score_query_task("instance", decoded, truth)
            rows.append({"threshold": threshold, "min_pixels": min_pixels, "pq": scored["pq"],
                         "ci_lo": scored["ci95"]["pq"][0], "ci_hi": scored["ci95"]["pq"][1],
                         "precision": scored["precision"], "recall": scored["recall"], "n_queries": len(truth)})
    return pd.DataFrame(rows)


def threshold_figure(sweep):
    """PQ against the clustering radius, one line per speckle size, with 95% intervals (house style)."""
    import matplotlib.pyplot as plt

    from banana.style import slide_size, use_style

    use_style()
    fig, ax = plt.subplots(figsize=slide_size(10), layout="constrained")
    for min_pixels, rows in sweep.groupby("min_pixels"):
        ax.errorbar(rows["threshold"], rows["pq"], yerr=[rows["pq"] - rows["ci_lo"], rows["ci_hi"] - rows["pq"]],
                    marker="o", capsize=3, label=f"clusters under {min_pixels} px dropped")
    ax.set(xlabel="clustering radius (RGB units, 0-255)", ylabel="instance PQ (higher is better)",
           title="Instance decoding on val: the clustering threshold")
    fig.legend(loc="outside right upper", frameon=False)
    return fig


def main(argv=None) -> int:
    """``python -m banana.query_study --profile cpu``: train every arm (resumable: finished arms are
    loaded), score them on the test split next to the floors and write ``reports/query_tasks/``."""
    import argparse
    import time

    import torch

    from banana.paths import REPORTS_DIR, RUNS_DIR, world_dir as default_world_dir
    from banana.profiles import notebook_settings
    from banana.provenance import write_run_info
    from banana.world import WORLD_PRESETS, build_world, load_world

    parser = argparse.ArgumentParser(prog="python -m banana.query_study", description=main.__doc__)
    parser.add_argument("--profile", default="cpu", choices=sorted(STEPS))
    parser.add_argument("--seed", type=int, default=0, help="training seed and the evaluation's queries and noise")
    parser.add_argument("--n-eval", type=int, default=None, help="test rows scored (default: notebook 05's)")
    parser.add_argument("--runs-dir", type=Path, default=None, help="default runs/query-PROFILE")
    parser.add_argument("--reports-dir", type=Path, default=REPORTS_DIR / "query_tasks")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    world_dir = default_world_dir(args.profile)
    if not world_dir.exists():
        build_world(world_dir, WORLD_PRESETS[args.profile], progress=True)
    start = time.perf_counter()
    runs = train_study(args.profile, args.runs_dir or RUNS_DIR / f"query-{args.profile}", world_dir, seed=args.seed)
    n = args.n_eval or notebook_settings("05_evaluate", args.profile).n_eval
    world = load_world(world_dir)
    results = evaluate_study(runs, world, n=n, seed=args.seed)
    command = "python -m banana.query_study " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    note = (f"Profile `{args.profile}`, seed {args.seed}, {n} test scenes, one-step decoding; "
            f"reproduce with `{command.strip()}`.")
    out = write_report(results, world, args.reports_dir, note=note)
    sweep = threshold_sweep(runs["generalist"], world["val"], n, seed=args.seed)      # chosen on val, not test
    sweep.to_csv(out / "instance_threshold_val.csv", index=False)
    (out / "instance_threshold_val.md").write_text(sweep.round(4).to_markdown(index=False) + "\n")
    threshold_figure(sweep).savefig(out / "instance_threshold_val.png", dpi=110)
    write_run_info(out, {"command": command.strip(), "profile": args.profile, "seed": args.seed, "n_eval": n,
                         "runs": {arm: str(path) for arm, path in runs.items()},
                         "seconds": round(time.perf_counter() - start, 1)})
    print((out / "verdict.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

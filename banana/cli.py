"""The ``banana`` command line: one subcommand per pipeline step.

``banana world build|info|preview`` make and inspect the embedded synthetic dataset;
``banana pretrain`` trains a base generator (text -> image), ``banana tune`` instruction-tunes one
(LoRA or full, with a mixing ratio); ``banana reproduce`` runs the numbered notebooks end to end;
``banana grid`` runs one over a parameter grid and ``banana aggregate`` tabulates and plots the result.
Every subcommand has ``--help``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from banana.paths import PROFILES, RUNS_DIR, pretrain_run_name, tune_run_name, world_dir


def _world_config_from_args(args: argparse.Namespace):
    import dataclasses

    from banana.world import WORLD_PRESETS

    config = WORLD_PRESETS[args.profile]
    overrides = {name: getattr(args, name) for name in
                 ("resolution", "n_train", "n_val", "n_test", "n_held_out", "spp", "seed")
                 if getattr(args, name) is not None}
    return dataclasses.replace(config, **overrides)


def cmd_world_build(args: argparse.Namespace) -> int:
    from banana.world import build_world

    config = _world_config_from_args(args)
    out = Path(args.out) if args.out else world_dir(args.profile)
    ds = build_world(out, config, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"world dataset at {out}: { {split: len(ds[split]) for split in ds} } "
          f"(resolution {config.resolution}, seed {config.seed})")
    return 0


def cmd_world_info(args: argparse.Namespace) -> int:
    from banana.world import load_world

    ds, config_path = load_world(args.path), Path(args.path) / "world_config.json"
    info = {"path": str(args.path), "splits": {s: len(ds[s]) for s in ds}}
    if config_path.is_file():
        info["config"] = json.loads(config_path.read_text())
    print(json.dumps(info, indent=2))
    return 0


def cmd_world_preview(args: argparse.Namespace) -> int:
    __import__("matplotlib").use("Agg")
    from banana.viz import show_samples
    from banana.world import CANONICAL_PALETTE, render_sample

    samples = [render_sample(args.seed, args.split, index, resolution=args.resolution, spp=args.spp)
               for index in range(args.start, args.start + args.n)]
    fig = show_samples(samples, CANONICAL_PALETTE)
    (out := Path(args.out)).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    for index, sample in zip(range(args.start, args.start + args.n), samples):
        print(f"{args.split}[{index}]: {sample['description']}")
    print(f"wrote {out}")
    return 0


def cmd_data_build(args: argparse.Namespace) -> int:
    from banana.real import build_cityscapes, build_nyuv2

    common = {"resolution": args.resolution, "crop": args.crop, "limit": args.limit, "overwrite": args.overwrite,
              "progress": not args.no_progress}
    if args.splits:
        common["splits"] = tuple(args.splits)
    if args.data_command == "build-cityscapes":
        ds = build_cityscapes(args.path, args.out, **common)
    else:
        ds = build_nyuv2(args.path, args.out, eigen_crop=not args.no_eigen_crop, max_depth=args.max_depth,
                         normals_frame=args.normals_frame, **common)
    print(f"{args.data_command[6:]} dataset at {args.out}: {({s: len(ds[s]) for s in ds})}, "
          f"columns {ds[next(iter(ds))].column_names}")
    return 0


def _add_data_commands(commands) -> None:
    """``banana data build-cityscapes|build-nyuv2``: real datasets from a local download (banana.real)."""
    data = commands.add_parser("data", help="build real datasets (Cityscapes, NYUv2) from a local download",
                               description="Convert a dataset you downloaded into banana's example format "
                                           "(layouts, classes and protocols: data/README.md).")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    for name, what, splits in (("build-cityscapes", "Cityscapes gtFine (19 classes, ignore 255)", "train val"),
                               ("build-nyuv2", "NYUv2 metric depth (+ normals if given)", "train test")):
        sub = actions.add_parser(name, help=f"build {what}", description=f"Build {what} at one resolution.")
        sub.add_argument("path", metavar="PATH", help="the dataset's root directory")
        sub.add_argument("--out", required=True, help="output directory (a datasets.DatasetDict)")
        sub.add_argument("--resolution", type=int, required=True, help="output height (and width with --crop center)")
        sub.add_argument("--crop", choices=("center", "full"), default="center",
                         help="center: centred square -> R x R (default); full: whole frame, aspect kept")
        sub.add_argument("--splits", nargs="+", default=None, help=f"splits to build (default: {splits})")
        sub.add_argument("--limit", type=int, default=None, help="first N images per split (quick builds)")
        sub.add_argument("--overwrite", action="store_true", help="replace an existing, different build")
        sub.add_argument("--no-progress", action="store_true", help="hide progress bars")
        if name == "build-nyuv2":
            sub.add_argument("--no-eigen-crop", dest="no_eigen_crop", action="store_true",
                             help="do not mask depth outside the Eigen crop (needed for frames other than 480x640)")
            sub.add_argument("--max-depth", dest="max_depth", type=float, default=10.0, help="valid depth bound, m")
            sub.add_argument("--normals-frame", dest="normals_frame", choices=("banana", "opencv"), default="banana",
                             help="frame of the normals/ files: banana (+y up, +z to viewer) or opencv "
                                  "(+y down, +z forward)")
        sub.set_defaults(func=cmd_data_build)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        __import__("torch").set_num_threads(threads)


def _train_config(args: argparse.Namespace, stage: str):
    from banana.training import TrainConfig
    from banana.training.recipe import RECIPES

    fields = {"stage": stage, "seed": args.seed, "max_steps": args.max_steps, "batch_size": args.batch_size,
              "checkpoint_every": args.checkpoint_every, "profile": args.profile, "precision": args.precision,
              "accelerator": args.accelerator, "devices": args.devices, "num_nodes": args.num_nodes,
              "strategy": args.strategy}
    if stage == "tune":             # the named recipe, then every lever given on the command line
        fields.update(RECIPES[args.recipe], mixing_ratio=args.mixing_ratio, lora_rank=args.lora_rank)
        levers = ("tuning", "learning_rate", "ema_decay", "condition_init", "vision_timesteps", "lora_preset")
        fields.update({k: getattr(args, k) for k in levers if getattr(args, k) is not None})
    else:
        fields.update(mixing_ratio=0.0, tuning="full", learning_rate=args.learning_rate, ema_decay=args.ema_decay)
    return TrainConfig(**fields)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from banana.training import train
    from banana.training.run import is_global_zero

    _set_threads(args.threads)
    config = _train_config(args, "pretrain")
    run_dir = Path(args.run_dir or RUNS_DIR / pretrain_run_name(args.profile))
    run = train(config, run_dir, world_dir=args.world_dir or world_dir(args.profile), progress=not args.no_progress)

    if not is_global_zero():        # multi-device: the other ranks have nothing to report
        return 0
    print(json.dumps(json.loads((run / "metrics.json").read_text()), indent=2))
    if args.publish:
        from banana.training.publish import publish_generator

        out = publish_generator(run, args.publish, command="banana " + " ".join(sys.argv[1:]), machine=args.machine)
        print(f"published {out}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from banana.paths import shipped_generator_dir
    from banana.training.run import is_global_zero, train

    _set_threads(args.threads)
    config = _train_config(args, "tune")
    base = Path(args.base) if args.base else shipped_generator_dir(args.profile)
    if not base.is_dir():
        raise FileNotFoundError(f"base generator {base} does not exist: pass --base or run 'banana pretrain'")
    run_dir = Path(args.run_dir or RUNS_DIR / tune_run_name(args.profile, config.tuning, args.mixing_ratio, args.recipe))
    run = train(config, run_dir, generator=base, world_dir=args.world_dir or world_dir(args.profile),
                progress=not args.no_progress)

    if is_global_zero():            # multi-device: the other ranks have nothing to report
        print(json.dumps(json.loads((run / "metrics.json").read_text()), indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from banana.evaluation.harness import evaluate_run

    _set_threads(args.threads)
    out = evaluate_run(args.run_dir, split=args.split, out_dir=args.out, num_inference_steps=args.steps,
                       scheduler=args.scheduler, ensemble_size=args.ensemble, text_guidance=args.text_guidance,
                       image_guidance=args.image_guidance, limit=args.limit, batch_size=args.batch_size,
                       seed=args.seed, base_dir=args.base_dir, progress=not args.no_progress)
    record = json.loads((out / "metrics.json").read_text())
    print(json.dumps({"headline": record["headline"], "seconds_per_image": record["seconds_per_image"]}, indent=2))
    print(f"wrote {out}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from banana.reproduce import reproduce

    timings = reproduce(profile=args.profile, seed=args.seed, reports_dir=args.reports_dir,
                        progress=not args.no_progress, runs_dir=args.runs_dir, world_dir=args.world_dir)
    print(json.dumps({"seconds": timings, "total_seconds": round(sum(timings.values()), 1)}, indent=2))
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    import signal

    from banana.grid import grid_summary, load_grid, run_grid
    # `kill <pid>` should stop a grid as cleanly as Ctrl-C: running points are killed and left
    # without a status (redone next time); finished points stay finished.
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    out = Path(args.out) if args.out else None
    results = run_grid(args.notebook, args.grid, out_dir=out, profile=args.profile, workers=args.workers,
                       timeout_s=args.timeout, retry_failed=args.retry_failed, progress=not args.no_progress,
                       threads=args.threads)
    out = out or RUNS_DIR / load_grid(args.grid, args.profile).name
    summary = grid_summary(out)
    print(json.dumps({"grid": str(out), **{k: len(v) for k, v in summary.items()}}))
    for name in summary.get("failed", []) + summary.get("timeout", []):
        print(f"  {name}: {results.get(name, {}).get('error', 'see status.json')}")
    return 0 if not (summary.get("failed") or summary.get("timeout")) else 1


def cmd_aggregate(args: argparse.Namespace) -> int:
    from banana.grid import aggregate

    written = aggregate(args.grid_dir, reports_dir=args.out)
    print("\n".join(f"{kind}: {path}" for kind, path in written.items()))
    return 0


def cmd_vae_ceiling(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from banana.evaluation.ceiling import ceiling_table, vae_codec_ceiling
    from banana.models.latent import load_vae
    from banana.world import CANONICAL_PALETTE, load_world

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    split = load_world(args.world)[args.split]
    rows = split[0:min(args.n, len(split))]
    vae = load_vae(args.vae).to(device)
    frame = vae_codec_ceiling(vae, np.asarray(rows["semantic"]), np.asarray(rows["depth"]),
                              np.asarray(rows["normals"]), CANONICAL_PALETTE, batch_size=args.batch_size)
    table = ceiling_table(frame, {"segmentation": ("miou",), "depth": ("abs_rel", "delta1"), "normals": ("mean",)})
    print(table.round(4).to_markdown())
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


def cmd_architecture(args: argparse.Namespace) -> int:
    from banana.architecture import cycles, draw_architecture, import_graph

    found = cycles(import_graph())
    print(f"wrote {draw_architecture(args.out)}")
    if found:
        print("import cycles: " + "; ".join(" <-> ".join(c) for c in found))
    return 1 if found else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="banana", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"banana {__import__('banana').__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    world = commands.add_parser("world", help="build and inspect the embedded synthetic world",
                                description="Build and inspect the seeded synthetic world (exact labels).")
    world_commands = world.add_subparsers(dest="world_command", required=True, metavar="ACTION")

    build = world_commands.add_parser("build", help="render the dataset to disk (HF datasets format)",
                                      description="Render train/val/test/held_out splits and save them with "
                                                  "datasets.save_to_disk. Reuses an identical existing build; "
                                                  "refuses to overwrite a different one without --overwrite.")
    build.add_argument("--profile", choices=PROFILES, default="cpu",
                       help="preset sizes (default: cpu); the options below override single values")
    build.add_argument("--out", default=None, help="output directory (default: data/world/<profile>)")
    build.add_argument("--resolution", type=int, default=None, help="image side in pixels")
    build.add_argument("--n-train", dest="n_train", type=int, default=None, help="training scenes")
    build.add_argument("--n-val", dest="n_val", type=int, default=None, help="validation scenes")
    build.add_argument("--n-test", dest="n_test", type=int, default=None, help="test scenes")
    build.add_argument("--n-held-out", dest="n_held_out", type=int, default=None, help="held-out scenes (unseen combinations)")
    build.add_argument("--spp", type=int, default=None, help="RGB samples per pixel (labels use the centre ray)")
    build.add_argument("--seed", type=int, default=None, help="world seed (default: the preset's, 0)")
    build.add_argument("--overwrite", action="store_true", help="replace an existing, different dataset")
    build.add_argument("--no-progress", action="store_true", help="hide progress bars")
    build.set_defaults(func=cmd_world_build)

    info = world_commands.add_parser("info", help="print a built dataset's splits and config")
    info.add_argument("path", help="dataset directory written by 'banana world build'")
    info.set_defaults(func=cmd_world_info)

    preview = world_commands.add_parser("preview", help="render a few scenes to a PNG grid",
                                        description="Render scenes and save image | depth | normals | "
                                                    "semantic panels, each drawn by its codec.")
    preview.add_argument("--seed", type=int, default=0, help="world seed")
    preview.add_argument("--split", choices=("train", "val", "test", "held_out"), default="train")
    preview.add_argument("--start", type=int, default=0, help="first scene index")
    preview.add_argument("-n", type=int, default=4, help="number of scenes")
    preview.add_argument("--resolution", type=int, default=64, help="image side in pixels")
    preview.add_argument("--spp", type=int, default=4, help="RGB samples per pixel")
    preview.add_argument("--out", default="world_preview.png", help="PNG to write")
    preview.set_defaults(func=cmd_world_preview)
    _add_data_commands(commands)

    def training_options(sub: argparse.ArgumentParser, steps: int, lr: float | None, ema: float | None) -> None:
        sub.add_argument("--profile", choices=PROFILES, default="cpu",
                         help="generator preset and default world (data/world/<profile>)")
        sub.add_argument("--world-dir", dest="world_dir", default=None, help="built world to train on")
        sub.add_argument("--run-dir", dest="run_dir", default=None, help="run directory (resumed if it has a checkpoint)")
        sub.add_argument("--max-steps", dest="max_steps", type=int, default=steps, help=f"optimiser steps (default {steps})")
        sub.add_argument("--batch-size", dest="batch_size", type=int, default=16, help="images per step")
        sub.add_argument("--learning-rate", dest="learning_rate", type=float, default=lr, help=f"AdamW lr (default {lr or 'recipe'})")
        sub.add_argument("--ema-decay", dest="ema_decay", type=float, default=ema, help=f"weight EMA, 0: off (default {ema or 'recipe'})")
        sub.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, default=200, help="steps between checkpoints")
        sub.add_argument("--seed", type=int, default=0, help="fixes init, data order, mixing and noise")
        sub.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
        sub.add_argument("--no-progress", action="store_true", help="hide progress bars")
        hardware = sub.add_argument_group("devices", "where to train (--batch-size is the global batch, split "
                                          "evenly over devices * num-nodes)")
        hardware.add_argument("--accelerator", default="auto", help="auto | cpu | gpu | cuda | mps (default auto)")
        hardware.add_argument("--devices", type=int, default=1, help="devices per node (default 1)")
        hardware.add_argument("--num-nodes", dest="num_nodes", type=int, default=1, help="nodes (default 1)")
        hardware.add_argument("--strategy", default="auto", help="auto | ddp | fsdp (use ddp for several devices)")
        hardware.add_argument("--precision", default="32-true", help="Lightning precision: 32-true | bf16-mixed (A100, H100)")

    pretrain = commands.add_parser("pretrain", help="pretrain a base generator on world images and descriptions",
                                   description="Text -> image pretraining of a fresh generator from a preset "
                                               "(our stand-in for the paper's pretrained generator).")
    training_options(pretrain, steps=2000, lr=1e-3, ema=0.999)
    pretrain.add_argument("--publish", default=None,
                          help="copy the result and a model card here (e.g. data/generators/base-cpu)")
    pretrain.add_argument("--machine", default="unspecified", help="hardware description written into the model card")
    pretrain.set_defaults(func=cmd_pretrain)

    tune = commands.add_parser("tune", help="instruction-tune a base generator on generation + vision data",
                               description="Mix vision-task examples (segmentation, depth, normals as RGB) into the "
                                           "generation data at --mixing-ratio and tune with LoRA or fully.")
    training_options(tune, steps=1000, lr=None, ema=None)
    tune.add_argument("--base", default=None, help="base generator dir (default: data/generators/base-<profile>), or a "
                      "local Stable-Diffusion checkpoint dir: tuned in latent space (banana.models.latent)")
    tune.add_argument("--recipe", choices=("best", "paper"), default="best",
                      help="best: chosen on val (full, t = T-1, zeroed condition channels); paper: LoRA, uniform t")
    tune.add_argument("--tuning", choices=("lora", "full"), default=None, help="LoRA or full (default: the recipe's)")
    tune.add_argument("--mixing-ratio", dest="mixing_ratio", type=float, default=0.5,
                      help="fraction of each batch drawn from vision-task examples")
    tune.add_argument("--lora-rank", dest="lora_rank", type=int, default=8, help="LoRA rank")
    for flag, what in (("condition-init", "keep|zeros|copy-half"), ("vision-timesteps", "uniform|terminal|high"), ("lora-preset", "attention|attention+conv")):
        tune.add_argument(f"--{flag}", dest=flag.replace("-", "_"), default=None, help=f"recipe lever: {what} (banana.training.recipe)")
    tune.set_defaults(func=cmd_tune)

    evaluate = commands.add_parser("evaluate", help="score a training run on a world split (metrics + predictions)",
                                   description="Load RUN_DIR's model, answer every task on the split of the run's "
                                               "world, and write metrics.json, predictions.npz (decoded answers and "
                                               "the palettes used) and run_info.json. Segmentation is scored with "
                                               "the canonical palette and with unseen random palettes.")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a finished 'banana tune' / 'banana pretrain' run")
    evaluate.add_argument("--split", default="test",
                          help="test (in distribution) or held_out (unseen shape/colour pairs), or any split of "
                               "the run's dataset (Cityscapes: val); default test")
    evaluate.add_argument("--steps", type=int, default=None, help="sampling steps (default: the pipeline's, 10)")
    evaluate.add_argument("--scheduler", choices=("ddim", "dpm++", "euler"), default="ddim", help="sampler")
    evaluate.add_argument("--ensemble", type=int, default=None, help="ensemble members per image (default 1)")
    evaluate.add_argument("--limit", type=int, default=None, help="score only the first N images of the split")
    evaluate.add_argument("--text-guidance", dest="text_guidance", type=float, default=None,
                          help="classifier-free text guidance (default 1.0 = off)")
    evaluate.add_argument("--image-guidance", dest="image_guidance", type=float, default=None,
                          help="classifier-free image guidance (default 1.0 = off)")
    evaluate.add_argument("--seed", type=int, default=0, help="sampling noise and unseen palettes (batch k: seed + k)")
    evaluate.add_argument("--batch-size", dest="batch_size", type=int, default=16, help="images per sampling batch")
    evaluate.add_argument("--base-dir", dest="base_dir", default=None,
                          help="base generator of a LoRA run whose base path was not recorded")
    evaluate.add_argument("--out", default=None, help="output directory (default: RUN_DIR/eval-<split>)")
    evaluate.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    evaluate.add_argument("--no-progress", action="store_true", help="hide progress bars")
    evaluate.set_defaults(func=cmd_evaluate)

    repro = commands.add_parser("reproduce", help="execute the numbered notebooks end to end",
                                description="Run notebooks 01, 02, ... through papermill with one profile "
                                            "and seed; executed copies and figures go to reports/.")
    repro.add_argument("--profile", choices=PROFILES, default="cpu",
                       help="sizes for every notebook (default: cpu, the committed reports)")
    repro.add_argument("--seed", type=int, default=0, help="one seed for data, init and noise")
    repro.add_argument("--reports-dir", dest="reports_dir", default=None,
                       help="where executed notebooks and figures go (default: <repo>/reports)")
    repro.add_argument("--runs-dir", dest="runs_dir", default=None,
                       help="training runs and grid folders (default: <repo>/runs)")
    repro.add_argument("--world-dir", dest="world_dir", default=None,
                       help="the world dataset (default: <repo>/data/world/PROFILE)")
    repro.add_argument("--no-progress", action="store_true", help="hide progress bars")
    repro.set_defaults(func=cmd_reproduce)

    grid = commands.add_parser("grid", help="run a notebook over a parameter grid (resumable, parallel)",
                               description="Expand a grid file and run each point through papermill in a "
                                           "fresh kernel; finished points are skipped on a rerun.")
    grid.add_argument("notebook", help="notebook path or name, e.g. notebooks/06_ablate_mixing_ratio.ipynb")
    grid.add_argument("--grid", required=True, help="grid file, e.g. grids/mixing_ratio.yaml")
    grid.add_argument("--profile", choices=PROFILES, default="cpu",
                      help="passed to every point; selects the grid file's profile override")
    grid.add_argument("--workers", type=int, default=1, help="points run in parallel (default 1)")
    grid.add_argument("--threads", type=int, default=None,
                      help="torch threads per point (default: CPU cores // workers)")
    grid.add_argument("--timeout", type=float, default=None, help="seconds per point before it is killed")
    grid.add_argument("--retry-failed", dest="retry_failed", action="store_true",
                      help="rerun only the points that failed or timed out")
    grid.add_argument("--out", default=None, help="grid folder (default: runs/<grid name>)")
    grid.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    grid.set_defaults(func=cmd_grid)

    agg = commands.add_parser("aggregate", help="tables, figures and a summary of a grid folder",
                              description="Collect every point's metrics.json of a grid folder into "
                                          "results.csv, seaborn figures and summary.md.")
    agg.add_argument("grid_dir", help="a folder written by `banana grid`, e.g. runs/mixing_ratio")
    agg.add_argument("--out", default=None, help="report folder (default: reports/<grid name>)")
    agg.set_defaults(func=cmd_aggregate)

    ceiling = commands.add_parser("vae-ceiling", help="codec ceiling through a VAE round trip",
                                  description="ground truth -> codec -> 8-bit -> VAE encode/decode -> 8-bit -> "
                                              "codec decode -> metric, next to the plain 8-bit ceiling")
    ceiling.add_argument("vae", help="VAE folder, SD-family checkpoint (uses vae/) or saved LatentGenerator")
    ceiling.add_argument("--world", required=True, help="a built banana world (its resolution must divide by the "
                                                         "VAE's factor: 8 for SD)")
    ceiling.add_argument("--split", default="test", help="world split (default test)")
    ceiling.add_argument("-n", type=int, default=64, help="scenes scored (default 64)")
    ceiling.add_argument("--batch-size", type=int, default=16, help="images per VAE call")
    ceiling.add_argument("--device", default=None, help="default cuda if available, else cpu")
    ceiling.add_argument("--out", default=None, help="also write the tidy table as CSV here")
    ceiling.set_defaults(func=cmd_vae_ceiling)

    arch = commands.add_parser("architecture", help="draw the package's rooms and import arrows",
                               description="Read every import of banana/ (lazy ones included), draw the "
                                           "subpackages on floors with their import arrows, and fail on a cycle.")
    arch.add_argument("--out", default="reports/figures/architecture.png", help="PNG to write")
    arch.set_defaults(func=cmd_architecture)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        # Errors that name a user mistake are printed without a traceback.
        print(f"banana: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

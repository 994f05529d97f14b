"""Shipped study models: the trained models of a study grid's points (``grids/study_models.yaml``,
notebook 08 with ``publish_dir``) copied under ``data/generators/`` with a model card.

The generalist is shipped as a run folder (``config.json`` + ``model/``) whose recorded world and
base are repository-relative, so ``banana evaluate data/generators/generalist-cpu --split test``
works in any clone (the embedded world is rebuilt from its seed when missing). The specialists
are one ``Specialist.save_pretrained`` folder per task. Every card is written from the point's
own records: data, steps, seed, command, machine, wall time, val and test metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from banana.curves import ARMS

__all__ = ["SHIPPED_ARMS", "publish_point", "study_command"]

#: The arms whose trained models a study grid ships (``publish_dir``), and the folder name of each.
SHIPPED_ARMS: dict[str, str] = {"generalist-best": "generalist", "control": "control",
                                "specialist-random": "specialists", "specialist-pretrained": "specialists-pretrained"}


def _is_run_folder(arm: str) -> bool:
    """Generalists and the control are shipped as run folders; specialist arms as one folder per task."""
    return ARMS[arm][0] in ("generalist", "control")

_CARD_METRICS = (("segmentation_miou", "segmentation mIoU, canonical palette"),
                 ("segmentation_miou_unseen", "segmentation mIoU, unseen palette"),
                 ("depth_delta1", "depth δ1 (metric)"), ("depth_abs_rel", "depth AbsRel (metric)"),
                 ("normals_mean_deg", "normals mean angle (deg)"))


def _card_rows(record: Mapping) -> str:
    rows = []
    for key, label in _CARD_METRICS:
        if key not in record:
            continue
        status = "above floor" if record.get(f"{key}_above_floor") else "**at or below floor**"
        rows.append(f"| {label} | {record[key]:.4f} [{record[f'{key}_ci_lo']:.4f}, {record[f'{key}_ci_hi']:.4f}] "
                    f"| {record.get(f'{key}_floor', float('nan')):.4f} | {status} |")
    return "\n".join(["| metric | value [95% CI over images] | best floor | |", "|---|---|---|---|", *rows])


def study_command(output_dir: str | Path) -> str:
    """The command that ran a point: its grid's (``grid.json`` one folder up), else notebook 08 by hand."""
    grid = Path(output_dir).resolve().parent / "grid.json"
    if grid.is_file():
        stored = json.loads(grid.read_text())
        return (f"banana grid notebooks/08_learning_curves.ipynb --grid grids/{stored['name']}.yaml "
                f"--profile {stored['profile']} --threads 2")
    return f"notebook 08 run by hand (output_dir {output_dir})"


def publish_point(output_dir: str | Path, publish_dir: str | Path, *, machine: str,
                  command: str | None = None) -> Path | None:
    """Ship a finished study point (:func:`run_curve_point`'s ``output_dir``) of a
    :data:`SHIPPED_ARMS` arm into ``publish_dir/<name>``, with a model card; other arms: ``None``.

    The generalist is shipped as a run folder (``config.json`` + ``model/``) whose recorded world
    and base are repository-relative, so ``banana evaluate data/generators/generalist-cpu --split
    test`` works in any clone (the world is rebuilt from its seed when missing). The card holds the
    data, steps, seed, command, machine, wall time and the val and test records. ``command``: default
    :func:`study_command`."""
    import shutil

    from banana.paths import repo_relative

    output_dir = Path(output_dir)
    command = command if command is not None else study_command(output_dir)
    record = json.loads((output_dir / "metrics.json").read_text())
    val_path = output_dir / "val_metrics.json"
    if not val_path.is_file():
        raise FileNotFoundError(f"{val_path} is missing: run the point with also_val=True before shipping it")
    val_record = json.loads(val_path.read_text())
    arm = record["arm"]
    if arm not in SHIPPED_ARMS:
        return None
    config = json.loads((output_dir / ("run" if _is_run_folder(arm) else "matched-generalist") / "config.json").read_text())
    train_config = config["train"]
    out = Path(publish_dir) / f"{SHIPPED_ARMS[arm]}-{Path(train_config['world_dir']).name}"   # study_model_dir's name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if _is_run_folder(arm):
        run = output_dir / "run"
        shutil.copytree(run / "model", out / "model")
        for name in ("run_info.json", "metrics.json", "loss_curve.png"):
            shutil.copy2(run / name, out / (name if name.endswith(".png") else f"training_{name}"))
        if (run / "control.json").is_file():      # the control's provenance, its paths repository-relative
            control = json.loads((run / "control.json").read_text())
            control.update({k: control[k] and repo_relative(control[k]) for k in ("replaces_base", "init_model")})
            (out / "control.json").write_text(json.dumps(control, indent=1) + "\n")
        train_config.update(world_dir=repo_relative(train_config["world_dir"]),
                            base_model=train_config["base_model"] and repo_relative(train_config["base_model"]))
        (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    else:
        for task in ("segmentation", "depth", "normals"):
            shutil.copytree(output_dir / f"run-{task}" / "model", out / task)
            shutil.copy2(output_dir / f"run-{task}" / "metrics.json", out / task / "training_metrics.json")
    (out / "test_metrics.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "val_metrics.json").write_text(json.dumps(dict(val_record), indent=1) + "\n")
    specialist = None if _is_run_folder(arm) else \
        json.loads((output_dir / "run-segmentation" / "config.json").read_text())["specialist"]
    (out / "README.md").write_text(_study_card(out.name, arm, record, val_record, train_config, command, machine,
                                               specialist))
    return out


def _study_card(name: str, arm: str, test: Mapping, val: Mapping, train: Mapping, command: str, machine: str,
                specialist: Mapping | None = None) -> str:
    use = (f"```bash\nbanana evaluate data/generators/{name} --split test --steps 1\n```\n\n"
           "or `banana.training.load_run(\"data/generators/" + name + "\")` in Python.") if _is_run_folder(arm) else (
        "`banana.baselines.Specialist.from_pretrained(\"data/generators/" + name + "/<task>\")` for task in "
        "segmentation, depth, normals.")
    if specialist is None:
        base = ("a random init, no generative pretraining (`banana.baselines.train_control`)" if arm == "control"
                else f"`{repo_relative_name(train.get('base_model'))}` (generation pretraining only)")
        rows = (f"base | {base} |\n"
                f"| training | {train['max_steps']} steps x batch {train['batch_size']}, mixing ratio "
                f"{train['mixing_ratio']}, {test['vision_images_seen']:,} vision images seen "
                f"({test['images_seen']:,} images in all) |\n"
                f"| recipe | tuning `{train['tuning']}`, vision timesteps `{train['vision_timesteps']}`, condition init "
                f"`{train['condition_init']}`, lr {train['learning_rate']}, EMA {train['ema_decay']}, random palette "
                f"{train['random_palette_prob']}")
        if "denoising_loss_increase_pct" in test:
            rows += (f" |\n| generation retention | held-out denoising loss {test['denoising_loss_increase_pct']:+.1f}% "
                     f"[{test['denoising_loss_increase_pct_ci_lo']:+.1f}, {test['denoising_loss_increase_pct_ci_hi']:+.1f}] "
                     f"against the base ({test['n_retention']} held-out scenes, paired)")
    else:
        init = specialist.get("init_from")
        rows = (f"init | {'`' + repo_relative_name(init) + '` (its UNet)' if init else 'random'} |\n"
                f"| training | one UNet + task head per task, on exactly the vision images of that task the "
                f"`generalist-best` arm of {train['max_steps']} steps x {train['batch_size']} sees: "
                f"{test['vision_images_seen']:,} images in all |\n"
                f"| recipe | AdamW lr {specialist['learning_rate']}, EMA {specialist['ema_decay']}, batch "
                f"{specialist['batch_size']}")
    return f"""# banana study model `{name}` ({ARMS[arm][1]})

The `{arm}` arm of the learning curves (notebook 08, `banana.curves`) at the largest labeled pool of
its study grid. Every number below was measured by the command at the bottom; settings were
chosen on val before the test split was scored.

| | |
|---|---|
| arm | {ARMS[arm][1]} |
| data | banana world `{Path(train['world_dir']).name}` (seed 0); vision examples from the first {test['labeled_scenes']} train scenes |
| {rows} |
| seed | {train['seed']} |
| wall time | {test['train_seconds'] / 60:.1f} min of training |
| machine | {machine} |
| decoding | one DDIM step (specialists: one forward pass) |

## Test ({test['n_eval']} images)

{_card_rows(test)}

## Val ({val.get('n_eval', '?')} images)

{_card_rows(val)}

## Use

{use}

## Reproduce

```bash
{command}
```
"""


def repo_relative_name(path) -> str:
    """A recorded path for the card: as recorded when already relative (to the repository), else
    made repository-relative."""
    from banana.paths import repo_relative

    if path is None:
        return "none"
    return str(path) if not Path(path).is_absolute() else repo_relative(path)

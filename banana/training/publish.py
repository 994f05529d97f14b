"""Ship a trained generator: weights plus a model card that says how they were made.

``data/generators/base-<profile>/`` holds what a notebook loads instead of retraining: the
``save_pretrained`` folders (safetensors), the run's ``config.json``, ``run_info.json``,
``metrics.json`` and loss curve, a grid of samples, and ``README.md`` (the model card: data, steps,
seed, command, final loss, throughput, machine). Everything in the card is read from the run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typing import Sequence

from banana.paths import GENERATORS_DIR, shipped_generator_dir, study_model_dir  # noqa: F401  (re-exported)

#: TrainConfig fields that make a shipped study run "the run" a notebook asks for. Length
#: (``max_steps``), logging and hardware may differ: a shipped study model trained longer.
SAME_RUN_FIELDS = ("stage", "tuning", "mixing_ratio", "seed", "batch_size", "lora_rank", "lora_preset", "condition_init",
                   "vision_timesteps", "loss_normalisation", "task_loss_weight", "learning_rate", "weight_decay",
                   "ema_decay", "drop_text_prob", "drop_image_prob", "drop_both_prob", "random_palette_prob",
                   "binary_prompt_prob", "absent_class_prob", "depth_codec", "profile", "tasks")

#: Prompts for the card's sample grid. The first four name combinations that occur in training;
#: the last four name held-out (shape, colour) pairs that never occur in train/val/test.
SAMPLE_PROMPTS: tuple[str, ...] = (
    "a red sphere on the left and a blue box on the right, on a checkered grey floor in front of a white wall",
    "a yellow banana in the middle, on a striped beige floor in front of a slate wall",
    "an orange cylinder at the front, on a plain brown floor in front of a sage wall",
    "a white box on the left, a purple sphere in the middle and a green cylinder on the right, "
    "on a checkered terracotta floor in front of a grey wall",
    "a green sphere in the middle, on a checkered grey floor in front of a white wall",
    "a yellow box on the right, on a striped slate floor in front of a beige wall",
    "a red cylinder on the left, on a plain grey floor in front of a brown wall",
    "a blue banana in the middle, on a checkered beige floor in front of a terracotta wall",
)


def render_sample_grid(generator, path: str | Path, prompts: Sequence[str] = SAMPLE_PROMPTS, seed: int = 0,
                       steps: int = 20, text_guidance: float = 3.0, scheduler: str = "ddim") -> Path:
    """Generate one image per prompt and save them as a titled grid (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from banana.pipeline import BananaPipeline
    from banana.viz import show_generations

    pipe = BananaPipeline(generator, scheduler=scheduler)
    images = pipe.generate(list(prompts), num_inference_steps=steps, text_guidance=text_guidance,
                           generator=torch.Generator().manual_seed(seed))
    fig = show_generations(images.cpu().numpy(), list(prompts))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def publish_generator(run_dir: str | Path, out_dir: str | Path, command: str, machine: str,
                      sample_steps: int = 20, text_guidance: float = 3.0) -> Path:
    """Copy a finished pretraining run's model and records to ``out_dir`` and write its card.

    Args:
        run_dir: a finished :func:`banana.training.train` run with a ``model/`` folder.
        out_dir: destination (replaced if it exists).
        command: the exact command that produced the run (written into the card).
        machine: the hardware it ran on, in words (e.g. "2-core x86-64 CPU, no GPU").
    """
    from banana.models import BananaGenerator

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    model = run_dir / "model"
    if not (model / "generator_config.json").is_file():
        raise FileNotFoundError(f"{model} is not a saved generator: is {run_dir} a finished pretraining run?")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(model, out_dir)
    for name in ("config.json", "run_info.json", "metrics.json", "loss_curve.png"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out_dir / f"training_{name}" if name != "loss_curve.png" else out_dir / name)
    generator = BananaGenerator.from_pretrained(out_dir)
    render_sample_grid(generator, out_dir / "samples.png", steps=sample_steps, text_guidance=text_guidance)

    config = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    info = json.loads((run_dir / "run_info.json").read_text())
    world = json.loads((Path(config["train"]["world_dir"]) / "world_config.json").read_text())
    train, arch = config["train"], config["generator"]
    params = generator.num_parameters()
    card = f"""# banana base generator `{out_dir.name}`

Our small stand-in for the paper's pretrained image generator: a pixel-space diffusion UNet
(diffusers `UNet2DConditionModel`, InstructPix2Pix-shaped: 6 input channels) with banana's
instruction encoder, **pretrained on text -> image only** (no vision task seen yet). Notebooks 03
and 04 load it from here instead of retraining; notebook 04 instruction-tunes it.

| | |
|---|---|
| parameters | UNet {params['unet']:,}, instruction encoder {params['text_encoder']:,} |
| architecture | resolution {arch['resolution']}, channels {tuple(arch['block_out_channels'])}, layers/block {arch['layers_per_block']}, text width {arch['text_dim']} |
| diffusion | prediction `{arch['prediction_type']}`, `{arch['beta_schedule']}` betas, {arch['num_train_timesteps']} steps, `{arch['timestep_spacing']}` spacing |
| data | banana world `{Path(train['world_dir']).name}`: {world['splits']['train']} training scenes at {world['resolution']} px (world seed {world['seed']}), prompt = the scene description |
| training | {metrics['steps']} steps x batch {train['batch_size']} = {metrics['images_seen']:,} images, AdamW lr {train['learning_rate']}, EMA {train['ema_decay']}, text dropout {train['drop_text_prob'] + train['drop_both_prob']:.2f} (for classifier-free guidance) |
| seed | {train['seed']} |
| final loss | {metrics['final_loss']:.4f} (mean of the last 10% of steps: {metrics['mean_loss_last_10pct']:.4f}) |
| throughput | {metrics['images_per_second']:.1f} images/s over {metrics['train_seconds'] / 60:.1f} min of training |
| machine | {machine} |
| code | git {info.get('git_sha')}, torch {info['packages'].get('torch')}, diffusers {info['packages'].get('diffusers')} |

Reproduce (bit-identical on the same machine kind and package versions):

```bash
{command}
```

## Samples

DDIM, {sample_steps} steps, text guidance {text_guidance}, seed 0. The first four prompts use
combinations seen in training; the last four name held-out combinations (green sphere, yellow box,
red cylinder, blue banana) that never occur in the training split.

![samples](samples.png)

![loss](loss_curve.png)

Files: `generator_config.json`, `unet/` and `text_encoder/` (safetensors), `tokenizer.json`
(load all with `BananaGenerator.from_pretrained`), `training_config.json`, `training_run_info.json`,
`training_metrics.json`.
"""
    (out_dir / "README.md").write_text(card)
    return out_dir


def shipped_study_run(profile: str, config, name: str = "generalist") -> Path | None:
    """The shipped study run ``data/generators/NAME-PROFILE`` (a run folder:
    :func:`banana.training.load_run` loads it) when it was trained with ``config``'s recipe
    (every :data:`SAME_RUN_FIELDS` equal, ``labeled_scenes`` all of the split), else ``None``:
    then the caller trains the run itself."""
    from banana.world import WORLD_PRESETS

    folder = study_model_dir(name, profile)
    if not (folder / "config.json").is_file():
        return None
    # A field a stored config predates has its default (read_config does the same).
    stored = type(config).from_dict(json.loads((folder / "config.json").read_text())["train"]).to_dict()
    wanted = config.to_dict()
    same = all(stored.get(field) == wanted.get(field) for field in SAME_RUN_FIELDS)
    every_scene = (None, WORLD_PRESETS[profile].n_train)          # labeled_scenes that mean "all of the split"
    pools_match = (stored.get("labeled_scenes") == wanted.get("labeled_scenes")
                   or (stored.get("labeled_scenes") in every_scene and wanted.get("labeled_scenes") in every_scene))
    return folder if same and pools_match else None

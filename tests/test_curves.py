"""Learning curves (banana.curves): the labeled pool, one point per arm, the figure and shipping."""

import json

import numpy as np
import pandas as pd
import pytest

from banana.training import TrainConfig
from banana.training.data import VISION, MixedBatchSampler


# --------------------------------------------------------------------------------------- the labeled pool
def test_labeled_scenes_limits_vision_examples_to_the_first_scenes_only():
    config = TrainConfig(labeled_scenes=5, mixing_ratio=0.5, batch_size=8, max_steps=50, profile="smoke")
    n = config.vision_pool_size(40)
    sampler = MixedBatchSampler(40, n, 8, 0.5, num_batches=50, seed=0)
    keys = [key for batch in sampler for key in batch]
    vision = {k.index for k in keys if k.source == VISION}
    generation = {k.index for k in keys if k.source != VISION}
    assert vision == set(range(5))                  # every labeled scene, nothing beyond
    assert max(generation) >= 30                    # generation still draws from the whole split
    assert TrainConfig(profile="smoke").vision_pool_size(40) == 40


@pytest.mark.parametrize("bad", [0, -3, True])
def test_labeled_scenes_must_be_a_positive_count(bad):
    with pytest.raises(ValueError, match="labeled_scenes"):
        TrainConfig(labeled_scenes=bad)


def test_a_labeled_pool_larger_than_the_split_is_an_error():
    with pytest.raises(ValueError, match="only 32 scenes"):
        TrainConfig(labeled_scenes=33).vision_pool_size(32)


def test_replayed_specialist_stream_stays_inside_the_labeled_pool(split):
    from banana.baselines import replay_vision_stream

    config = TrainConfig(labeled_scenes=4, mixing_ratio=1.0, batch_size=8, max_steps=6, profile="smoke")
    indices = {key.index for task in ("segmentation", "depth", "normals")
               for key in replay_vision_stream(config, task, split=split)}
    assert indices and indices <= set(range(4))


def test_arm_configs_are_the_recipes_they_name():
    from banana.curves import ARMS, BEST_RECIPE, arm_config

    best = arm_config("generalist-best", 16, profile="smoke", max_steps=3)
    assert best.labeled_scenes == 16 and all(getattr(best, k) == v for k, v in BEST_RECIPE.items())
    paper = arm_config("generalist-paper", 16, profile="smoke", max_steps=3)
    assert (paper.tuning, paper.vision_timesteps, paper.condition_init) == ("lora", "uniform", "keep")
    assert arm_config("control", 16, profile="smoke", max_steps=3) == best   # same recipe, another init
    assert set(ARMS) >= {"generalist-paper", "generalist-best", "control", "specialist-random", "specialist-pretrained"}
    with pytest.raises(ValueError, match="unknown arm"):
        arm_config("oracle", 16, profile="smoke", max_steps=3)
    tuned = arm_config("generalist-best", 16, profile="smoke", max_steps=3,
                       overrides="mixing_ratio=1.0, task_loss_weight=0.1,loss_normalisation=per-task")
    assert (tuned.mixing_ratio, tuned.task_loss_weight, tuned.loss_normalisation) == (1.0, 0.1, "per-task")


@pytest.mark.parametrize("bad, match", [("warp_speed=9", "unknown TrainConfig"), ("max_steps=9", "set by the curve"),
                                        ("mixing_ratio", "NAME=VALUE")])
def test_bad_recipe_overrides_are_named(bad, match):
    from banana.curves import parse_overrides

    with pytest.raises(ValueError, match=match):
        parse_overrides(bad)


# --------------------------------------------------------------------------------------- points
@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, world_dir):
    from banana.training import train

    run = tmp_path_factory.mktemp("base")
    train(TrainConfig(stage="pretrain", mixing_ratio=0.0, profile="smoke", max_steps=2, batch_size=4), run,
          world_dir=world_dir, progress=False)
    return run / "model"


@pytest.mark.parametrize("arm", ["generalist-best", "control", "specialist-pretrained"])
def test_a_curve_point_trains_scores_and_records_its_pool(arm, base_dir, world_dir, tmp_path, one_thread):
    from banana.curves import run_curve_point

    record = run_curve_point(arm, 8, tmp_path, base_dir=base_dir, world_dir=world_dir, profile="smoke",
                             max_steps=2, batch_size=4, n_eval=4)
    assert record == json.loads((tmp_path / "metrics.json").read_text())
    assert record["arm"] == arm and record["labeled_scenes"] == 8 and record["n_eval"] == 4
    assert record["vision_images_seen"] == 4          # 2 steps x 4 slots x ratio 0.5, however the arm trains
    for name in ("segmentation_miou", "depth_delta1", "normals_mean_deg"):
        assert record[f"{name}_ci_lo"] <= record[name] <= record[f"{name}_ci_hi"]
        assert f"{name}_floor" in record and record[f"{name}_above_floor"] in (0.0, 1.0)
    # specialists never read a prompt: no unseen-palette score; generalists have one
    assert ("segmentation_miou_unseen" in record) == (arm != "specialist-pretrained")
    # generalists: generation retention against the base, with its paired interval
    assert ("denoising_loss_increase_pct" in record) == (arm == "generalist-best")
    if arm == "generalist-best":
        assert (record["denoising_loss_increase_pct_ci_lo"] <= record["denoising_loss_increase_pct"]
                <= record["denoising_loss_increase_pct_ci_hi"])
        assert record["denoising_loss_increase_pct"] == pytest.approx(
            100 * (record["denoising_loss_tuned"] / record["denoising_loss_base"] - 1))
    if arm == "specialist-pretrained":
        replayed = json.loads((tmp_path / "run-depth" / "replay.json").read_text())["indices"]
        assert set(replayed) <= set(range(8))
        assert json.loads((tmp_path / "run-depth" / "config.json").read_text())["init"]["init_from"]


def test_a_shipped_generalist_is_evaluated_by_the_cli_from_its_folder(base_dir, world_dir, tmp_path, one_thread):
    from banana.cli import main
    from banana.curves import run_curve_point
    from banana.study_models import publish_point

    point = tmp_path / "point"
    run_curve_point("generalist-best", 8, point, base_dir=base_dir, world_dir=world_dir, profile="smoke",
                    max_steps=2, batch_size=4, n_eval=4, also_val=True)
    shipped = publish_point(point, tmp_path / "generators", command="the command", machine="a test machine")
    card = (shipped / "README.md").read_text()
    assert "## Test (4 images)" in card and "## Val (4 images)" in card and "the command" in card
    assert "a test machine" in card and "vision images seen" in card
    assert main(["evaluate", str(shipped), "--split", "test", "--steps", "1", "--limit", "4", "--no-progress",
                 "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n_images"] == 4
    with pytest.raises(FileNotFoundError, match="also_val"):
        (point / "val_metrics.json").unlink()
        publish_point(point, tmp_path / "again", command="c", machine="m")


def test_notebook_05_loads_the_four_shipped_study_models_when_they_are_its_experiment(base_dir, world_dir, tmp_path,
                                                                                    one_thread, monkeypatch):
    from pathlib import Path

    import banana.paths
    import banana.training.publish
    from banana.curves import arm_config, run_curve_point
    from banana.evaluation.contest import shipped_contestants
    from banana.study_models import publish_point

    generators = tmp_path / "generators"
    for arm in ("generalist-best", "control", "specialist-random", "specialist-pretrained"):
        point = tmp_path / arm
        run_curve_point(arm, 8, point, base_dir=base_dir, world_dir=world_dir, profile="smoke", max_steps=2,
                        batch_size=4, n_eval=4, also_val=True)
        shipped = publish_point(point, generators, command="c", machine="m")
        assert shipped.name.endswith(f"-{Path(world_dir).name}") and (shipped / "README.md").is_file()
    assert "no generative pretraining" in (generators / f"control-{Path(world_dir).name}" / "README.md").read_text()
    where = lambda name, profile: generators / f"{name}-{Path(world_dir).name}"          # noqa: E731
    monkeypatch.setattr(banana.paths, "study_model_dir", where)
    monkeypatch.setattr(banana.training.publish, "study_model_dir", where)
    config = arm_config("generalist-best", 8, profile="smoke", max_steps=2, batch_size=4)
    study = shipped_contestants("smoke", config)
    assert set(study.controls) == {"no-pretraining control"} and set(study.specialists) == set(study.pretrained_specialists)
    assert study.generalist.unet.conv_in.weight.shape[1] == 6 and sum(study.images_seen.values()) == 4
    assert shipped_contestants("smoke", arm_config("generalist-paper", 8, profile="smoke", max_steps=2,
                                                   batch_size=4)) is None        # another recipe: train it


def test_the_learning_curve_figure_has_a_panel_per_metric_bands_and_the_floor():
    from banana.curves import plot_learning_curves

    rows = []
    for arm, offset in (("generalist-best", 0.1), ("control", 0.0)):
        for n in (8, 16, 32):
            value = 0.3 + offset + 0.01 * np.log2(n)
            rows.append({"arm": arm, "labeled_scenes": n, "segmentation_miou": value,
                         "segmentation_miou_ci_lo": value - 0.02, "segmentation_miou_ci_hi": value + 0.02,
                         "segmentation_miou_floor": 0.24})
    fig = plot_learning_curves(pd.DataFrame(rows))
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "labeled scenes for tuning"
    assert len(ax.lines) == 3 and len(ax.collections) == 2            # two arms, one floor; two bands
    assert ax.lines[-1].get_ydata()[0] == pytest.approx(0.24)


def test_retention_increase_is_zero_against_itself_and_sees_a_worse_model(world_dir, one_thread):
    import torch

    from banana.evaluation.retention import retention_increase
    from banana.models import BananaGenerator
    from banana.world import load_world

    held_out = load_world(world_dir)["held_out"]
    base = BananaGenerator.from_preset("smoke", seed=0)
    same = retention_increase(base, base, held_out, n=4)
    assert same["denoising_loss_increase_pct"] == 0 and same["n_retention"] == 4
    assert same["denoising_loss_increase_pct_ci_lo"] == same["denoising_loss_increase_pct_ci_hi"] == 0
    worse = BananaGenerator.from_preset("smoke", seed=0)
    with torch.no_grad():
        for p in worse.unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hurt = retention_increase(base, worse, held_out, n=4)
    assert hurt["denoising_loss_increase_pct_ci_lo"] > 0


# --------------------------------------------------------------------------------------- palette reading
def test_binary_prompts_name_one_class_in_one_colour_and_negatives_are_black(split):
    import torch

    from banana.training import BananaExamples
    from banana.world import CLASS_NAMES

    examples = BananaExamples(split, seed=0, binary_prompt_prob=1.0, absent_class_prob=0.0)
    negatives = BananaExamples(split, seed=0, binary_prompt_prob=1.0, absent_class_prob=1.0)
    for index in range(4):
        example = examples.vision(index, 0, task="segmentation")
        colours = torch.unique(example["target"].reshape(3, -1).T, dim=0)
        assert len(colours) == 2 and (colours == -1).all(dim=1).any()     # black and one colour
        named = [name for name in CLASS_NAMES if name in example["prompt"]]
        assert len(named) == 1
        semantic = split[index]["semantic"]
        painted = (example["target"] != -1).any(dim=0).numpy()
        assert (painted == (semantic == CLASS_NAMES.index(named[0]))).all()
        negative = negatives.vision(index, 0, task="segmentation")
        if len(np.unique(semantic)) < len(CLASS_NAMES):
            assert (negative["target"] == -1).all()                     # a class the scene lacks
        again = examples.vision(index, 0, task="segmentation")
        assert again["prompt"] == example["prompt"] and torch.equal(again["target"], example["target"])
    with pytest.raises(ValueError, match="binary_prompt_prob"):
        TrainConfig(binary_prompt_prob=1.5)


def test_the_verdict_says_beats_only_where_intervals_separate():
    from banana.curves import curve_verdict, interval_outcome

    assert interval_outcome((0.3, 0.4), (0.1, 0.2), higher=True) == "beats"
    assert interval_outcome((0.3, 0.4), (0.1, 0.2), higher=False) == "trails"
    assert interval_outcome((0.3, 0.4), (0.35, 0.5), higher=True) == "overlaps"
    rows = []
    for arm, seg in (("generalist-best", (0.30, 0.29, 0.31)), ("control", (0.22, 0.21, 0.23))):
        for n in (8, 16):
            gap = 0.0 if n == 8 else 0.08              # at 16 scenes the arms are equal
            value, lo, hi = (seg if arm == "generalist-best" else tuple(v + gap for v in seg))
            rows.append({"arm": arm, "labeled_scenes": n, "segmentation_miou": value, "segmentation_miou_ci_lo": lo,
                         "segmentation_miou_ci_hi": hi, "segmentation_miou_above_floor": 1.0,
                         "depth_delta1": np.nan, "depth_delta1_ci_lo": np.nan, "depth_delta1_ci_hi": np.nan,
                         "normals_mean_deg": np.nan, "normals_mean_deg_ci_lo": np.nan, "normals_mean_deg_ci_hi": np.nan})
    text = curve_verdict(pd.DataFrame(rows))
    assert "| 8 | 0.300 vs 0.220: **beats**" in text and "| 16 | 0.300 vs 0.300: **overlaps**" in text
    assert "segmentation mIoU (canonical palette): 8;" in text and "no finding" not in text
    assert "specialist" not in text.split("###")[-1].split(":")[0]     # only the pairs present are read out

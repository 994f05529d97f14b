"""The query tasks (instance and referring segmentation by prompt) through the whole package:
prompts a world generator can read, targets that round-trip, the training mix, the pipeline, the
evaluation harness (recomputable from predictions.npz), the floors, and a tiny model that learns
them through the real recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from banana.codecs import MaskCodec, quantize, same_partition
from banana.models import BananaGenerator, GeneratorConfig, InstructionTokenizer
from banana.tasks import (ALL_TASKS, INSTANCE_PROMPTS, QUERY_TASKS, REFERRING_PROMPTS, TASKS, decode_prediction,
                          draw_query, encode_target, ensemble, query_target, task_prompt)
from banana.training import BananaExamples, BananaModule, TrainConfig, collate_examples
from banana.world import OBJECT_SHAPES
from banana.world.referring import referring_expressions

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(split, n=12):
    return [split[i] for i in range(n)]


# --------------------------------------------------------------------------------------- prompts
def test_every_query_prompt_is_read_whole_by_a_world_generator(split):
    tokenizer = InstructionTokenizer(GeneratorConfig().vocabulary, max_tokens=GeneratorConfig().max_tokens)
    expressions = {r.expression for row in _rows(split, len(split)) for r in referring_expressions(row["objects"])}
    assert len(expressions) >= 5
    prompts = [w.format(name=s) for w in INSTANCE_PROMPTS for s in OBJECT_SHAPES]
    prompts += [w.format(expression=e) for w in REFERRING_PROMPTS for e in expressions]
    for prompt in prompts:
        assert tokenizer.unknown_words(prompt) == [], prompt
        tokenizer([prompt])                           # no truncation error


@pytest.mark.parametrize("task", QUERY_TASKS)
def test_a_query_task_without_its_query_is_an_error(task):
    with pytest.raises(ValueError, match="needs query"):
        task_prompt(task)
    assert task_prompt(task, query="box" if task == "instance" else "the red box").count("box") == 1


def test_queries_must_fit_the_scene(split):
    row = split[0]
    with pytest.raises(ValueError, match="unknown class"):
        query_target("instance", row, "dinosaur")
    with pytest.raises(ValueError, match="picks no single object"):
        query_target("referring", row, "the striped zebra")


# --------------------------------------------------------------------------------------- targets
@pytest.mark.parametrize("task", QUERY_TASKS)
def test_targets_round_trip_in_float_and_8_bit(split, task):
    rng = np.random.default_rng(0)
    for row in _rows(split):
        query = draw_query(task, row, rng)
        if query is None:
            continue
        truth = query_target(task, row, query)
        rgb = encode_target(task, row, query=query)
        assert rgb.shape == (3, *truth.shape) and rgb.dtype == np.float32
        for picture in (rgb, quantize(rgb)):
            decoded = decode_prediction(task, picture)
            assert same_partition(decoded, truth) if task == "instance" else np.array_equal(decoded, truth)


def test_mask_codec_refuses_bad_input_and_survives_noise():
    codec = MaskCodec()
    with pytest.raises(ValueError, match="0/1"):
        codec.encode(np.full((4, 4), 2))
    with pytest.raises(ValueError, match="differ"):
        MaskCodec((9, 9, 9), (9, 9, 9))
    mask = np.random.default_rng(0).random((2, 8, 8)) > 0.5
    noisy = codec.encode(mask) + np.random.default_rng(1).normal(0, 0.15, (2, 3, 8, 8)).astype(np.float32)
    assert np.array_equal(codec.decode(np.clip(noisy, 0, 1)), mask)


def test_ensembles_of_query_answers():
    referring = torch.tensor([[[1, 0]], [[1, 1]], [[0, 0]]], dtype=torch.bool)       # [E=3, 1, 2]
    assert ensemble("referring", referring[:, None]).tolist() == [[[True, False]]]
    instance = torch.tensor([[[1, 0, 0]], [[2, 2, 0]], [[5, 7, 0]]])               # member 1 and 2 agree on fg
    picked = ensemble("instance", instance[:, None])
    assert picked.tolist() == [[[2, 2, 0]]]                                        # the first of the agreeing


# --------------------------------------------------------------------------------------- training mix
def test_the_mix_draws_the_query_tasks_only_when_asked(split):
    default = BananaExamples(split, seed=0)
    assert default.tasks == TASKS
    mixed = BananaExamples(split, seed=0, tasks=ALL_TASKS)
    kinds = [mixed.vision(d % len(split), d)["kind"] for d in range(60)]
    assert set(kinds) == set(ALL_TASKS)
    example = mixed.vision(1, 3, task="referring")
    again = mixed.vision(1, 3, task="referring")
    assert example["prompt"] == again["prompt"] and torch.equal(example["target"], again["target"])
    assert example["target"].min() >= -1 and example["target"].max() <= 1
    with pytest.raises(ValueError, match="tasks must be distinct"):
        TrainConfig(tasks=("segmentation", "poetry"))
    config = TrainConfig(tasks=ALL_TASKS)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert TrainConfig.from_dict({k: v for k, v in TrainConfig().to_dict().items() if k != "tasks"}).tasks == TASKS


@pytest.mark.parametrize("task", QUERY_TASKS)
def test_a_tiny_model_learns_a_query_task_through_the_recipe(split, task, fit_steps):
    """BananaModule.training_step on four fixed examples: the loss falls to a fifth and the 1-step
    x0 answer at t = T-1 moves toward the targets."""
    torch.manual_seed(0)
    gen = BananaGenerator.from_preset("smoke", seed=0)
    config = TrainConfig(stage="tune", mixing_ratio=1.0, learning_rate=3e-3, ema_decay=0.0, profile="smoke",
                         batch_size=4, tuning="full", vision_timesteps="terminal", condition_init="zeros",
                         tasks=(task,))
    module = BananaModule(gen, config)
    examples = BananaExamples(split, seed=0, drop_text_prob=0.0, drop_image_prob=0.0, drop_both_prob=0.0, tasks=(task,))
    batch = collate_examples([examples.vision(i, 0) for i in range(4)])

    def x0_error():
        states, mask = gen.encode_prompts(batch["prompt"])
        noise = torch.randn(batch["target"].shape, generator=torch.Generator().manual_seed(9))
        t = torch.full((4,), 999)
        with torch.no_grad():
            return (gen(module.noise_scheduler.add_noise(batch["target"], noise, t), t, batch["condition"], states, mask)
                    - batch["target"]).pow(2).mean().item()

    start = x0_error()
    losses = fit_steps(module, batch, 80)
    assert sum(losses[-5:]) / 5 < 0.2 * sum(losses[:5]) / 5, losses[::10]
    assert x0_error() < 0.5 * start


# --------------------------------------------------------------------------------------- pipeline
def test_pipeline_answers_query_tasks_with_one_prompt_per_image(split):
    from banana.pipeline import BananaPipeline

    pipe = BananaPipeline(BananaGenerator.from_preset("smoke", seed=0))
    images = np.stack([split[i]["image"] for i in range(2)])
    out = pipe.predict(images, "instance", query=["box", "sphere"], num_inference_steps=1)
    assert out["prompt"] == [task_prompt("instance", query=q) for q in ("box", "sphere")]
    assert out["prediction"].shape == (2, *images.shape[-2:]) and out["prediction"].dtype == torch.int64
    refer = pipe.predict(images, "referring", query="the red box", num_inference_steps=1)["prediction"]
    assert refer.dtype == torch.bool and refer.shape == (2, *images.shape[-2:])
    with pytest.raises(ValueError, match="one per image"):
        pipe.predict(images, "instance", query=["box"] * 3)
    with pytest.raises(ValueError, match="takes no query"):
        pipe.predict(images, "depth", query="box")


# --------------------------------------------------------------------------------------- evaluation
def test_harness_scores_query_tasks_and_recomputes_them(tmp_path, world_dir):
    from banana.evaluation import evaluate_pipeline, recompute_metrics, write_evaluation
    from banana.pipeline import BananaPipeline
    from banana.world import load_world

    test = load_world(world_dir)["test"]
    pipe = BananaPipeline(BananaGenerator.from_preset("smoke", seed=0))
    results = evaluate_pipeline(pipe, test, tasks=("depth", "instance", "referring"), limit=6, batch_size=4,
                                progress=False, num_inference_steps=1)
    assert list(results["metrics"]) == ["depth", "instance", "referring"]
    for task, key in (("instance", "pq"), ("referring", "miou")):
        lo, hi = results["metrics"][task]["ci95"][key]
        assert lo <= results["metrics"][task][key] <= hi
    out = write_evaluation(tmp_path / "eval", results, split="test", world_dir=world_dir, info={"seed": 0})
    stored = json.loads((out / "metrics.json").read_text())
    assert recompute_metrics(out) == stored["metrics"]
    assert "instance PQ" in stored["headline"] and "referring mIoU" in stored["headline"]


def test_query_metrics_and_floors_on_hand_made_cases(split):
    from banana.evaluation.instances import instance_metrics
    from banana.evaluation.prompted import (answer_queries, evaluation_queries, fit_query_floors, query_statistics,
                                            query_truth, score_query_task)

    truth = np.zeros((2, 4, 4), np.int64)
    truth[0, :2, :2], truth[0, 2:, 2:], truth[1, :, :1] = 1, 2, 1
    pred = truth.copy()
    pred[0, 2:, 2:] = 0                     # image 0: one of two found (IoU 1), image 1: exact
    scored = score_query_task("instance", pred, truth)
    assert scored["pq"] == pytest.approx(2 / (2 + 0.5)) == pytest.approx(instance_metrics(pred, truth)["pq"])
    assert query_statistics("instance", pred, truth)["pq"].value() == pytest.approx(scored["pq"])
    masks = truth > 0
    half = masks.copy()
    half[1, 2:] = False                     # image 1: IoU 0.5
    refer = score_query_task("referring", half, masks)
    assert refer["miou"] == pytest.approx(0.75) and refer["ciou"] == pytest.approx(10 / 12)
    assert refer["precision@0.5"] == 1.0 and refer["precision@0.7"] == 0.5

    queries = evaluation_queries(split, 8, seed=0)
    assert queries == evaluation_queries(split, 8, seed=0) and len(queries["instance"]["rows"]) == 8
    floors = fit_query_floors(split)
    for task in QUERY_TASKS:
        answers = answer_queries(floors[task](split), split, task, queries[task], batch_size=3)
        exact = query_truth(split, task, queries[task]["rows"], queries[task]["queries"])
        assert answers.shape == exact.shape
    largest = answer_queries(floors["referring"](split), split, "referring", queries["referring"])
    sizes = [np.bincount(np.asarray(split[r]["instance"]).ravel())[1:].max() for r in queries["referring"]["rows"]]
    assert [int(m.sum()) for m in largest] == sizes


# --------------------------------------------------------------------------------------- specialists
@pytest.mark.parametrize("task", QUERY_TASKS)
def test_query_specialist_replays_the_generalists_queries_and_reads_them(tmp_path, world_dir, task):
    from banana.baselines import load_specialist, matched_config, replay_vision_stream, train_specialist
    from banana.baselines.data import QueryExamples
    from banana.baselines.specialist import SpecialistPipeline
    from banana.evaluation.prompted import evaluate_answer
    from banana.training import train
    from banana.world import load_world

    config = TrainConfig(mixing_ratio=1.0, max_steps=6, checkpoint_every=6, seed=4, profile="smoke", batch_size=4,
                         tasks=ALL_TASKS, tuning="full", ema_decay=0.0)
    run = train(config, tmp_path / "generalist", generator=BananaGenerator.from_preset("smoke", seed=1),
                world_dir=world_dir, progress=False)
    keys = replay_vision_stream(run, task)
    assert keys and all(BananaExamples(load_world(world_dir)["train"], seed=4, tasks=ALL_TASKS)
                        .drawn_task(k.index, k.draw)[0] == task for k in keys)
    examples = QueryExamples(load_world(world_dir)["train"], task, keys, seed=4, tasks=ALL_TASKS)
    generalist_view = BananaExamples(load_world(world_dir)["train"], seed=4, tasks=ALL_TASKS).vision(keys[0].index, keys[0].draw)
    assert examples[0]["prompt"] == generalist_view["prompt"]               # the very query the generalist read
    with pytest.raises(ValueError, match="needs match_run"):
        from banana.baselines import SpecialistConfig
        SpecialistConfig(task=task, backbone="smoke", max_steps=1)
    out = train_specialist(matched_config(run, task, batch_size=2), tmp_path / "specialist", progress=False)
    model = load_specialist(out)
    assert model.reads_prompt and json.loads((out / "replay.json").read_text())["indices"] == [k.index for k in keys]
    test = load_world(world_dir)["test"]
    images = np.stack([test[i]["image"] for i in range(2)])
    with pytest.raises(ValueError, match="one prompt per image"):
        model.predict(images)
    pipe = SpecialistPipeline(model)
    result = evaluate_answer(lambda im, q, r: pipe.predict(im, task, query=list(q))["prediction"].cpu().numpy(),
                             test, task, n=4)
    assert 0 <= result["metrics"][task]["pq" if task == "instance" else "miou"] <= 1


def test_the_query_study_trains_every_arm_and_reports_with_floors(tmp_path, world_dir):
    from banana.query_study import ARMS, evaluate_study, train_study, write_report
    from banana.world import load_world

    base = tmp_path / "base"
    BananaGenerator.from_preset("smoke", seed=3).save_pretrained(base)
    runs = train_study("smoke", tmp_path / "runs", world_dir, base_dir=base, progress=False)
    assert set(runs) == set(ARMS) and all((runs[a] / "model").is_dir() for a in ARMS)
    world = load_world(world_dir)
    results = evaluate_study(runs, world, n=6)
    models = list(results["test"])
    assert models[:4] == ["generalist (5 tasks)", "no-pretraining control", "specialist (instance)",
                          "specialist (referring)"]
    assert {"floor: class prior", "floor: largest object", "floor: majority class"} <= set(models)
    out = write_report(results, world, tmp_path / "report")
    table = (out / "comparison.csv").read_text()
    for metric in ("instance PQ", "referring mIoU", "referring cIoU", "segmentation mIoU"):
        assert metric in table
    verdict = (out / "verdict.md").read_text()
    assert "[test] instance PQ: generalist (5 tasks)" in verdict and "floor" in verdict
    assert (out / "comparison.png").is_file()

    from banana.query_study import MIN_PIXELS, THRESHOLDS, threshold_figure, threshold_sweep

    sweep = threshold_sweep(runs["generalist"], world["val"], n=4)
    assert len(sweep) == len(THRESHOLDS) * len(MIN_PIXELS)
    assert ((sweep["ci_lo"] <= sweep["pq"]) & (sweep["pq"] <= sweep["ci_hi"])).all()
    assert threshold_figure(sweep).legends                                  # legend outside the axes

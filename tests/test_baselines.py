"""Tests of the baselines: task specialists (model, losses, matched data, runs, pretrained init)
and the no-generative-pretraining control (same trainable set as its generalist; the fully tuned
control of a LoRA generalist).

Everything runs on the ``smoke`` generator preset and a smoke world built once per module;
torch is limited to one thread (a shared 2-core machine stalls with two).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from banana.baselines import (IGNORE_INDEX, Specialist, SpecialistBatchSampler, SpecialistConfig, SpecialistExamples,
                              SpecialistModule, SpecialistPipeline, control_config, load_specialist, matched_config,
                              read_specialist_config, replay_vision_stream, specialist_loss, train_control,
                              train_specialist, trainable_parameter_names)
from banana.adapters import add_lora
from banana.models import GENERATOR_PRESETS, BananaGenerator
from banana.tasks import TASKS
from banana.training import VISION, BananaExamples, MixedBatchSampler, TrainConfig, load_run, read_config, train
from banana.training.module import BananaModule
from banana.world import CLASS_NAMES

K = len(CLASS_NAMES)
SMOKE_TUNE = dict(stage="tune", profile="smoke", batch_size=4, log_every=1, learning_rate=1e-3, ema_decay=0.9)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A saved smoke generator standing in for a pretrained base (seed 99: not any run's init)."""
    out = tmp_path_factory.mktemp("base") / "model"
    BananaGenerator.from_preset("smoke", seed=99).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def generalist_run(tmp_path_factory, world_dir, base_dir):
    """A tiny finished tuning run: all-vision batches, so each task gets several examples."""
    config = TrainConfig(mixing_ratio=1.0, max_steps=6, checkpoint_every=6, seed=4, **SMOKE_TUNE)
    return train(config, tmp_path_factory.mktemp("generalist") / "run", generator=base_dir, world_dir=world_dir,
                 progress=False)


def _config(task: str, **kw) -> SpecialistConfig:
    return SpecialistConfig(task=task, backbone="smoke", max_steps=kw.pop("max_steps", 1), batch_size=4, **kw)


def _batch(split, task: str, indices=(0, 1, 2, 3)) -> dict:
    examples = SpecialistExamples(split, task)
    items = [examples[i] for i in indices]
    return {name: torch.stack([item[name] for item in items]) for name in items[0]}


# ------------------------------------------------------------------------------------------ model
@pytest.mark.parametrize("task", TASKS)
def test_one_training_step_changes_every_weight(split, task):
    config = _config(task, ema_decay=0.9)
    module = SpecialistModule(Specialist.from_config(config), config)
    optimizer = module.configure_optimizers()["optimizer"]
    before = {name: p.detach().clone() for name, p in module.model.named_parameters()}
    loss = module.training_step(_batch(split, task), 0)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    optimizer.step()
    unchanged = [name for name, p in module.model.named_parameters() if torch.equal(p, before[name])]
    assert not unchanged, unchanged                 # the head, the backbone and the learned text state all train
    assert module.model.unet.conv_in.in_channels == 3
    assert module.model.unet.conv_out.out_channels == {"segmentation": K, "depth": 2, "normals": 3}[task]


def test_backbone_is_the_generators_unet():
    generator = BananaGenerator.from_preset("smoke")
    specialist = Specialist.from_config(_config("segmentation"))
    skip = ("conv_in.", "conv_out.")
    ours = {k: v.shape for k, v in specialist.unet.state_dict().items() if not k.startswith(skip)}
    theirs = {k: v.shape for k, v in generator.unet.state_dict().items() if not k.startswith(skip)}
    assert ours == theirs


@pytest.mark.parametrize("task", TASKS)
def test_predict_formats(split, task):
    model = Specialist.from_config(_config(task, seed=1))
    images = np.asarray(split[0:5]["image"])                           # uint8 [5, 3, 16, 16]
    prediction = model.predict(images)
    assert torch.equal(prediction, model.predict(torch.from_numpy(images).float() / 255.0))
    if task == "segmentation":
        assert prediction.shape == (5, 16, 16) and prediction.dtype == torch.int64
        assert prediction.min() >= 0 and prediction.max() < K
    elif task == "depth":
        assert prediction.shape == (5, 16, 16) and prediction.dtype == torch.float32
        assert ((prediction > 0) | torch.isinf(prediction)).all() and not torch.isnan(prediction).any()
        with torch.no_grad():
            model.unet.conv_out.bias[1] = 1e3                             # the sky logit says "sky" everywhere
            assert torch.isinf(model.predict(images)).all()
            model.unet.conv_out.bias[1] = -1e3
            assert torch.isfinite(model.predict(images)).all()
    else:
        assert prediction.shape == (5, 3, 16, 16) and prediction.dtype == torch.float32
        assert torch.allclose(prediction.norm(dim=1), torch.ones(5, 16, 16), atol=1e-5)
    assert model.predict(images[0]).shape[0] == 1                           # one image -> a batch of one
    with pytest.raises(ValueError, match="channel-last"):
        model.predict(np.moveaxis(images, 1, -1))


def test_losses_score_the_truth_and_ignore_what_they_should():
    torch.manual_seed(0)
    # segmentation: confident correct logits ~0; pixels labelled 255 never count
    labels = torch.randint(0, K, (2, 8, 8))
    labels[:, :2] = IGNORE_INDEX
    logits = torch.nn.functional.one_hot(labels.clamp(max=K - 1), K).permute(0, 3, 1, 2).float() * 30
    loss, _ = specialist_loss("segmentation", logits, labels)
    assert loss.max() < 1e-6
    scrambled = logits.clone()
    scrambled[:, :, :2] = torch.randn_like(scrambled[:, :, :2]) * 30       # only the ignored rows change
    assert torch.allclose(specialist_loss("segmentation", scrambled, labels)[0], loss)
    assert (specialist_loss("segmentation", -logits, labels)[0] > 1).all()

    # depth: exact log depth + confident sky logit ~0; a global scale error s costs |log s| (metric, not affine)
    depth = torch.rand(2, 8, 8) * 9 + 1
    depth[:, 0] = float("inf")
    sky = torch.isinf(depth)
    outputs = torch.stack([torch.log(depth.where(~sky, torch.ones_like(depth))), (sky.float() * 2 - 1) * 30], 1)
    loss, parts = specialist_loss("depth", outputs, depth)
    assert loss.max() < 1e-6 and set(parts) == {"log_l1", "sky"}
    doubled = outputs.clone()
    doubled[:, 0] += np.log(2.0)
    assert torch.allclose(specialist_loss("depth", doubled, depth)[1]["log_l1"], torch.full((2,), np.log(2.0)))
    assert (specialist_loss("depth", outputs * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1), depth)[1]["sky"] > 1).all()

    # normals: any positive multiple of the truth is perfect, the opposite costs 2; zero (sky) targets ignored
    normals = torch.nn.functional.normalize(torch.randn(2, 3, 8, 8), dim=1)
    normals[:, :, 0] = 0.0
    assert specialist_loss("normals", normals * 3, normals)[0].max() < 1e-6
    assert torch.allclose(specialist_loss("normals", -normals, normals)[0], torch.full((2,), 2.0))


def test_save_load_gives_identical_predictions(tmp_path, split):
    images = np.asarray(split[0:4]["image"])
    for task in TASKS:
        model = Specialist.from_config(_config(task, seed=7))
        directory = model.save_pretrained(tmp_path / task)
        loaded = Specialist.from_pretrained(directory)
        assert loaded.task == task and loaded.backbone == model.backbone and not loaded.training
        assert torch.equal(loaded.predict(images), model.predict(images))
        other = Specialist.from_config(_config(task, seed=8))                # a different init predicts otherwise
        assert not torch.equal(other(torch.zeros(1, 3, 16, 16)), model(torch.zeros(1, 3, 16, 16)))
    with pytest.raises(FileNotFoundError, match="not a saved Specialist"):
        Specialist.from_pretrained(tmp_path)


def test_specialist_pipeline_runs_the_generalist_evaluation(split):
    from banana.evaluation.generalist import evaluate_generalist

    pipe = SpecialistPipeline([Specialist.from_config(_config(task)) for task in TASKS])
    results = evaluate_generalist(pipe, split, limit=4, batch_size=2, progress=False)
    assert set(results["metrics"]) == set(TASKS) and results["predictions"]["depth"].shape == (4, 16, 16)
    assert 0 <= results["metrics"]["segmentation"]["miou"] <= 1
    with pytest.raises(ValueError, match="CLASS_NAMES"):
        pipe.predict(split[0:1]["image"], "segmentation", palette={"cat": (0, 0, 0)})


# ------------------------------------------------------------------------------------------ data
def test_replayed_stream_is_the_generalists_vision_examples(split):
    config = TrainConfig(mixing_ratio=0.3, max_steps=25, seed=5, **{**SMOKE_TUNE, "batch_size": 8})
    # the oracle: the generalist's own sampler and the tasks of the examples it would build
    examples = BananaExamples(split, seed=5)
    sampler = MixedBatchSampler(len(split), len(split), 8, 0.3, num_batches=25, seed=5)
    vision = [key for batch in sampler for key in batch if key.source == VISION]
    expected = {task: [k for k in vision if examples.vision(k.index, k.draw)["kind"] == task] for task in TASKS}
    replayed = {task: replay_vision_stream(config, task, split=split) for task in TASKS}
    for task in TASKS:
        assert len(replayed[task]) == len(expected[task]) > 0, task
        assert [k.index for k in replayed[task]] == [k.index for k in expected[task]], task
        assert replayed[task] == expected[task]
    assert sum(len(v) for v in replayed.values()) == len(vision)
    other_seed = TrainConfig(**{**config.to_dict(), "seed": 6})
    assert replay_vision_stream(other_seed, "depth", split=split) != replayed["depth"]

    # the specialist's batches over one pass are that stream, cut into its own batch size
    stream = [k.index for k in replayed["depth"]]
    batches = SpecialistBatchSampler(len(split), 3, num_batches=-(-len(stream) // 3), seed=0, stream=stream)
    assert [i for batch in batches for i in batch] == stream
    assert batches.images_in(0, batches.num_batches) == len(stream)
    # without a stream: seeded uniform draws, a pure function of (seed, b)
    uniform = lambda seed: list(SpecialistBatchSampler(len(split), 4, num_batches=5, seed=seed))
    assert uniform(1) == uniform(1) != uniform(2)
    assert list(SpecialistBatchSampler(len(split), 4, num_batches=5, seed=1, start_batch=3)) == uniform(1)[3:]


# ------------------------------------------------------------------------------------------ runs
def test_matched_specialist_run_directory_and_exact_resume(tmp_path, generalist_run, world_dir, simulated_kill):
    config = matched_config(generalist_run, "depth", batch_size=2, checkpoint_every=2, log_every=1)
    train_config, generator_config = read_config(generalist_run)
    assert config.backbone_config() == generator_config and config.seed == train_config.seed
    stream = [k.index for k in replay_vision_stream(generalist_run, "depth")]
    assert len(stream) >= 5                                                 # at least 3 specialist steps
    steps = -(-len(stream) // 2)

    straight = train_specialist(config, tmp_path / "straight", progress=False)
    for name in ("config.json", "run_info.json", "metrics.json", "loss_curve.png", "replay.json",
                 "checkpoints/last.ckpt", "model/model.safetensors", "model/specialist_config.json"):
        assert (straight / name).is_file(), name
    metrics = json.loads((straight / "metrics.json").read_text())
    assert metrics["steps"] == steps and metrics["images_seen"] == metrics["matched_images"] == len(stream)
    assert metrics["images_per_second"] > 0 and np.isfinite(metrics["final_loss"])
    assert json.loads((straight / "replay.json").read_text())["indices"] == stream
    stored = read_specialist_config(straight)
    assert stored.max_steps == steps and stored.world_dir == str(Path(world_dir).resolve())
    model = load_specialist(straight)
    assert model.task == "depth" and not torch.equal(model.unet.conv_out.weight,
                                                     Specialist.from_config(config).unet.conv_out.weight)

    # killed at the start of the third step (last checkpoint: after step 2), then the same call again
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_specialist(config, tmp_path / "killed", progress=False, callbacks=[simulated_kill(at=2)])
    assert not (tmp_path / "killed" / "model").exists()
    killed = train_specialist(config, tmp_path / "killed", progress=False)
    resumed = json.loads((killed / "metrics.json").read_text())
    assert (resumed["resumed_from_step"], resumed["steps"], resumed["images_seen"]) == (2, steps, len(stream))
    assert (killed / "model/model.safetensors").read_bytes() == (straight / "model/model.safetensors").read_bytes()

    with pytest.raises(ValueError, match="different config"):
        train_specialist(matched_config(generalist_run, "depth", batch_size=2, learning_rate=0.5),
                         tmp_path / "killed", progress=False)


def test_uniform_specialist_needs_steps_and_runs(tmp_path, world_dir):
    with pytest.raises(ValueError, match="needs match_run"):
        SpecialistConfig(task="normals", backbone="smoke")
    run = train_specialist(_config("normals", max_steps=2, log_every=1), tmp_path / "normals", world_dir=world_dir,
                           progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["images_seen"] == 8 and metrics["matched_images"] is None and not (run / "replay.json").exists()


# ------------------------------------------------------------------------------------------ control
def test_control_starts_from_fresh_weights_with_the_same_recipe(tmp_path, base_dir, world_dir):
    tune = TrainConfig(mixing_ratio=0.5, max_steps=1, seed=3, base_model=str(base_dir), **SMOKE_TUNE)
    base = BananaGenerator.from_pretrained(base_dir)
    config, fresh = control_config(tune)
    assert config == TrainConfig(**{**tune.to_dict(), "base_model": None})
    assert fresh.config == base.config
    differs = [not torch.equal(a, b) for a, b in zip(fresh.unet.state_dict().values(), base.unet.state_dict().values())]
    assert all(differs[:1]) and sum(differs) > len(differs) // 2            # freshly drawn, not the base
    reference = BananaGenerator.from_preset("smoke", seed=3)                  # default init seed: the tuning seed
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), reference.state_dict().values()))

    run = train_control(tune, tmp_path / "control", world_dir=world_dir, progress=False)
    stored, generator_config = read_config(run)
    assert stored.base_model == str((run / "init_model").resolve()) and generator_config == base.config
    same_otherwise = {k: v for k, v in stored.to_dict().items() if k not in ("base_model", "world_dir")}
    assert same_otherwise == {k: v for k, v in tune.to_dict().items() if k not in ("base_model", "world_dir")}
    init = BananaGenerator.from_pretrained(run / "init_model")
    assert all(torch.equal(a, b) for a, b in zip(init.state_dict().values(), fresh.state_dict().values()))
    record = json.loads((run / "control.json").read_text())
    assert record["replaces_base"] == str(Path(base_dir).resolve())
    assert record["tuning"] == record["generalist_tuning"] == tune.tuning == "full"
    assert isinstance(load_run(run), BananaGenerator)
    with pytest.warns(UserWarning, match="looks untrained"):                 # a base equal to the control's init
        control_dir = tmp_path / "same_seed"
        train_control(TrainConfig(**{**tune.to_dict(), "seed": 99}), control_dir, world_dir=world_dir,
                      progress=False)


def _trainable_count(module) -> int:
    return sum(p.numel() for p in module.trainable.values())


@pytest.mark.parametrize("tuning", ["lora", "full"])
def test_control_trains_exactly_the_generalists_parameter_set(base_dir, tuning):
    tune = TrainConfig(base_model=str(base_dir), seed=3, **{**SMOKE_TUNE, "tuning": tuning})
    generalist = BananaModule(BananaGenerator.from_pretrained(base_dir), tune)
    config, fresh = control_config(tune)                                    # tuning=None: the generalist's own
    assert config.tuning == tuning
    control = BananaModule(fresh, config)
    names = trainable_parameter_names(generalist)
    assert names == trainable_parameter_names(control) == trainable_parameter_names(control.generator)
    assert _trainable_count(generalist) == _trainable_count(control) > 0

    full_config, full_fresh = control_config(tune, tuning="full")
    everything = {name for name, _ in full_fresh.named_parameters()}
    full = BananaModule(full_fresh, full_config)
    assert full_config.tuning == "full" and trainable_parameter_names(full) == everything
    assert _trainable_count(full) == sum(full_fresh.num_parameters().values())
    assert all(torch.equal(a, b) for a, b in zip(full_fresh.unet.state_dict().values(),
                                                 BananaGenerator.from_preset("smoke", seed=3).unet.state_dict().values()))
    if tuning == "lora":     # LoRA-on-random: same set as the generalist, but most of the UNet frozen
        assert names < {n for n, _ in control.generator.named_parameters()}
        assert _trainable_count(control) < _trainable_count(full)
    else:
        assert names == trainable_parameter_names(full)
    with pytest.raises(ValueError, match="tuning must be"):
        control_config(tune, tuning="half")


def test_fully_tuned_control_of_a_lora_generalist(tmp_path, base_dir, world_dir):
    tune = TrainConfig(mixing_ratio=0.5, max_steps=1, seed=3, base_model=str(base_dir),
                       **{**SMOKE_TUNE, "tuning": "lora"})
    run = train_control(tune, tmp_path / "control-full", world_dir=world_dir, tuning="full", progress=False)
    stored, _ = read_config(run)
    assert stored.tuning == "full" and stored.base_model == str((run / "init_model").resolve())
    assert {k: v for k, v in stored.to_dict().items() if k not in ("base_model", "world_dir", "tuning")} == \
        {k: v for k, v in tune.to_dict().items() if k not in ("base_model", "world_dir", "tuning")}
    record = json.loads((run / "control.json").read_text())
    assert (record["tuning"], record["generalist_tuning"]) == ("full", "lora")
    assert (run / "model").is_dir() and not (run / "adapter").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    control = load_run(run)
    assert isinstance(control, BananaGenerator)
    assert metrics["trainable_parameters"] == sum(control.num_parameters().values())
    with pytest.raises(ValueError, match="tuning='full'"):                  # the LoRA control needs its own dir
        train_control(tune, run, world_dir=world_dir, progress=False)
    assert json.loads((run / "control.json").read_text())["tuning"] == "full"     # left as it was


# ------------------------------------------------------------------------------------------ pretrained init
@pytest.mark.parametrize("task", TASKS)
def test_pretrained_init_specialist_starts_from_the_base(base_dir, task):
    base = BananaGenerator.from_pretrained(base_dir).unet.state_dict()
    rng = torch.get_rng_state()
    model = Specialist.from_config(_config(task, seed=5, init_from=base_dir))
    assert torch.equal(torch.get_rng_state(), rng)                          # the caller's RNG is left alone
    random_init = Specialist.from_config(_config(task, seed=5))
    ours, theirs = model.unet.state_dict(), random_init.unet.state_dict()
    record = model.init_record
    head_matches = task == "normals"                                         # 3 channels, like RGB
    assert record["init_from"] == str(Path(base_dir).resolve())
    assert record["copied_tensors"] == len(ours) - (0 if head_matches else 2)
    assert record["partially_copied"] == {"conv_in.weight": "input channels 0:3 of 6"}
    assert record["copied_values"] == sum(v.numel() for k, v in ours.items() if head_matches or not k.startswith("conv_out."))
    assert torch.equal(ours["conv_in.weight"], base["conv_in.weight"][:, :3])
    for name, tensor in ours.items():
        if name == "conv_in.weight":
            continue
        if name.startswith("conv_out.") and not head_matches:                # fresh: the random-init head
            assert name in record["fresh_tensors"] and torch.equal(tensor, theirs[name])
        else:
            assert torch.equal(tensor, base[name]), name
    assert torch.equal(model.text_state, random_init.text_state)           # the base has no such tensor
    assert random_init.init_record == {"init_from": None}
    differs = [not torch.equal(theirs[k], base[k]) for k in theirs if k in base and theirs[k].shape == base[k].shape]
    assert sum(differs) > len(differs) // 2                                 # a random init is not the base
    assert not torch.equal(random_init.unet.conv_in.weight, base["conv_in.weight"][:, :3])


def test_pretrained_init_specialist_trains_saves_and_records(tmp_path, base_dir, generalist_run, world_dir):
    config = matched_config(generalist_run, "segmentation", batch_size=2, init_from=base_dir)
    assert config.init_from == str(base_dir) and isinstance(config.init_from, str)
    assert Specialist.from_config(config).init_record["copied_tensors"] > 0     # the generalist's backbone is the base's

    config = _config("segmentation", max_steps=2, log_every=1, init_from=base_dir)
    run = train_specialist(config, tmp_path / "pretrained", world_dir=world_dir, progress=False)
    assert (run / "model/model.safetensors").is_file() and (run / "checkpoints/last.ckpt").is_file()
    stored = read_specialist_config(run)
    assert stored.init_from == str(Path(base_dir).resolve())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 2 and np.isfinite(metrics["final_loss"])
    assert metrics["init"]["copied_tensors"] == Specialist.from_config(config).init_record["copied_tensors"]
    assert json.loads((run / "config.json").read_text())["init"] == metrics["init"]
    trained = load_specialist(run)
    start = Specialist.from_config(config)
    assert not torch.equal(trained.unet.conv_in.weight, start.unet.conv_in.weight)   # it trained

    # init_from is not a resumable change; a config.json from before init_from existed means None
    with pytest.raises(ValueError, match="different config.*init_from"):
        train_specialist(_config("segmentation", max_steps=2, log_every=1), run, world_dir=world_dir, progress=False)
    path = run / "config.json"
    record = json.loads(path.read_text())
    del record["specialist"]["init_from"]
    path.write_text(json.dumps(record))
    assert read_specialist_config(run).init_from is None
    with pytest.raises(ValueError, match="different config.*init_from"):
        train_specialist(config, run, world_dir=world_dir, progress=False)


def test_bad_init_from_is_a_clear_error(tmp_path, base_dir, world_dir):
    with pytest.raises(FileNotFoundError, match="not exist.*saved BananaGenerator"):
        Specialist.from_config(_config("depth", init_from=tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="saved BananaGenerator"):
        train_specialist(_config("depth", init_from=tmp_path / "nowhere"), tmp_path / "run", world_dir=world_dir,
                         progress=False)
    assert not (tmp_path / "run").exists()                                  # failed before writing anything
    other = {**GENERATOR_PRESETS["smoke"].to_dict(), "block_out_channels": [16, 16]}
    with pytest.raises(ValueError, match="another GeneratorConfig.*block_out_channels"):
        Specialist.from_config(SpecialistConfig(task="depth", backbone=other, max_steps=1, init_from=str(base_dir)))
    model = Specialist.from_config(_config("depth"))
    with pytest.raises(ValueError, match="LoRA-adapted"):
        model.copy_generator_weights(add_lora(BananaGenerator.from_pretrained(base_dir)))
    with pytest.raises(TypeError, match="init_from"):
        _config("depth", init_from=3)

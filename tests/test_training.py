"""Tests of the training stage: examples, the mixed sampler, one optimisation step per mode,
LoRA adapter round trips, run directories and exact resumption.

Everything runs on the ``smoke`` generator preset and a smoke world built once per module.
torch is limited to one thread here: on a shared 2-core machine two OpenMP threads competing
with another process can stall a 0.1 s step for seconds.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from banana.adapters import (add_lora, base_fingerprint, codec_settings, has_lora, load_adapter, read_adapter_config,
                             save_adapter, trainable_parameters)
from banana.models import BananaGenerator, GeneratorConfig
from banana.training import (GENERATION, VISION, BananaExamples, BananaModule, ExampleKey, MixedBatchSampler,
                             TrainConfig, collate_examples, load_run, read_config, read_loss_log, train)
from banana.world import CANONICAL_PALETTE

SMOKE = dict(profile="smoke", batch_size=4, log_every=1, learning_rate=1e-3)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A saved (untrained) smoke generator standing in for a pretrained base."""
    out = tmp_path_factory.mktemp("base") / "model"
    BananaGenerator.from_preset("smoke", seed=0).save_pretrained(out)
    return out


def _batch(split, ratio, seed=0, batch_size=4, batch_index=0, **example_kwargs):
    examples = BananaExamples(split, seed=seed, **example_kwargs)
    sampler = MixedBatchSampler(len(examples), len(examples), batch_size, ratio, num_batches=batch_index + 1, seed=seed)
    return collate_examples([examples[key] for key in sampler.global_batch(batch_index)])


# ------------------------------------------------------------------------------------------ sampler
def test_sampler_is_deterministic_and_seeded():
    make = lambda seed: list(MixedBatchSampler(100, 100, 8, 0.3, num_batches=50, seed=seed))
    assert make(1) == make(1)
    assert make(1) != make(2)
    draws = [key.draw for batch in make(1) for key in batch]
    assert draws == list(range(50 * 8))                      # every slot has its own draw number


@pytest.mark.parametrize("ratio", [0.01, 0.2, 0.5])
def test_sampler_vision_fraction_matches_ratio(ratio):
    batches = list(MixedBatchSampler(50, 50, 16, ratio, num_batches=2000, seed=0))
    vision = np.array([sum(key.source == VISION for key in batch) for batch in batches])
    assert abs(vision.sum() / (16 * len(batches)) - ratio) < max(0.1 * ratio, 0.002)
    # stochastic rounding: floor(r*B) or one more, never anything else
    assert set(vision) <= {int(np.floor(ratio * 16)), int(np.floor(ratio * 16)) + 1}
    if ratio == 0.01:
        assert 0 < (vision > 0).mean() < 0.3                 # a tiny ratio still mixes in, in some batches
    if ratio == 0.5:
        assert all(0 < v < 16 for v in vision)               # both kinds in every batch


def test_sampler_extremes_ranks_and_resume():
    assert all(k.source == GENERATION for b in MixedBatchSampler(10, 10, 8, 0.0, 200, seed=3) for k in b)
    assert all(k.source == VISION for b in MixedBatchSampler(10, 10, 8, 1.0, 200, seed=3) for k in b)
    single = list(MixedBatchSampler(10, 10, 4, 0.5, num_batches=20, seed=5))
    rank0 = list(MixedBatchSampler(10, 10, 4, 0.5, num_batches=20, seed=5, rank=0, world_size=2))
    rank1 = list(MixedBatchSampler(10, 10, 4, 0.5, num_batches=20, seed=5, rank=1, world_size=2))
    assert [a + b for a, b in zip(rank0, rank1)] == single   # ranks split each global batch (tests/test_distributed.py)
    resumed = MixedBatchSampler(10, 10, 4, 0.5, num_batches=20, seed=5, start_batch=7)
    assert len(resumed) == 13 and list(resumed) == single[7:]
    batch = single[0]
    assert len({k.index for k in batch if k.source == GENERATION}) == sum(k.source == GENERATION for k in batch)
    with pytest.raises(ValueError):
        MixedBatchSampler(10, 10, 4, 1.5, 10, seed=0)


# ------------------------------------------------------------------------------------------ examples
def test_examples_kinds_ranges_and_determinism(split):
    examples = BananaExamples(split, seed=0)
    r = split[0]["image"].shape[-1]
    gen = examples[ExampleKey(GENERATION, 3, 17)]
    assert gen["kind"] == "generation" and gen["prompt"] == str(split[3]["description"])
    assert torch.equal(gen["condition"], torch.zeros(3, r, r))
    assert torch.allclose(gen["target"], torch.from_numpy(split[3]["image"]).float() / 127.5 - 1, atol=1e-6)
    kinds = Counter()
    for draw in range(60):
        ex = examples[(VISION, draw % len(examples), draw)]
        kinds[ex["kind"]] += 1
        assert ex["target"].shape == ex["condition"].shape == (3, r, r)
        assert ex["target"].dtype == torch.float32
        assert -1 <= float(ex["target"].min()) and float(ex["target"].max()) <= 1
        image = torch.from_numpy(split[draw % len(examples)]["image"]).float() / 127.5 - 1
        assert torch.allclose(ex["condition"], image, atol=1e-6)
    assert set(kinds) == {"segmentation", "depth", "normals"}
    again = BananaExamples(split, seed=0)[(VISION, 5, 41)]
    first = examples[(VISION, 5, 41)]
    assert again["prompt"] == first["prompt"] and torch.equal(again["target"], first["target"])
    other = [BananaExamples(split, seed=1)[(VISION, 5, d)]["prompt"] for d in range(10)]
    assert other != [examples[(VISION, 5, d)]["prompt"] for d in range(10)]


def test_palettes_and_condition_dropout(split):
    canonical = BananaExamples(split, random_palette_prob=0.0)
    prompts = [canonical.vision(i % len(split), i, task="segmentation")["prompt"] for i in range(10)]
    assert len(set(prompts)) <= 3                            # one palette, three prompt styles
    randomised = BananaExamples(split, random_palette_prob=1.0)
    assert len({randomised.vision(0, i, task="segmentation")["prompt"] for i in range(10)}) == 10
    sky = CANONICAL_PALETTE["sky"]
    assert any(f"{sky[0]}, {sky[1]}, {sky[2]}" in p or f"{sky[0]},{sky[1]},{sky[2]}" in p for p in prompts)

    dropping = BananaExamples(split, drop_text_prob=0.2, drop_image_prob=0.2, drop_both_prob=0.2)
    items = [dropping[(VISION, i % len(split), i)] for i in range(500)]
    text_only = np.mean([e["drop_text"] and not e["drop_image"] for e in items])
    both = np.mean([e["drop_text"] and e["drop_image"] for e in items])
    assert 0.12 < text_only < 0.28 and 0.12 < both < 0.28
    for e in items:
        assert (e["prompt"] == "") == e["drop_text"]
        assert bool((e["condition"] == 0).all()) == e["drop_image"]


def test_training_prompts_have_no_unknown_words(split):
    tokenizer = BananaGenerator.from_preset("smoke", seed=0).tokenizer
    examples = BananaExamples(split, seed=7)
    prompts = {examples[(source, i % len(split), i)]["prompt"] for i in range(250) for source in (GENERATION, VISION)}
    prompts |= {examples.vision(i % len(split), i, task=t)["prompt"] for i in range(40)
                for t in ("segmentation", "depth", "normals")}
    unknown = {p: tokenizer.unknown_words(p) for p in prompts if tokenizer.unknown_words(p)}
    assert not unknown, unknown


# ------------------------------------------------------------------------------------------ one step
def _snapshot(generator):
    return {name: p.detach().clone() for name, p in generator.named_parameters()}


@pytest.mark.parametrize("stage,tuning", [("pretrain", "full"), ("tune", "full"), ("tune", "lora")])
def test_one_step_changes_exactly_the_trainable_weights(split, base_dir, stage, tuning):
    ratio = 0.0 if stage == "pretrain" else 0.5
    config = TrainConfig(stage=stage, tuning=tuning, mixing_ratio=ratio, ema_decay=0.9, **SMOKE)
    generator = (BananaGenerator.from_preset("smoke", seed=0) if stage == "pretrain"
                 else BananaGenerator.from_pretrained(base_dir).train())
    module = BananaModule(generator, config)
    trainable = set(trainable_parameters(generator))
    before = _snapshot(generator)
    ema_before = [s.clone() for s in module.ema.shadows()]
    optimizer = module.configure_optimizers()["optimizer"]
    loss = module.training_step(_batch(split, ratio), 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    module.ema.update()
    changed = {name for name, p in generator.named_parameters() if not torch.equal(p, before[name])}
    assert changed <= trainable                                            # only trainable weights move
    assert any(n.startswith("unet.conv_in.") for n in changed)
    assert any(n.startswith("text_encoder.transformer.") for n in changed)
    assert any(not torch.equal(a, b) for a, b in zip(ema_before, module.ema.shadows()))
    if tuning == "lora":
        lora = {n for n in trainable if ".lora_" in n}
        assert lora and any(".lora_B." in n for n in changed)
        assert trainable == lora | {n for n in trainable if n.startswith(("unet.conv_in.", "text_encoder."))}
        assert all(n.startswith("text_encoder.") for n, _ in generator.named_parameters()
                   if n.startswith("text_encoder.")) and all(
            p.requires_grad for n, p in generator.named_parameters() if n.startswith("text_encoder."))
        frozen = {n for n, _ in generator.named_parameters()} - trainable
        assert frozen and all(n.startswith("unet.") for n in frozen)
    else:
        assert trainable == set(before)                                    # everything trains
        assert len(changed) > 0.8 * len(trainable)


# ------------------------------------------------------------------------------------------ adapters
def test_adapter_save_load_reproduces_outputs_exactly(tmp_path, base_dir, split):
    generator = add_lora(BananaGenerator.from_pretrained(base_dir), rank=4)
    torch.manual_seed(1)
    with torch.no_grad():                       # make every adapter tensor differ from a fresh one
        for name, p in trainable_parameters(generator).items():
            p.add_(0.05 * torch.randn_like(p))
    generator.eval()
    metadata = {"base_model": str(base_dir), "codecs": codec_settings(0.5), "note": "round trip"}
    save_adapter(generator, tmp_path / "adapter", metadata)

    loaded = load_adapter(BananaGenerator.from_pretrained(base_dir), tmp_path / "adapter")
    assert has_lora(loaded) and not loaded.training
    batch = _batch(split, 0.5, seed=3)
    timesteps = torch.tensor([0, 250, 500, 999])
    with torch.no_grad():
        outputs = []
        for g in (generator, loaded):
            states, mask = g.encode_prompts(batch["prompt"])
            outputs.append(g(batch["target"], timesteps, batch["condition"], states, mask))
    assert torch.equal(outputs[0], outputs[1])
    for (name, a), (name_b, b) in zip(generator.state_dict().items(), loaded.state_dict().items()):
        assert name == name_b and torch.equal(a, b), name

    record = read_adapter_config(tmp_path / "adapter")
    assert record["rank"] == 4 and record["targets"] == sorted(["to_q", "to_k", "to_v", "to_out.0"])
    assert record["metadata"] == json.loads(json.dumps(metadata))
    assert GeneratorConfig.from_dict(record["generator_config"]) == generator.config
    assert record["metadata"]["codecs"]["depth"] == {**record["metadata"]["codecs"]["depth"],
                                                     "warp": "metric", "colormap": "cube"}
    assert record["base_fingerprint"] == base_fingerprint(BananaGenerator.from_pretrained(base_dir))

    other_base = BananaGenerator.from_preset("smoke", seed=123)
    with pytest.raises(ValueError, match="not the ones"):
        load_adapter(other_base, tmp_path / "adapter")
    with pytest.raises(ValueError, match="no LoRA"):
        save_adapter(BananaGenerator.from_pretrained(base_dir), tmp_path / "nope")


# ------------------------------------------------------------------------------------------ runs
def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 4
    return state["state_dict"]


def test_pretrain_run_directory(tmp_path, world_dir):
    config = TrainConfig(stage="pretrain", mixing_ratio=0.0, max_steps=3, checkpoint_every=2, **SMOKE)
    run = train(config, tmp_path / "pretrain", world_dir=world_dir, progress=False)
    for name in ("config.json", "run_info.json", "metrics.json", "loss_curve.png", "checkpoints/last.ckpt",
                 "model/generator_config.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["images_seen"] == 12 and metrics["images_per_second"] > 0
    assert np.isfinite(metrics["final_loss"]) and metrics["mean_loss_vision_last_10pct"] is None
    train_config, generator_config = read_config(run)
    assert train_config.max_steps == 3 and train_config.world_dir == str(Path(world_dir).resolve())
    assert generator_config == BananaGenerator.from_preset("smoke").config
    assert json.loads((run / "run_info.json").read_text())["seed"] == 0
    assert [s for s, _ in read_loss_log(run)["train/loss"]] == [0, 1, 2]
    assert isinstance(load_run(run), BananaGenerator)
    assert not torch.are_deterministic_algorithms_enabled()         # Lightning's global switch was undone
    before = (run / "model" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    train(config, run, world_dir=world_dir, progress=False)         # a finished run: reloaded, re-exported
    assert (run / "model" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == before
    assert json.loads((run / "metrics.json").read_text())["images_per_second"] == metrics["images_per_second"]
    with pytest.raises(ValueError, match="different config"):      # resuming with another recipe
        train(TrainConfig(stage="pretrain", mixing_ratio=0.0, max_steps=3, seed=1, **SMOKE), run,
              world_dir=world_dir, progress=False)


def test_lora_run_resumes_exactly(tmp_path, world_dir, base_dir, simulated_kill):
    config = TrainConfig(stage="tune", tuning="lora", mixing_ratio=0.5, max_steps=4, checkpoint_every=2,
                         ema_decay=0.9, **SMOKE)
    straight = train(config, tmp_path / "straight", generator=base_dir, world_dir=world_dir, progress=False)
    reference = _final_state(straight)

    # killed during step 3 (last checkpoint: step 2), then started again with the same call
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(config, tmp_path / "killed", generator=base_dir, world_dir=world_dir, progress=False,
              callbacks=[simulated_kill(at=3)])
    assert not (tmp_path / "killed" / "adapter").exists()
    killed = train(config, tmp_path / "killed", generator=base_dir, world_dir=world_dir, progress=False)
    # a finished 2-step run extended to 4 steps
    short = train(TrainConfig(**{**config.to_dict(), "max_steps": 2}), tmp_path / "extended",
                  generator=base_dir, world_dir=world_dir, progress=False)
    extended = train(config, short, generator=base_dir, world_dir=world_dir, progress=False)

    for run in (killed, extended):
        metrics = json.loads((run / "metrics.json").read_text())
        assert (metrics["resumed_from_step"], metrics["steps_this_run"], metrics["steps"]) == (2, 2, 4)
        state = _final_state(run)
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference), run   # bitwise, EMA included
        assert [s for s, _ in read_loss_log(run)["train/loss"]] == [0, 1, 2, 3]
    straight_losses = read_loss_log(straight)["train/loss"]
    assert read_loss_log(killed)["train/loss"] == straight_losses

    for name in ("config.json", "run_info.json", "metrics.json", "loss_curve.png", "checkpoints/last.ckpt",
                 "adapter/adapter.safetensors", "adapter/adapter_config.json"):
        assert (killed / name).is_file(), name
    assert not (killed / "model").exists()
    metrics = json.loads((straight / "metrics.json").read_text())
    assert metrics["images_per_second"] > 0 and metrics["mean_loss_vision_last_10pct"] is not None
    record = read_adapter_config(straight / "adapter")
    assert record["metadata"]["base_model"] == str(Path(base_dir).resolve())
    assert record["metadata"]["codecs"]["segmentation"]["random_palette_prob"] == 0.5

    # the exported adapters are equal too, and load_run rebuilds the tuned generator from the base
    a, b = load_run(straight), load_run(killed)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

"""Data-parallel training: the rank slices of the sampler and the noise, the distributed
TrainConfig fields, and a real 2-process DDP run on CPU (gloo) checked against one process.

The DDP run goes through ``tests/ddp_train.py`` in a subprocess: Lightning's "ddp" launcher
re-executes that script for rank 1, as it re-executes ``banana tune`` on a multi-GPU machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from banana.models import BananaGenerator, build_noise_scheduler
from banana.training import (BananaExamples, MixedBatchSampler, TrainConfig, collate_examples, diffusion_loss,
                             read_config, read_loss_log, train)

SCRIPT = Path(__file__).with_name("ddp_train.py")

pytestmark = pytest.mark.usefixtures("one_thread")


def _sha(tensor: torch.Tensor) -> str:      # as in ddp_train.py
    return hashlib.sha1(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


# ------------------------------------------------------------------------------------ rank slices
def test_sampler_ranks_take_disjoint_slices_of_each_global_batch():
    single = list(MixedBatchSampler(10, 10, 8, 0.5, num_batches=6, seed=5))
    ranks = [list(MixedBatchSampler(10, 10, 8, 0.5, num_batches=6, seed=5, rank=k, world_size=4)) for k in range(4)]
    for b, batch in enumerate(single):
        assert [len(r[b]) for r in ranks] == [2, 2, 2, 2]
        assert sum((r[b] for r in ranks), []) == batch            # disjoint, and together the global batch
    resumed = MixedBatchSampler(10, 10, 8, 0.5, num_batches=6, seed=5, rank=1, world_size=4, start_batch=3)
    assert list(resumed) == ranks[1][3:]
    with pytest.raises(ValueError, match="divisible"):
        MixedBatchSampler(10, 10, 6, 0.5, num_batches=4, seed=0, rank=0, world_size=4)


def test_rank_slices_get_the_global_batch_noise(split):
    generator = BananaGenerator.from_preset("smoke", seed=0).eval()
    scheduler = build_noise_scheduler(generator.config)
    examples = BananaExamples(split, seed=0)
    batch = collate_examples([examples[key] for key in MixedBatchSampler(len(split), len(split), 4, 0.5, 1, seed=0)
                              .global_batch(0)])
    rng = lambda: torch.Generator().manual_seed(123)
    with torch.no_grad():
        whole = diffusion_loss(generator, scheduler, batch, rng())
        halves = [diffusion_loss(generator, scheduler, {k: v[i:i + 2] for k, v in batch.items()}, rng(),
                                 offset=i, total=4) for i in (0, 2)]
    torch.testing.assert_close(torch.cat(halves), whole, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        diffusion_loss(generator, scheduler, batch, rng(), offset=2, total=4)


# ------------------------------------------------------------------------------------ config
def test_train_config_devices_fields_validate_and_old_configs_load(tmp_path):
    config = TrainConfig(devices=4, num_nodes=2, strategy="ddp", precision="bf16-mixed", accelerator="gpu",
                         batch_size=64)
    assert config.world_size == 8
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    bad = [dict(devices=0), dict(devices=True), dict(num_nodes=0), dict(devices=3, batch_size=16),
           dict(strategy="horovod"), dict(accelerator="tpu"), dict(precision="fp8"),
           dict(strategy="fsdp")]                                  # fsdp needs ema_decay=0
    for fields in bad:
        with pytest.raises(ValueError):
            TrainConfig(**fields)
    TrainConfig(strategy="fsdp", ema_decay=0.0)
    # a config.json written before these fields existed still loads, with one-device defaults
    old = {k: v for k, v in TrainConfig(profile="smoke").to_dict().items()
           if k not in ("accelerator", "devices", "num_nodes", "strategy")}
    (tmp_path / "config.json").write_text(json.dumps(
        {"train": old, "generator": BananaGenerator.from_preset("smoke").config.to_dict()}))
    loaded, _ = read_config(tmp_path)
    assert loaded == TrainConfig(profile="smoke") and loaded.world_size == 1 and loaded.strategy == "auto"


# ------------------------------------------------------------------------------------ a real DDP run
@pytest.mark.parametrize("tuning", ["full", pytest.param("lora", marks=pytest.mark.slow)])
def test_ddp_on_two_cpu_processes_matches_one_process(world_dir, tmp_path, tuning):
    """2 ranks x 2 examples, 2 steps, then resumed to 4 steps (a second train() on the same run dir)."""
    from banana.world import load_world

    base, run_dir, out = tmp_path / "base", tmp_path / "ddp", tmp_path / "ranks"
    BananaGenerator.from_preset("smoke", seed=0).save_pretrained(base)
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MPLBACKEND="Agg")
    command = [sys.executable, str(SCRIPT), str(world_dir), str(base), str(run_dir), str(out),
               "--devices", "2", "--strategy", "ddp", "--batch-size", "4", "--max-steps", "2", "--resume-to", "4",
               "--tuning", tuning]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    ranks = [torch.load(out / f"rank{k}.pt", weights_only=False) for k in (0, 1)]
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    # DDP keeps the weights identical on every rank, and so the EMA (updated locally) too
    raw0, raw1 = ranks[0]["raw"], ranks[1]["raw"]
    assert raw0.keys() == raw1.keys() and all(torch.equal(raw0[k], raw1[k]) for k in raw0)
    assert len(ranks[0]["ema"]) == len(raw0) and all(torch.equal(a, b) for a, b in zip(*(r["ema"] for r in ranks)))
    assert all(torch.equal(ranks[0]["exported"][k], ranks[1]["exported"][k]) for k in ranks[0]["exported"])

    # the ranks' slices are disjoint and together the one-process global batch, at every step
    config, _ = read_config(run_dir)
    assert (config.devices, config.strategy, config.batch_size, config.max_steps) == (2, "ddp", 4, 4)
    examples = BananaExamples(load_world(world_dir)["train"], seed=config.seed,
                              random_palette_prob=config.random_palette_prob, drop_text_prob=config.drop_text_prob,
                              drop_image_prob=config.drop_image_prob, drop_both_prob=config.drop_both_prob)
    stream = MixedBatchSampler(len(examples), len(examples), config.batch_size, config.mixing_ratio,
                               num_batches=config.max_steps, seed=config.seed)
    for step in range(config.max_steps):
        expected = [(e["prompt"], _sha(e["target"]), _sha(e["condition"]))
                    for e in (examples[key] for key in stream.global_batch(step))]
        seen = [ranks[k]["batches"][step] for k in (0, 1)]
        assert [len(s) for s in seen] == [2, 2] and seen[0] + seen[1] == expected, f"step {step}"

    # rank 0 alone wrote the run's files; the second invocation resumed from step 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["steps"], metrics["resumed_from_step"], metrics["images_seen"]) == (2, 4, 2, 16)
    assert (run_dir / ("adapter" if tuning == "lora" else "model")).is_dir() and (run_dir / "run_info.json").is_file()
    assert sorted(p.name for p in (run_dir / "logs").iterdir()) == ["version_0", "version_1"]

    # one process, same config: the same losses and weights up to floating-point reduction order
    single_dir = train(dataclasses.replace(config, devices=1, strategy="auto"), tmp_path / "single", progress=False)
    ddp_loss, one_loss = read_loss_log(run_dir), read_loss_log(single_dir)
    for name in ("train/loss", "train/loss_generation", "train/loss_vision"):   # global-batch logging
        assert [s for s, _ in ddp_loss[name]] == [s for s, _ in one_loss[name]] == [0, 1, 2, 3]
        torch.testing.assert_close(torch.tensor(ddp_loss[name]), torch.tensor(one_loss[name]), rtol=1e-4, atol=1e-6)
    from banana.training import load_run

    one = load_run(single_dir).state_dict()
    diff = max((ranks[0]["exported"][k].float() - v.float()).abs().max().item() for k, v in one.items())
    assert diff < 1e-4, diff

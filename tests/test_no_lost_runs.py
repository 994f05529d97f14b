"""No run lost to a kill at the wrong moment: a damaged ``last.ckpt`` resumes from the kept
``previous.ckpt`` (ending bitwise where an uninterrupted run ends), and a damaged world names the
file and the command that rebuilds it."""

from __future__ import annotations

import shutil

import pytest
import torch

from banana.models import BananaGenerator
from banana.training import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

SMOKE = dict(stage="tune", tuning="full", mixing_ratio=0.5, profile="smoke", batch_size=4, log_every=1,
             learning_rate=1e-3, ema_decay=0.9, max_steps=6, checkpoint_every=2)


def _weights(run_dir):
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == SMOKE["max_steps"]
    return state["state_dict"]


def test_a_truncated_last_checkpoint_resumes_from_the_previous_one(tmp_path, world_dir, simulated_kill):
    base = tmp_path / "base"
    BananaGenerator.from_preset("smoke", seed=0).save_pretrained(base)
    config = TrainConfig(**SMOKE)
    straight = train(config, tmp_path / "straight", generator=base, world_dir=world_dir, progress=False)
    reference = _weights(straight)
    assert list(straight.glob("tensorboard/version_0/events.out.tfevents.*"))      # `tensorboard --logdir runs/`

    with pytest.raises(RuntimeError, match="simulated kill"):       # checkpoints at steps 2 and 4, killed in step 5
        train(config, tmp_path / "killed", generator=base, world_dir=world_dir, progress=False, callbacks=[simulated_kill(at=5)])
    checkpoints = tmp_path / "killed" / "checkpoints"
    assert torch.load(checkpoints / "previous.ckpt", weights_only=False)["global_step"] == 2
    data = (checkpoints / "last.ckpt").read_bytes()
    (checkpoints / "last.ckpt").write_bytes(data[: len(data) // 3])      # what a kill mid-write leaves
    with pytest.warns(UserWarning, match=r"cannot be read.*previous\.ckpt at step 2"):
        resumed = train(config, tmp_path / "killed", generator=base, world_dir=world_dir, progress=False)
    state = _weights(resumed)
    assert all(torch.equal(state[k], reference[k]) for k in reference)   # bitwise: nothing lost but time

    (checkpoints / "last.ckpt").write_bytes(b"")
    (checkpoints / "previous.ckpt").write_bytes(b"")
    with pytest.raises(RuntimeError, match="delete .*checkpoints to restart"):
        train(TrainConfig(**{**SMOKE, "max_steps": 8}), tmp_path / "killed", generator=base, world_dir=world_dir,
              progress=False)


def test_an_emptied_shard_names_the_file_and_the_rebuild_command(tmp_path, world_dir):
    from banana.world import load_world

    world = tmp_path / "world"
    shutil.copytree(world_dir, world)
    shard = sorted((world / "train").glob("*.arrow"))[0]
    shard.write_bytes(b"")
    with pytest.raises(ValueError) as error:
        load_world(world)
    message = str(error.value)
    assert str(shard) in message and f"rm -rf {world} && banana world build --out {world}" in message
    assert "--seed 0" in message and "--resolution" in message

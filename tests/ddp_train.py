"""A training run launched as a script, for tests/test_distributed.py (not collected by pytest).

Lightning's "ddp" launcher re-executes this file once per extra device (with LOCAL_RANK set), so
every rank runs all of it. Each rank writes ``<out>/rank<k>.pt``: the examples it was fed (prompt
and SHA-1 of target/condition per row, per step), its raw trainable weights and EMA shadows at the
end of fit, and its exported generator weights.

    python tests/ddp_train.py WORLD BASE RUN_DIR OUT --devices 2 --max-steps 2 [--resume-to 4] [--tuning lora]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402


def _sha(tensor: torch.Tensor) -> str:
    return hashlib.sha1(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class Recorder(Callback):
    """What one rank saw and ended with."""

    def __init__(self):
        self.rank, self.world_size, self.batches, self.end = 0, 1, {}, {}

    def setup(self, trainer, pl_module, stage):
        self.rank, self.world_size = int(trainer.global_rank), int(trainer.world_size)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches[int(trainer.global_step)] = [
            (prompt, _sha(target), _sha(condition))
            for prompt, target, condition in zip(batch["prompt"], batch["target"], batch["condition"])]

    def on_train_end(self, trainer, pl_module):
        self.end = {"raw": {k: p.detach().clone() for k, p in pl_module.trainable.items()},
                    "ema": [s.clone() for s in pl_module.ema.shadows()] if pl_module.ema is not None else []}


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("world", "base", "run_dir", "out"):
        parser.add_argument(name)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--tuning", default="full")
    parser.add_argument("--ema-decay", dest="ema_decay", type=float, default=0.999)
    parser.add_argument("--resume-to", dest="resume_to", type=int, default=None,
                        help="then extend the finished run to this many steps (resumes from its checkpoint)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from banana.models import BananaGenerator
    from banana.training import TrainConfig, train

    config = TrainConfig(stage="tune", tuning=args.tuning, profile="smoke", batch_size=args.batch_size,
                         max_steps=args.max_steps, log_every=1, checkpoint_every=2, learning_rate=1e-3,
                         accelerator="cpu", devices=args.devices, strategy=args.strategy, seed=0,
                         ema_decay=args.ema_decay, base_model=os.path.abspath(args.base))
    generator = BananaGenerator.from_pretrained(args.base)
    recorder = Recorder()
    train(config, args.run_dir, generator=generator, world_dir=args.world, progress=False, callbacks=[recorder])
    if args.resume_to is not None:      # a second invocation on the same run directory, like a restart
        config = dataclasses.replace(config, max_steps=args.resume_to)
        generator = BananaGenerator.from_pretrained(args.base)
        train(config, args.run_dir, generator=generator, world_dir=args.world, progress=False, callbacks=[recorder])
    os.makedirs(args.out, exist_ok=True)
    torch.save({"rank": recorder.rank, "world_size": recorder.world_size, "batches": recorder.batches,
                **recorder.end, "exported": {k: v.clone() for k, v in generator.state_dict().items()}},
               os.path.join(args.out, f"rank{recorder.rank}.pt"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

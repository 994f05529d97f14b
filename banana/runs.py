"""Shared training runs: train a run once, even when several processes want it at the same time.

Grid points (``banana grid --workers N``) run in parallel kernels. When several of them need the
same trained model (every point of the decoding ablation needs notebook 04's tuned run), the first
one to arrive trains it and the others wait on an exclusive file lock, then find the run finished
and just load it. Training itself resumes from checkpoints, so a point killed while holding the
lock loses at most the steps since the last checkpoint (the lock dies with its process).
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from pathlib import Path


#: TrainConfig fields that name files rather than define the run.
PATH_FIELDS = ("base_model", "world_dir")


@contextlib.contextmanager
def exclusive_lock(path: str | Path, poll_s: float = 2.0, announce: bool = True):
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if announce and not waited:
                    print(f"waiting for another process to release {path} ...", flush=True)
                waited = True
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_run(config, run_dir: str | Path, **train_kwargs) -> Path:
    """:func:`banana.training.train` ``config`` into ``run_dir`` unless it has finished there,
    under a lock beside the run (``<run_dir>.lock``), so concurrent callers train it once.

    A finished run is detected by :func:`train` itself (it loads instead of training when the
    checkpoint is at ``max_steps``), and a run directory holding another configuration is refused
    by it with a clear error. Returns ``run_dir``.
    """
    from banana.training import train

    run_dir = Path(run_dir)
    with exclusive_lock(run_dir.with_name(run_dir.name + ".lock")):
        finished = (run_dir / "metrics.json").is_file() and ((run_dir / "model").is_dir() or (run_dir / "adapter").is_dir())
        if finished:
            from banana.training.run import read_config

            # Paths (base_model, world_dir) are resolved by train(); compare everything else.
            stored = read_config(run_dir)[0].to_dict()
            wanted = config.to_dict()
            differences = sorted(k for k, v in wanted.items() if k not in PATH_FIELDS and stored.get(k) != v)
            if differences:
                raise ValueError(f"{run_dir} holds a finished run with another configuration (differs in "
                                 f"{differences}); pass another run directory")
            return run_dir
        train(config, run_dir, **train_kwargs)
    return run_dir

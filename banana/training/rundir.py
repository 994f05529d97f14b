"""The run-directory convention every banana run follows (generator training and specialists).

A run directory holds ``config.json`` + ``run_info.json`` (:func:`write_run_files`),
``checkpoints/last.ckpt`` (resumed when present: :func:`check_resume` refuses a changed config,
:func:`fit_resumable` continues or just reloads a finished run), ``logs/version_*/`` (Lightning
CSV logs, read back by :func:`read_loss_log`), ``metrics.json`` (:func:`mean_last`,
:func:`throughput_record`) and ``loss_curve.png`` (:func:`plot_loss_curve`). :func:`make_trainer`
builds the deterministic Trainer they all use. See :mod:`banana.training.run` for the generator's
runs and :mod:`banana.baselines` for the specialists'.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

__all__ = ["CHECKPOINT_DIR", "LAST_CHECKPOINT", "PREVIOUS_CHECKPOINT", "KeepPreviousCheckpoint", "keep_previous",
           "load_resumable", "ThroughputMeter", "check_resume", "write_run_files",
           "is_global_zero", "keep_determinism_setting", "make_trainer", "fit_resumable", "read_loss_log",
           "mean_last", "throughput_record", "plot_loss_curve"]

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
#: The checkpoint before ``last.ckpt``, kept so that a damaged last one costs one interval, not the run.
PREVIOUS_CHECKPOINT = "previous.ckpt"


class ThroughputMeter(Callback):
    """Times this invocation's training steps (first batch start -> last batch end)."""

    def __init__(self):
        self.start_step: int | None = None
        self.end_step: int | None = None
        self.t0: float | None = None
        self.t1: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.t0 is None:
            self.t0 = time.perf_counter()
            self.start_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.t1 = time.perf_counter()
        self.end_step = trainer.global_step

    @property
    def steps(self) -> int:
        return 0 if self.start_step is None else self.end_step - self.start_step

    @property
    def seconds(self) -> float:
        return 0.0 if self.t0 is None else self.t1 - self.t0


def check_resume(run_dir: Path, stored: Mapping[str, Any], now: Mapping[str, Any], resumable: Iterable[str], *,
                 what: str = "run", extra: Sequence[str] = (), shown: Mapping[str, tuple[str, str]] | None = None
                 ) -> None:
    """Refuse to resume a run whose config changed: every field of ``stored`` (the config in the run
    directory) outside ``resumable`` must equal ``now``'s. ``extra``: further differences found by
    the caller; ``shown``: ``field -> (stored text, now text)`` for fields too long to print. Raises
    ``ValueError`` naming every difference."""
    shown = shown or {}
    resumable = frozenset(resumable)
    diffs = [f"{k}: stored {shown[k][0] if k in shown else repr(v)}, now {shown[k][1] if k in shown else repr(now.get(k))}"
             for k, v in stored.items() if k not in resumable and now.get(k) != v]
    diffs += list(extra)
    if diffs:
        raise ValueError(f"{run_dir} holds a {what} with a different config, so it cannot be resumed ("
                         + "; ".join(diffs) + "). Use another run directory, or delete this one to restart.")


def write_run_files(run_dir: Path, record: Mapping[str, Any], info: Mapping[str, Any]) -> None:
    """``config.json`` (``record``) and ``run_info.json`` (``info`` + provenance) of a run directory."""
    from banana.provenance import write_run_info

    (Path(run_dir) / "config.json").write_text(json.dumps(record, indent=1) + "\n")
    write_run_info(Path(run_dir), info)


def is_global_zero() -> bool:
    """Whether this process is global rank 0 (always true on one device). After :func:`train` under a
    multi-process strategy, only rank 0 has written the run's files: print/publish from it only."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


@contextlib.contextmanager
def keep_determinism_setting():
    """Lightning's Trainer switches deterministic algorithms on process-wide; give the caller
    its own setting back afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def quiet_lightning() -> None:
    """Silence Lightning's start-up chatter (GPU/TPU availability, a LitLogger advertisement,
    "`Trainer.fit` stopped") and a deprecation warning raised inside Lightning itself: none of it
    is about the run (its device, steps and trainable parameters are in ``run_info.json`` and
    ``metrics.json``), and in a notebook it buries the progress bar. Real warnings still show."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    # banana's epochs are its sampler's batches: logging happens every log_every steps regardless
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")


def keep_previous(checkpoint: Path) -> None:
    """Before ``checkpoint`` (``last.ckpt``) is replaced: hard-link (or copy) it to
    ``previous.ckpt`` through a temporary name, so one of the two is complete at every moment.
    Lightning writes the new ``last.ckpt`` atomically (a temporary file moved into place)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        return
    previous, temporary = checkpoint.with_name(PREVIOUS_CHECKPOINT), checkpoint.with_name(PREVIOUS_CHECKPOINT + ".tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(checkpoint, temporary)
    except OSError:                       # no hard links on this filesystem
        shutil.copy2(checkpoint, temporary)
    os.replace(temporary, previous)


class KeepPreviousCheckpoint(ModelCheckpoint):
    """Lightning's checkpoint callback, keeping the checkpoint before ``last.ckpt`` (:func:`keep_previous`)."""

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        if Path(filepath).name == LAST_CHECKPOINT and trainer.is_global_zero:
            keep_previous(Path(filepath))
        super()._save_checkpoint(trainer, filepath)


def load_resumable(checkpoint: Path) -> tuple[Path, dict]:
    """``(path, state)`` of the checkpoint a run resumes from: ``last.ckpt``, or, when it cannot be
    read (a kill during a write on a filesystem without atomic renames, a full disk), the kept
    ``previous.ckpt``, with a warning saying from which step the run restarts."""
    checkpoint = Path(checkpoint)
    previous = checkpoint.with_name(PREVIOUS_CHECKPOINT)
    try:
        return checkpoint, torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as error:
        if not previous.is_file():
            raise RuntimeError(f"{checkpoint} cannot be read ({type(error).__name__}: {error}) and no "
                               f"{PREVIOUS_CHECKPOINT} was kept: delete {checkpoint.parent} to restart the run "
                               "from step 0") from error
        try:
            state = torch.load(previous, map_location="cpu", weights_only=False)
        except Exception as second:
            raise RuntimeError(f"both {checkpoint} ({error}) and {previous} ({second}) cannot be read: delete "
                               f"{checkpoint.parent} to restart the run from step 0") from second
        warnings.warn(f"{checkpoint} cannot be read ({type(error).__name__}: {error}); resuming from {previous} "
                      f"at step {int(state['global_step'])}: the steps after it (at most one checkpoint interval) "
                      "are redone", stacklevel=3)
        return previous, state


def make_trainer(run_dir: Path, max_steps: int, config, callbacks: Sequence[Callback], progress: bool) -> L.Trainer:
    """The Trainer every banana run uses: deterministic (warn-only on GPU, where some kernels have no
    deterministic version), CSV logs (``logs/``), TensorBoard event files (``tensorboard/``) and
    ``checkpoints/last.ckpt`` (with ``previous.ckpt``, :func:`keep_previous`) in ``run_dir``.
    ``config`` needs ``precision``, ``log_every``, ``grad_clip`` and ``checkpoint_every``; its
    ``accelerator``, ``devices``, ``num_nodes`` and ``strategy`` (default: one device) are used
    when present. Lightning's distributed sampler is off: :class:`MixedDataModule` gives each rank
    its own slice of every global batch.

    Multi-process strategies ("ddp", "fsdp") re-execute the calling script (``sys.argv``) once per
    extra device, so call :func:`train` from a script or the ``banana`` command, not a notebook.
    """
    quiet_lightning()
    return L.Trainer(
        max_steps=max_steps, accelerator=getattr(config, "accelerator", "auto"),
        devices=getattr(config, "devices", 1), num_nodes=getattr(config, "num_nodes", 1),
        strategy=getattr(config, "strategy", "auto"),
        deterministic="warn" if torch.cuda.is_available() else True, precision=config.precision,
        # CSV for the package's own readers (loss curves, metrics.json); TensorBoard for people:
        # `tensorboard --logdir runs/` shows every run
        logger=[CSVLogger(run_dir, name="logs"), TensorBoardLogger(run_dir, name="tensorboard", default_hp_metric=False)],
        log_every_n_steps=config.log_every,
        gradient_clip_val=config.grad_clip, use_distributed_sampler=False,
        callbacks=[KeepPreviousCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, filename="step-{step}", save_last=True,
                                          save_top_k=0, every_n_train_steps=config.checkpoint_every), *callbacks],
        enable_progress_bar=progress, enable_model_summary=False, default_root_dir=run_dir,
    )


def fit_resumable(trainer, module, datamodule, model, checkpoint: Path, resuming: bool, max_steps: int,
                  run_dir: Path) -> tuple[int, int]:
    """Fit ``module`` (or, for a finished run, just load its weights from ``checkpoint``) and return
    ``(steps done, step resumed from)``. ``model`` (the generator or specialist the module trains)
    is put in train mode before fitting; with ``resuming`` the fit continues from ``checkpoint``,
    which is rewritten with the final state either way."""
    with warnings.catch_warnings():
        # num_workers=0 is deliberate (2-core machines); mid-epoch resumption is handled by the
        # sampler starting at the restored global_step, which Lightning cannot see.
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch.*")
        warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
        resume_from, state = load_resumable(checkpoint) if resuming else (None, None)
        start_step = int(state["global_step"]) if resuming else 0
        if start_step > max_steps:
            raise ValueError(f"{run_dir} is already at step {start_step} > max_steps={max_steps}")
        if start_step == max_steps:      # a finished run: just load it and re-export
            module.load_state_dict(state["state_dict"])
            steps_done = start_step
        else:
            model.train()   # from_pretrained returns eval mode; Lightning keeps modules' modes
            del state
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
            if trainer.interrupted:
                raise KeyboardInterrupt(f"training was interrupted at step {trainer.global_step}; "
                                        f"run train() again on {run_dir} to resume from the last checkpoint")
            if trainer.is_global_zero:
                keep_previous(checkpoint)
            trainer.save_checkpoint(checkpoint, weights_only=False)
            steps_done = trainer.global_step

    return steps_done, start_step


# ---------------------------------------------------------------------------------- logs & metrics
def read_loss_log(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every logged ``train/*`` series of a run: name -> [(step, value)], sorted by step.

    All invocations (``logs/version_*``) are merged; where a step was logged twice (it ran again
    after a resume) the newest invocation's value wins.
    """
    import csv

    series: dict[str, dict[int, float]] = {}
    versions = sorted((Path(run_dir) / "logs").glob("version_*/metrics.csv"),
                      key=lambda p: int(p.parent.name.split("_")[-1]))
    for path in versions:
        with path.open() as handle:
            for row in csv.DictReader(handle):
                if not row.get("step"):
                    continue
                step = int(float(row["step"]))
                for name, value in row.items():
                    if name.startswith("train/") and value not in ("", None):
                        series.setdefault(name, {})[step] = float(value)
    return {name: sorted(values.items()) for name, values in series.items()}


def mean_last(points: list[tuple[int, float]], max_steps: int, fraction: float = 0.1) -> float | None:
    """Mean of the logged values ``(step, value)`` over the last ``fraction`` of ``max_steps`` steps
    (the last value if none falls there; ``None`` without values)."""
    if not points:
        return None
    cutoff = max_steps * (1.0 - fraction)
    tail = [v for s, v in points if s + 1 > cutoff] or [points[-1][1]]
    return float(sum(tail) / len(tail))


def throughput_record(run_dir: Path, meter: ThroughputMeter, images_this_run: int) -> dict[str, Any]:
    """Training seconds and images/s of this invocation; a finished run that was only reloaded
    and re-exported (no step taken) keeps the throughput its ``metrics.json`` measured."""
    throughput = {"train_seconds": round(meter.seconds, 3),
                  "images_per_second": round(images_this_run / meter.seconds, 3) if meter.seconds > 0 else None}
    previous = run_dir / "metrics.json"
    if meter.steps == 0 and previous.is_file():
        old = json.loads(previous.read_text())
        throughput = {k: old.get(k) for k in throughput}
    return throughput


def _smooth(values: list[float], window: int) -> list[float]:
    """Exponential moving average with a span of ``window`` points, bias-corrected."""
    alpha = 2.0 / (window + 1.0)
    out, avg, weight = [], 0.0, 0.0
    for v in values:
        avg = (1 - alpha) * avg + alpha * v
        weight = (1 - alpha) * weight + alpha
        out.append(avg / weight)
    return out


def plot_loss_curve(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """Plot the run's logged losses (raw, faint; smoothed, solid) to ``loss_curve.png``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from banana.style import RC, slide_size

    run_dir = Path(run_dir)
    path = Path(path) if path is not None else run_dir / "loss_curve.png"
    log = read_loss_log(run_dir)
    figure = Figure(figsize=slide_size(10), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    colors = {"train/loss": "black", "train/loss_generation": "tab:blue", "train/loss_vision": "tab:orange"}
    for name, color in colors.items():
        points = log.get(name)
        if not points:
            continue
        steps = [s + 1 for s, _ in points]
        values = [v for _, v in points]
        window = max(1, len(values) // 20)
        ax.plot(steps, values, color=color, alpha=0.2, linewidth=0.8)
        ax.plot(steps, _smooth(values, window), color=color, linewidth=1.6,
                label=f"{name.split('/')[-1]} (EMA span {window})")
    log_scale = any(v > 0 for points in log.values() for _, v in points)
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("training step", fontsize=RC["axes.labelsize"])
    ax.set_ylabel("MSE" + (" (log scale)" if log_scale else ""), fontsize=RC["axes.labelsize"])
    ax.set_title(f"{run_dir.name}: training loss", fontsize=RC["axes.titlesize"])
    ax.tick_params(labelsize=RC["xtick.labelsize"])
    if log:
        figure.legend(loc="outside right upper", fontsize=RC["legend.fontsize"], frameon=False)
    ax.grid(alpha=0.3)
    figure.savefig(path)
    return path

"""What a run directory records about how it was made.

Every directory that banana writes results into (a built dataset, an executed notebook's
outputs, later a training run) gets a ``run_info.json`` holding the resolved config, the
seed, the versions of the packages that shape the numbers, the git SHA of the code and the
machine. That file is what makes a number in ``reports/`` traceable to a command.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

#: Packages whose versions can change a result; recorded in every run directory.
TRACKED_PACKAGES = (
    "banana", "torch", "numpy", "diffusers", "peft", "lightning", "torchmetrics",
    "datasets", "safetensors", "papermill", "matplotlib", "seaborn", "scikit-image",
)

RUN_INFO_FILE = "run_info.json"


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each package, ``None`` where it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_sha(cwd: str | Path | None = None) -> str | None:
    """The commit of the checkout holding ``cwd`` (default: this package), with
    ``-dirty`` appended when tracked files differ from it; ``None`` outside git."""
    cwd = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def jsonable(value: Any) -> Any:
    """Best-effort conversion of dataclasses, paths and numpy scalars for ``json.dump``."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    return value


_jsonable = jsonable   # the old private name, for callers not yet updated


def run_info(config: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance record for ``config`` (which should contain the ``seed``)."""
    config = jsonable(dict(config))
    return {
        "config": config,
        "seed": config.get("seed"),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
    }


def write_run_info(directory: str | Path, config: Mapping[str, Any]) -> Path:
    """Write ``run_info.json`` for ``config`` into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RUN_INFO_FILE
    path.write_text(json.dumps(run_info(config), indent=2, sort_keys=True) + "\n")
    return path


def read_run_info(directory: str | Path) -> dict[str, Any]:
    """Read a run directory's ``run_info.json``; a clear error when there is none."""
    path = Path(directory) / RUN_INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {directory} is not a banana run directory")
    return json.loads(path.read_text())

"""Build and load the synthetic world as a Hugging Face ``datasets.DatasetDict`` on disk.

Layout of a built world directory (e.g. ``data/world/cpu``)::

    dataset_dict.json, train/, val/, test/, held_out/   # datasets.DatasetDict.save_to_disk
    world_config.json                                   # the resolved WorldConfig + vocabulary (see below)
    run_info.json                                       # package versions / git SHA (banana.provenance)

Fields of every split (R = resolution):

=============  =================  =========================================================
field          feature            meaning
=============  =================  =========================================================
image          Array3D uint8      [3, R, R] RGB, channels first, row 0 = top
depth          Array2D float32    [R, R] z-depth in metres, ``inf`` for sky
normals        Array3D float32    [3, R, R] unit camera-space normals (+x right, +y up,
                                  +z towards the viewer), facing the camera, zeros for sky
semantic       Array2D uint8      [R, R] ids into ``CLASS_NAMES``
instance       Array2D uint8      [R, R] 0 for sky/floor/wall, 1..k for the k objects
description    Value string       a sentence naming every object (colour, shape, position)
objects        Value string       JSON list, one record per object (see ``render_scene``)
index          Value int32        scene index within the split
fov_deg        Value float32      vertical (= horizontal) field of view of the square image
=============  =================  =========================================================

:func:`load_world` returns ``ds.with_format("numpy", dtype=None)``. The ``dtype=None`` matters:
plain ``with_format("numpy")`` converts every integer array to int64 (``datasets`` mimics torch
there); with ``dtype=None`` the stored dtypes come back (uint8 image/semantic/instance, float32
depth/normals, int32 index). Strings come back as ``numpy.str_`` (a ``str`` subclass).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .sampler import MAX_DEPTH, MIN_DEPTH, render_sample
from .scene import CANONICAL_PALETTE, CLASS_NAMES, COLOR_VOCABULARY, HELD_OUT_COMBINATIONS

__all__ = ["WorldConfig", "WORLD_PRESETS", "WORLD_VERSION", "CONFIG_FILE", "world_features", "build_world",
           "load_world", "read_world_config"]

#: Version of the scene sampler + renderer output; bumped whenever the bytes of a sample change, so
#: that a world built by an older version is not silently reused.
WORLD_VERSION = 1
#: The file that marks a complete world directory (written last, before the atomic rename).
CONFIG_FILE = "world_config.json"
_FORMAT = "banana-world"


@dataclass(frozen=True)
class WorldConfig:
    """What to render: image side, split sizes, RGB samples per pixel and the world seed.

    Every sample is a pure function of ``(seed, split, index, resolution, spp)``, so two builds with
    equal configs are byte-identical.
    """

    resolution: int = 32
    n_train: int = 2000
    n_val: int = 200
    n_test: int = 200
    n_held_out: int = 200
    spp: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.resolution < 1 or self.spp < 1:
            raise ValueError(f"resolution and spp must be >= 1 (got {self.resolution}, {self.spp})")
        if min(self.n_train, self.n_val, self.n_test, self.n_held_out) < 1:
            # datasets cannot save_to_disk + load_from_disk an empty split (0 shards), so every split has >= 1
            raise ValueError(f"every split needs at least one scene (got {self.split_sizes()})")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative (got {self.seed})")

    def split_sizes(self) -> dict[str, int]:
        """Split name -> number of scenes, in :data:`SPLITS` order."""
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test, "held_out": self.n_held_out}

    def to_dict(self) -> dict[str, int]:
        """The fields as a plain dict (what ``world_config.json`` stores under ``"config"``)."""
        return dataclasses.asdict(self)


#: Named configurations. ``smoke`` is for tests (seconds), ``cpu`` for the committed CPU
#: reproduction (about a minute to build on 2 cores), ``gpu`` for the larger run (tens of minutes).
WORLD_PRESETS: dict[str, WorldConfig] = {
    "smoke": WorldConfig(resolution=16, n_train=32, n_val=8, n_test=8, n_held_out=8, spp=1, seed=0),
    "cpu": WorldConfig(resolution=32, n_train=2000, n_val=200, n_test=200, n_held_out=200, spp=2, seed=0),
    "gpu": WorldConfig(resolution=64, n_train=20000, n_val=1000, n_test=1000, n_held_out=1000, spp=2, seed=0),
}


def world_features(resolution: int):
    """The explicit ``datasets.Features`` of a world split at ``resolution``."""
    from datasets import Array2D, Array3D, Features, Value

    r = int(resolution)
    return Features({
        "image": Array3D(shape=(3, r, r), dtype="uint8"),
        "depth": Array2D(shape=(r, r), dtype="float32"),
        "normals": Array3D(shape=(3, r, r), dtype="float32"),
        "semantic": Array2D(shape=(r, r), dtype="uint8"),
        "instance": Array2D(shape=(r, r), dtype="uint8"),
        "description": Value("string"),
        "objects": Value("string"),
        "index": Value("int32"),
        "fov_deg": Value("float32"),
    })


def _config_record(config: WorldConfig) -> dict[str, Any]:
    """The content of ``world_config.json`` (deterministic: no timestamps)."""
    r = config.resolution
    return {
        "format": _FORMAT,
        "world_version": WORLD_VERSION,
        "config": config.to_dict(),
        "seed": config.seed,
        "resolution": r,
        "spp": config.spp,
        "splits": config.split_sizes(),
        "class_names": list(CLASS_NAMES),
        "canonical_palette": {k: list(v) for k, v in CANONICAL_PALETTE.items()},
        "held_out_combinations": [list(c) for c in sorted(HELD_OUT_COMBINATIONS)],
        # the evaluation protocol's valid depth range (banana.evaluation.metrics), from the geometry
        "depth_range": {"min_depth": MIN_DEPTH, "max_depth": MAX_DEPTH},
        "color_vocabulary": {k: list(v) for k, v in COLOR_VOCABULARY.items()},
        "fields": {
            "image": f"uint8 [3, {r}, {r}]", "depth": f"float32 [{r}, {r}] z-depth metres, inf = sky",
            "normals": f"float32 [3, {r}, {r}] camera space (+x right, +y up, +z to viewer), zeros = sky",
            "semantic": f"uint8 [{r}, {r}] ids into class_names",
            "instance": f"uint8 [{r}, {r}] 0 = stuff, 1..k objects", "description": "string",
            "objects": "string (JSON list)", "index": "int32", "fov_deg": "float32",
        },
    }


def read_world_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a built world's ``world_config.json`` (FileNotFoundError when it is not a world)."""
    _check_world_dir(Path(path))
    return json.loads((Path(path) / CONFIG_FILE).read_text())


def _check_world_dir(path: Path) -> None:
    hint = (f"Build one with `banana world build --profile cpu --out {path}` or, in Python, "
            f"`banana.world.build_world({str(path)!r}, banana.world.WORLD_PRESETS['cpu'])`.")
    if not path.exists():
        raise FileNotFoundError(f"No banana world at {path}: the directory does not exist. {hint}")
    missing = [name for name in (CONFIG_FILE, "dataset_dict.json") if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not a (complete) banana world: missing {', '.join(missing)}. {hint}")


def load_world(path: str | os.PathLike):
    """Load a world built by :func:`build_world` as a ``DatasetDict`` in numpy format.

    Arrays come back with their stored dtypes (``with_format("numpy", dtype=None)``; see the module
    docstring). Raises ``FileNotFoundError`` with a build hint when ``path`` is missing or is not a
    complete world directory.
    """
    from datasets import load_from_disk

    path = Path(path)
    _check_world_dir(path)
    try:
        ds = load_from_disk(str(path))
    except Exception as error:              # pyarrow / JSON errors of a damaged build name no file
        raise ValueError(_damaged_world_message(path, error)) from error
    return ds.with_format("numpy", dtype=None)


def _damaged_world_message(path: Path, error: Exception) -> str:
    """Which files of a world folder are damaged (empty or unreadable Arrow shards, bad JSON), and
    the command that rebuilds it (a build with the same config would reuse the damaged folder)."""
    import pyarrow as pa

    damaged = []
    for shard in sorted(path.rglob("*.arrow")):
        try:
            with pa.memory_map(str(shard)) as source:
                pa.ipc.open_stream(source).read_all()
        except Exception:
            damaged.append(str(shard))
    for meta in sorted(path.rglob("*.json")):
        try:
            json.loads(meta.read_text())
        except (ValueError, OSError):
            damaged.append(str(meta))
    try:
        config = json.loads((path / "world_config.json").read_text())["config"]
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in config.items())
        rebuild = f"rm -rf {path} && banana world build --out {path} {flags}"
    except (ValueError, OSError, KeyError):
        rebuild = f"rm -rf {path} && banana world build --out {path} --profile PROFILE"
    files = ", ".join(damaged) if damaged else "no single file could be blamed"
    return (f"the world at {path} is damaged ({type(error).__name__}: {error}); damaged: {files}. "
            f"Rebuild it (it is a pure function of its config): {rebuild}")


def _differences(existing: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    diffs = []
    if existing.get("format") != _FORMAT:
        diffs.append(f"format: {existing.get('format')!r} (expected {_FORMAT!r})")
    if existing.get("world_version") != wanted["world_version"]:
        diffs.append(f"world_version: existing {existing.get('world_version')}, requested {wanted['world_version']}")
    old, new = existing.get("config", {}), wanted["config"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            diffs.append(f"{key}: existing {old.get(key)!r}, requested {new.get(key)!r}")
    return diffs


def _generate(config: WorldConfig, split: str, n: int, progress: bool) -> Iterator[dict[str, Any]]:
    from tqdm.auto import tqdm

    with tqdm(total=n, desc=f"world {split} ({config.resolution}px, spp {config.spp})", unit="img",
              disable=not progress) as bar:
        for index in range(n):
            s = render_sample(config.seed, split, index, resolution=config.resolution, spp=config.spp)
            yield {"image": s["image"], "depth": s["depth"], "normals": s["normals"], "semantic": s["semantic"],
                   "instance": s["instance"], "description": s["description"], "objects": s["objects"],
                   "index": index, "fov_deg": s["fov_deg"]}
            bar.update(1)


@contextlib.contextmanager
def staged_build(out: Path, record: dict):
    """Build a dataset folder atomically: yields an empty staging folder beside ``out`` (datasets'
    own progress bars off); on success :func:`publish_build` swaps it in, on any error it is
    deleted and ``out`` stays as it was. Shared by the world and the real-dataset builders."""
    import datasets

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    bars_were_disabled = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # our own tqdm per split is enough
    try:
        yield tmp
        publish_build(tmp, out, record)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if not bars_were_disabled:
            datasets.enable_progress_bars()


def publish_build(tmp: Path, out: Path, record: dict) -> None:
    """Finish a dataset saved into ``tmp`` and put it at ``out``: drop the build cache, write
    ``run_info.json`` and ``world_config.json`` (``record``), then swap the folder in with renames
    only, so a reader sees the old dataset or the new one, never half of one (and a crash leaves
    ``out`` as it was). Shared by the world and the real-dataset builders."""
    from banana.provenance import write_run_info

    shutil.rmtree(tmp / ".cache", ignore_errors=True)
    try:
        write_run_info(tmp, record)
    except Exception as exc:  # provenance must not cost a finished build
        warnings.warn(f"write_run_info failed ({exc!r}); dataset built without run_info.json", stacklevel=2)
    (tmp / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_world(out_dir: str | os.PathLike, config: WorldConfig, overwrite: bool = False, progress: bool = True):
    """Render every split of ``config`` into ``out_dir`` and return it (see :func:`load_world`).

    * ``out_dir`` holds a world with the same config (and :data:`WORLD_VERSION`): it is loaded and
      returned, nothing is rebuilt (whatever ``overwrite`` says; a rebuild would be identical).
    * ``out_dir`` holds a world with a different config: ``FileExistsError`` listing the differences,
      unless ``overwrite=True``, in which case it is replaced.
    * ``out_dir`` exists, is not empty and is not a world: ``FileExistsError`` (never deleted).

    The build goes into a hidden sibling directory (``.<name>.building-<pid>``), which is renamed to
    ``out_dir`` only when complete; ``world_config.json`` is the last file written. An interrupted
    build therefore never leaves a directory that :func:`load_world` accepts. Scenes are rendered
    one by one in a single process (tqdm progress per split unless ``progress=False``).
    If ``banana.provenance.write_run_info(directory, config)`` is importable it records package
    versions and the git SHA next to the data.
    """
    import datasets

    out = Path(out_dir)
    record = _config_record(config)
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a directory")
        if (out / CONFIG_FILE).is_file():
            existing = json.loads((out / CONFIG_FILE).read_text())
            diffs = _differences(existing, record)
            if not diffs and (out / "dataset_dict.json").is_file():
                return load_world(out)
            if not overwrite:
                raise FileExistsError(
                    f"{out} already holds a banana world built with a different config ("
                    + "; ".join(diffs) + "). Pass overwrite=True (CLI: --overwrite) to replace it, "
                    "or choose another output directory.")
        elif any(out.iterdir()):
            raise FileExistsError(f"{out} exists, is not empty and is not a banana world (no {CONFIG_FILE}); "
                                  "refusing to write into or delete it. Choose another output directory.")

    features = world_features(config.resolution)
    with staged_build(out, record) as tmp:
        splits = {}
        for split, n in config.split_sizes().items():
            splits[split] = datasets.Dataset.from_generator(
                _generate, features=features, cache_dir=str(tmp / ".cache"),
                gen_kwargs={"config": config, "split": split, "n": n, "progress": progress})
        datasets.DatasetDict(splits).save_to_disk(str(tmp))
        del splits
    return load_world(out)

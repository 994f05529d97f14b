"""Grid files and point folders: what a grid is (:class:`GridSpec`, expanded from a YAML file) and
the on-disk state of one point (``status.json``, ``metrics.json``), shared by the runner and the
report."""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

STATUS_FILE = "status.json"
METRICS_FILE = "metrics.json"
PARAMETERS_FILE = "parameters.json"
NOTEBOOK_FILE = "notebook.ipynb"
GRID_FILE = "grid.json"
#: Parameters the runner sets itself; a grid file may not set them.
RESERVED = ("output_dir", "profile")


# --------------------------------------------------------------------------- grid files
@dataclass
class GridSpec:
    """A resolved grid: name, fixed parameters, the points (parameter dicts) and report settings."""

    name: str
    parameters: dict[str, Any]
    points: list[dict[str, Any]]
    axes: list[str]                    # the parameters that vary, in the order they were declared
    report: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None

    def point_name(self, point: Mapping[str, Any]) -> str:
        """``mixing_ratio-0.5_seed-0``: the varying parameters, in declaration order."""
        return point_name(point, self.axes)


def with_parameters(spec: GridSpec, fixed: Mapping[str, Any]) -> GridSpec:
    """``spec`` with ``fixed`` parameters added to it and to every point (folders of this machine,
    e.g. ``world_dir``, or a seed that fixes the world): the same grid, run somewhere else."""
    fixed = dict(fixed)
    clash = sorted(set(fixed) & set(spec.axes))
    if clash:
        raise ValueError(f"cannot fix {clash}: they are axes of grid {spec.name!r}")
    return GridSpec(name=spec.name, parameters={**spec.parameters, **fixed}, points=[{**p, **fixed} for p in spec.points],
                    axes=spec.axes, report=spec.report, profile=spec.profile)


def _format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        text = repr(value)                # 1.0 stays "1.0", so 1 and 1.0 are never mixed up
    else:
        text = str(value)
    safe = "".join(c if c.isalnum() or c in "-.+" else "-" for c in text)
    return safe or "none"


def point_name(point: Mapping[str, Any], axes: Sequence[str]) -> str:
    """A folder name for ``point`` from its values on ``axes`` (``name-value`` joined by ``_``)."""
    if not axes:
        return "default"
    return "_".join(f"{axis}-{_format_value(point[axis])}" for axis in axes)


def expand_block(block: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Points of one grid block: the product of ``product`` axes times the ``zip`` axes taken
    together. Returns ``(points, axes)``."""
    if not isinstance(block, Mapping):
        raise ValueError(f"a grid block must be a mapping with 'product' and/or 'zip', got {block!r}")
    unknown = set(block) - {"product", "zip"}
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in grid block; use 'product' and 'zip'")
    product = dict(block.get("product") or {})
    zipped = dict(block.get("zip") or {})
    both = set(product) & set(zipped)
    if both:
        raise ValueError(f"parameter(s) {sorted(both)} appear in both 'product' and 'zip'")
    for name, values in {**product, **zipped}.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid axis {name!r} must be a non-empty list of values, got {values!r}")
        if name in RESERVED:
            raise ValueError(f"{name!r} is set by the grid runner and cannot be a grid axis")
    lengths = {name: len(values) for name, values in zipped.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"'zip' axes must have equal lengths, got {lengths}")
    zip_rows = [dict(zip(zipped, row)) for row in zip(*zipped.values())] if zipped else [{}]
    product_rows = [dict(zip(product, row)) for row in itertools.product(*product.values())]
    points = [{**p, **z} for p in product_rows for z in zip_rows]
    return points, [*product, *zipped]


def load_grid(path: str | Path, profile: str | None = None, defaults: Mapping[str, Any] | None = None) -> GridSpec:
    """Read a grid file and expand it for ``profile`` (its ``profiles`` entry, if any, applies);
    ``defaults`` are the notebook's parameter defaults (see :func:`expand_grid`)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: a grid file is a mapping with 'parameters', 'grid', 'profiles', 'report'")
    unknown = set(raw) - {"parameters", "grid", "profiles", "report", "description"}
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}")
    parameters = dict(raw.get("parameters") or {})
    grid = raw.get("grid") or {}
    profiles = raw.get("profiles") or {}
    if profile is not None and profile in profiles:
        override = profiles[profile] or {}
        unknown = set(override) - {"parameters", "grid"}
        if unknown:
            raise ValueError(f"{path}: profile {profile!r} may override 'parameters' and 'grid', not {sorted(unknown)}")
        parameters.update(override.get("parameters") or {})
        grid = override.get("grid", grid)
    reserved = set(parameters) & set(RESERVED)
    if reserved:
        raise ValueError(f"{path}: {sorted(reserved)} are set by the grid runner, not the grid file")
    return expand_grid(path.stem, parameters, grid, report=dict(raw.get("report") or {}), profile=profile,
                       defaults=defaults)


def expand_grid(name: str, parameters: Mapping[str, Any], grid: Mapping | Sequence,
                report: Mapping | None = None, profile: str | None = None,
                defaults: Mapping[str, Any] | None = None) -> GridSpec:
    """Expand ``grid`` (a block or list of blocks) into points; fixed ``parameters`` apply to all.

    An axis that one block varies and another does not takes, in the other block's points, the
    notebook's default value (``defaults``, from :func:`notebook_defaults`), so every point states
    every axis. Points that come out identical from two blocks run once.
    """
    blocks = grid if isinstance(grid, list) else [grid]
    points: list[dict[str, Any]] = []
    axes: list[str] = []
    for block in blocks:
        block_points, block_axes = expand_block(block)
        axes += [a for a in block_axes if a not in axes]
        points += block_points
    clash = set(axes) & set(parameters)
    if clash:
        raise ValueError(f"{sorted(clash)} are both fixed parameters and grid axes")
    defaults = dict(defaults or {})
    if defaults:
        unknown = sorted((set(axes) | set(parameters)) - set(defaults))
        if unknown:
            raise ValueError(f"grid {name!r} sets {unknown}, which the notebook does not have as parameters; "
                             f"it has {sorted(defaults)}")
    missing = sorted({a for p in points for a in axes if a not in p and a not in defaults})
    if missing:
        raise ValueError(f"grid {name!r}: axes {missing} are missing from some blocks and have no notebook default")
    full: list[dict[str, Any]] = []
    for p in points:
        point = {**parameters, **{a: defaults[a] for a in axes if a not in p}, **p}
        if point not in full:
            full.append(point)
    names = [point_name(p, axes) for p in full]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"grid {name!r} has points that differ but share a folder name: {duplicates}")
    return GridSpec(name=name, parameters=dict(parameters), points=full, axes=axes, report=dict(report or {}),
                    profile=profile)


def notebook_defaults(notebook: str | Path) -> dict[str, Any]:
    """``{parameter: default value}`` of a notebook's parameters cell (via papermill)."""
    import ast

    import papermill as pm

    defaults = {}
    for name, info in pm.inspect_notebook(str(notebook)).items():
        try:
            defaults[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            defaults[name] = info["default"]
    return defaults


# --------------------------------------------------------------------------- point state
def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def point_status(point_dir: Path) -> str:
    """``done`` | ``failed`` | ``timeout`` | ``pending`` (never ran, or killed while running)."""
    status_path = Path(point_dir) / STATUS_FILE
    if not status_path.is_file():
        return "pending"
    status = json.loads(status_path.read_text()).get("status", "pending")
    if status == "done" and not (Path(point_dir) / METRICS_FILE).is_file():
        return "pending"
    return status


def _error_summary(text: str) -> str:
    """The last line of a traceback that names an exception."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Interrupt", "Exit")) or "Error" in head:
            return line[:500]
    return lines[-1][:500] if lines else "unknown error"

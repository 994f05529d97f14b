"""The package's own shape, read from its source: which module imports which, and a picture of it.

Imports must point one way (codecs, world and provenance at the bottom; cli and reproduce at the
top): :func:`import_graph` reads every ``import`` statement of ``banana/`` - top level *and*
inside functions, since a lazy import is still a dependency - and :func:`cycles` finds the
modules that import each other (tests/test_architecture.py keeps that list empty).
:func:`draw_architecture` draws the rooms (subpackages, and top-level modules) on floors, each
room above every room it imports, with an arrow per importing pair; ``banana architecture``
writes it (the README's figure).
"""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["PACKAGE_DIR", "module_files", "import_graph", "cycles", "room_graph", "floors", "draw_architecture"]

PACKAGE_DIR = Path(__file__).resolve().parent


def _module_name(path: Path, package_dir: Path) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """``dotted module name -> file`` for every module of the package."""
    return {_module_name(p, package_dir): p for p in sorted(Path(package_dir).rglob("*.py"))}


def _resolve(target: str, name: str | None, modules: dict[str, Path]) -> str | None:
    """The module an import lands in: ``from target import name`` names a submodule when
    ``target.name`` is one, else ``target`` itself (a module, or a package's ``__init__``)."""
    if name and f"{target}.{name}" in modules:
        return f"{target}.{name}"
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """``module -> the package's modules it imports`` (every import statement, lazy ones included;
    relative imports resolved)."""
    modules = module_files(package_dir)
    root = Path(package_dir).name
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[tuple[str, str | None]] = []
            if isinstance(node, ast.Import):
                targets = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [(base, alias.name) for alias in node.names]
            for target, name in targets:
                if target == root or target.startswith(root + "."):
                    resolved = _resolve(target, name, modules)
                    if resolved and resolved != module:
                        graph[module].add(resolved)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph folded into rooms: ``banana.world.scene`` -> ``world``, ``banana.cli`` ->
    ``cli``; the package's own ``__init__`` is left out (it only re-exports)."""
    def room(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else None

    rooms: dict[str, set[str]] = {}
    for module, deps in graph.items():
        r = room(module)
        if r is None:
            continue
        rooms.setdefault(r, set())
        rooms[r] |= {room(d) for d in deps if room(d) not in (None, r)}
    return rooms


def floors(rooms: dict[str, set[str]]) -> dict[str, int]:
    """Each room's floor: 0 for a room that imports no other, else one above the highest room it
    imports. Rooms that import each other (a cycle between rooms, though not between modules)
    share a floor."""
    members = {r: frozenset([r]) for r in rooms}
    for component in cycles(rooms):
        for r in component:
            members[r] = frozenset(component)
    level: dict[frozenset, int] = {}

    def floor_of(group: frozenset) -> int:
        if group not in level:
            below = {members[d] for r in group for d in rooms[r]} - {group}
            level[group] = 1 + max((floor_of(g) for g in below), default=-1)
        return level[group]

    return {r: floor_of(members[r]) for r in rooms}


def draw_architecture(path: str | Path, package_dir: Path = PACKAGE_DIR) -> Path:
    """Draw the rooms on their floors with an arrow for each import between rooms; save to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rooms = room_graph(import_graph(package_dir))
    level = floors(rooms)
    by_floor: dict[int, list[str]] = {}
    for r in sorted(rooms):
        by_floor.setdefault(level[r], []).append(r)
    width = max(len(v) for v in by_floor.values())
    position = {r: ((i + 0.5) * width / len(names), f) for f, names in by_floor.items()
                for i, r in enumerate(names)}
    fig, ax = plt.subplots(figsize=(16, 9))
    for r, deps in rooms.items():
        x0, y0 = position[r]
        for d in deps:
            x1, y1 = position[d]
            ax.annotate("", xy=(x1, y1 + 0.18), xytext=(x0, y0 - 0.18),
                        arrowprops={"arrowstyle": "->", "color": "0.6", "lw": 0.8, "shrinkA": 2, "shrinkB": 2})
    for r, (x, y) in position.items():
        ax.text(x, y, r, ha="center", va="center", fontsize=11,
                bbox={"boxstyle": "round,pad=0.4", "facecolor": "#fff3b0", "edgecolor": "0.3"})
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(-0.6, max(by_floor) + 0.6)
    ax.set_yticks(sorted(by_floor), [f"floor {f}" for f in sorted(by_floor)])
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title("banana: each room imports only rooms on lower floors (arrows: importer -> imported)", fontsize=12)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

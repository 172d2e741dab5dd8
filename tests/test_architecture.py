"""The shape of the code: imports run one way, no circles, modules of a readable size.

Read from the source with ``ast`` (imports inside functions count too), so a lazy import cannot
hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"

# Lower layers never import higher ones. Packages in one layer may use each other, without circles.
LAYERS: dict[str, int] = {
    "app.core": 0,
    "app.config": 0,
    "app.storage": 1,
    "app.signing": 2,
    "app.rules": 2,
    "app.inspect": 2,
    "app.access": 2,
    "app.capture": 3,
    "app.delivery": 3,
    "app.live": 3,
    "app.bins": 3,
    "app.ops": 3,
    "app.limits": 3,
    "app.wiring": 4,
    "app.web": 5,
    "app": 6,  # the app factory
    "app.gunicorn_conf": 6,
    "app.wsgi": 7,
    "app.cli": 7,
}

MAX_MODULE_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in APP.rglob("*.py")}


def _imports(path: Path, name: str) -> set[str]:
    """Every ``app...`` module that ``path`` imports, resolved to module names."""
    modules = _modules()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "app")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "app":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    found.discard(name)
    return found


def _layer(module: str) -> int:
    best = ""
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return LAYERS[best]


def _graph() -> dict[str, set[str]]:
    return {name: _imports(path, name) for name, path in _modules().items()}


def test_every_module_has_a_layer() -> None:
    for name in _modules():
        if name == "app":
            continue
        top = ".".join(name.split(".")[:2])
        assert top in LAYERS, f"{name}: add its package to LAYERS"


def test_nothing_imports_upward() -> None:
    upward = [
        f"{name} (layer {_layer(name)}) imports {dep} (layer {_layer(dep)})"
        for name, deps in _graph().items()
        for dep in deps
        if _layer(dep) > _layer(name) and not dep.startswith(name + ".")
    ]
    assert upward == []


def test_no_import_circles() -> None:
    graph = _graph()
    # A package imports its own modules through __init__ (the pubsub drivers); that edge is the
    # package's, not a circle between modules.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not d.startswith(name + ".")}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for dep in sorted(graph.get(node, ())):
            if seen.get(dep) == 1:
                circles.append([*path[path.index(dep) :], dep])
            elif dep not in seen:
                visit(dep, [*path, dep])
        seen[node] = 2

    for start in sorted(graph):
        if start not in seen:
            visit(start, [start])
    assert circles == []


@pytest.mark.parametrize("path", sorted(APP.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_readable(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name} has {lines} lines: give it one job"


def test_only_storage_and_the_wiring_reach_the_sql() -> None:
    # Writes must run through ``Storage`` (off the event loop, bin cache kept right); the SQL
    # underneath is the storage package's own. The capture path hands ``Capture`` records to the
    # group-commit batcher, so those two data types are public.
    public = {"Capture", "Stored", "REQUEST_COUNTER"}
    private = ("app.storage.store", "app.storage.captures", "app.storage.bincache")
    reaching = []
    for name, path in _modules().items():
        if name.startswith("app.storage") or name == "app.wiring":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module in private:
                taken = {a.name for a in node.names} - public
                reaching += [f"{name} -> {node.module}.{n}" for n in sorted(taken)]
            elif isinstance(node, ast.ImportFrom) and node.module == "app.storage":
                taken = {a.name for a in node.names} & {"store", "captures", "bincache"}
                reaching += [f"{name} -> app.storage.{n}" for n in sorted(taken)]
    assert reaching == []


def test_views_reach_services_through_one_lookup() -> None:
    graph = _graph()
    direct = sorted(
        name
        for name, deps in graph.items()
        if name.startswith("app.web.") and name != "app.web.lookup" and "app.wiring" in deps
    )
    assert direct == []

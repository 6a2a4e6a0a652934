"""The architecture's arrows, checked on the source: ``converters -> edge_sdk`` and never back, and
inside ``edge_sdk`` no module imports one above it (the runtime assembles; the pieces do not know
the assembler), and no import circle.

Every import counts, at module level or inside a function. For the layers, imports under
``if TYPE_CHECKING`` (annotations only, never executed) do not; for circles they do.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Highest first. A module may import its own layer and those below, never one above.
LAYERS = [
    # The entry points, and the workstation side: conversion, the sample models and data, benchmarks.
    ("apps", ("edge_sdk.cli", "edge_sdk.cli_", "edge_sdk.demo", "edge_sdk.bench", "edge_sdk.samples", "edge_sdk.converters")),
    ("runtime", ("edge_sdk.runtime",)),
    # The fleet side (rollouts, stores) talks MQTT and checks signed bundles as a service does.
    ("services", ("edge_sdk.mqtt", "edge_sdk.liveview", "edge_sdk.httpauth", "edge_sdk.ota", "edge_sdk.fleet")),
    ("engine", ("edge_sdk.pipeline", "edge_sdk.camera", "edge_sdk.model", "edge_sdk.gate", "edge_sdk.watchdog", "edge_sdk.stats")),
]
# Settings and names the layers below read (a run config holds MQTT settings) are plain data.
BASE_EXCEPTIONS = ("edge_sdk.mqtt.settings", "edge_sdk.mqtt.topics")


def layer(module: str) -> int:
    """0 for the base (bundle, engines, sources, decoders, config...), higher for higher layers."""
    if module in BASE_EXCEPTIONS:
        return 0
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") or (p.endswith("_") and module.startswith(p)) for p in prefixes):
            return len(LAYERS) - rank
    return 0


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "edge_sdk").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((ROOT / "converters").rglob("*.py")):
        parts = ("edge_sdk",) + path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports(path: Path, known: set[str], *, type_only: bool = False) -> set[str]:
    """The edge_sdk modules ``path`` imports (a name from a package resolves to its module when it is
    one); with ``type_only``, those under ``if TYPE_CHECKING`` too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        if not type_only and _type_checking_only(node, parents):
            continue
        found.update(name for name in names if name.split(".")[0] == "edge_sdk" and name in known)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = modules()
    return {module: imports(path, set(found)) - {module} for module, path in found.items()}


@pytest.fixture(scope="module")
def typed_graph() -> dict[str, set[str]]:
    """With the imports made for annotations only: two modules that name each other's types are a circle too."""
    found = modules()
    return {module: imports(path, set(found), type_only=True) - {module} for module, path in found.items()}


def test_the_layers_are_known_modules(graph):
    for _, prefixes in LAYERS:
        for prefix in prefixes:
            assert any(m == prefix or m.startswith(prefix) for m in graph), f"no module {prefix}: update LAYERS"
    assert "edge_sdk.runtime" in graph and "edge_sdk.converters" in graph


def test_nothing_imports_a_layer_above_it(graph):
    upward = sorted(f"{module} ({layer(module)}) imports {target} ({layer(target)})"
                    for module, targets in graph.items() for target in targets
                    if layer(target) > layer(module))
    assert not upward, "\n".join(upward)


def test_the_runtime_side_never_imports_the_converters(graph):
    # Only the command line and the demo (which converts the shipped model) reach the workstation side.
    found = sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                   if t.startswith("edge_sdk.converters") and not m.startswith("edge_sdk.converters") and layer(m) < layer("edge_sdk.cli"))
    assert not found, "\n".join(found)


def test_the_runtime_side_has_no_import_circle(typed_graph):
    # Tarjan's strongly connected components: any component of two or more modules is a circle.
    # The workstation side (converters) is left out: its passes call each other lazily.
    graph = {m: {t for t in targets if not t.startswith("edge_sdk.converters")}
             for m, targets in typed_graph.items() if not m.startswith("edge_sdk.converters")}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            # A package and the modules it re-exports import each other by nature; not a circle of layers.
            if len(component) > 1 and not _package_and_its_own(component):
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, "\n".join(" <-> ".join(c) for c in circles)


def _package_and_its_own(component: list[str]) -> bool:
    root = min(component, key=len)
    return all(member == root or member.startswith(root + ".") for member in component) and root != "edge_sdk"

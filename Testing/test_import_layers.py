"""The import graph of HyperSORTLib: no cycles between modules, and no module imports a higher layer.

Every module is parsed with :mod:`ast`; module-level and function-level imports both count.
``from package import name`` is an edge to ``package.name`` when that is a module, else to
``package``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "HyperSORTLib"

#: Layers from the bottom up. A module may import modules of its own layer or lower ones only.
#: Entries are module names or package prefixes (``"data"`` covers ``HyperSORTLib.data.*``).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("HyperSORTLib", "utils", "config", "rundir", "device", "metrics"),
    ("data", "model", "latentmap"),
    ("perturbation", "training"),
    ("inference", "baselines"),
    ("analysis",),
    ("demo",),
    ("commands",),
    ("cli",),
)


def module_names() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def import_edges(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """``module -> {imported module: line of the first such import}`` within HyperSORTLib."""
    edges: dict[str, dict[str, int]] = {m: {} for m in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import
                    base_parts = name.split(".") if is_package else name.split(".")[:-1]
                    base_parts = base_parts[: len(base_parts) - node.level + 1]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
                rest = len(submodules) < len(node.names)
                targets = submodules + ([base] if rest else [])
            for target in targets:
                while target and target not in modules:  # "import HyperSORTLib.data.cases as x" etc.
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].setdefault(target, node.lineno)
    return edges


def layer_of(module: str) -> int:
    relative = module.removeprefix("HyperSORTLib").lstrip(".")
    head = relative.split(".")[0] if relative else "HyperSORTLib"
    for index, names in enumerate(LAYERS):
        if head in names:
            return index
    raise AssertionError(f"{module} belongs to no layer; add {head!r} to LAYERS in {__file__}.")


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def is_own_package(module: str, target: str) -> bool:
    """A package's ``__init__`` re-exporting its submodules (``training`` -> ``training.trainer``)."""
    return module.startswith(target + ".") or target.startswith(module + ".")


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_edges(module_names())


def test_every_module_is_in_a_layer(graph):
    for module in graph:
        layer_of(module)


def test_no_module_imports_a_higher_layer(graph):
    modules = module_names()
    upward = [f"{modules[m].relative_to(ROOT)}:{line}: {m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in sorted(graph.items()) for t, line in sorted(targets.items())
              if layer_of(t) > layer_of(m)]
    order = " < ".join("/".join(names) for names in LAYERS)
    assert not upward, f"Upward imports (layer order {order}):\n" + "\n".join(upward)


def test_no_import_cycles(graph):
    # A package __init__ importing its own submodules, and a submodule importing a sibling
    # through the package, is not a cycle between modules of different owners: drop those edges.
    edges = {m: {t: n for t, n in targets.items() if not is_own_package(m, t)} for m, targets in graph.items()}
    modules = module_names()
    found = cycles(edges)
    lines = []
    for component in found:
        members = set(component)
        lines.append("cycle: " + " <-> ".join(component))
        lines += [f"  {modules[m].relative_to(ROOT)}:{line}: {m} imports {t}"
                  for m in component for t, line in sorted(edges[m].items()) if t in members]
    assert not found, "Import cycles:\n" + "\n".join(lines)


def test_the_checker_sees_cycles_and_upward_imports(tmp_path):
    """The checks above can fail: a synthetic two-module cycle and an upward import are caught."""
    edges = {"HyperSORTLib.data.a": {"HyperSORTLib.data.b": 3},
             "HyperSORTLib.data.b": {"HyperSORTLib.data.a": 5, "HyperSORTLib.analysis.audit": 9},
             "HyperSORTLib.analysis.audit": {}}
    assert cycles(edges) == [["HyperSORTLib.data.a", "HyperSORTLib.data.b"]]
    assert layer_of("HyperSORTLib.analysis.audit") > layer_of("HyperSORTLib.data.b")
    source = tmp_path / "HyperSORTLib"
    (source / "data").mkdir(parents=True)
    (source / "__init__.py").write_text("")
    (source / "data" / "__init__.py").write_text("")
    (source / "data" / "x.py").write_text("def f():\n    from HyperSORTLib.data import y\n")
    (source / "data" / "y.py").write_text("from . import x\n")
    found = import_edges({"HyperSORTLib": source / "__init__.py", "HyperSORTLib.data": source / "data" / "__init__.py",
                          "HyperSORTLib.data.x": source / "data" / "x.py", "HyperSORTLib.data.y": source / "data" / "y.py"})
    assert found["HyperSORTLib.data.x"] == {"HyperSORTLib.data.y": 2}
    assert found["HyperSORTLib.data.y"] == {"HyperSORTLib.data.x": 1}

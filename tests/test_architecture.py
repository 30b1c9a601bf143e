"""The house: onnxprune's imports run one way (docs/architecture.md), with no cycle and no warehouse module.

Every `import` statement counts, at module level, inside functions and under TYPE_CHECKING alike.
"""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "onnxprune"
MAX_LINES = 600

# Lowest first; a module may import its own layer or any layer below. The longest matching prefix decides.
LAYERS = [
    ("onnxprune.errors",),
    ("onnxprune.graph",),
    ("onnxprune.loading",),
    ("onnxprune.runtime",),
    ("onnxprune.analysis",),
    ("onnxprune.calibration",),
    ("onnxprune.scoring",),
    ("onnxprune.selection",),
    ("onnxprune.rewrite",),
    ("onnxprune.recovery",),
    ("onnxprune.plan", "onnxprune.report"),
    ("onnxprune.validation",),
    ("onnxprune.pipeline",),
    ("onnxprune.search",),
    ("onnxprune.api",),
    ("onnxprune.cli",),
    ("onnxprune.entry", "onnxprune.__main__", "onnxprune"),
]


def layer_of(module: str) -> int:
    """The layer of a module: the longest prefix in LAYERS that names it or a package above it."""
    best, level = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, level = len(p), i
    assert level is not None, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return level


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, known: set[str]) -> set[str]:
    """The package's modules that one file imports (a name imported from a package counts as the package)."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            # a module reaches its own parent packages by being imported: that is not an edge
            if name and name != mod and not mod.startswith(name + "."):
                out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(f) for f in files}
    return {module_name(f): imported(f, known) - {"onnxprune"} for f in files}


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a higher layer."""
    return sorted(f"{a} imports {b}" for a, deps in graph.items() for b in deps if layer_of(b) > layer_of(a))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, edges = work[-1]
            w = next(edges, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_imports_only_go_down() -> None:
    assert upward(import_graph()) == []


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_module_over_the_limit() -> None:
    big = {str(f.relative_to(ROOT)): n for f in PACKAGE.rglob("*.py")
           if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def test_the_checks_catch_what_they_guard() -> None:
    """An upward import and a loop, added to the real graph, are both reported."""
    graph = import_graph()
    graph["onnxprune.analysis.analyze"] = graph["onnxprune.analysis.analyze"] | {"onnxprune.report"}
    assert "onnxprune.analysis.analyze imports onnxprune.report" in upward(graph)
    graph["onnxprune.report"] = graph["onnxprune.report"] | {"onnxprune.analysis.analyze"}
    assert any({"onnxprune.analysis.analyze", "onnxprune.report"} <= set(c) for c in cycles(graph))


def test_every_layer_is_documented() -> None:
    """docs/architecture.md names every layer's packages, in the same order."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    positions = [text.find(f"`{p.removeprefix('onnxprune.')}`") for prefixes in LAYERS[:-1] for p in prefixes]
    assert all(p >= 0 for p in positions), "a layer is missing from docs/architecture.md"
    assert positions == sorted(positions)

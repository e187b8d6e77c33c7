"""The project's import graph, built statically from every import (lazy ones inside functions
included): no cycle between modules, none between chorus subpackages, and the layering of
docs/design.md (pallas_kernels <- chorus <- data_pipelines <- experiments)."""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"chorus": "src/chorus", "data_pipelines": "data_pipelines",
            "experiments": "experiments", "pallas_kernels": "pallas_kernels"}


def _modules() -> dict[str, str]:
    """Module name -> source path for every .py file of the project's packages."""
    out = {}
    for package, rel in PACKAGES.items():
        base = os.path.join(ROOT, rel)
        for folder, _, files in os.walk(base):
            for name in files:
                if not name.endswith(".py"):
                    continue
                parts = [package, *os.path.relpath(folder, base).split(os.sep)]
                parts = [p for p in parts if p != "."]
                if name != "__init__.py":
                    parts.append(name[:-3])
                out[".".join(parts)] = os.path.join(folder, name)
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The longest project module that `name` (a dotted import target) lies in."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def imports_of(module: str) -> set[str]:
    """Project modules imported anywhere in `module` (top level, functions, TYPE_CHECKING)."""
    path = MODULES[module]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    is_package = path.endswith("__init__.py")
    here = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule pkg.sub when there is one.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target)
            if resolved is not None and resolved != module:
                found.add(resolved)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def unit_of(module: str) -> str:
    """chorus.X for a chorus subpackage or root module; the top package otherwise."""
    parts = module.split(".")
    if parts[0] == "chorus" and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def _examples(edges: dict[tuple[str, str], list[str]], pair: tuple[str, str]) -> str:
    return ", ".join(edges[pair][:3])


def _top_level_imports(module: str) -> set[str]:
    with open(MODULES[module], encoding="utf-8") as f:
        tree = ast.parse(f.read())
    return {alias.name if isinstance(node, ast.Import) else node.module
            for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names}


def test_the_graph_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    # chorus.cli imports its targets by name only; chorus.training.cli imports lazily.
    assert "chorus.config" in GRAPH["chorus.training.cli"]
    assert len(MODULES) > 100 and sum(map(len, GRAPH.values())) > 300
    # record_cache imports chorus.progress only inside a function.
    assert "chorus.progress" not in _top_level_imports("data_pipelines.record_cache")
    assert "chorus.progress" in GRAPH["data_pipelines.record_cache"]
    # Relative imports resolve against the module's package (a throwaway chorus module).
    path = tmp_path / "fake.py"
    path.write_text("from .atomic import write_json\nfrom . import progress\n"
                    "def f():\n    from .audio.io import load_wave\n")
    monkeypatch.setitem(MODULES, "chorus.fake", str(path))
    assert imports_of("chorus.fake") == {"chorus.atomic", "chorus.progress", "chorus.audio.io"}


def test_no_cycle_between_modules():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles between modules:\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_no_cycle_between_chorus_subpackages():
    units: dict[str, set[str]] = {}
    edges: dict[tuple[str, str], list[str]] = {}
    for module, targets in GRAPH.items():
        for target in targets:
            a, b = unit_of(module), unit_of(target)
            if a != b and a.startswith("chorus") and b.startswith("chorus"):
                units.setdefault(a, set()).add(b)
                edges.setdefault((a, b), []).append(f"{module} -> {target}")
    cycles = _cycles(units)
    lines = []
    for cycle in cycles:
        pairs = [(a, b) for a in cycle for b in cycle if (a, b) in edges]
        lines.append(" <-> ".join(cycle) + ": " + "; ".join(
            f"{a}->{b} ({_examples(edges, (a, b))})" for a, b in pairs))
    assert not cycles, "cycles between chorus subpackages:\n" + "\n".join(lines)


FORBIDDEN = [
    ("pallas_kernels", ("chorus", "data_pipelines", "experiments")),
    ("chorus", ("data_pipelines", "experiments")),
    ("data_pipelines", ("experiments", "chorus.model", "chorus.training", "chorus.rl",
                        "chorus.decoding", "chorus.codec")),
]


@pytest.mark.parametrize("importer,forbidden", FORBIDDEN)
def test_layering(importer, forbidden):
    bad = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
                 if m.split(".")[0] == importer
                 and any(t == f or t.startswith(f + ".") for f in forbidden))
    assert not bad, f"{importer} must not import {forbidden}:\n" + "\n".join(bad)

"""The layout's rules, checked on the source: no import cycle, layers import downwards, ``common/`` knows no domain,
no domain imports another domain of its own layer, and only the registries (and the CLI above them) know every domain.

Imports are read with ``ast`` (function-level ones included), so a lazy import does not hide an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("learned_optimizers", "envs", "agents")  # lowest first
#: the one place per layer that knows every domain (and ``amortized``, which rebuilds any family through it)
REGISTRIES = {"learned_optimizers.families", "learned_optimizers.amortized", "envs", "agents.registry"}
ENTRY_POINTS = {"agents.cli", "agents.workflows", "agents.sweeps"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for layer in LAYERS for p in (ROOT / layer).rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``name`` imports anywhere in its body (a ``from pkg import sub`` counts as ``pkg.sub``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            if target in modules:
                out.add(target)
    out.discard(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def domain_of(module: str) -> str | None:
    """'common', a domain's name, or None for a registry, an entry point or a layer's package."""
    parts = module.split(".")
    if module in REGISTRIES or module in ENTRY_POINTS or len(parts) == 1:
        return None
    if parts[0] == "envs" and len(parts) == 2 and parts[1] != "common":
        return parts[1]  # envs keep one file per domain
    return parts[1]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


GRAPH = _graph()


def test_the_walk_sees_the_project() -> None:
    # guards the checks below against passing on an empty or broken graph
    assert len(GRAPH) > 60
    assert "agents.qp.bench" in GRAPH["agents.qp.domain"]
    assert "learned_optimizers.fixed_point.core" in GRAPH["envs.fixed_point"]


def test_no_import_cycle() -> None:
    assert _cycles(GRAPH) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_import_downwards() -> None:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    bad = [(m, t) for m, targets in GRAPH.items() for t in targets if rank[t.split(".")[0]] > rank[m.split(".")[0]]]
    assert bad == []


def test_common_imports_no_domain_and_no_registry_of_its_layer() -> None:
    """``common/`` may use a lower layer's registry (e.g. to build any problem family), never a domain."""
    bad = [(m, t) for m, targets in GRAPH.items() if domain_of(m) == "common" for t in targets
           if domain_of(t) not in ("common", None) or (t in REGISTRIES and t.split(".")[0] == m.split(".")[0])]
    assert bad == []


def test_no_domain_imports_another_domain_of_its_layer() -> None:
    bad = [(m, t) for m, targets in GRAPH.items() for t in targets
           if m.split(".")[0] == t.split(".")[0] and domain_of(m) not in (None, "common")
           and domain_of(t) not in (None, "common", domain_of(m))]
    assert bad == []


def test_only_entry_points_import_the_agents_registry() -> None:
    importers = sorted(m for m, targets in GRAPH.items() if "agents.registry" in targets)
    assert set(importers) <= ENTRY_POINTS


@pytest.mark.parametrize("layer", LAYERS)
def test_domains_are_folders_with_the_same_names_across_layers(layer: str) -> None:
    domains = {domain_of(m) for m in GRAPH if m.split(".")[0] == layer} - {None, "common"}
    assert domains <= {"sphere", "qp", "conic", "fixed_point", "l2o", "ot", "control"}


def test_the_package_keeps_its_public_names_without_importing_a_domain() -> None:
    """``from learned_optimizers import AmortizedModel`` (the README's line) resolves lazily; a plain import loads none."""
    import subprocess
    import sys

    code = ("import sys, learned_optimizers as lo; assert not [m for m in sys.modules if m.startswith('learned_optimizers.')]; "
            "[getattr(lo, n) for n in lo.__all__]; from learned_optimizers import AmortizedModel, solve_qps; "
            "assert AmortizedModel.__module__ == 'learned_optimizers.amortized'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    import learned_optimizers

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        learned_optimizers.nope  # noqa: B018

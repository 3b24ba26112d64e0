"""The package's layering, read from the source: no import cycle between modules, and no module imports from a
layer above its own (function-level imports included: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import yapo_bench

PACKAGE = Path(yapo_bench.__file__).parent

# Lowest first; a module may import from its own layer or below. The first matching prefix decides.
LAYERS = [
    ("foundations", ("yapo_bench", "yapo_bench.atomic", "yapo_bench.environment", "yapo_bench.resources",
                     "yapo_bench.locking", "yapo_bench.models", "yapo_bench.distributed", "yapo_bench.devices",
                     "yapo_bench.digests")),
    ("internals", ("yapo_bench.internals",)),
    ("text", ("yapo_bench.pairs", "yapo_bench.corpus", "yapo_bench.data.text", "yapo_bench.data.culture")),
    ("saes and steering", ("yapo_bench.sae", "yapo_bench.steering")),
    ("data and metrics", ("yapo_bench.data", "yapo_bench.metrics", "yapo_bench.published")),
    ("methods and the vector store", ("yapo_bench.methods", "yapo_bench.store")),
    ("engines", ("yapo_bench.engines",)),
    ("lm-eval", ("yapo_bench.lm_eval_plugin",)),
    ("task families", ("yapo_bench.families",)),
    ("judge", ("yapo_bench.judge",)),
    ("report", ("yapo_bench.report",)),
    ("analyses", ("yapo_bench.analysis",)),
    ("the run: config", ("yapo_bench.pipeline.config",)),
    ("the run: plan", ("yapo_bench.pipeline.plan",)),
    ("the run: costs, records, resources", ("yapo_bench.pipeline.costs", "yapo_bench.pipeline.records",
                                            "yapo_bench.pipeline.resources")),
    ("the run: one executor per step kind", ("yapo_bench.pipeline.steps",)),
    ("the run: around every step", ("yapo_bench.pipeline.lifecycle",)),
    ("the run: the cluster executor", ("yapo_bench.pipeline.cluster",)),
    ("the run: the executor", ("yapo_bench.pipeline.executor", "yapo_bench.pipeline")),
    ("study-level commands", ("yapo_bench.commands", "yapo_bench.demo")),
    ("command line", ("yapo_bench.cli",)),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _layer(module: str) -> int:
    best = None
    for rank, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    assert best is not None, f"{module} is in no layer of tests/test_architecture.py"
    return best[0]


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The yapo_bench modules `path` imports, anywhere in it (`from x import y` counts x, or x.y if a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.startswith("yapo_bench")}
    return found & modules


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = [f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
              for module, targets in _graph().items() for target in sorted(targets)
              if _layer(target) > _layer(module) and not (module == "yapo_bench" or target.startswith(module + "."))]
    assert not upward, "\n".join(upward)


def test_no_import_cycles() -> None:
    graph = _graph()
    # a package's __init__ importing its own submodules is not a cycle of the layering
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert not cycles, cycles

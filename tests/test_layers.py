"""The import contract: the package's modules import only downward through LAYERS, with no circle, and the
shipped kernel reaches no study. Read from the source (every import statement, at any depth in a module, so
a late import inside a function counts as well), so a change that adds an upward arrow fails here."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "solution"

# Top to bottom; a module may import its own layer's modules (within its package) and any layer below.
LAYERS = [
    ("cli", ["solution.__main__", "solution.cli", "solution.commands"]),
    ("studies", ["solution.studies"]),
    ("kernel", ["solution.kernel"]),
    ("train", ["solution.train"]),
    ("infer", ["solution.infer"]),
    ("model and data", ["solution.model", "solution.data", "solution.viz"]),
    ("services", ["solution.results", "solution.metrics", "solution.competition", "solution.runtime",
                  "solution.distributed", "solution.kaggle_api"]),
    ("config", ["solution.config"]),
    ("leaves", ["solution.atomic", "solution.torchrun", "solution.gpu_archs"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(module: str) -> set[str]:
    """Every module of the package that ``module`` imports, resolved (``from . import x`` names module x)."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "solution")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "solution":
                continue
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
    return {m for m in found if m in MODULES}


def layer_of(module: str) -> int:
    matches = [(len(prefix), i) for i, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    if not matches:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py: give it one")
    return max(matches)[1]


def test_every_module_has_a_layer():
    for module in MODULES:
        if module != "solution":
            layer_of(module)


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{src} ({LAYERS[layer_of(src)][0]}) imports {dst} ({LAYERS[layer_of(dst)][0]})"
                  for src, targets in edges.items() for dst in targets
                  if src != "solution" and dst != "solution" and layer_of(dst) < layer_of(src))


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import circles between modules (package ``__init__`` files excluded: importing a submodule runs them)."""
    graph = {m: {t for t in ts if MODULES[t].name != "__init__.py"} for m, ts in edges.items()
             if MODULES[m].name != "__init__.py"}
    found, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


EDGES = {m: imports(m) for m in MODULES}


def test_imports_only_point_down():
    assert upward(EDGES) == []


def test_no_import_circle():
    assert circles(EDGES) == []


def test_the_contract_catches_an_upward_import_and_a_circle():
    edges = {**EDGES, "solution.infer.features": EDGES["solution.infer.features"] | {"solution.train.loop"}}
    assert upward(edges) == ["solution.infer.features (infer) imports solution.train.loop (train)"]
    edges = {**EDGES, "solution.kernel.discovery": EDGES["solution.kernel.discovery"] | {"solution.kernel.run"}}
    assert any("solution.kernel.run" in circle and "solution.kernel.discovery" in circle
               for circle in circles(edges))


def reach(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(EDGES[module])
            parts = module.split(".")  # importing a.b.c runs a and a.b first
            todo.extend(".".join(parts[:i]) for i in range(2, len(parts)) if ".".join(parts[:i]) in MODULES)
    return seen


@pytest.mark.parametrize("start", ["solution.kernel.entry", "solution.kernel.run"])
def test_the_shipped_kernel_reaches_no_study(start):
    reached = reach(start)
    assert not [m for m in reached if m.startswith(("solution.studies", "solution.commands", "solution.cli"))]
    assert "solution.infer.ensemble" in reached or start.endswith("entry")  # the runtime half only

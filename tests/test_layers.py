"""Layers point one way: lm <- data/rewards <- rl/plan/audit/train/eval/methods/thought_mdp <- models <- jobs/report <- cli.

Walks every import of every module (module-level and inside functions) and fails on one that points
up a layer, on a circle between packages, and on a circle between modules. ``ponder.models`` (model names
users type -> files) sits above ``train``/``eval`` because a built-in tiny model is trained on first use,
and below the jobs, which all load their models through it.
"""

import ast
from pathlib import Path

SRC = Path(__file__).parent.parent / "src" / "ponder"
RANK = {
    "errors": 0,
    "config": 0,
    "progress": 0,
    "lm": 1,
    "data": 2,
    "rewards": 2,
    "rl": 3,
    "plan": 3,
    "audit": 3,  # one module per diagnostic of ``ponder audit``
    "train": 3,
    "eval": 3,
    "methods": 3,  # the smaller seed methods (early experience)
    "thought_mdp": 3,  # a self-contained RL environment and its policy gradients
    "models": 4,  # names -> files; trains a built-in tiny model on first use
    "jobs": 5,
    "report": 5,
    "cli": 6,
    "": 6,  # the package root's lazy ``ponder.load_model`` is the public facade
}


def _modules() -> dict[str, Path]:
    return {
        ".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in sorted(SRC.rglob("*.py"))
    }


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path, modules=()) -> list[tuple[int, str]]:
    """``(line, module)`` of every ponder import in ``path``; ``from pkg import mod`` names ``pkg.mod`` when
    every imported name is a module of ``modules`` (so a package's ``__init__`` is not a false circle)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ponder":
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
            out += [(node.lineno, s) for s in subs] if len(subs) == len(node.names) else [(node.lineno, node.module)]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "ponder"]
    return out


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

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


def test_circles_are_found():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_every_import_points_down_or_sideways():
    bad = []
    for module, path in _modules().items():
        own = _package(module)
        assert own in RANK, f"{module}: package {own!r} has no layer; add it to RANK"
        for line, target in _imports(path):
            other = _package(target)
            if RANK.get(other, 99) > RANK[own]:
                bad.append(f"{path.relative_to(SRC.parent)}:{line} ({own}) imports {target} ({other})")
    assert not bad, "imports that point up a layer:\n" + "\n".join(bad)


def test_no_circle_between_packages():
    graph: dict[str, set[str]] = {}
    edges: dict[tuple[str, str], list[str]] = {}  # (package, package) -> the imports that make the edge
    for module, path in _modules().items():
        own = _package(module)
        graph.setdefault(own, set())
        for line, target in _imports(path):
            if (other := _package(target)) != own:
                graph[own].add(other)
                edges.setdefault((own, other), []).append(f"{path.relative_to(SRC.parent)}:{line} imports {target}")
    found = []
    for circle in _circles(graph):
        found += [f"{a} -> {b}: {'; '.join(edges[a, b])}" for a in circle for b in circle if (a, b) in edges]
    assert not found, "packages that import each other:\n" + "\n".join(found)


def test_no_circle_between_modules():
    modules = _modules()
    graph = {m: {t for _, t in _imports(p, modules) if t in modules and t != m} for m, p in modules.items()}
    assert not _circles(graph), f"modules that import each other (even inside a function): {_circles(graph)}"


def test_lm_never_imports_jobs_or_models():
    for path in (SRC / "lm").rglob("*.py"):
        assert not [t for _, t in _imports(path) if _package(t) in ("jobs", "models")], path

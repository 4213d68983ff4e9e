"""Layers point one way: lm <- data/rewards <- rl/plan/probe/train/eval/thought_mdp <- jobs/report <- cli.

Walks every import of every module (module-level and inside functions) and fails on one that points
up. Nothing under ponder.lm imports jobs: model names and train-on-first-use are resolved above it.
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
    "probe": 3,
    "train": 3,
    "eval": 3,
    "eval_bigbench": 3,  # BIG-bench's metrics on a model, beside eval
    "thought_mdp": 3,  # a self-contained RL environment and its policy gradients
    "jobs": 4,
    "report": 4,
    "cli": 5,
    "": 5,  # the package root's lazy ``ponder.load_model`` is the public facade
}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ponder":
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "ponder"]
    return out


def test_every_import_points_down_or_sideways():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        own = _package(module)
        assert own in RANK, f"{module}: package {own!r} has no layer; add it to RANK"
        for line, target in _imports(path):
            other = _package(target)
            if RANK.get(other, 99) > RANK[own]:
                bad.append(f"{path.relative_to(SRC.parent)}:{line} ({own}) imports {target} ({other})")
    assert not bad, "imports that point up a layer:\n" + "\n".join(bad)


def test_lm_never_imports_jobs():
    for path in (SRC / "lm").rglob("*.py"):
        assert not [t for _, t in _imports(path) if _package(t) == "jobs"], path

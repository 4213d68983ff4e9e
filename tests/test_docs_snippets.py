"""The Python snippets of the documentation pages stay true to the code.

The README's snippet is run whole (tests/test_readme.py) and examples/ are run in reduced form
(tests/test_examples.py). The snippets on the docs pages train or evaluate for minutes, so here each is
checked statically against the live package: it parses, every ``from ponder... import name`` resolves,
and every call of an imported callable binds its keyword arguments to the callable's signature. A
renamed module, function or keyword fails this test instead of rotting on a page.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md"))


def python_blocks(text: str) -> list[str]:
    """The ```python fenced blocks of a page, without snippet includes (``--8<--``: examples/, run elsewhere)."""
    blocks = re.findall(r"^```python[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    return [b for b in blocks if "--8<--" not in b]


SNIPPETS = [
    pytest.param(page, i, block, id=f"{page.name}-{i}")
    for page in PAGES
    for i, block in enumerate(python_blocks(page.read_text(encoding="utf-8")))
]


def imported_names(tree: ast.Module) -> dict[str, object]:
    """name -> object for every ``from ponder... import name`` of the snippet (fails on a name that is gone)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ponder":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                names[alias.asname or alias.name] = getattr(module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ponder":
                    importlib.import_module(alias.name)
    return names


def test_the_pages_have_snippets_to_check():
    assert len(SNIPPETS) >= 5  # the check below is not vacuous: the pages do show Python


def check_snippet(name: str, block: str) -> None:
    """Assert that ``block`` parses, its ponder imports resolve and its calls' keywords exist."""
    tree = ast.parse(block, filename=name)
    names = imported_names(tree)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names):
            continue
        target = names[node.func.id]
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):  # not callable, or a builtin without a signature: nothing to bind
            continue
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
        for kw in node.keywords:
            if kw.arg is not None and not takes_any:
                assert kw.arg in signature.parameters, f"{name}: {node.func.id}() takes no keyword {kw.arg!r}"


@pytest.mark.parametrize("page,index,block", SNIPPETS)
def test_snippet_imports_and_keywords_exist(page, index, block):
    check_snippet(f"{page.name}[{index}]", block)


@pytest.mark.parametrize(
    "bad",
    [
        "from ponder.data import get_task\nget_task('add3-5', no_such_keyword=1)\n",  # a keyword that is gone
        "from ponder.data import no_such_function\n",  # a name that is gone
        "from ponder.no_such_module import x\n",  # a module that moved
    ],
)
def test_the_check_catches_what_rots(bad):
    with pytest.raises((AssertionError, ImportError)):
        check_snippet("bad", bad)

"""Task specs: one string names any task, for the command line and configs.

Forms: a synthetic name (``add4``, ``addN`` for N-digit addition, ``mul2``, ``mulN``,
``mulNxM``, ``cipher``, ``sort``, ``sortN`` for lists of N numbers), ``rg:<dataset>`` for a
reasoning-gym dataset, or the path of a BIG-bench ``.json`` task file (or of a folder holding
a ``task.json``).
"""

from __future__ import annotations

import re
from pathlib import Path

from ponder.data.bigbench import BigBenchTask
from ponder.data.reasoning_gym import ReasoningGymTask
from ponder.data.synthetic import Addition, ListSort, Multiplication, ShiftCipher
from ponder.data.task import Task
from ponder.errors import PonderError

#: The task every command uses when --task is not given.
DEMO_TASK = "add3-5"

_SYNTHETIC_EXAMPLES = ("add3-5", "add3", "add4", "add5", "mul2", "mul3x2", "cipher", "sort", "sort4")
_FORMS = (
    "addN (N-digit addition, e.g. add4) or addM-N (operands of M to N digits, e.g. add2-5)",
    "mulN or mulNxM (N-digit times M-digit multiplication, e.g. mul2, mul3x2)",
    "cipher (Caesar shift decoding)",
    "sort or sortN (sort N small integers, default 5)",
    "rg:<dataset> (a reasoning-gym dataset, e.g. rg:basic_arithmetic; needs pip install 'ponder[tasks]')",
    "<path>.json (a BIG-bench task file)",
)


class UnknownTaskError(PonderError, ValueError):
    """A task spec that names no task."""


def known_tasks() -> list[str]:
    """Example specs of the built-in synthetic tasks (``addN``/``mulNxM``/``sortN`` take any N)."""
    return list(_SYNTHETIC_EXAMPLES)


def describe_task_specs() -> str:
    """One line per accepted spec form, for help texts and error messages."""
    return "\n".join(f"  {f}" for f in _FORMS)


def _unknown(spec: str, why: str = "") -> UnknownTaskError:
    return UnknownTaskError(
        f"unknown task {spec!r}{': ' + why if why else ''}. Known tasks: {', '.join(known_tasks())}. "
        f"Accepted forms:\n{describe_task_specs()}"
    )


def _synthetic(spec: str) -> Task | None:
    if m := re.fullmatch(r"add(\d+)-(\d+)", spec):
        return Addition(int(m[2]), min_digits=int(m[1]))
    if m := re.fullmatch(r"add(\d*)", spec):
        return Addition(int(m[1]) if m[1] else 4)
    if m := re.fullmatch(r"mul(\d*)(?:x(\d+))?", spec):
        a, b = int(m[1]) if m[1] else 2, int(m[2]) if m[2] else None
        if a < 1 or b == 0:
            raise ValueError("digits must be >= 1")
        return Multiplication(a, b)
    if spec == "cipher":
        return ShiftCipher()
    if m := re.fullmatch(r"sort(\d*)", spec):
        return ListSort(int(m[1]) if m[1] else 5)
    return None


def get_task(spec: str) -> Task:
    """The task named by ``spec`` (see the module docstring); raises :class:`UnknownTaskError`."""
    spec = spec.strip()
    try:
        task = _synthetic(spec)
    except ValueError as e:  # e.g. add0, sort1
        raise _unknown(spec, str(e)) from e
    if task is not None:
        return task
    if spec.startswith("rg:"):
        name = spec[3:]
        try:
            return ReasoningGymTask(name)
        except (ValueError, ImportError) as e:  # unknown dataset, or the `tasks` extra missing
            raise UnknownTaskError(str(e)) from e
    path = Path(spec).expanduser()
    if spec.endswith(".json") or (path.is_dir() and (path / "task.json").is_file()):
        return BigBenchTask(path)
    raise _unknown(spec)

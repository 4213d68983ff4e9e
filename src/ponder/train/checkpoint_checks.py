"""What a restored checkpoint must satisfy before a run continues from it.

A checkpoint's manifest proves its files are the ones written, not that what they say is sane: a state
edited by hand (its manifest recomputed) or written by a bug could say step 1e300, or a
``docs_consumed`` whose replay never ends. :func:`validate_state` and :func:`require_count` refuse
such a state with one line saying what to do.
"""

from __future__ import annotations

import re
from pathlib import Path

from ponder.errors import PonderError
from ponder.train.state import negative_counters, nonfinite_entries

#: A checkpoint folder's name: ``step-00000012``.
STEP_DIR = re.compile(r"step-(\d+)")


class CheckpointError(PonderError):
    """A checkpoint that cannot be trusted or read; the message says which and why."""


def checkpoint_step(ckpt: Path) -> int:
    """The step in a checkpoint folder's name (``step-00000012`` -> 12)."""
    m = STEP_DIR.fullmatch(Path(ckpt).name)
    if m is None:
        raise CheckpointError(f"{ckpt} is not a checkpoint folder (step-N)")
    return int(m[1])


def validate_state(state: dict, ckpt: Path) -> None:
    """Refuse a trainer state whose ``step`` is not the folder's step, with a negative counter, or an inf or NaN
    number (a learning rate, an Adam moment): resuming it would train on garbage or never end."""
    ckpt = Path(ckpt)
    step = state.get("step") if isinstance(state, dict) else None
    problem = None
    if not isinstance(step, int) or isinstance(step, bool) or step != checkpoint_step(ckpt):
        problem = f"its step {step!r} is not the folder's step {checkpoint_step(ckpt)}"
    elif bad := nonfinite_entries(state):
        problem = f"{bad[0]} is inf or NaN"
    elif bad := negative_counters(state):
        problem = f"the counter {bad[0]} is negative or not a number"
    if problem:
        raise CheckpointError(
            f"the trainer state of {ckpt} is invalid: {problem}. Delete {ckpt} to resume from an earlier "
            "checkpoint, or rerun with --no-resume to start over"
        )


def require_count(value, name: str, upper: int, ckpt: Path) -> int:
    """``value``, a whole number from 0 to ``upper`` (what the data allows); else a :class:`CheckpointError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= upper:
        raise CheckpointError(
            f"the trainer state of {ckpt} is invalid: {name} {value!r} is not a whole number from 0 to {upper} "
            f"(what {checkpoint_step(ckpt)} steps read). Delete {ckpt} to resume from an earlier checkpoint, "
            "or rerun with --no-resume"
        )
    return value

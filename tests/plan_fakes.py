"""Test helpers for planning: transparent features and a planted outcome (no LM needed)."""

from __future__ import annotations

import torch

from ponder.plan.edits import ALL_OPS
from ponder.plan.state import FORMATS


def planted_value(chain) -> float:
    """Planted outcome: the ``qa`` format is worth 0.8 (else 0.2); each instruction line costs 0.1."""
    return (0.8 if chain.answer_format == "qa" else 0.2) - 0.1 * len(chain.instructions)


class FakeFeatures:
    """Features a test can read: format one-hot and line counts; payload format and edit op one-hot."""

    chain_dim = len(FORMATS) + 3
    edit_dim = len(ALL_OPS) + len(FORMATS)
    forwards = 0

    def chains(self, chains):
        rows = []
        for c in chains:
            row = torch.zeros(self.chain_dim)
            row[FORMATS.index(c.answer_format)] = 1
            row[len(FORMATS) :] = torch.tensor([len(c.instructions), len(c.exemplars), len(c.steps)], dtype=torch.float)
            rows.append(row)
        return torch.stack(rows)

    def edits(self, edits, chains):
        rows = []
        for e in edits:  # like LMFeatures, the operation's one-hot code comes last
            row = torch.zeros(self.edit_dim)
            if e.payload in FORMATS:
                row[FORMATS.index(e.payload)] = 1
            row[len(FORMATS) + ALL_OPS.index(e.op)] = 1
            rows.append(row)
        return torch.stack(rows)


#: Start of the plateau trap: four steps in an open thought.
TRAP_START_STEPS = ("a", "b", "c", "d")


def planted_trap_value(chain) -> float:
    """A plateau trap: every non-``think`` chain is worth 0.3 whatever else is edited (a plateau with
    no way up: from it every edit is worth at most as much); in ``think`` each deleted step of four
    adds 0.06 (0.2 -> 0.26 -> 0.32 -> 0.38: the real path climbs past the plateau, as the tiny
    model's steps do) and the empty thought is worth 1.0."""
    if chain.answer_format != "think":
        return 0.3
    n = len(chain.steps)
    return 1.0 if n == 0 else 0.2 + 0.06 * (len(TRAP_START_STEPS) - n)


def planted_delete_value(chain) -> float:
    """Only deleting a step helps: a ``think`` chain whose steps are a subset of the four start steps
    is worth ``0.2 + 0.2 * deleted``; any other change (another format, a new, merged or rewritten
    step, an instruction or exemplar) is worth 0.1, so every operation but ``delete_step`` hurts."""
    if chain.answer_format != "think" or chain.instructions or chain.exemplars:
        return 0.1
    if not set(chain.steps) <= set(TRAP_START_STEPS):
        return 0.1
    return 0.2 + 0.2 * (len(TRAP_START_STEPS) - len(chain.steps))

"""Exploration over edit operations: cover them in the warm-up, then an optimism bonus for the rarely tried.

A world model can only rank an edit operation it has seen evidence about. If the short warm-up
never tried, say, ``delete_step``, the model's prediction for every deletion is an untrained
extrapolation and a greedy planner may never try one, even when deleting is the way up.
:class:`OpCounts` counts the evaluations of each operation (``Edit.op``; warm-up and planned edits
alike; a chain that renders like one evaluated before is a free cache hit, evidence all the same)
and gives two things:

* :meth:`OpCounts.least_tried`: the candidates whose operation has been evaluated least; the
  warm-up draws from them, so its few walks cover distinct operations instead of repeating one;
* :meth:`OpCounts.bonus`: a count-based optimism bonus ``beta / (1 + n(op))`` (in the spirit of
  MBIE-EB's ``1 / sqrt(n)``, with a faster decay so that exploitation takes over sooner), added by
  every planner to the rank quantile of its score of each candidate edit
  (:func:`ponder.plan.planners.pick`). It is largest for an operation never tried and halves
  after its first real evaluation, so an untried operation is tried unless the planner ranks it
  far below the rest, without forcing one evaluation per operation (as UCB1's "play each arm
  once" rule would: ~13 operations apply to a chain, 13 evaluations of a 75-evaluation budget).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from ponder.plan.edits import Edit


class OpCounts:
    """Real evaluations per edit operation, and the exploration terms derived from them."""

    def __init__(self, beta: float = 0.0):
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = beta
        self.n: Counter[str] = Counter()

    def record(self, edit: Edit) -> None:
        """One real evaluation of a chain produced by ``edit``."""
        self.n[edit.op] += 1

    def bonus(self, edits: Sequence[Edit]) -> torch.Tensor:
        """``[K]`` bonus ``beta / (1 + n(op))`` of each edit (zeros when ``beta`` is 0)."""
        return torch.tensor([self.beta / (1 + self.n[e.op]) for e in edits], dtype=torch.float)

    def least_tried(self, cands: list[tuple[Edit, object]]) -> list[tuple[Edit, object]]:
        """The candidates whose operation has the fewest real evaluations (all of them if ``cands`` is empty)."""
        if not cands:
            return cands
        low = min(self.n[e.op] for e, _ in cands)
        return [(e, c) for e, c in cands if self.n[e.op] == low]

    def to_json(self) -> dict:
        return {"beta": self.beta, "counts": dict(sorted(self.n.items()))}

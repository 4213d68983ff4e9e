"""Bookkeeping shared by every planner and baseline: the incumbent, the trajectory and the curve.

Each real evaluation goes through :meth:`Search.evaluate`, which records a trajectory step
(edit, predicted value when a model made one, real outcome) and a curve point (real calls
so far, best training value, held-out accuracy of the best chain so far). The held-out
accuracy is measured only when the best chain changes (not part of any budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ponder.plan.edits import Edit
from ponder.plan.env import Outcome, PlanEnv
from ponder.plan.state import Chain


@dataclass
class Step:
    calls: int
    edit: str
    chain: Chain
    outcome: Outcome
    predicted: float | None
    improved: bool

    def to_json(self) -> dict:
        return {
            "calls": self.calls,
            "edit": self.edit,
            "chain": self.chain.to_json(),
            "real": self.outcome.to_json(),
            "predicted": self.predicted,
            "improved": self.improved,
        }


@dataclass
class Search:
    env: PlanEnv
    budget: int
    measure_heldout: bool = True
    best: Chain | None = None
    best_outcome: Outcome | None = None
    best_heldout: float | None = None
    steps: list[Step] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)
    on_step: object = None  # called with each Step (progress bars, live trajectories)

    @property
    def exhausted(self) -> bool:
        return self.env.counters.calls >= self.budget

    def evaluate(self, chain: Chain, edit: Edit | str | None = None, predicted: float | None = None) -> Outcome:
        out = self.env.evaluate(chain)
        improved = self.best_outcome is None or out.value > self.best_outcome.value
        if improved:
            self.best, self.best_outcome = chain, out
            if self.measure_heldout:
                self.best_heldout = self.env.measure(chain).accuracy
        label = edit.describe() if isinstance(edit, Edit) else (edit or "start")
        self.steps.append(Step(self.env.counters.calls, label, chain, out, predicted, improved))
        if self.on_step is not None:
            self.on_step(self.steps[-1])
        self.curve.append(
            {
                "calls": self.env.counters.calls,
                "best_value": self.best_outcome.value,
                "best_train_accuracy": self.best_outcome.accuracy,
                "heldout_accuracy": self.best_heldout,
            }
        )
        return out

    def summary(self) -> dict:
        c = self.env.counters
        return {
            "best_chain": self.best.to_json() if self.best else None,
            "best_train": self.best_outcome.to_json() if self.best_outcome else None,
            "best_heldout_accuracy": self.best_heldout,
            "calls": c.calls,
            "tokens": c.tokens,
            "generated_tokens": c.generated_tokens,
            "evaluations": c.evaluations,
            "cache_hits": c.cache_hits,
            "rejected": c.rejected,
            "proposal_calls": c.proposal_calls,
            "heldout_calls": c.heldout_calls,
            "curve": self.curve,
            "trajectory": [s.to_json() for s in self.steps],
        }


def calls_to_reach(curve: list[dict], target: float, key: str = "heldout_accuracy") -> int | None:
    """Real calls at the first curve point whose ``key`` is at least ``target`` (None if never)."""
    for point in curve:
        value = point.get(key)
        if value is not None and value >= target - 1e-9:
            return int(point["calls"])
    return None


def call_savings(planner_calls: int | None, baseline_calls: int | None) -> float | None:
    """``1 - planner_calls / baseline_calls``; None when either never reached the target."""
    if planner_calls is None or not baseline_calls:
        return None
    return 1.0 - planner_calls / baseline_calls

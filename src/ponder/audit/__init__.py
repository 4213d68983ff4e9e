"""Thought audit: one diagnostic per module, pure math apart from the model calls.

Each diagnostic returns a result dataclass with ``to_json()``; ``ponder.jobs.audit`` runs
them all and writes the HTML report and the JSON.
"""

from ponder.probe.budget import BudgetCurveResult, budget_accuracies, peak
from ponder.probe.dtr import DTRResult, ThinkAtNResult, deep_from, dtr, settling_depth, think_at_n
from ponder.probe.planning import PlanningResult, checkpoint_planning, mine_strategic_ngrams
from ponder.probe.policy_entropy import PolicyEntropyResult, continuation_entropy, perturb
from ponder.probe.reflection import ReflectionResult, analyse_trace, reflection_result
from ponder.probe.sparsity import ArchitectureMismatch, SparsityResult, update_sparsity
from ponder.probe.step_gain import StepGainResult, answer_logliks, split_steps, step_gains
from ponder.probe.validity import ValidityResult, exemplar_prefix, invalidate_thought

__all__ = [
    "BudgetCurveResult",
    "budget_accuracies",
    "peak",
    "DTRResult",
    "ThinkAtNResult",
    "deep_from",
    "dtr",
    "settling_depth",
    "think_at_n",
    "PlanningResult",
    "checkpoint_planning",
    "mine_strategic_ngrams",
    "PolicyEntropyResult",
    "continuation_entropy",
    "perturb",
    "ReflectionResult",
    "analyse_trace",
    "reflection_result",
    "ArchitectureMismatch",
    "SparsityResult",
    "update_sparsity",
    "StepGainResult",
    "answer_logliks",
    "split_steps",
    "step_gains",
    "ValidityResult",
    "exemplar_prefix",
    "invalidate_thought",
]

"""The thought audit behind ``ponder audit``: one diagnostic per module, pure math apart from the model calls.

budget.py (accuracy against the thought budget), dtr.py (deep-thinking ratio and Think@n from the logit lens),
planning.py (planning vs execution tokens across checkpoints, format diversity), policy_entropy.py (on-policy
vs off-policy next-token entropy), reflection.py (what a trace does after its first answer), sparsity.py
(update sparsity and rank between two checkpoints), step_gain.py (information gain per reasoning step),
validity.py (does the logic of few-shot exemplars matter), evidence.py (when a figure may carry an
interpretation). Each diagnostic returns a result dataclass with ``to_json()``; :mod:`ponder.jobs.audit` runs
them all and :mod:`ponder.report.audit_report` writes the HTML report.
"""

from ponder.audit.budget import BudgetCurveResult, budget_accuracies, peak
from ponder.audit.dtr import DTRResult, ThinkAtNResult, deep_from, dtr, settling_depth, think_at_n
from ponder.audit.planning import PlanningResult, checkpoint_planning, mine_strategic_ngrams
from ponder.audit.policy_entropy import PolicyEntropyResult, continuation_entropy, perturb
from ponder.audit.reflection import ReflectionResult, analyse_trace, reflection_result
from ponder.audit.sparsity import ArchitectureMismatch, SparsityResult, update_sparsity
from ponder.audit.step_gain import StepGainResult, answer_logliks, split_steps, step_gains
from ponder.audit.validity import ValidityResult, exemplar_prefix, invalidate_thought

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

"""Measuring a model: task accuracy, BIG-bench's own metrics, and the information gain of its thoughts.

accuracy.py (greedy accuracy, pass@k and maj@k on a task, think and no-think: :func:`evaluate`),
bigbench.py (a BIG-bench JSON task scored as BIG-bench scores it, generative and multiple-choice metrics),
results.py (what one mode returns, whichever scorer),
info_gain.py (how much a model's own thoughts raise the likelihood of held-out text, by position class and
against a base model). The command is ``ponder eval`` (:mod:`ponder.jobs.eval`).
"""

from ponder.eval.accuracy import EvalResult, ModeResult, evaluate, pass_at_k

__all__ = ["EvalResult", "ModeResult", "evaluate", "pass_at_k"]

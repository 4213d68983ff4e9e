"""Thinking-budget curve (after arXiv 2506.04210): accuracy against the thought budget.

Two ways to hold a model to a budget ``b`` thought tokens:

* truncation: the thought is cut at ``b`` tokens and closed (:func:`ponder.lm.thinking.think_then_answer`);
* forcing: whenever the model closes its thought before ``b`` tokens, the ``</think>`` is
  replaced by ``force_text`` ("Wait") and it keeps thinking, up to ``b`` tokens (at most
  ``max_forcings`` times); the thought is then closed and the answer sampled.

The peak of the accuracy curve (first budget reaching the maximum) marks the overthinking
threshold: budgets past it cost tokens without gaining accuracy. It is named only from enough
problems and a curve that is not all zero (:mod:`ponder.audit.evidence`); else ``peak_withheld`` says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ponder.audit.evidence import interpretation_withheld
from ponder.lm.thinking import ANSWER_STOPS, ThoughtFormat, force_thoughts, think_then_answer


def peak(budgets: Sequence[int], accuracy: Sequence[float]) -> tuple[int, float]:
    """``(budget, accuracy)`` at the first maximum of the curve."""
    best = max(range(len(accuracy)), key=lambda i: (accuracy[i], -i))
    return budgets[best], accuracy[best]


@torch.no_grad()
def budget_accuracies(
    model,
    tokenizer,
    task,
    problems: Sequence,
    budgets: Sequence[int],
    force_text: str = "Wait",
    max_forcings: int = 4,
    max_answer_tokens: int = 16,
    batch_size: int | None = None,
    think_settings=None,
) -> BudgetCurveResult:
    """Greedy accuracy at each thought budget, by truncation and by forcing (module docstring), via the one sampler."""
    fmt = ThoughtFormat.of(model, tokenizer, think_settings)
    prompt_ids = fmt.prompt_ids(tokenizer, [p.prompt for p in problems])
    force_ids = tokenizer(force_text, add_special_tokens=False)["input_ids"]
    trunc, force, tokens = [], [], {"truncation": [], "forcing": []}

    def accuracy(comp) -> float:
        texts = comp.texts(tokenizer, ANSWER_STOPS)
        return sum(task.score(p, t) for p, t in zip(problems, texts)) / len(problems)

    for b in budgets:
        cut = think_then_answer(
            model,
            tokenizer,
            fmt,
            prompt_ids,
            max_thought_tokens=b,
            max_answer_tokens=max_answer_tokens,
            temperature=0.0,
            batch_size=batch_size,
        )
        trunc.append(accuracy(cut))
        tokens["truncation"].append(float(cut.thought_tokens.mean()))
        forced, _ = force_thoughts(model, tokenizer, fmt, prompt_ids, b, force_ids, max_forcings, batch_size=batch_size)
        comp = think_then_answer(
            model,
            tokenizer,
            fmt,
            prompt_ids,
            max_answer_tokens=max_answer_tokens,
            temperature=0.0,
            batch_size=batch_size,
            thoughts=forced,
        )
        force.append(accuracy(comp))
        tokens["forcing"].append(float(forced.lengths.mean()))
    return BudgetCurveResult(list(budgets), trunc, force, tokens, problems=len(problems))


@dataclass
class BudgetCurveResult:
    budgets: list[int]
    truncation: list[float]
    forcing: list[float]
    mean_thought_tokens: dict[str, list[float]] = field(default_factory=dict)
    problems: int = 0  # problems each accuracy is measured on

    def to_json(self) -> dict:
        out = {
            "budgets": self.budgets,
            "accuracy_truncation": self.truncation,
            "accuracy_forcing": self.forcing,
            "mean_thought_tokens": self.mean_thought_tokens,
            "problems": self.problems,
        }
        withheld = interpretation_withheld(self.problems, [*self.truncation, *self.forcing], unit="problems")
        if withheld:
            out["peak_withheld"] = withheld
            return out
        for name, acc in (("truncation", self.truncation), ("forcing", self.forcing)):
            if acc:
                b, a = peak(self.budgets, acc)
                out[f"peak_{name}"] = {"budget": b, "accuracy": a}
        return out

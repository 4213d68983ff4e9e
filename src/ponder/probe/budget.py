"""Thinking-budget curve (after arXiv 2506.04210): accuracy against the thought budget.

Two ways to hold a model to a budget ``b`` thought tokens:

* truncation: the thought is cut at ``b`` tokens and closed (``ponder.lm.generate``);
* forcing: whenever the model closes its thought before ``b`` tokens, the ``</think>`` is
  replaced by ``force_text`` ("Wait") and it keeps thinking, up to ``b`` tokens (at most
  ``max_forcings`` times); the thought is then closed and the answer sampled.

The peak of the accuracy curve (first budget reaching the maximum) marks the overthinking
threshold: budgets past it cost tokens without gaining accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


def peak(budgets: Sequence[int], accuracy: Sequence[float]) -> tuple[int, float]:
    """``(budget, accuracy)`` at the first maximum of the curve."""
    best = max(range(len(accuracy)), key=lambda i: (accuracy[i], -i))
    return budgets[best], accuracy[best]


@torch.no_grad()
def forced_thoughts(
    model,
    tokenizer,
    prompts: Sequence[str],
    budget: int,
    force_text: str = "Wait",
    max_forcings: int = 4,
    temperature: float = 0.0,
    generator=None,
    batch_size: int | None = None,
) -> tuple[list[list[int]], list[int]]:
    """Thought ids (delimiters excluded) per prompt, with early closes replaced by ``force_text``.

    -> ``(thought_ids, forcings)``; each thought has at most ``budget`` tokens.
    """
    from ponder.lm.sample import sample
    from ponder.lm.thoughts import think_token_ids

    open_id, close_id = think_token_ids(tokenizer)
    force_ids = tokenizer(force_text, add_special_tokens=False)["input_ids"]
    bases = [tokenizer(p, add_special_tokens=True)["input_ids"] + [open_id] for p in prompts]
    thoughts: list[list[int]] = [[] for _ in prompts]
    forcings = [0] * len(prompts)
    active = list(range(len(prompts)))
    for round_ in range(max_forcings + 1):
        if not active:
            break
        room = {i: budget - len(thoughts[i]) for i in active}
        active = [i for i in active if room[i] > 0]
        if not active:
            break
        s = sample(
            model,
            tokenizer,
            [bases[i] + thoughts[i] for i in active],
            n=1,
            max_new_tokens=max(room.values()),
            temperature=temperature,
            stop_token_ids=[close_id],
            ban_token_ids=[open_id],
            generator=generator,
            batch_size=batch_size,
        )
        still = []
        for row, i in enumerate(active):
            ids = s.tokens[row][s.mask[row]].tolist()
            closed = close_id in ids
            body = ids[: ids.index(close_id)] if closed else [t for t in ids if t != tokenizer.eos_token_id]
            thoughts[i] += body[: room[i]]
            if closed and len(thoughts[i]) < budget and round_ < max_forcings:
                thoughts[i] += force_ids[: budget - len(thoughts[i])]
                forcings[i] += 1
                still.append(i)
        active = still
    return thoughts, forcings


def answers_after(
    model,
    tokenizer,
    prompts: Sequence[str],
    thoughts: Sequence[Sequence[int]],
    max_answer_tokens: int = 16,
    answer_stop: Sequence[str] = ("\n",),
    batch_size: int | None = None,
) -> list[str]:
    """Greedy answers after ``prompt <think> thought </think>`` (stop string removed)."""
    from ponder.lm.generate import drop_stop
    from ponder.lm.sample import sample
    from ponder.lm.thoughts import think_ban_ids, think_token_ids

    open_id, close_id = think_token_ids(tokenizer)
    ids = [
        tokenizer(p, add_special_tokens=True)["input_ids"] + [open_id] + list(t) + [close_id]
        for p, t in zip(prompts, thoughts)
    ]
    s = sample(
        model,
        tokenizer,
        ids,
        n=1,
        max_new_tokens=max_answer_tokens,
        stop=answer_stop,
        ban_token_ids=think_ban_ids(tokenizer),
        temperature=0.0,
        batch_size=batch_size,
    )
    return drop_stop(s.texts, answer_stop)


@dataclass
class BudgetCurveResult:
    budgets: list[int]
    truncation: list[float]
    forcing: list[float]
    mean_thought_tokens: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {
            "budgets": self.budgets,
            "accuracy_truncation": self.truncation,
            "accuracy_forcing": self.forcing,
            "mean_thought_tokens": self.mean_thought_tokens,
        }
        for name, acc in (("truncation", self.truncation), ("forcing", self.forcing)):
            if acc:
                b, a = peak(self.budgets, acc)
                out[f"peak_{name}"] = {"budget": b, "accuracy": a}
        return out

"""Validity ablation (after arXiv 2307.10573): does the logic of few-shot exemplars matter?

Three few-shot prefixes built from the task's worked training problems, same problems, same
order: ``valid`` (``prompt<think>thought</think>answer``), ``invalid`` (every step's stated
result made wrong by :func:`invalidate_thought`, the format and the final answer kept) and
``answer_only`` (``prompt answer``, no thought). The model is then asked held-out problems
in think mode after each prefix; accuracy per condition.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ponder.audit.step_gain import join_steps, split_steps
from ponder.lm.delimiters import wrap_thought
from ponder.lm.thinking import ThoughtFormat, think_then_answer

CONDITIONS = ("valid", "invalid", "answer_only")
_NUMBER = re.compile(r"\d+")


def invalidate_step(step: str, rng: random.Random) -> str:
    """Make a step's stated result wrong: its last number gets a different digit string of the same length."""
    matches = list(_NUMBER.finditer(step))
    if not matches:
        return step
    m = matches[-1]
    old = m.group()
    new = old
    while new == old:
        new = "".join(rng.choice("0123456789") for _ in old)
    return step[: m.start()] + new + step[m.end() :]


def invalidate_thought(thought: str, rng: random.Random) -> str:
    """Every step (see :func:`split_steps`) invalidated; a thought without numbers is reversed step-wise."""
    steps = split_steps(thought)
    multiline = "\n" in thought.strip()
    if not any(_NUMBER.search(s) for s in steps):
        return join_steps(steps[::-1], multiline)
    return join_steps([invalidate_step(s, rng) for s in steps], multiline)


def exemplar_prefix(problems: Sequence, condition: str, seed: int = 0, separator: str = "\n") -> str:
    """Few-shot prefix for ``condition`` from ``problems`` (each with ``prompt``, ``thought``, ``answer``)."""
    rng = random.Random(seed)
    parts = []
    for p in problems:
        if condition == "valid":
            parts.append(p.prompt + wrap_thought(p.thought) + p.answer)
        elif condition == "invalid":
            parts.append(p.prompt + wrap_thought(invalidate_thought(p.thought, rng)) + p.answer)
        elif condition == "answer_only":
            parts.append(p.prompt + p.answer)
        else:
            raise ValueError(f"unknown condition {condition!r}; one of {CONDITIONS}")
    return separator.join(parts) + separator


@dataclass
class ValidityResult:
    accuracy: dict[str, float]
    exemplars: int
    problems: int

    def to_json(self) -> dict:
        return {"accuracy": self.accuracy, "exemplars": self.exemplars, "problems": self.problems}


def validity_accuracy(
    model,
    tokenizer,
    task,
    exemplars: Sequence,
    problems: Sequence,
    max_thought_tokens: int = 128,
    max_answer_tokens: int = 16,
    seed: int = 0,
    batch_size: int | None = 32,
    think_settings=None,
) -> ValidityResult:
    """Greedy think-mode accuracy on ``problems`` after each condition's few-shot prefix (the one sampler)."""
    fmt = ThoughtFormat.of(model, tokenizer, think_settings)
    accuracy = {}
    for condition in CONDITIONS:
        prefix = exemplar_prefix(exemplars, condition, seed=seed)
        prompt_ids = fmt.prompt_ids(tokenizer, [prefix + p.prompt for p in problems])
        out = think_then_answer(
            model,
            tokenizer,
            fmt,
            prompt_ids,
            n=1,
            temperature=0.0,
            max_thought_tokens=max_thought_tokens,
            max_answer_tokens=max_answer_tokens,
            batch_size=batch_size,
        )
        texts = out.texts(tokenizer)
        accuracy[condition] = sum(task.score(p, t) for p, t in zip(problems, texts)) / len(problems)
    return ValidityResult(accuracy=accuracy, exemplars=len(exemplars), problems=len(problems))

"""Accuracy of a model on a task: greedy, pass@k and maj@k, in think and no-think mode.

The math (pass@k estimator, majority vote) lives in pure functions; :func:`evaluate` runs
the model. The JSON keys written by :meth:`EvalResult.to_json` are a stable interface read
by later tools and benchmarks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ponder.data.task import Problem, Task, majority_answer
from ponder.errors import TaskError
from ponder.lm.thinking import ANSWER_STOPS, ThinkSettings, ThoughtFormat, think_then_answer


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass
class ModeResult:
    accuracy: float
    mean_thought_tokens: float = 0.0
    unclosed_fraction: float = 0.0
    no_answer_fraction: float = 0.0
    pass_at_k: float | None = None
    maj_at_k: float | None = None
    k: int | None = None
    per_problem: list[float] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        out = {
            "accuracy": self.accuracy,
            "mean_thought_tokens": self.mean_thought_tokens,
            "unclosed_fraction": self.unclosed_fraction,
            "no_answer_fraction": self.no_answer_fraction,
        }
        if self.k is not None:
            out[f"pass@{self.k}"] = self.pass_at_k
            out[f"maj@{self.k}"] = self.maj_at_k
        return out


@dataclass
class EvalResult:
    model: str
    task: str
    n: int
    seed: int
    modes: dict[str, ModeResult]

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "task": self.task,
            "n": self.n,
            "seed": self.seed,
            **{mode: r.to_json() for mode, r in self.modes.items()},
        }


def evaluate_mode(
    model,
    tokenizer,
    task: Task,
    problems: list[Problem],
    think: bool,
    k: int = 1,
    temperature: float = 0.7,
    max_thought_tokens: int = 128,
    max_answer_tokens: int = 16,
    batch_size: int | None = 256,
    seed: int = 0,
    progress: bool = False,
    think_settings: ThinkSettings | None = None,
) -> ModeResult:
    """Greedy accuracy (and pass@k / maj@k from k samples at ``temperature`` when k > 1), through the one sampler."""
    fmt = ThoughtFormat.of(model, tokenizer, think_settings)
    prompt_ids = fmt.prompt_ids(tokenizer, [p.prompt for p in problems])
    kw = dict(
        think=think,
        max_thought_tokens=max_thought_tokens,
        max_answer_tokens=max_answer_tokens,
        batch_size=batch_size,
        stops=ANSWER_STOPS,
    )
    greedy = think_then_answer(model, tokenizer, fmt, prompt_ids, n=1, temperature=0.0, **kw)
    texts = greedy.texts(tokenizer, ANSWER_STOPS)
    scores = [task.score(p, text) for p, text in zip(problems, texts)]
    extracted = [task.extract_answer(text) for text in texts]
    result = ModeResult(
        accuracy=sum(scores) / len(scores),
        mean_thought_tokens=float(greedy.thought_tokens.float().mean()) if think else 0.0,
        unclosed_fraction=float((~greedy.closed).float().mean()),
        no_answer_fraction=sum(a is None for a in extracted) / len(extracted),
        per_problem=scores,
    )
    if k > 1:
        gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
        sampled = think_then_answer(
            model, tokenizer, fmt, prompt_ids, n=k, temperature=temperature, generator=gen, **kw
        )
        texts = sampled.texts(tokenizer, ANSWER_STOPS)
        passes, majs = [], []
        for i, p in enumerate(problems):
            group = texts[i * k : (i + 1) * k]
            correct = sum(task.score(p, t) >= 1.0 for t in group)
            passes.append(pass_at_k(k, correct, k))
            maj = majority_answer([task.extract_answer(t) for t in group])
            majs.append(0.0 if maj is None else task.score(p, maj))
        result.k, result.pass_at_k, result.maj_at_k = k, sum(passes) / len(passes), sum(majs) / len(majs)
    return result


def evaluate(
    model,
    tokenizer,
    task: Task,
    n: int = 200,
    seed: int = 0,
    modes: Sequence[str] = ("think", "no_think"),
    model_name: str = "",
    split: str = "test",
    **kwargs,
) -> EvalResult:
    """Evaluate on ``n`` held-out problems of ``task`` in each of ``modes``."""
    problems = task.problems(n, seed=seed, split=split)
    if not problems:
        raise TaskError(
            f"task {task.name} has no {split} problems to evaluate on; a BIG-bench file needs at least 2 examples "
            "(about 10% are held out)"
        )
    results = {
        mode: evaluate_mode(model, tokenizer, task, problems, think=(mode == "think"), seed=seed, **kwargs)
        for mode in modes
    }
    return EvalResult(model=model_name, task=task.name, n=len(problems), seed=seed, modes=results)

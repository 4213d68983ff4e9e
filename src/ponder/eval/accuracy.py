"""Accuracy of a model on a task: greedy, pass@k and maj@k, in think and no-think mode.

The math (pass@k estimator, majority vote) lives in pure functions; :func:`evaluate` runs
the model. The JSON keys written by :meth:`EvalResult.to_json` are a stable interface read
by later tools and benchmarks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ponder.data.bigbench import BigBenchTask
from ponder.data.task import Problem, Task, describe_answer_rule, majority_answer, problem_answer_prefixes
from ponder.errors import TaskError
from ponder.eval.bigbench import evaluate_bigbench_mode
from ponder.eval.results import ModeResult, decode_prompts, mode_warnings
from ponder.lm.thinking import ANSWER_STOPS, ThinkSettings, ThoughtFormat, think_then_answer
from ponder.progress import make_progress


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass
class EvalResult:
    model: str
    task: str
    n: int
    seed: int
    modes: dict[str, ModeResult]

    def to_json(self, samples: int | None = 0) -> dict:
        """``samples`` bounds the examples stored per mode (None: all; 0, the default: none)."""
        return {
            "model": self.model,
            "task": self.task,
            "n": self.n,
            "seed": self.seed,
            **{mode: r.to_json(samples) for mode, r in self.modes.items()},
        }


@dataclass
class Generated:
    """Greedy (or sampled) completions of ``P`` prompts, ``n`` each: texts, closed flags, thought lengths."""

    texts: list[str]
    closed: list[bool]
    thought_tokens: list[int]


def generate_chunked(
    model,
    tokenizer,
    fmt: ThoughtFormat,
    prompt_ids: list[list[int]],
    think: bool,
    max_thought_tokens: int,
    max_answer_tokens: int,
    batch_size: int | None,
    stops=ANSWER_STOPS,
    progress: bool = False,
    label: str = "generating",
) -> Generated:
    """Greedy completions, ``batch_size`` prompts at a time, with a progress bar over prompts."""
    step = batch_size or max(len(prompt_ids), 1)
    out = Generated([], [], [])
    with make_progress(progress) as bar:
        job = bar.add_task(label, total=len(prompt_ids))
        for a in range(0, len(prompt_ids), step):
            comp = think_then_answer(
                model,
                tokenizer,
                fmt,
                prompt_ids[a : a + step],
                n=1,
                think=think,
                max_thought_tokens=max_thought_tokens,
                max_answer_tokens=max_answer_tokens,
                temperature=0.0,
                batch_size=batch_size,
                stops=stops,
            )
            out.texts += comp.texts(tokenizer, stops)
            out.closed += [bool(c) for c in comp.closed]
            out.thought_tokens += [int(t) for t in comp.thought_tokens]
            bar.advance(job, len(comp.prompt_ids))
    return out


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
    """Greedy accuracy (and pass@k / maj@k from k samples at ``temperature`` when k > 1), through the one sampler.

    A BIG-bench file is scored by its own metrics (:func:`ponder.eval.bigbench.evaluate_bigbench_mode`).
    """
    fmt = ThoughtFormat.of(model, tokenizer, think_settings)
    mode = "think" if think else "no_think"
    if isinstance(task, BigBenchTask):
        return evaluate_bigbench_mode(
            model, tokenizer, task, problems, fmt, think, max_thought_tokens, max_answer_tokens, batch_size, progress
        )
    prompt_ids = fmt.prompt_ids(tokenizer, [p.prompt for p in problems], problem_answer_prefixes(problems))
    kw = dict(
        think=think,
        max_thought_tokens=max_thought_tokens,
        max_answer_tokens=max_answer_tokens,
        batch_size=batch_size,
        stops=ANSWER_STOPS,
    )
    greedy = generate_chunked(model, tokenizer, fmt, prompt_ids, progress=progress, label=f"eval {mode}", **kw)
    texts = greedy.texts
    scores = [task.score(p, text) for p, text in zip(problems, texts)]
    extracted = [task.extract_answer(text) for text in texts]
    unclosed = sum(not c for c in greedy.closed) / len(texts)
    no_answer = sum(a is None for a in extracted) / len(extracted)
    result = ModeResult(
        accuracy=sum(scores) / len(scores),
        mean_thought_tokens=sum(greedy.thought_tokens) / len(texts) if think else 0.0,
        unclosed_fraction=unclosed,
        no_answer_fraction=no_answer,
        per_problem=scores,
        answer_rule=describe_answer_rule(task),
        examples=[
            {
                "prompt": shown,
                "raw_output": text,
                "answer": answer,
                "targets": [p.answer],
                "scores": {"accuracy": score},
                "closed": closed,
            }
            for shown, p, text, answer, score, closed in zip(
                decode_prompts(tokenizer, prompt_ids), problems, texts, extracted, scores, greedy.closed
            )
        ],
        warnings=mode_warnings(mode, think, unclosed, no_answer, max_thought_tokens),
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
    """Evaluate on ``n`` problems of ``split`` (default: held out) of ``task`` in each of ``modes``."""
    if split == "all" and not isinstance(task, BigBenchTask):
        raise TaskError(f"split 'all' is for BIG-bench files; task {task.name} has a train and a test split")
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


def held_out_think_accuracy(model, tokenizer, task, n: int, budget: int, think_settings=None) -> dict:
    """Greedy think-mode accuracy and mean thought tokens on ``n`` held-out problems (seed 0).

    ``think_settings``: the run's prompt format and thought rules, so the accuracy before and after
    training is measured under the rules the run trained with.
    """

    think = evaluate(
        model, tokenizer, task, n=n, seed=0, modes=("think",), max_thought_tokens=budget, think_settings=think_settings
    ).modes["think"]
    return {"think_accuracy": think.accuracy, "mean_thought_tokens": think.mean_thought_tokens}

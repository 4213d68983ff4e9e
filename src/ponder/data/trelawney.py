"""TRELAWNEY: future information copied into training text, for goal-conditioned generation.

Thankaraj, Jiang, Kolter & Bisk, "Looking beyond the next token" (2025): a causal LM trained by
next-token prediction only ever conditions on the past, while a writer usually knows where the
text is going before writing it. TRELAWNEY changes the data, not the model or the loss: at an
insertion point ``i`` of a document ``y`` it copies a later piece ``y[s:e]`` (``i <= s < e``)
between two delimiter tokens::

    y[:i] <lookahead> y[s:e] </lookahead> y[i:]

Ordinary next-token training on such documents teaches the model that what a lookahead span
holds comes true later, so it learns to generate *towards* a span. At inference the user writes
the goal into a span (:func:`with_goal`) and the model continues to it; without one it writes
the text as usual (only a ``share`` of the documents is transformed), or opens a span itself.

Everything here works on token ids (the delimiters are added special tokens, like the think
delimiters), in pure functions; :func:`iter_task_lookahead_documents` applies the transform to
the training problems of a task, and :class:`GoalTask` is the same task with the goal written
into a span after each prompt, for evaluation.

Options (:class:`LookaheadConfig`): ``share`` of documents transformed; span length range in
tokens (``span_min``, ``span_max``); ``position`` of the insertion point (``anywhere`` in the document, inside the
``answer``, or at the ``answer_start``); ``goal``: which future tokens the span holds (a
``random`` later piece, or the ``end`` of the document, i.e. the outcome).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from ponder.config import SETTINGS
from ponder.data.task import Problem, Split, Task
from ponder.errors import PonderError
from ponder.lm.delimiters import ensure_special_tokens, special_token_ids

LOOKAHEAD_OPEN = "<lookahead>"
LOOKAHEAD_CLOSE = "</lookahead>"

_SPAN_RE = re.compile(re.escape(LOOKAHEAD_OPEN) + r".*?(?:" + re.escape(LOOKAHEAD_CLOSE) + r"|$)", re.S)

Position = Literal["anywhere", "answer", "answer_start"]
GoalChoice = Literal["random", "end"]


class LookaheadConfig(BaseModel):
    """How training documents get their lookahead spans."""

    model_config = SETTINGS
    share: float = Field(0.5, ge=0, le=1, description="share of documents that get a lookahead span (0 = plain text)")
    span_min: int = Field(1, ge=1, description="shortest copied future piece, in tokens")
    span_max: int = Field(1, ge=1, description="longest copied future piece, in tokens (lengths drawn uniformly)")
    position: Position = Field(
        "answer_start",
        description="insertion point: uniform over the whole document ('anywhere'), uniform inside the answer ('answer'), or where the answer starts ('answer_start')",
    )
    goal: GoalChoice = Field(
        "end",
        description="what the span holds: a uniformly drawn later piece ('random') or the last tokens of the document ('end', the outcome)",
    )

    @model_validator(mode="after")
    def _check_span(self) -> LookaheadConfig:
        if self.span_min > self.span_max:
            raise ValueError(f"span_min ({self.span_min}) must not exceed span_max ({self.span_max})")
        return self


# ---------------------------------------------------------------- pure transform


def insert_lookahead(ids: list[int], at: int, start: int, end: int, open_id: int, close_id: int) -> list[int]:
    """``ids[:at] + [open_id] + ids[start:end] + [close_id] + ids[at:]``; the piece must lie ahead: ``at <= start < end <= len(ids)``."""
    if not 0 <= at <= start < end <= len(ids):
        raise ValueError(f"need 0 <= at <= start < end <= len(ids), got at={at} start={start} end={end} len={len(ids)}")
    return [*ids[:at], open_id, *ids[start:end], close_id, *ids[at:]]


def insertion_range(length: int, prefix: int, answer_start: int | None, position: Position) -> tuple[int, int] | None:
    """Inclusive ``(lo, hi)`` of insertion points for a document of ``length`` tokens, or None if there is none.

    ``prefix``: leading special tokens (BOS) never split. At least one token must follow the
    insertion point (something to look ahead to). ``answer`` and ``answer_start`` need
    ``answer_start`` (the index of the answer's first token).
    """
    hi = length - 1
    if position == "anywhere":
        lo = prefix
    else:
        if answer_start is None:
            raise ValueError(f"position {position!r} needs the answer's start; use 'anywhere' for plain documents")
        lo = answer_start
        if position == "answer_start":
            hi = min(hi, answer_start)
    return (lo, hi) if lo <= hi else None


def future_piece(length: int, at: int, span_len: int, goal: GoalChoice, rng: random.Random) -> tuple[int, int]:
    """``(start, end)`` of the piece copied at ``at``: ``span_len`` tokens (fewer if the document ends first)
    taken from the end of the document (``goal='end'``) or from a uniform start in ``[at, length - span_len]``."""
    span_len = min(span_len, length - at)
    if goal == "end":
        return length - span_len, length
    start = rng.randint(at, length - span_len)
    return start, start + span_len


def lookahead_document(
    ids: list[int],
    cfg: LookaheadConfig,
    rng: random.Random,
    open_id: int,
    close_id: int,
    prefix: int = 1,
    answer_start: int | None = None,
) -> list[int]:
    """One document after the transform: with probability ``cfg.share`` a span per ``cfg``, else ``ids`` unchanged.

    Draws from ``rng`` in a fixed order (share, then position, length, piece), so a stream of
    documents is reproducible from the generator's seed.
    """
    if rng.random() >= cfg.share:
        return list(ids)
    bounds = insertion_range(len(ids), prefix, answer_start, cfg.position)
    if bounds is None:
        return list(ids)
    at = rng.randint(*bounds)
    start, end = future_piece(len(ids), at, rng.randint(cfg.span_min, cfg.span_max), cfg.goal, rng)
    return insert_lookahead(ids, at, start, end, open_id, close_id)


# ---------------------------------------------------------------- tokens and text


def ensure_lookahead_tokens(model, tokenizer) -> int:
    """Register ``<lookahead>`` / ``</lookahead>`` as special tokens where missing; how many were added."""
    return ensure_special_tokens(model, tokenizer, (LOOKAHEAD_OPEN, LOOKAHEAD_CLOSE))


def lookahead_token_ids(tokenizer) -> tuple[int, int]:
    """Ids of the two delimiters; raises ValueError if the tokenizer lacks them."""
    open_id, close_id = special_token_ids(
        tokenizer, (LOOKAHEAD_OPEN, LOOKAHEAD_CLOSE), "ponder.data.trelawney.ensure_lookahead_tokens(model, tokenizer)"
    )
    return open_id, close_id


def with_goal(prompt: str, goal: str) -> str:
    """The inference form: the goal written into a span right after the prompt (the ``answer_start`` position)."""
    return f"{prompt}{LOOKAHEAD_OPEN}{goal}{LOOKAHEAD_CLOSE}"


def strip_lookahead(text: str) -> str:
    """Remove every lookahead span (closed, or left open at the end) from ``text``."""
    return _SPAN_RE.sub("", text)


def problem_ids(tokenizer, problem: Problem) -> tuple[list[int], int]:
    """``(ids, answer_start)``: the prompt with the tokenizer's special tokens, then the answer without.

    Tokenized apart and joined, so the answer's first token is known exactly (and is the same
    whatever the prompt) for every tokenizer.
    """
    prompt = tokenizer(problem.prompt, add_special_tokens=True)["input_ids"]
    answer = tokenizer(problem.answer, add_special_tokens=False)["input_ids"]
    return [*prompt, *answer], len(prompt)


def iter_task_lookahead_documents(task, tokenizer, cfg: LookaheadConfig, seed: int = 0) -> Iterator[list[int]]:
    """Endless training documents (token ids) of ``task``'s train split, ``prompt answer``, transformed per ``cfg``.

    The problem stream is the task's own (``iter_problems(seed, "train")``), so ``share=0``
    gives the plain documents of the same problems in the same order.
    """
    open_id, close_id = lookahead_token_ids(tokenizer)
    prefix = len(tokenizer("", add_special_tokens=True)["input_ids"])
    rng = random.Random(f"lookahead:{task.name}:{seed}")
    for problem in task.iter_problems(seed, "train"):
        ids, answer_start = problem_ids(tokenizer, problem)
        yield lookahead_document(ids, cfg, rng, open_id, close_id, prefix=prefix, answer_start=answer_start)


# ---------------------------------------------------------------- inference


class GoalError(PonderError, ValueError):
    """A problem with no goal to write into a lookahead span."""


def meta_goal(problem: Problem) -> str:
    """The goal a task records in ``problem.meta['goal']`` (e.g. the target node of a graph walk)."""
    if "goal" not in problem.meta:
        raise GoalError(
            f"problem {problem.prompt!r} records no goal in meta['goal']; use a task that does (paths) "
            "or pass a goal function to GoalTask"
        )
    return str(problem.meta["goal"])


class GoalTask:
    """``task`` evaluated with (or, with ``goal=None``, without) the goal written into a lookahead span.

    Prompts become :func:`with_goal` ``(prompt, goal(problem))``; completions are scored after
    :func:`strip_lookahead`, so a model that opens a span of its own (goal generation) is scored
    on the text it writes outside spans.
    """

    def __init__(self, task: Task, goal: Callable[[Problem], str] | None = meta_goal):
        self.task, self.goal = task, goal
        self.name = f"{task.name}+goal" if goal is not None else task.name

    def problems(self, n: int, seed: int = 0, split: Split = "train") -> list[Problem]:
        problems = self.task.problems(n, seed=seed, split=split)
        if self.goal is None:
            return problems
        return [replace(p, prompt=with_goal(p.prompt, self.goal(p))) for p in problems]

    def extract_answer(self, completion: str) -> str | None:
        return self.task.extract_answer(strip_lookahead(completion))

    def score(self, problem: Problem, completion: str) -> float:
        return self.task.score(problem, strip_lookahead(completion))

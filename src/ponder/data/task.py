"""The Task protocol: problems with a prompt, a reference answer and a scorer.

Every task in ponder (synthetic generators, reasoning-gym datasets, BIG-bench files) is a
:class:`Task`. Training and held-out problems of a task never overlap: a problem belongs to
the held-out split exactly when a stable hash of its prompt falls in the held-out bucket, so
the split is the same whatever the seed or the number of problems drawn.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from ponder.data import answers

Split = Literal["train", "test"]
#: Share of the problem space that is held out (by prompt hash).
HELD_OUT_FRACTION = 0.1


@dataclass(frozen=True)
class Problem:
    """One task instance.

    ``prompt`` is the exact text the model continues; ``answer`` the reference answer;
    ``thought`` a worked scratchpad (without delimiters) when the task can produce one;
    ``choices`` the options of a multiple-choice problem.
    """

    prompt: str
    answer: str
    thought: str | None = None
    choices: tuple[str, ...] | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)


def is_held_out(prompt: str, fraction: float = HELD_OUT_FRACTION) -> bool:
    """Deterministic train/test assignment of a prompt (independent of any seed)."""
    digest = hashlib.blake2b(prompt.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def normalize_answer(text: str) -> str:
    """Lower-case, trim, collapse whitespace, drop trailing punctuation."""
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(".!?;,")


@runtime_checkable
class Task(Protocol):
    """What every task provides: reproducible problems per split, answer extraction and scoring.

    ``ponder.data.get_task(name)`` returns one; a new task only needs these three methods and a ``name``.
    """

    name: str

    def problems(self, n: int, seed: int = 0, split: Split = "train") -> list[Problem]:
        """``n`` problems of ``split``, reproducible from ``seed``."""
        ...

    def extract_answer(self, completion: str) -> str | None:
        """The answer stated by a completion (thoughts excluded), or None if there is none."""
        ...

    def score(self, problem: Problem, completion: str) -> float:
        """Score in [0, 1] of ``completion`` for ``problem``."""
        ...


def first_line_answer(completion: str) -> str | None:
    """Default answer extraction: the first non-empty line outside any thought, leading ``: = > , ;`` stripped."""
    return answers.extract("first_line", completion)


def describe_answer_rule(task) -> str:
    """How ``task`` reads answers, in words (a task may describe its own rule)."""
    own = getattr(task, "answer_rule_description", None)
    return own() if own else answers.describe_rule(getattr(task, "answer_rule", "first_line"))


def problem_answer_prefixes(problems: Sequence[Problem]) -> list[str]:
    """Each problem's answer scaffold (``meta["answer_prefix"]``, "" when it has none): what a chat template
    leaves outside the user turn (:meth:`ponder.lm.thinking.ThoughtFormat.prompt_ids`)."""
    return [str(p.meta.get("answer_prefix", "")) for p in problems]


class GeneratedTask:
    """Base for tasks defined by a seeded generator of problems.

    Subclasses implement :meth:`sample(rng) -> Problem`. Drawing rejects problems of the
    other split and, while the space allows, duplicates.
    """

    name = "generated"
    #: Share of the problem space held out (by the hash of :meth:`split_key`).
    held_out_fraction = HELD_OUT_FRACTION

    def sample(self, rng) -> Problem:  # pragma: no cover - abstract
        raise NotImplementedError

    def split_key(self, problem: Problem) -> str:
        """What decides a problem's split and identity (the prompt; a task whose prompt does not hold the
        whole problem, e.g. one whose goal is left out, names more)."""
        return problem.prompt

    def iter_problems(self, seed: int = 0, split: Split = "train") -> Iterator[Problem]:
        import random

        rng = random.Random(f"{self.name}:{split}:{seed}")
        want_test = split == "test"
        while True:
            p = self.sample(rng)
            if is_held_out(self.split_key(p), self.held_out_fraction) == want_test:
                yield p

    def problems(self, n: int, seed: int = 0, split: Split = "train") -> list[Problem]:
        out, seen = [], set()
        attempts = 0
        for p in self.iter_problems(seed, split):
            attempts += 1
            key = self.split_key(p)
            if key in seen and attempts < 50 * n:
                continue
            seen.add(key)
            out.append(p)
            if len(out) == n:
                return out
        return out  # pragma: no cover - iter_problems is infinite

    #: How the answer is read (:mod:`ponder.data.answers`); ``ponder eval --answer-rule`` replaces it.
    answer_rule = "first_line"

    def extract_answer(self, completion: str) -> str | None:
        return answers.extract(self.answer_rule, completion)

    def score(self, problem: Problem, completion: str) -> float:
        got = self.extract_answer(completion)
        return float(got is not None and normalize_answer(got) == normalize_answer(problem.answer))


def majority_answer(answers: Sequence[str | None]) -> str | None:
    """Most frequent normalised answer (None answers ignored); ties go to the earliest seen."""
    normed = [normalize_answer(a) for a in answers if a is not None]
    if not normed:
        return None
    counts = Counter(normed)
    best = max(counts.values())
    return next(a for a in normed if counts[a] == best)


def thought_budget(task) -> int:
    """A thought budget comfortably above the task's own scratchpads (tokens = chars here)."""
    lengths = [len(p.thought or "") for p in task.problems(50, seed=0)]
    return max(32, 2 * max(lengths, default=16))


def task_thought_budget(task, given: int | None) -> int:
    """``given`` when set, else :func:`thought_budget` for a task that can write scratchpads (``sample``), else 256."""
    if given is not None:
        return given
    return thought_budget(task) if hasattr(task, "sample") else 256

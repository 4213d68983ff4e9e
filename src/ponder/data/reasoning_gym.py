"""Any reasoning-gym dataset as a ponder :class:`~ponder.data.task.Task`.

reasoning-gym (optional extra ``tasks``) generates procedural problems with verifiable
answers and ships a scorer per dataset; this adapter reuses both rather than reimplementing
them.

Formatting (fixed, so every model sees the same thing): the prompt is the entry's question,
stripped, followed by ``answer_prefix`` (default ``"\\nAnswer: "``), so a completion is
``<think>...</think>ANSWER`` or just ``ANSWER``, as for the synthetic tasks.

Answer extraction: the text after the thought (None if the thought is left open), first
non-empty line, stripped. When a reference answer spans several lines (matrices, grids),
:meth:`ReasoningGymTask.score` takes as many non-empty lines as the reference has.

Train/test disjointness: each split draws from its own reasoning-gym seeds (derived from
the split name, the caller's seed and a chunk counter) *and* keeps only prompts whose hash
(:func:`~ponder.data.task.is_held_out`) puts them in that split, so no prompt can ever appear
in both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from ponder.data import answers
from ponder.data.task import Problem, Split, is_held_out
from ponder.lm.delimiters import split_thought

INSTALL_HINT = "pip install 'ponder[tasks]'"
DEFAULT_ANSWER_PREFIX = "\nAnswer: "


def _import_reasoning_gym():
    try:
        import reasoning_gym
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"reasoning-gym tasks (rg:<name>) need the optional 'reasoning-gym' package: {INSTALL_HINT}"
        ) from e
    return reasoning_gym


def reasoning_gym_datasets() -> list[str]:
    """Names of every dataset reasoning-gym registers (what ``rg:<name>`` accepts)."""
    _import_reasoning_gym()
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def _derived_seed(*parts: Any) -> int:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


class ReasoningGymTask:
    """Problems of the reasoning-gym dataset ``dataset_name``.

    ``size`` is how many entries one reasoning-gym chunk generates before moving to the next
    seed; ``kwargs`` go to the dataset's config (e.g. ``min_terms=2`` for
    ``basic_arithmetic``). Raises ``ValueError`` listing the known names when
    ``dataset_name`` is not registered.
    """

    def __init__(self, dataset_name: str, size: int = 500, answer_prefix: str = DEFAULT_ANSWER_PREFIX, **kwargs: Any):
        _import_reasoning_gym()
        known = reasoning_gym_datasets()
        if dataset_name not in known:
            raise ValueError(f"unknown reasoning-gym dataset {dataset_name!r}; known datasets: {', '.join(known)}")
        if size < 1:
            raise ValueError("size must be >= 1")
        self.dataset_name = dataset_name
        self.name = f"rg:{dataset_name}"
        self.size = size
        self.answer_prefix = answer_prefix
        self.kwargs = kwargs
        self._scorer = self._dataset(seed=0, size=1)  # validates kwargs now, scores later

    def _dataset(self, seed: int, size: int):
        import reasoning_gym

        try:
            return reasoning_gym.create_dataset(self.dataset_name, size=size, seed=seed, **self.kwargs)
        except (TypeError, AssertionError) as e:  # unknown option / the config's own validate()
            raise ValueError(f"invalid options for reasoning-gym dataset {self.dataset_name!r}: {e}") from e

    def to_problem(self, entry: dict) -> Problem:
        """The ponder problem of a reasoning-gym entry (the entry is kept in ``meta``)."""
        answer = entry.get("answer")
        return Problem(
            prompt=str(entry["question"]).strip() + self.answer_prefix,
            answer="" if answer is None else str(answer),
            meta={"entry": entry, "answer_prefix": self.answer_prefix},
        )

    def iter_problems(self, seed: int = 0, split: Split = "train", max_chunks: int | None = None) -> Iterator[Problem]:
        """Problems of ``split`` (duplicates included), chunk after chunk of fresh seeds."""
        want_test = split == "test"
        chunk = 0
        while max_chunks is None or chunk < max_chunks:
            ds = self._dataset(seed=_derived_seed(self.dataset_name, split, seed, chunk), size=self.size)
            for i in range(len(ds)):
                p = self.to_problem(ds[i])
                if is_held_out(p.prompt) == want_test:
                    yield p
            chunk += 1

    def problems(self, n: int, seed: int = 0, split: Split = "train") -> list[Problem]:
        """Up to ``n`` distinct problems (fewer only if the dataset's space runs out)."""
        out: list[Problem] = []
        seen: set[str] = set()
        # Held-out problems are ~10% of each chunk; allow enough chunks to find them.
        max_chunks = 20 + (50 * n) // self.size
        for p in self.iter_problems(seed, split, max_chunks=max_chunks):
            if p.prompt in seen:
                continue
            seen.add(p.prompt)
            out.append(p)
            if len(out) == n:
                break
        return out

    #: How the answer is read (:mod:`ponder.data.answers`); ``ponder eval --answer-rule`` replaces it.
    answer_rule = "first_line"

    def extract_answer(self, completion: str) -> str | None:
        return answers.extract(self.answer_rule, completion)

    def _extract_lines(self, completion: str, n_lines: int) -> str | None:
        if n_lines <= 1:
            return self.extract_answer(completion)
        _, answer_text, closed = split_thought(completion)
        if not closed:
            return None
        lines = [ln.strip() for ln in answer_text.splitlines() if ln.strip()]
        return "\n".join(lines[:n_lines]) or None

    def score(self, problem: Problem, completion: str) -> float:
        """reasoning-gym's own ``score_answer`` on the extracted answer (0.0 when there is none)."""
        entry = problem.meta.get("entry")
        if entry is None:
            raise ValueError("this problem was not made by ReasoningGymTask (its meta has no 'entry')")
        got = self._extract_lines(completion, problem.answer.strip().count("\n") + 1)
        if got is None:
            return 0.0
        try:
            value = float(self._scorer.score_answer(got, entry))
        except Exception:  # a scorer that chokes on malformed answers means a wrong answer
            return 0.0
        return min(1.0, max(0.0, value))

"""Document sources for training: a deterministic, replayable stream of ``(text, answer_char_start)``.

RLP and continued pretraining read the same sources, so the compute-matched comparison sees
the same text. A task source renders training problems as documents and marks where the
answer starts (the position class used in the logs: information gain at answer positions vs
elsewhere); a file source has no such mark. Streams are infinite (files cycle, reshuffled
each epoch) and depend only on the seed, so a resumed run replays them exactly.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ponder.data.corpus import _iter_train_problems, read_documents, render_problem
from ponder.data.registry import get_task
from ponder.data.task import Task
from ponder.errors import PonderError

Document = tuple[str, "int | None"]


@dataclass
class TaskSource:
    """Training problems of ``task`` as documents: ``prompt answer`` (or with a scratchpad, by ``think_fraction``)."""

    task: Task
    seed: int = 0
    think_fraction: float = 0.0
    split: str = "train"

    @property
    def name(self) -> str:
        return f"task:{self.task.name}"

    def stream(self) -> Iterator[Document]:

        rng = random.Random(f"source:{self.seed}")
        if self.split == "train":
            problems = _iter_train_problems(self.task, self.seed)
        else:
            problems = iter(self.task.problems(10**4, seed=self.seed, split=self.split))
        for problem in problems:
            think = problem.thought is not None and rng.random() < self.think_fraction
            text = render_problem(problem, think)
            yield text, len(text) - len(problem.answer)


@dataclass
class FileSource:
    """Documents of a corpus file or folder (see :func:`ponder.data.corpus.read_documents`), cycled."""

    path: str
    seed: int = 0
    text_field: str = "text"

    def __post_init__(self):
        self.docs = read_documents(self.path, self.text_field)

    @property
    def name(self) -> str:
        return f"file:{Path(self.path).name}"

    def stream(self) -> Iterator[Document]:
        rng = random.Random(f"file:{self.seed}")
        order = list(range(len(self.docs)))
        while True:
            rng.shuffle(order)
            for i in order:
                yield self.docs[i], None


def make_source(corpus: str | None, task: str, seed: int, think_fraction: float = 0.0, text_field: str = "text"):
    """A file source when ``corpus`` is given, else the task's training problems."""
    if corpus:
        return FileSource(corpus, seed, text_field)

    t = get_task(task)
    if not hasattr(t, "problems"):
        raise PonderError(f"task {task!r} cannot produce documents")
    return TaskSource(t, seed, think_fraction)

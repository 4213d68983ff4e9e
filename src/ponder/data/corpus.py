"""Training documents: read them from files, or render them from a task.

:func:`read_documents` accepts
  * ``.txt`` / ``.md``: if the file contains an explicit separator (``<|endoftext|>``, as in
    TinyStories dumps, or a form feed ``\\f``) documents are split there; otherwise documents
    are separated by blank lines (each paragraph is a document). Short documents suit the
    small context of the models trained here, and truncation in :func:`tokenize_documents`
    would otherwise throw away most of a long file.
  * ``.jsonl``: one JSON object per line, the document in ``text_field`` (blank lines skipped);
  * ``.parquet``: the ``text_field`` column (needs pyarrow, extra ``parquet``);
  * a folder written by ``datasets.Dataset.save_to_disk`` (or a ``DatasetDict`` with a
    ``train`` split), the ``text_field`` column;
  * any other folder: every supported file under it, recursively, in sorted path order.
Whitespace-only documents are dropped everywhere. Every problem raises :class:`CorpusError`.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

from ponder.data.task import Problem, Task
from ponder.errors import PonderError
from ponder.lm.delimiters import wrap_thought

TEXT_SUFFIXES = (".txt", ".md")
SUPPORTED_SUFFIXES = (*TEXT_SUFFIXES, ".jsonl", ".parquet")
_EXPLICIT_SEPARATOR = re.compile(r"<\|endoftext\|>|\f")
_BLANK_LINES = re.compile(r"\n[ \t\r]*\n")


class CorpusError(PonderError, ValueError):
    """A corpus that cannot be read; the message says which file and what to do."""


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8.") from e
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror or e}. Check the path and its permissions.") from e


def split_text_documents(text: str) -> list[str]:
    """Split a plain-text corpus into documents (rule in the module docstring)."""
    sep = _EXPLICIT_SEPARATOR if _EXPLICIT_SEPARATOR.search(text) else _BLANK_LINES
    return [d.strip() for d in sep.split(text.replace("\r\n", "\n")) if d.strip()]


def _read_jsonl(path: Path, text_field: str) -> list[str]:
    docs = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}, line {lineno}: not valid JSON ({e.msg} at column {e.colno}).") from e
        if not isinstance(obj, dict) or text_field not in obj:
            keys = ", ".join(map(repr, obj)) if isinstance(obj, dict) else f"a JSON {type(obj).__name__}"
            raise CorpusError(
                f"{path}, line {lineno}: no {text_field!r} field (found {keys}); every line must be an "
                f"object with the text in {text_field!r}, or pass the right text_field."
            )
        if not isinstance(obj[text_field], str):
            raise CorpusError(
                f"{path}, line {lineno}: field {text_field!r} is {type(obj[text_field]).__name__}, not a string."
            )
        docs.append(obj[text_field])
    return docs


def _column(names: list[str], path: Path, text_field: str) -> None:
    if text_field not in names:
        raise CorpusError(
            f"{path} has no column {text_field!r} (columns: {', '.join(names)}); pass the right text_field."
        )


def _read_parquet(path: Path, text_field: str) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise CorpusError(f"reading {path} needs pyarrow: pip install 'ponder[parquet]'.") from e
    try:
        schema = pq.read_schema(path)
        _column(schema.names, path, text_field)
        column = pq.read_table(path, columns=[text_field]).column(text_field).to_pylist()
    except CorpusError:
        raise
    except Exception as e:  # pyarrow raises its own error types for corrupt files
        raise CorpusError(f"cannot read {path} as parquet: {e}") from e
    return [str(x) for x in column if x is not None]


def _is_saved_hf_dataset(path: Path) -> bool:
    return (
        (path / "dataset_info.json").is_file()
        or (path / "dataset_dict.json").is_file()
        or (path / "state.json").is_file()
    )


def _read_hf_dataset(path: Path, text_field: str) -> list[str]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise CorpusError(
            f"{path} looks like a saved Hugging Face dataset; reading it needs: pip install datasets."
        ) from e
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise CorpusError(f"cannot load {path} with datasets.load_from_disk: {e}") from e
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise CorpusError(
                f"{path} is a DatasetDict without a 'train' split (splits: {', '.join(ds)}); pass the split's folder."
            )
        ds = ds["train"]
    _column(list(ds.column_names), path, text_field)
    return [str(x) for x in ds[text_field] if x is not None]


def _read_file(path: Path, text_field: str) -> list[str]:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise CorpusError(
            f"{path}: unsupported file type {suffix or '(no extension)'!r}; supported: "
            f"{', '.join(SUPPORTED_SUFFIXES)}, a folder saved by datasets.Dataset.save_to_disk, or a folder of such files."
        )
    if path.stat().st_size == 0:
        raise CorpusError(f"{path} is empty; give a file with at least one document.")
    if suffix in TEXT_SUFFIXES:
        return split_text_documents(_read_text(path))
    if suffix == ".jsonl":
        return _read_jsonl(path, text_field)
    return _read_parquet(path, text_field)


def read_documents(path: str | Path, text_field: str = "text") -> list[str]:
    """Every non-blank document of the corpus at ``path`` (formats in the module docstring)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CorpusError(
            f"corpus path {str(path)!r} does not exist; give a file ({', '.join(SUPPORTED_SUFFIXES)}) or a folder."
        )
    if path.is_dir():
        if _is_saved_hf_dataset(path):
            docs = _read_hf_dataset(path, text_field)
        else:
            files = sorted(
                f
                for f in path.rglob("*")
                if f.is_file()
                and f.suffix.lower() in SUPPORTED_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(path).parts)
            )
            if not files:
                raise CorpusError(f"folder {path} holds no corpus files; supported: {', '.join(SUPPORTED_SUFFIXES)}.")
            docs = [d for f in files for d in _read_file(f, text_field)]
    else:
        docs = _read_file(path, text_field)
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise CorpusError(f"corpus {path} contains no documents (only blank text).")
    return docs


#: Content of a pause thought: one token, because RLP thoughts have at least one (the paper's minimum length).
PAUSE_THOUGHT = " "


def render_problem(
    problem: Problem, think: bool, split_at: int = 0, pause_at: int | None = None, lazy: bool = False
) -> str:
    """``prompt<think>thought</think>answer`` when ``think`` and the problem has a thought, else ``prompt answer``.

    ``split_at`` > 0 places the thought after that many characters of the answer, the text
    resuming after it (``prompt an<think>thought</think>swer``): a model trained on such
    documents learns that a thought can sit inside text without derailing it.

    ``pause_at``: an offset into ``prompt + answer`` where a pause thought (:data:`PAUSE_THOUGHT`)
    is inserted (never where the answer starts). A model trained on such documents learns that
    where no reasoning is needed a thought is trivial and the text simply goes on.

    ``lazy``: the thought, when there is one, is a pause instead of the worked scratchpad (a
    thought that does not help the answer).
    """
    text = problem.prompt + problem.answer
    inserts = []
    if think and problem.thought is not None:
        inserts.append((len(problem.prompt) + split_at, wrap_thought(PAUSE_THOUGHT if lazy else problem.thought)))
    if pause_at is not None:
        if not 0 < pause_at <= len(text) or pause_at == len(problem.prompt):
            raise ValueError(
                f"pause_at={pause_at} must be in 1..{len(text)} and not the answer start {len(problem.prompt)}"
            )
        inserts.append((pause_at, wrap_thought(PAUSE_THOUGHT)))
    for offset, piece in sorted(inserts, key=lambda x: x[0], reverse=True):  # right to left keeps offsets valid
        text = text[:offset] + piece + text[offset:]
    return text


def pause_offset(problem: Problem, rng: random.Random) -> int:
    """A uniform offset for a pause thought: any boundary of ``prompt + answer`` but the start and the answer start."""
    n = len(problem.prompt) + len(problem.answer)
    offset = rng.randint(1, n - 1)
    return offset + 1 if offset >= len(problem.prompt) else offset


def _iter_train_problems(task: Task, seed: int) -> Iterator[Problem]:
    iter_problems = getattr(task, "iter_problems", None)
    if iter_problems is not None:
        yield from iter_problems(seed, "train")
        return
    round_ = 0
    while True:  # fixed problem sets (BIG-bench): reshuffle with a fresh seed each round
        batch = task.problems(1024, seed=seed * 1_000_003 + round_, split="train")
        if not batch:
            raise ValueError(f"task {task.name!r} has no training problems")
        yield from batch
        round_ += 1


def iter_task_documents(
    task: Task,
    seed: int = 0,
    think_fraction: float = 0.5,
    mid_answer_thoughts: float = 0.0,
    pause_thoughts: float = 0.0,
    lazy_thoughts: float = 0.0,
) -> Iterator[str]:
    """Endless training documents of ``task``'s train split (see :func:`task_corpus`).

    ``mid_answer_thoughts``: share of thought documents whose thought sits at a random point
    inside the answer rather than before it. ``pause_thoughts``: share of documents that get
    one pause thought at a random point other than the answer start (see :func:`render_problem`).
    ``lazy_thoughts``: share of thought documents whose thought is a pause instead of the
    scratchpad: a model trained on them can reason when it thinks but usually does not.
    """
    for name, v in (
        ("think_fraction", think_fraction),
        ("mid_answer_thoughts", mid_answer_thoughts),
        ("pause_thoughts", pause_thoughts),
        ("lazy_thoughts", lazy_thoughts),
    ):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    rng = random.Random(f"task-corpus:{task.name}:{seed}")
    pause_rng = random.Random(f"task-corpus-pauses:{task.name}:{seed}")  # separate: pauses leave the rest unchanged
    lazy_rng = random.Random(f"task-corpus-lazy:{task.name}:{seed}")  # likewise
    for problem in _iter_train_problems(task, seed):
        think = rng.random() < think_fraction
        split_at = 0
        if think and mid_answer_thoughts > 0 and rng.random() < mid_answer_thoughts and len(problem.answer) > 1:
            split_at = rng.randint(1, len(problem.answer) - 1)
        pause_at = None
        if pause_thoughts > 0 and pause_rng.random() < pause_thoughts and problem.answer:
            pause_at = pause_offset(problem, pause_rng)
        lazy = think and lazy_thoughts > 0 and lazy_rng.random() < lazy_thoughts
        yield render_problem(problem, think, split_at, pause_at, lazy)


def task_corpus(task: Task, n: int, seed: int = 0, think_fraction: float = 0.5) -> list[str]:
    """``n`` documents rendering training problems of ``task``, reproducible from ``seed``.

    Each problem becomes ``prompt + "<think>" + thought + "</think>" + answer`` with
    probability ``think_fraction`` and ``prompt + answer`` otherwise (always the latter when
    the problem has no thought), so a model trained on it learns both modes.
    """
    if not 0.0 <= think_fraction <= 1.0:
        raise ValueError(f"think_fraction must be in [0, 1], got {think_fraction}")
    problems = task.problems(n, seed, "train")
    if len(problems) < n:  # a fixed problem set smaller than n: cycle through it
        problems += list(itertools.islice(_iter_train_problems(task, seed), n - len(problems)))
    rng = random.Random(f"task-corpus:{task.name}:{seed}")
    return [render_problem(p, rng.random() < think_fraction) for p in problems]


def tokenize_documents(tokenizer, docs: list[str], max_length: int) -> list[list[int]]:
    """Token ids per document: the tokenizer's own special tokens (e.g. BOS), then ``eos_token_id``, cut to ``max_length``."""
    if max_length < 1:
        raise ValueError("max_length must be >= 1")
    if not docs:
        return []
    encoded = tokenizer(list(docs), add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    eos = tokenizer.eos_token_id
    out = []
    for ids in encoded:
        ids = list(ids)
        if eos is not None and len(ids) < max_length and (not ids or ids[-1] != eos):
            ids.append(eos)
        out.append(ids)
    return out

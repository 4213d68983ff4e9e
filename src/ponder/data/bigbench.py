"""A BIG-bench JSON task file (``task.json``) as a ponder :class:`~ponder.data.task.Task`.

Prompts follow BIG-bench's own JSON-task formatting so that results are comparable:
``task_prefix + example_input_prefix + input [+ choice_prefix + option ...] +
example_output_prefix`` with BIG-bench's defaults (``"\\nQ: "``, ``"\\n  choice: "``,
``"\\nA: "``); leading whitespace of the prompt is dropped (a prompt should not start with a
newline). Options of a multiple-choice example are listed (unless
``append_choices_to_input`` is false) sorted, then shuffled by a generator seeded by the
example's input, so the correct option is not always in the file's position and the order is
the same on every run.

Scoring. Answer extraction is the default one (first non-empty line after the thought).
Generative examples (``target``: a string or a list of strings): 1.0 when the normalised
answer equals any normalised target. Multiple-choice examples (``target_scores``): the
answer must name an option by its text (normalised exact match; options are not lettered,
as in BIG-bench) and scores 1.0 if that option has the highest score, else 0.0.

Splits. The problem set is the file's examples. A prompt is held out when
:func:`~ponder.data.task.is_held_out` says so; if that leaves either split empty (small
files), the distinct prompts are instead shuffled by a generator seeded by the task name
(not by the caller's seed, so the splits stay disjoint whatever seed is used) and the first
10% (at least one, when there are two or more) are held out.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from ponder.data.task import Problem, Split, first_line_answer, is_held_out, normalize_answer
from ponder.errors import PonderError

DEFAULTS = {
    "task_prefix": "",
    "example_input_prefix": "\nQ: ",
    "example_output_prefix": "\nA: ",
    "choice_prefix": "\n  choice: ",
}


class BigBenchError(PonderError, ValueError):
    """A BIG-bench task file that cannot be used (missing, not JSON, wrong shape)."""


def load_task_json(path: str | Path) -> dict:
    """Read and check a BIG-bench task file; raises :class:`BigBenchError` saying what is wrong."""
    path = Path(path)
    if path.is_dir() and (path / "task.json").is_file():
        path = path / "task.json"
    if not path.is_file():
        raise BigBenchError(f"BIG-bench task file {str(path)!r} does not exist; pass the path of a task.json file.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BigBenchError(
            f"BIG-bench task file {str(path)!r} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}."
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise BigBenchError(f"cannot read BIG-bench task file {str(path)!r}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise BigBenchError(
            f'BIG-bench task file {str(path)!r} has no "examples" list; a task.json needs '
            '"examples": [{"input": ..., "target": ...} or {"input": ..., "target_scores": {...}}].'
        )
    if not data["examples"]:
        raise BigBenchError(f'BIG-bench task file {str(path)!r} has an empty "examples" list.')
    for i, ex in enumerate(data["examples"]):
        if not isinstance(ex, dict) or "input" not in ex or ("target" not in ex and "target_scores" not in ex):
            raise BigBenchError(
                f'example {i} of BIG-bench task file {str(path)!r} needs an "input" and a "target" or "target_scores".'
            )
        problem = _example_problem(ex)
        if problem:
            raise BigBenchError(f"example {i} of BIG-bench task file {str(path)!r}: {problem}.")
    data.setdefault("name", path.parent.name if path.name == "task.json" else path.stem)
    return data


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _example_problem(ex: dict) -> str | None:
    """What is wrong with the targets of one example, or None."""
    if "target_scores" in ex:
        scores = ex["target_scores"]
        if not isinstance(scores, dict) or not scores:
            return '"target_scores" must be a non-empty mapping of option -> score, e.g. {"yes": 1, "no": 0}'
        bad = [k for k, v in scores.items() if not _is_number(v)]
        if bad:
            return f'"target_scores" of option {bad[0]!r} is {scores[bad[0]]!r}, not a finite number'
        return None
    target = ex["target"]
    targets = target if isinstance(target, list) else [target]
    if not targets:
        return '"target" is an empty list; give the answer as a string or a non-empty list of strings'
    if any(isinstance(t, (dict, list)) or t is None for t in targets):
        return '"target" must be a string or a list of strings'
    return None


def _targets(target) -> list[str]:
    return [str(t) for t in target] if isinstance(target, list) else [str(target)]


class BigBenchTask:
    """The examples of one BIG-bench JSON task file (see the module docstring for the format)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.data = load_task_json(self.path)
        self.name = f"bigbench:{self.data['name']}"
        self.all_problems = [self.make(ex) for ex in self.data["examples"]]
        self._test_prompts = self._held_out_prompts()

    def _fmt(self, key: str) -> str:
        return str(self.data.get(key, DEFAULTS[key]))

    def make(self, example: dict) -> Problem:
        """The ponder problem of one BIG-bench example (the example is kept in ``meta``)."""
        text = self._fmt("task_prefix") + self._fmt("example_input_prefix") + str(example["input"])
        if "target_scores" in example:
            scores = {str(k): float(v) for k, v in example["target_scores"].items()}
            options = sorted(scores)
            random.Random(str(example["input"])).shuffle(options)
            if self.data.get("append_choices_to_input", True):
                prefix = self._fmt("choice_prefix")
                text += prefix + prefix.join(options)
            best = max(scores.values())
            answer = next(o for o in options if scores[o] == best)
            meta = {"example": example, "target_scores": scores}
            choices: tuple[str, ...] | None = tuple(options)
        else:
            targets = _targets(example["target"])
            answer, choices = targets[0], None
            meta = {"example": example, "targets": targets}
        prompt = (text + self._fmt("example_output_prefix")).lstrip()
        return Problem(prompt=prompt, answer=answer, choices=choices, meta=meta)

    def _held_out_prompts(self) -> frozenset[str]:
        prompts = list(dict.fromkeys(p.prompt for p in self.all_problems))
        test = {p for p in prompts if is_held_out(p)}
        if test and len(test) < len(prompts):
            return frozenset(test)
        if len(prompts) < 2:
            return frozenset()
        random.Random(f"bigbench-split:{self.name}").shuffle(prompts)
        return frozenset(prompts[: max(1, round(0.1 * len(prompts)))])

    def split_problems(self, split: Split) -> list[Problem]:
        """Every problem of ``split``, in file order."""
        want_test = split == "test"
        return [p for p in self.all_problems if (p.prompt in self._test_prompts) == want_test]

    def problems(self, n: int, seed: int = 0, split: Split = "train") -> list[Problem]:
        """Up to ``n`` problems of ``split`` in a seeded random order."""
        pool = self.split_problems(split)
        random.Random(f"{self.name}:{split}:{seed}").shuffle(pool)
        return pool[:n]

    def extract_answer(self, completion: str) -> str | None:
        return first_line_answer(completion)

    def score(self, problem: Problem, completion: str) -> float:
        got = self.extract_answer(completion)
        if got is None:
            return 0.0
        got = normalize_answer(got)
        scores = problem.meta.get("target_scores")
        if scores is not None:
            best = max(scores.values())
            return float(any(normalize_answer(o) == got and s == best for o, s in scores.items()))
        targets = problem.meta.get("targets", [problem.answer])
        return float(any(normalize_answer(t) == got for t in targets))

"""A BIG-bench JSON task file (``task.json``) as a ponder :class:`~ponder.data.task.Task`, as BIG-bench defines it.

Follows ``bigbench/api/json_task.py`` (v1.0.0), zero-shot:

* **Examples**: duplicates (same JSON) dropped, file order kept.
* **Prompt**: ``task_prefix + example_input_prefix + input [+ choice_prefix + option ...] +
  example_output_prefix`` with BIG-bench's defaults (``"\\nQ: "``, ``"\\n  choice: "``,
  ``"\\nA: "``), nothing stripped. Options are appended whenever an example has
  ``target_scores`` and ``append_choices_to_input`` is not false (so a generative file with
  both ``target`` and ``target_scores`` shows them too), in BIG-bench's order: the sorted
  options permuted by ``numpy.random.RandomState(42)``.
* **Targets**: ``target`` (a string or a list); a multiple-choice example without one takes
  the first option (file order) of highest score. Options are scored in file order.
* **Metrics**: the file's ``metrics`` (when a file names none: ``exact_str_match`` for
  examples with ``target``, ``multiple_choice_grade`` for examples with ``target_scores``),
  plus the two calibration metrics BIG-bench adds to ``multiple_choice_grade``. The headline is
  ``preferred_score`` (default: the first metric).
* **Generative answers**: the generated text cut after the first ``stop_string`` (when found
  after position 0), then the *first* match of ``output_regex`` ("" when none); a file with
  neither gets BIG-bench's default regex ``[^\\.\\?\\!\\;\\n]+`` (the text up to the first
  ``.?!;`` or newline). No other normalisation: ``exact_str_match`` compares characters.
  In think mode the generated text is what follows the thought.

:mod:`ponder.eval.bigbench` runs a model on these; :mod:`ponder.data.bigbench_metrics` holds
the metrics. :meth:`BigBenchTask.score` (the reward of GRPO and the accuracy of jobs that only
generate) is the preferred generative metric on an example with ``target``; on a
multiple-choice-only example it is 1.0 when the post-processed answer, lower-cased and
stripped, names an option of highest score (a generation rule of ponder's, not a BIG-bench metric).

Splits: a prompt is held out when :func:`~ponder.data.task.is_held_out` says so; if that leaves
either split empty (small files), the distinct prompts are shuffled by a generator seeded by the
task name and the first 10% (at least one) are held out. ``split="all"`` draws from every
example as BIG-bench's ``max_examples`` does (``RandomState(seed)``; ``--seed 42`` is BIG-bench's own draw).
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import numpy as np

from ponder.data import answers
from ponder.data.bigbench_metrics import (
    GENERATIVE_METRICS,
    GENERATIVE_SCORES,
    MULTIPLE_CHOICE_METRICS,
    SCORING_METRICS,
)
from ponder.data.task import Problem, Split, is_held_out, normalize_answer
from ponder.errors import PonderError

DEFAULTS = {
    "task_prefix": "",
    "example_input_prefix": "\nQ: ",
    "example_output_prefix": "\nA: ",
    "choice_prefix": "\n  choice: ",
}
#: BIG-bench's ``_DEFAULT_REGEX``: used when a file sets neither ``output_regex`` nor ``stop_string``.
DEFAULT_OUTPUT_REGEX = r"[^\.\?\!\;\n]+"
#: BIG-bench's ``random_seed`` default (the permutation of options).
BIGBENCH_SEED = 42


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
            '"examples": [{"input": ..., "target": ...} or {"input": ..., "target_scores": {...}}] '
            "(a composite task's folder: pass one subtask's task.json)."
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
    _check_metrics(data, path)
    return data


def _check_metrics(data: dict, path: Path) -> None:
    known = GENERATIVE_METRICS + MULTIPLE_CHOICE_METRICS + SCORING_METRICS
    metrics = data.get("metrics")
    if metrics is not None and (not isinstance(metrics, list) or not metrics):
        raise BigBenchError(f'BIG-bench task file {str(path)!r}: "metrics" must be a non-empty list of metric names.')
    unknown = [m for m in metrics or [] if m not in known]
    if unknown:
        raise BigBenchError(
            f"BIG-bench task file {str(path)!r} names metric {unknown[0]!r}, which BIG-bench does not define; "
            f"use one of {', '.join(known)}."
        )
    preferred = data.get("preferred_score")
    if preferred is not None and preferred not in known + ("rouge1", "rouge2", "rougeLsum"):
        raise BigBenchError(f"BIG-bench task file {str(path)!r}: preferred_score {preferred!r} is not a metric name.")
    needs = {"target_scores": MULTIPLE_CHOICE_METRICS, "target": GENERATIVE_METRICS + SCORING_METRICS}
    for key, names in needs.items():
        if set(metrics or []) & set(names):
            missing = next((i for i, ex in enumerate(data["examples"]) if key not in ex), None)
            if missing is not None:
                raise BigBenchError(
                    f'example {missing} of BIG-bench task file {str(path)!r} has no "{key}", which its metrics need.'
                )


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
        top, low = max(scores.values()), min(scores.values())
        if "target" not in ex and ((len(scores) == 1 and top == 0) or (len(scores) > 1 and top <= low)):
            return '"target_scores" gives no option a higher score than the others (no correct choice)'
    if "target" not in ex:
        return None
    target = ex["target"]
    targets = target if isinstance(target, list) else [target]
    if not targets:
        return '"target" is an empty list; give the answer as a string or a non-empty list of strings'
    if any(isinstance(t, (dict, list)) or t is None for t in targets):
        return '"target" must be a string or a list of strings'
    return None


def distinct_examples(examples: list[dict]) -> list[dict]:
    """The examples without repeats (same JSON), in file order, as BIG-bench keeps them."""
    seen, out = set(), []
    for ex in examples:
        key = json.dumps(ex)
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


def permuted_options(options, seed: int = BIGBENCH_SEED) -> list[str]:
    """The options in the order BIG-bench lists them in a prompt: sorted, then ``RandomState(seed).permutation``."""
    return [str(o) for o in np.random.RandomState(seed=seed).permutation(sorted(options))]


def postprocess(text: str, stop_string: str | None, output_regex: str | None) -> str:
    """BIG-bench's ``postprocess_output``: cut after the first ``stop_string`` (found after position 0), then the
    first match of ``output_regex`` ("" when none)."""
    if stop_string:
        index = text.find(stop_string)
        if index > 0:
            text = text[: index + len(stop_string)]
    if output_regex:
        match = next(iter(re.findall(output_regex, text)), "")
        if isinstance(match, tuple):
            raise BigBenchError(f"output_regex {output_regex!r} has several groups; use non-capturing groups (?:...)")
        text = match
    return text


class BigBenchTask:
    """The examples of one BIG-bench JSON task file (see the module docstring for the semantics)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.data = load_task_json(self.path)
        self.name = f"bigbench:{self.data['name']}"
        self.examples = distinct_examples(self.data["examples"])
        has_target = any("target" in ex for ex in self.examples)
        has_scores = any("target_scores" in ex for ex in self.examples)
        default = (["exact_str_match"] if has_target else []) + (["multiple_choice_grade"] if has_scores else [])
        self.metrics: list[str] = list(self.data.get("metrics") or default)
        self.preferred_score: str = self.data.get("preferred_score") or self.metrics[0]
        self.generative_metrics = [m for m in GENERATIVE_METRICS if m in self.metrics]
        self.scoring_metrics = [m for m in SCORING_METRICS if m in self.metrics]
        self.multiple_choice_metrics = [m for m in MULTIPLE_CHOICE_METRICS if m in self.metrics]
        if "multiple_choice_grade" in self.multiple_choice_metrics:  # BIG-bench adds the calibration scores
            extra = ("calibration_multiple_choice_brier_score", "expected_calibration_error")
            self.multiple_choice_metrics += [m for m in extra if m not in self.multiple_choice_metrics]
        self.absolute_normalization = bool(self.data.get("absolute_normalization", False))
        self.stop_string: str | None = self.data.get("stop_string")
        self.output_regex: str | None = self.data.get("output_regex")
        if self.output_regex is None and self.stop_string is None:
            self.output_regex = DEFAULT_OUTPUT_REGEX
        self.shots = 0  # examples (with their targets) before each prompt; BIG-bench's few-shot format
        self.all_problems = [self.make(ex) for ex in self.examples]
        self._test_prompts = self._held_out_prompts()

    # ------------------------------------------------------------ formatting
    def _fmt(self, key: str) -> str:
        return str(self.data.get(key, DEFAULTS[key]))

    #: ``"bigbench"``: the file's own rule (``stop_string``, ``output_regex``); or a rule of :mod:`ponder.data.answers`.
    answer_rule = "bigbench"

    def answer_rule_description(self) -> str:
        """The extraction rule in words (shown by ``ponder tasks`` and in the eval JSON)."""
        if self.answer_rule != "bigbench":
            return answers.describe_rule(self.answer_rule) + " (not the file's own rule)"
        parts = ["text after the thought"]
        if self.stop_string:
            parts.append(f"cut after stop_string {self.stop_string!r}")
        if self.output_regex:
            which = " (BIG-bench's default)" if self.output_regex == DEFAULT_OUTPUT_REGEX else ""
            parts.append(f"first match of output_regex {self.output_regex!r}{which}")
        return "BIG-bench's: " + ", ".join(parts)

    def make(self, example: dict) -> Problem:
        """The ponder problem of one BIG-bench example; ``meta`` holds what the metrics read.

        ``meta``: ``targets`` (list), ``target_scores`` (dict or None), ``answer_prefix`` (the
        output prefix that ends the prompt; a chat template goes around the rest).
        """
        text = str(example["input"])
        scores = None
        if "target_scores" in example:
            scores = {str(k): float(v) for k, v in example["target_scores"].items()}
            if self.data.get("append_choices_to_input", True):
                prefix = self._fmt("choice_prefix")
                text += prefix + prefix.join(permuted_options(example["target_scores"].keys()))
        if "target" in example:
            target = example["target"]
            targets = [str(t) for t in target] if isinstance(target, list) else [str(target)]
        else:
            best = max(scores.values())
            targets = [next(k for k, v in scores.items() if v == best)]
        output_prefix = self._fmt("example_output_prefix")
        prompt = self._fmt("task_prefix") + self._fmt("example_input_prefix") + text + output_prefix
        return Problem(
            prompt=prompt,
            answer=targets[0],
            choices=tuple(scores) if scores is not None else None,
            meta={"example": example, "targets": targets, "target_scores": scores, "answer_prefix": output_prefix},
        )

    # ------------------------------------------------------------ splits
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

    def problems(self, n: int, seed: int = 0, split: Split | str = "train") -> list[Problem]:
        """Up to ``n`` problems of ``split`` in a seeded random order; ``"all"``: BIG-bench's draw of ``n`` examples
        (with :attr:`shots` > 0, each prompt led by that many other examples and their targets)."""
        if split == "all":
            return self._bigbench_draw(n, seed)
        if self.shots:
            raise BigBenchError(f"{self.name}: few-shot prompts (shots={self.shots}) are drawn with split 'all' only")
        pool = self.split_problems(split)
        random.Random(f"{self.name}:{split}:{seed}").shuffle(pool)
        return pool[:n]

    def _bigbench_draw(self, n: int, seed: int) -> list[Problem]:
        """BIG-bench's ``make_nshot_dataset`` with ``max_examples = n`` and ``random_seed = seed``: one
        ``RandomState`` draws the queries, then for each query its shots (other examples) and each shot's target."""
        rng = np.random.RandomState(seed=seed)
        total = len(self.all_problems)
        if not self.shots:
            return list(self.all_problems) if n >= total else [self.all_problems[i] for i in rng.permutation(total)[:n]]
        if total < self.shots + 1:
            raise BigBenchError(f"{self.name}: {total} examples are too few for {self.shots} shots")
        sep = str(self.data.get("few_shot_example_separator", "\n"))
        prefix = self._fmt("task_prefix")
        out = []
        for i in rng.choice(total, min(n, total), replace=False):
            others = [j for j in range(total) if j != i]
            shown = []
            for j in rng.choice(len(others), self.shots, replace=False):
                shot = self.all_problems[others[j]]
                targets = shot.meta["targets"]
                shown.append(shot.prompt[len(prefix) :] + targets[rng.choice(len(targets))])
            query = self.all_problems[i]
            prompt = prefix + sep.join(shown) + sep + query.prompt[len(prefix) :]
            out.append(Problem(prompt=prompt, answer=query.answer, choices=query.choices, meta=query.meta))
        return out

    # ------------------------------------------------------------ answers
    def response(self, completion: str) -> str:
        """BIG-bench's post-processed response to ``completion`` (the text after the closed thought; "" if none)."""
        if self.answer_rule != "bigbench":
            return answers.extract(self.answer_rule, completion) or ""
        text = answers.answer_text(completion)
        return "" if text is None else postprocess(text, self.stop_string, self.output_regex)

    def extract_answer(self, completion: str) -> str | None:
        return self.response(completion) or None

    def score(self, problem: Problem, completion: str) -> float:
        got = self.response(completion)
        scores = problem.meta.get("target_scores")
        if "target" not in problem.meta["example"]:
            best = max(scores.values())
            return float(any(normalize_answer(o) == normalize_answer(got) and s == best for o, s in scores.items()))
        metric = self.preferred_score if self.preferred_score in GENERATIVE_SCORES else "exact_str_match"
        return GENERATIVE_SCORES[metric]([problem.meta["targets"]], [got])[0]

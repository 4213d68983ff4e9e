"""Reflection analysis (after arXiv 2510.08308): what a trace does after its first answer.

The trace is the thought's lines followed by the answer text. The first line that states a
candidate answer ends the "pre-answer" part; everything after it is reflection. Candidate
answers inside a thought are found by :func:`candidate_in_line` (explicit "answer is X",
"answer: X", ``\\boxed{X}``; pass your own ``finder`` for other formats); the answer text's
candidate is the task's own extraction. The reflection is

* ``confirmatory``: the final answer equals the first;
* ``corrective``: the first was wrong, the final is right;
* ``harmful``: the first was right, the final is wrong;
* ``wrong_to_wrong``: changed from one wrong answer to another.

``none``: the first answer is the final line (nothing follows). Traces with no detectable
answer at all are counted apart. Token share after the first answer uses ``count_tokens``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ponder.data.task import normalize_answer

_CANDIDATE = re.compile(r"\\boxed\{([^{}]+)\}|answer\s*(?:is|:|=)\s*\$?([^\s,;$]+)", re.I)
CLASSES = ("confirmatory", "corrective", "harmful", "wrong_to_wrong", "none")


def candidate_in_line(line: str) -> str | None:
    """An explicitly stated answer in ``line`` (first match), else None."""
    m = _CANDIDATE.search(line)
    if not m:
        return None
    return (m.group(1) or m.group(2)).strip().rstrip(".")


@dataclass
class TraceAnalysis:
    first_answer: str | None
    final_answer: str | None
    first_line: int | None  # index into the trace's lines
    chars_before: int  # characters up to the end of the first-answer line
    kind: str | None  # one of CLASSES, None when there is no answer


def analyse_trace(
    thought: str,
    answer_text: str,
    final_answer: str | None,
    is_right: Callable[[str], bool],
    finder: Callable[[str], str | None] = candidate_in_line,
) -> TraceAnalysis:
    """Locate the first candidate answer and classify the reflection after it."""
    lines = thought.splitlines(keepends=True) + [answer_text]
    pos = 0
    first = first_line = None
    for i, line in enumerate(lines):
        pos += len(line)
        cand = final_answer if i == len(lines) - 1 else finder(line)
        if cand is not None:
            first, first_line = cand, i
            break
    if first is None:
        return TraceAnalysis(None, final_answer, None, pos, None)
    final = final_answer if final_answer is not None else first
    if first_line == len(lines) - 1:
        kind = "none"
    elif normalize_answer(first) == normalize_answer(final):
        kind = "confirmatory"
    else:
        a, b = is_right(first), is_right(final)
        kind = "corrective" if (not a and b) else "harmful" if (a and not b) else "wrong_to_wrong"
    return TraceAnalysis(first, final, first_line, pos, kind)


@dataclass
class ReflectionResult:
    traces: int
    no_answer: int
    kinds: dict[str, int]
    token_share_after_first: float
    accuracy_final: float
    accuracy_at_first: float
    mean_first_line: float

    def to_json(self) -> dict:
        return {
            "traces": self.traces,
            "no_answer_traces": self.no_answer,
            "kinds": self.kinds,
            "token_share_after_first_answer": self.token_share_after_first,
            "accuracy_final": self.accuracy_final,
            "accuracy_if_stopped_at_first_answer": self.accuracy_at_first,
            "mean_first_answer_line": self.mean_first_line,
        }


def reflection_result(
    analyses: Sequence[TraceAnalysis],
    traces: Sequence[str],
    is_right: Sequence[Callable[[str], bool]],
    count_tokens: Callable[[str], int] = len,
) -> ReflectionResult:
    """Aggregate analyses; ``traces[i]`` is the text (thought + answer) that ``analyses[i]`` indexes into."""
    kinds = Counter(a.kind for a in analyses if a.kind is not None)
    found = [(a, t, r) for a, t, r in zip(analyses, traces, is_right) if a.first_answer is not None]
    total = sum(count_tokens(t) for _, t, _ in found)
    after = sum(count_tokens(t[a.chars_before :]) for a, t, _ in found)
    n = len(analyses)
    return ReflectionResult(
        traces=n,
        no_answer=n - len(found),
        kinds={k: kinds.get(k, 0) for k in CLASSES},
        token_share_after_first=after / total if total else float("nan"),
        accuracy_final=sum(a.final_answer is not None and r(a.final_answer) for a, _, r in found) / max(n, 1),
        accuracy_at_first=sum(r(a.first_answer) for a, _, r in found) / max(n, 1),
        mean_first_line=sum(a.first_line for a, _, _ in found) / len(found) if found else float("nan"),
    )

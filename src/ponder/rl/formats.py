"""Output-format tracking: which shape each completion takes, and the shares per step.

RL tends to amplify one output format early (format collapse); logging the share of each format
every step makes that visible. A completion is classified on two axes:

* thought: ``closed`` (a thought the model closed itself), ``unclosed`` (opened and never
  closed, or cut at the budget and closed for it), ``none`` (no thought at all);
* answer (the first non-empty line outside the thought): ``number`` (an optionally signed
  integer or decimal), ``other`` (any other text), ``empty`` (nothing).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from ponder.lm.delimiters import split_thought

THOUGHT_CLASSES = ("closed", "unclosed", "none")
ANSWER_CLASSES = ("number", "other", "empty")
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def classify_completion(text: str, closed: bool | None = None) -> tuple[str, str]:
    """``(thought class, answer class)`` of one completion (see module docstring).

    ``closed`` overrides what the text says about the thought: a rollout that cut a thought at
    its budget closes it in the text, but the model did not close it (pass ``closed=False``).
    """
    thought, answer_text, text_closed = split_thought(text)
    if thought is None:
        think = "none"
    else:
        think = "closed" if (text_closed if closed is None else closed) else "unclosed"
    line = next((s.strip() for s in answer_text.splitlines() if s.strip()), "") if text_closed else ""
    answer = "empty" if not line else ("number" if _NUMBER.fullmatch(line) else "other")
    return think, answer


def format_shares(texts: Sequence[str], closed: Sequence[bool] | None = None) -> dict[str, float]:
    """Share of completions in each class, as metrics ``format/think_<c>`` and ``format/answer_<c>``.

    Also ``format/entropy``: entropy (nats) of the joint (thought, answer) class distribution;
    0 when every completion has the same format (collapse), at most ``log 9``. Empty input: {}.
    """
    if not texts:
        return {}
    flags = list(closed) if closed is not None else [None] * len(texts)
    if len(flags) != len(texts):
        raise ValueError(f"{len(flags)} closed flags for {len(texts)} completions")
    pairs = [classify_completion(t, c) for t, c in zip(texts, flags)]
    n = len(pairs)
    think, answer, joint = Counter(p[0] for p in pairs), Counter(p[1] for p in pairs), Counter(pairs)
    out = {f"format/think_{c}": think[c] / n for c in THOUGHT_CLASSES}
    out.update({f"format/answer_{c}": answer[c] / n for c in ANSWER_CLASSES})
    out["format/entropy"] = sum((k / n) * math.log(n / k) for k in joint.values())  # +0.0 when collapsed
    return out

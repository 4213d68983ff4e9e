"""Answer extraction rules: how the answer is read from what a model wrote, named so a user can see and choose.

Every rule reads the *answer text*: what follows the closed thought (the whole completion in
no-think mode); a thought left open has no answer (None). Rules:

* ``first_line``: the first non-empty line, with leading punctuation (``: = > , ;``) and
  whitespace stripped (``": 1009"`` -> ``"1009"``);
* ``last_number``: the last number written (``-12``, ``3.5``, ``1,009`` -> ``1009``);
* ``boxed``: the content of the last ``\\boxed{...}`` (nested braces allowed);
* ``regex:PATTERN``: the first match of PATTERN (its first group when it has groups), as
  lm-evaluation-harness's regex filter.

BIG-bench files have their own rule (``stop_string`` and ``output_regex``; see
:mod:`ponder.data.bigbench`), stated by the task's ``answer_rule``.
"""

from __future__ import annotations

import re

from ponder.errors import ConfigError
from ponder.lm.delimiters import split_thought

RULES = {
    "first_line": "first non-empty line after the thought, leading ': = > , ;' stripped",
    "last_number": "last number after the thought",
    "boxed": "content of the last \\boxed{...} after the thought",
    "regex:PATTERN": "first match of PATTERN after the thought (its first group if it has one)",
}
#: The help of every job's ``--answer-rule`` (``ponder eval``, ``grpo``, ``ttrl``): one rule reads answers in evaluation
#: and in the rewards that train on them.
ANSWER_RULE_HELP = (
    "how answers are read: first_line, last_number, boxed or regex:PATTERN (default: the task's own rule, shown by "
    "`ponder tasks`; a BIG-bench file's is its stop_string / output_regex)"
)
_LEADING_JUNK = re.compile(r"^[\s:=>,;]+")
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def check_rule(spec: str) -> str:
    """``spec`` if it names a rule, else a one-line :class:`ConfigError` listing the rules."""
    if spec in RULES and spec != "regex:PATTERN":
        return spec
    if spec.startswith("regex:"):
        try:
            re.compile(spec[len("regex:") :])
        except re.error as e:
            raise ConfigError(f"answer rule {spec!r}: the pattern is not a valid regular expression ({e})") from None
        return spec
    raise ConfigError(f"unknown answer rule {spec!r}; choose first_line, last_number, boxed or regex:PATTERN")


def describe_rule(spec: str) -> str:
    """The rule in words (for ``ponder tasks`` and the eval JSON)."""
    if spec.startswith("regex:"):
        return f"first match of {spec[len('regex:') :]!r} after the thought"
    return RULES.get(spec, spec)


def answer_text(completion: str) -> str | None:
    """What follows the closed thought (the whole completion when it has none); None when the thought is open."""
    _, text, closed = split_thought(completion)
    return text if closed else None


def first_line(text: str) -> str | None:
    for line in text.splitlines():
        line = _LEADING_JUNK.sub("", line).strip()
        if line:
            return line
    return None


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


def boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip() or None
    return None


def first_regex_match(pattern: str, text: str) -> str | None:
    m = re.search(pattern, text)
    if m is None:
        return None
    got = m.group(1) if m.re.groups else m.group(0)
    return (got.strip() or None) if got is not None else None


def extract(spec: str, completion: str) -> str | None:
    """The answer ``completion`` states under rule ``spec`` (None when there is none)."""
    text = answer_text(completion)
    if text is None:
        return None
    if spec == "first_line":
        return first_line(text)
    if spec == "last_number":
        return last_number(text)
    if spec == "boxed":
        return boxed(text)
    if spec.startswith("regex:"):
        return first_regex_match(spec[len("regex:") :], text)
    raise ConfigError(f"unknown answer rule {spec!r}; choose first_line, last_number, boxed or regex:PATTERN")

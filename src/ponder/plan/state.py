"""The planning state: a reasoning chain ``c`` that is rendered around each task input ``x``.

A :class:`Chain` has three kinds of content, matching the three edit scales:

* ``instructions`` and ``exemplars``: lines placed before the input (instruction scale);
* ``steps``: a reasoning prefix, the first steps of the model's thought (step scale);
* ``answer_format``: how the input and the answer are laid out (instruction scale).

Words inside any line are the token scale. The chain is task-level: the same chain is
rendered around every input of a minibatch and its outcome is averaged over them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ponder.lm.delimiters import THINK_CLOSE, THINK_OPEN

#: Answer formats a chain can select.
#: ``think``: the model continues a thought that starts with the chain's steps, then answers;
#: ``direct``: the model answers at once (the steps, if any, sit in a closed thought before it);
#: ``qa``: ``Q: x`` / ``A:`` lines, answered at once.
FORMATS = ("think", "direct", "qa")
#: Chain fields that hold lines of text (token-scale edits act on their words).
LINE_FIELDS = ("instructions", "exemplars", "steps")


@dataclass(frozen=True)
class Chain:
    instructions: tuple[str, ...] = ()
    exemplars: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    answer_format: str = "think"

    def __post_init__(self):
        if self.answer_format not in FORMATS:
            raise ValueError(f"answer_format must be one of {FORMATS}, got {self.answer_format!r}")

    def lines(self, field: str) -> tuple[str, ...]:
        return getattr(self, field)

    def with_lines(self, field: str, lines) -> Chain:
        return replace(self, **{field: tuple(lines)})

    @property
    def is_empty(self) -> bool:
        return not (self.instructions or self.exemplars or self.steps)

    def key(self) -> str:
        """Canonical text identifying the chain's effect: its rendering around a placeholder input.

        Two chains that render alike (e.g. one step ``"a b"`` and two steps ``"a"``, ``"b"``)
        share a key, so the cache treats them as one and candidate lists keep only one.
        """
        return render_prompt(self, "\x00")

    def header(self) -> str:
        """Instruction and exemplar lines, each ended by a newline ('' when there are none)."""
        return "".join(line + "\n" for line in self.instructions + self.exemplars)

    def describe(self) -> str:
        """Human-readable multi-line form (for trajectories and reports)."""
        out = [f"format: {self.answer_format}"]
        out += [f"instruction: {s}" for s in self.instructions]
        out += [f"exemplar: {s}" for s in self.exemplars]
        out += [f"step {i}: {s}" for i, s in enumerate(self.steps)]
        return "\n".join(out)

    def to_json(self) -> dict:
        return {
            "instructions": list(self.instructions),
            "exemplars": list(self.exemplars),
            "steps": list(self.steps),
            "answer_format": self.answer_format,
        }

    @classmethod
    def from_json(cls, data: dict) -> Chain:
        return cls(
            tuple(data.get("instructions", ())),
            tuple(data.get("exemplars", ())),
            tuple(data.get("steps", ())),
            data.get("answer_format", "think"),
        )


def render_prompt(chain: Chain, x: str) -> str:
    """The exact text the LM continues for input ``x`` under ``chain``.

    ``think``: ``header x <think>steps`` (open: the model goes on thinking, closes and answers);
    ``direct``: ``header x`` plus ``<think>steps</think>`` when there are steps;
    ``qa``: ``header Q: x`` newline ``A: `` (steps, when present, in a closed thought before ``A:``).
    """
    steps = " ".join(chain.steps)
    head = chain.header()
    if chain.answer_format == "think":
        return head + x + THINK_OPEN + steps
    closed = THINK_OPEN + steps + THINK_CLOSE if chain.steps else ""
    if chain.answer_format == "direct":
        return head + x + closed
    return head + "Q: " + x + "\n" + closed + "A: "


def render_parts(chain: Chain, x: str) -> tuple[str, str | None]:
    """:func:`render_prompt` split where the model takes over: ``(prompt, steps)`` for the ``think`` format
    (the steps open the thought), ``(whole prompt, None)`` otherwise."""
    if chain.answer_format == "think":
        return chain.header() + x, " ".join(chain.steps)
    return render_prompt(chain, x), None


def distinct(problems: list) -> list:
    """``problems`` without repeats (same prompt and answer), in their first order."""
    return list({(p.prompt, p.answer): p for p in problems}.values())  # a dict keeps the first of each key's order

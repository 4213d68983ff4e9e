"""What one mode (think or no-think) of an evaluation returns, whichever scorer produced it.

:class:`ModeResult` holds the figures and the examples; :func:`mode_warnings` says when most thoughts ran
unclosed or most answers could not be read. Shared by the task scorer (:mod:`ponder.eval.accuracy`) and the
BIG-bench scorer (:mod:`ponder.eval.bigbench`), so the BIG-bench scorer does not import the scorer that calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: A warning is raised when more than this share of thoughts runs unclosed to the budget, or of examples has no answer.
WARN_FRACTION = 0.5


@dataclass
class ModeResult:
    """One mode's figures. ``metric`` names the headline (``accuracy`` is its value); ``metrics`` every metric;
    ``examples`` what the model wrote, per example (prompt as the model read it, raw output, answer, targets,
    per-example scores, whether the thought closed)."""

    accuracy: float
    mean_thought_tokens: float = 0.0
    unclosed_fraction: float = 0.0
    no_answer_fraction: float = 0.0
    pass_at_k: float | None = None
    maj_at_k: float | None = None
    k: int | None = None
    per_problem: list[float] = field(default_factory=list, repr=False)
    metric: str = "accuracy"
    metrics: dict[str, float] = field(default_factory=dict)
    answer_rule: str = ""
    examples: list[dict] = field(default_factory=list, repr=False)
    warnings: list[str] = field(default_factory=list)

    @property
    def closed_fraction(self) -> float:
        return 1.0 - self.unclosed_fraction

    def to_json(self, samples: int | None = 0) -> dict:
        """The mode's JSON; ``samples`` bounds the stored examples (None: all; 0: no ``examples`` key)."""
        out = {
            "metric": self.metric,
            "accuracy": self.accuracy,
            "metrics": dict(self.metrics) or {self.metric: self.accuracy},
            "closed_fraction": self.closed_fraction,
            "mean_thought_tokens": self.mean_thought_tokens,
            "unclosed_fraction": self.unclosed_fraction,
            "no_answer_fraction": self.no_answer_fraction,
            "answer_rule": self.answer_rule,
        }
        if self.k is not None:
            out[f"pass@{self.k}"] = self.pass_at_k
            out[f"maj@{self.k}"] = self.maj_at_k
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if samples != 0:
            out["examples"] = self.examples[:samples] if samples is not None else list(self.examples)
        return out


def mode_warnings(
    mode: str, think: bool, unclosed_fraction: float, no_answer_fraction: float, budget: int
) -> list[str]:
    """One-line warnings: most thoughts ran unclosed to the budget; most examples gave no answer."""
    out = []
    if think and unclosed_fraction > WARN_FRACTION:
        out.append(
            f"{mode}: {unclosed_fraction:.0%} of thoughts ran unclosed to the budget ({budget} tokens) and were closed "
            "there; raise --max-thought-tokens, or check the chat template / think instruction the model was trained with"
        )
    if no_answer_fraction > WARN_FRACTION:
        out.append(
            f"{mode}: no answer could be extracted for {no_answer_fraction:.0%} of examples; see the examples in "
            "--json and choose the answer rule (--answer-rule)"
        )
    return out


def decode_prompts(tokenizer, prompt_ids: list[list[int]]) -> list[str]:
    """The prompts as the model read them (chat template included), for the examples of the JSON."""
    return tokenizer.batch_decode(prompt_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

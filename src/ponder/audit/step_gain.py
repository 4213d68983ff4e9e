"""Information gain per reasoning step (after Wu et al., arXiv 2506.02126).

A thought is split into steps ``s_1..s_K`` (its lines; a one-line thought is split at
whitespace, which for ponder's scratchpads gives one step per column). With
``LL_k = log p(answer | prompt, <think> s_1..s_k </think>)`` (nats, teacher-forced,
reference answer), the gain of step ``k`` is ``LL_k - LL_{k-1}`` and the total gain
``LL_K - LL_0``. A checkpoint that answers correctly while its steps carry little gain is
rationalizing after the fact; ``--compare`` puts two checkpoints side by side. A thought of
more than ``max_steps`` steps has consecutive steps merged into ``max_steps`` groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ponder.audit.evidence import interpretation_withheld
from ponder.lm.delimiters import think_token_ids
from ponder.lm.score import score_pairs
from ponder.lm.tokens import decode_with_offsets, tokens_within


def split_steps(thought: str) -> list[str]:
    """Lines of a multi-line thought, else its whitespace-separated chunks; empties dropped."""
    lines = [s for s in thought.splitlines() if s.strip()]
    return lines if len(lines) > 1 else thought.split()


def group_steps(steps: Sequence[str], max_steps: int | None, multiline: bool) -> list[str]:
    """Merge consecutive steps into at most ``max_steps`` near-equal groups (scoring cost grows with the steps)."""
    if not max_steps or len(steps) <= max_steps:
        return list(steps)
    bounds = [round(i * len(steps) / max_steps) for i in range(max_steps + 1)]
    return [join_steps(steps[a:b], multiline) for a, b in zip(bounds, bounds[1:])]


def join_steps(steps: Sequence[str], multiline: bool) -> str:
    return ("\n" if multiline else " ").join(steps)


def step_gains(logliks: Sequence[float]) -> list[float]:
    """``[LL_0..LL_K]`` -> per-step gains ``[LL_1-LL_0, ..., LL_K-LL_{K-1}]``."""
    return [b - a for a, b in zip(logliks[:-1], logliks[1:])]


def step_ends(thought: str, max_steps: int | None = None) -> list[int]:
    """Character offsets in ``thought`` where each step ends (steps merged into ``max_steps`` groups as in :func:`group_steps`)."""
    ends, pos = [], 0
    for step in split_steps(thought):
        pos = thought.index(step, pos) + len(step)
        ends.append(pos)
    if max_steps and len(ends) > max_steps:
        ends = [ends[round(i * len(ends) / max_steps) - 1] for i in range(1, max_steps + 1)]
    return ends


def prefix_contexts(
    tokenizer,
    prompt_ids: Sequence[int],
    thought_ids: Sequence[int],
    open_id: int,
    close_id: int,
    max_steps: int | None = None,
) -> list[list[int]]:
    """``K + 1`` contexts ``prompt <think> s_1..s_k </think>``, k = 0..K, each a prefix of the sampled thought ids.

    Steps are found in the thought's text (:func:`split_steps`); step k keeps the thought tokens
    that end within its text (a token straddling two steps goes with the later one).
    """
    text, offsets = decode_with_offsets(tokenizer, thought_ids)
    cuts = [0] + [tokens_within(offsets, end) for end in step_ends(text, max_steps)]
    return [[*prompt_ids, open_id, *thought_ids[:c], close_id] for c in cuts]


def answer_logliks(
    model,
    tokenizer,
    prompt_ids: Sequence[int],
    thought_ids: Sequence[int],
    answer: str,
    batch_size: int = 32,
    max_steps: int | None = None,
) -> list[float]:
    """``[LL_0..LL_K]`` of the reference ``answer`` after each step prefix of one sampled thought (see module doc)."""
    open_id, close_id = think_token_ids(tokenizer)
    contexts = prefix_contexts(tokenizer, prompt_ids, thought_ids, open_id, close_id, max_steps)
    return score_pairs(model, tokenizer, contexts, [answer] * len(contexts), batch_size=batch_size).sum.tolist()


@dataclass
class StepGainResult:
    """Per model: mean gain by step index, mean total gain, accuracy of the traces scored."""

    per_model: dict[str, dict]

    def to_json(self) -> dict:
        out = {"units": "nats", "models": self.per_model}
        names = list(self.per_model)
        if len(names) == 2:
            a, b = (self.per_model[n]["mean_total_gain"] for n in names)
            out["total_gain_change"] = (b - a) / abs(a) if a else float("nan")  # relative, second vs first
            models = self.per_model.values()
            # Reading a fall as post-hoc rationalization needs traces and an accuracy that holds above 0.
            out["interpretation_withheld"] = interpretation_withheld(
                min(m["traces"] for m in models), [m["accuracy"] for m in models]
            )
        return out


def summarize_gains(traces_logliks: Sequence[Sequence[float]], correct: Sequence[bool]) -> dict:
    """Mean gain per step index, mean total gain and mean per-step gain over traces."""
    per_step: dict[int, list[float]] = {}
    totals, per_trace_mean = [], []
    for lls in traces_logliks:
        gains = step_gains(lls)
        for k, gain in enumerate(gains):
            per_step.setdefault(k + 1, []).append(gain)
        totals.append(lls[-1] - lls[0])
        if gains:
            per_trace_mean.append(sum(gains) / len(gains))

    def mean(xs):
        return sum(xs) / len(xs) if xs else float("nan")

    return {
        "traces": len(totals),
        "accuracy": mean([float(c) for c in correct]),
        "mean_total_gain": mean(totals),
        "mean_gain_per_step": mean(per_trace_mean),
        "gain_by_step": {str(k): mean(v) for k, v in sorted(per_step.items())},
        "mean_steps": mean([len(lls) - 1 for lls in traces_logliks]),
    }

"""On-policy vs off-policy next-token entropy (after arXiv 2605.25459).

The model is teacher-forced on a trajectory (prompt + continuation) and the entropy (nats)
of each next-token distribution inside the continuation is averaged; the first
continuation token is skipped so every measured distribution has seen at least one
trajectory token. On-policy: the model's own samples. Off-policy: another model's samples
(``--compare``) and the model's own samples with a fraction of tokens replaced by random
tokens from the trajectories' own vocabulary. Ratio = off-policy / on-policy entropy:
post-trained models are reported at 3-4x.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ponder.lm.logprobs import token_logprobs
from ponder.lm.padding import model_device, pad_id_of, pad_ids


def perturb(
    tokens: Sequence[int], fraction: float, pool: Sequence[int], rng: random.Random
) -> tuple[list[int], list[int]]:
    """Replace ``round(fraction * len)`` positions with a different token from ``pool``; -> (tokens, positions)."""
    out = list(tokens)
    k = round(fraction * len(out))
    positions = sorted(rng.sample(range(len(out)), k))
    for p in positions:
        choices = [t for t in pool if t != out[p]]
        if choices:
            out[p] = rng.choice(choices)
    return out, positions


@torch.no_grad()
def continuation_entropy(
    model,
    tokenizer,
    contexts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    batch_size: int = 16,
    skip_first: bool = True,
) -> list[list[float]]:
    """Per continuation: entropies (nats) of the distributions predicting its tokens (2..end with ``skip_first``)."""

    out = []
    for start in range(0, len(contexts), batch_size):
        ctx, cont = contexts[start : start + batch_size], continuations[start : start + batch_size]
        ids, mask = pad_ids([list(c) + list(r) for c, r in zip(ctx, cont)], pad_id_of(tokenizer), model_device(model))
        _, ent = token_logprobs(model, ids, mask, return_entropy=True)
        ent = ent.cpu()
        for row, (c, r) in enumerate(zip(ctx, cont)):
            out.append(ent[row, len(c) + int(skip_first) : len(c) + len(r)].tolist())
    return out


def mean_entropy(per_trajectory: Sequence[Sequence[float]]) -> float:
    """Token-weighted mean over trajectories."""
    flat = [x for xs in per_trajectory for x in xs]
    return sum(flat) / len(flat) if flat else float("nan")


@dataclass
class PolicyEntropyResult:
    on_policy: float
    off_policy: dict[str, float] = field(default_factory=dict)
    trajectories: int = 0
    perturb_fraction: float = 0.0

    def to_json(self) -> dict:
        return {
            "units": "nats",
            "on_policy_entropy": self.on_policy,
            "off_policy_entropy": self.off_policy,
            "ratio_off_over_on": {
                k: (v / self.on_policy if self.on_policy else float("inf")) for k, v in self.off_policy.items()
            },
            "trajectories": self.trajectories,
            "perturb_fraction": self.perturb_fraction,
        }

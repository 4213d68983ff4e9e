"""Information gain of a model's own thoughts, by position class (an evaluation, not training).

For a model M at a position t of a held-out document:

    IG(t) = E_{c ~ M}[ log p_M(x_t | x_<t, c) ] - log p_M(x_t | x_<t)

estimated with G sampled thoughts. It is RLP's reward with the model itself as the no-think
baseline, so base, CPT and RLP models can be compared on the same footing: how much does
thinking help this model predict the next token, at answer positions and elsewhere?
"""

from __future__ import annotations

import torch

from ponder.lm.thinking import ThoughtFormat
from ponder.rl.batches import target_logprob_sums
from ponder.rl.generation import TransformersBackend
from ponder.rl.positions import ANSWER, OTHER, Doc
from ponder.rl.rollout import make_rollout


@torch.no_grad()
def information_gain(
    model,
    tokenizer,
    docs: list[Doc],
    group_size: int = 4,
    max_thought_tokens: int = 64,
    temperature: float = 0.7,
    seed: int = 0,
    batch_size: int = 64,
) -> dict:
    """Mean IG over all positions of each class (answer / other) and overall, plus counts."""
    device = next(model.parameters()).device
    fmt = ThoughtFormat.of(model, tokenizer)
    backend = TransformersBackend(model, tokenizer, fmt, batch_size=batch_size)
    was_training = model.training
    model.eval()
    per_class: dict[str, list[float]] = {ANSWER: [], OTHER: []}
    for start in range(0, len(docs), batch_size):
        chunk = docs[start : start + batch_size]
        gens = [torch.Generator(device=device).manual_seed(seed * 1_000_003 + start + i) for i in range(len(chunk))]
        # Every eligible position of every document (per_doc large), k = 1.
        rollout = make_rollout(
            model,
            model,
            tokenizer,
            fmt,
            chunk,
            per_doc=10**6,
            group_size=group_size,
            k=1,
            max_thought_tokens=max_thought_tokens,
            temperature=temperature,
            generators=gens,
            backend=backend,
        )
        if rollout is None:
            continue
        b = rollout.batch
        with_thought = target_logprob_sums(b.scores(model)[0], b.target_mask)
        gain = with_thought.cpu().view(len(rollout.positions), group_size).mean(1) - rollout.baseline_logp
        for g, cls in zip(gain.tolist(), rollout.classes):
            per_class[cls].append(g)
    model.train(was_training)

    def mean(xs):
        return sum(xs) / len(xs) if xs else float("nan")

    return {
        "answer": mean(per_class[ANSWER]),
        "other": mean(per_class[OTHER]),
        "all": mean(per_class[ANSWER] + per_class[OTHER]),
        "n_answer": len(per_class[ANSWER]),
        "n_other": len(per_class[OTHER]),
    }

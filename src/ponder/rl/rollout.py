"""RLP rollouts: positions in documents, G thoughts per position, and the batch that scores them.

A rollout samples G thoughts ``c`` after ``x_<t <think>`` at each chosen position and lays out
one sequence per thought::

    x_<t  <think>  c_1 .. c_L  </think>  x_t .. x_{t+k-1}
          ^ open   ^ loss mask (+ the model's own </think>)   ^ target mask

so a single teacher-forced forward gives both the thought tokens' log-probs (the policy loss)
and ``log p(x_t | x_<t, c)`` (the reward's first term). The no-think baseline is one
teacher-forced pass per document, which gives ``log p(x_t | x_<t)`` at every position at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ponder.lm.logprobs import TokenScorer
from ponder.lm.padding import model_device, pad_id_of, pad_ids, position_ids_from_mask
from ponder.lm.thinking import Sampling, ThoughtFormat, Thoughts
from ponder.rl.batches import resolve_layout, rlp_padded_batch, rlp_tree_batch
from ponder.rl.positions import Doc, choose_positions
from ponder.train.batch import TrainBatch

POSITION_WEIGHTINGS = ("uniform", "ema_loss", "ema_entropy", "think_prob")


@dataclass
class BaselinePass:
    """What one teacher-forced pass of the no-think baseline gives, per document (``[len(doc)]`` each, 0 at t = 0).

    ``logp[t] = log p(x_t | x_<t)``; ``entropy[t]``: the predictive entropy there (nats);
    ``think_prob[t] = p(<think> | x_<t)``, the model's own wish to think before ``x_t`` (when asked for).
    """

    logp: list[Tensor]
    entropy: list[Tensor]
    think_prob: list[Tensor] | None = None


@torch.no_grad()
def doc_logprobs(model, docs: Sequence[Sequence[int]], pad_id: int, think_id: int | None = None) -> BaselinePass:
    """No-think baseline: one teacher-forced pass per document gives every position's figures at once."""
    ids, mask = pad_ids(docs, pad_id, model_device(model))  # right padding: row i's first len(doc) columns are real
    scorer = TokenScorer(model)
    states, _ = scorer.forward(ids, mask, position_ids_from_mask(mask))
    valid = (mask[:, 1:] != 0) & (mask[:, :-1] != 0)  # column t - 1 predicts position t
    logp, ent = scorer.score(states[:, :-1], ids[:, 1:], valid, return_entropy=True)
    think = None
    if think_id is not None:  # the same states, read at the <think> column
        think = scorer.score(states[:, :-1], torch.full_like(ids[:, 1:], think_id), valid).exp()

    def rows(x: Tensor) -> list[Tensor]:
        x = x.float().cpu()
        return [torch.cat([torch.zeros(1), x[i, : len(d) - 1]]) for i, d in enumerate(docs)]

    return BaselinePass(rows(logp), rows(ent), None if think is None else rows(think))


@dataclass
class Rollout:
    """Everything one RLP step needs about its positions and thoughts (no gradients)."""

    positions: list[tuple[int, int]]  # (doc index, t), B of them
    classes: list[str]  # B position classes
    prefixes: list[list[int]]
    targets: list[list[int]]
    thoughts: Thoughts
    baseline_logp: Tensor  # [B] log p_baseline(x_t..x_{t+k-1} | x_<t), no thought
    batch: TrainBatch  # a TreeBatch, or a PaddedBatch (layout padded)


def position_weights(base: BaselinePass, weighting: str) -> list[Tensor] | None:
    """Per-document weights of the positions to draw (None: uniform)."""
    if weighting not in POSITION_WEIGHTINGS:
        raise ValueError(f"unknown position weighting {weighting!r} ({', '.join(POSITION_WEIGHTINGS)})")
    return {
        "uniform": None,
        "ema_loss": [-lp for lp in base.logp],
        "ema_entropy": base.entropy,
        "think_prob": base.think_prob,
    }[weighting]


def baseline_pass(
    baseline, tokenizer, fmt: ThoughtFormat, docs: Sequence[Doc], position_weighting: str = "uniform"
) -> BaselinePass:
    """The no-think baseline's one pass over ``docs`` (``baseline``: a model), with ``p(<think>)`` when positions are
    drawn by it (``think_prob``)."""
    think_id = fmt.open_id if position_weighting == "think_prob" else None
    return doc_logprobs(baseline, [d.ids for d in docs], pad_id_of(tokenizer), think_id)


def make_rollout(
    policy,
    base: BaselinePass,
    tokenizer,
    fmt: ThoughtFormat,
    docs: Sequence[Doc],
    per_doc: int,
    group_size: int,
    k: int,
    sampling: Sampling,
    generators: Sequence[torch.Generator],
    backend,
    position_weighting: str = "uniform",
    layout: str = "auto",
) -> Rollout | None:
    """Choose positions from the baseline's pass over ``docs`` (``base``: :func:`baseline_pass`), sample G thoughts per position.

    ``position_weighting``: ``uniform``, ``ema_loss`` (draw t in proportion to the baseline's
    -log p(x_t | x_<t)), ``ema_entropy`` (its predictive entropy) or ``think_prob`` (the baseline's
    p(<think> | x_<t): think where the model itself would open a thought). ``generators``: one per
    document; a document's positions and thoughts depend only on it, so data-parallel ranks
    reproduce a single process. ``backend``: a :class:`ponder.rl.generation.GenerationBackend`;
    ``sampling``: the run's :class:`~ponder.lm.thinking.Sampling` (temperature, top-p, thought budget).
    Returns None when no document has an eligible position.
    """
    pad_id = pad_id_of(tokenizer)
    layout = resolve_layout(policy, layout)
    positions = choose_positions(docs, per_doc, generators, position_weights(base, position_weighting))
    if not positions:
        return None
    prefixes = [docs[d].ids[:t] for d, t in positions]
    targets = [docs[d].ids[t : t + k] for d, t in positions]
    baseline_logp = torch.stack([base.logp[d][t : t + k].sum() for d, t in positions])
    # Each position's thoughts get a generator seeded from its document's.
    per_position = [
        torch.Generator(device=generators[d].device).manual_seed(
            int(torch.randint(2**62, (1,), generator=generators[d], device=generators[d].device))
        )
        for d, _ in positions
    ]
    thoughts = backend.generate(prefixes, group_size, sampling, per_position)
    device = model_device(policy)
    if layout == "tree":
        batch = rlp_tree_batch([d.ids for d in docs], positions, k, thoughts, fmt.open_id, fmt.close_id, pad_id, device)
    else:
        batch = rlp_padded_batch(prefixes, targets, thoughts, fmt.open_id, fmt.close_id, pad_id, device)
    classes = [docs[d].position_class(t) for d, t in positions]
    return Rollout(positions, classes, prefixes, targets, thoughts, baseline_logp, batch)

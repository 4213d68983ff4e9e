"""Micro-batches: a step's training pass in parts, gradients accumulated, the same update as one pass.

A step's batch of ``N`` sequences is cut into parts of at most ``rows`` sequences (contiguous, so
RLP's parts hold whole groups: ``rows = micro_batch * G``); each part runs its own forward and
backward, so a step's activation memory is one part's, whatever ``--docs-per-step`` or
``--prompts-per-step``. The optimizer steps once, after the last part.

The accumulated gradient equals the one-pass gradient because each part's loss terms are sums
over their units (sequences, action tokens, ...) divided by the unit's count over the whole step
(:class:`~ponder.train.losses.Term`, :meth:`~ponder.train.engine.Engine.global_counts`); a
``constant`` part keeps the whole batch's ``max_len``.

Shapes: ``N`` sequences of the step, ``L`` columns; a part has ``n <= N`` rows and ``l <= L``
columns (trailing padding cut).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from ponder.train.batch import TrainBatch


def part_rows(num_rows: int, rows: int | None) -> list[Tensor]:
    """Contiguous row indices of the parts: ``[0..rows), [rows..2 rows), ...`` (one part when ``rows`` is None)."""
    size = num_rows if rows is None else max(1, rows)
    return [torch.arange(a, min(a + size, num_rows)) for a in range(0, max(num_rows, 1), max(size, 1))]


def split_step(sb, rows: int | None) -> list:
    """The parts of a :class:`~ponder.train.engine.StepBatch`, each a StepBatch of its rows.

    Each part carries ``sequence_share`` (``n / N``) and ``part`` (its index). Per-token advantages
    ``[N, L]`` are cut like the batch.
    """
    index = part_rows(sb.num_sequences, rows)
    if len(index) == 1:
        return [sb]
    max_len = sb.max_len if sb.max_len is not None else sb.batch.loss_mask.shape[1]
    parts = []
    for i, r in enumerate(index):
        batch = sb.batch.select(r)
        adv = sb.advantages[r.to(sb.advantages.device)]
        if adv.dim() == 2:
            adv = adv[:, : batch.loss_mask.shape[1]]
        parts.append(
            replace(
                sb,
                batch=batch,
                advantages=adv,
                first=None,
                max_len=max_len if sb.reduce == "constant" else sb.max_len,
                sequence_share=len(r) / sb.num_sequences,
                part=i,
            )
        )
    return parts


def scores_in_parts(
    batch: TrainBatch, rows: int | None, score: Callable[[TrainBatch], tuple[Tensor, Tensor]]
) -> tuple[Tensor, Tensor]:
    """``score(part)`` for each part of ``batch``, reassembled as ``(logp, entropy) [N, L]`` (0 where cut off).

    For a pass without gradients (e.g. RLP's rewards when the training pass runs in parts): only
    one part's activations exist at a time.
    """
    shape = batch.loss_mask.shape
    logp = entropy = None
    for r in part_rows(shape[0], rows):
        part = batch.select(r)
        lp, ent = score(part)
        if logp is None:  # fp32, or the scores' own dtype when wider (an fp64 model's)
            dtype = torch.promote_types(lp.dtype, torch.float32)
            logp = torch.zeros(shape, dtype=dtype, device=batch.loss_mask.device)
            entropy = torch.zeros_like(logp)
        width = lp.shape[1]
        logp[r.to(logp.device), :width] = lp.to(logp.dtype)
        entropy[r.to(logp.device), :width] = ent.to(logp.dtype)
    return logp, entropy


class WeightedMeans:
    """Weighted means of named statistics over a step's parts (a part's masked mean, weighted by its tokens)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def add(self, stats: dict, weight: float) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * weight
            self.weights[k] = self.weights.get(k, 0.0) + weight

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.weights[k] if self.weights[k] > 0 else 0.0 for k in self.sums}

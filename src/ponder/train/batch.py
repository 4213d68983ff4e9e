"""The one batch contract of the training loop: what the engine and its micro-batching read of a batch.

The layouts that satisfy it (:class:`~ponder.rl.batches.PaddedBatch`, :class:`~ponder.rl.batches.TreeBatch`)
live with the recipes that build them; the loop knows only this protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class TrainBatch(Protocol):
    """The one batch contract: ``N`` rows of token ids with per-token masks and behaviour log-probs.

    Every ``[N, L]`` tensor is in the layout's own column coordinates (``L``: the layout's row
    width); :meth:`scores` returns log-probs in the same coordinates, so a loss reads a batch
    without knowing its layout. ``loss_mask [N, L]`` bool: the policy's actions;
    ``target_mask [N, L]`` bool: tokens scored but not trained (RLP's reward tokens);
    ``behaviour_logp [N, L]`` fp32: the sampler's log-prob of each action (0 elsewhere);
    ``num_tokens``: tokens the forward computes (padding excluded, a shared prefix once).
    """

    layout: str
    loss_mask: Tensor
    target_mask: Tensor
    behaviour_logp: Tensor

    @property
    def num_tokens(self) -> int: ...

    def __len__(self) -> int:
        """``N``: the rows (sequences) of the batch."""
        ...

    def sequence(self, row: int) -> list[int]:
        """Row ``row``'s whole token ids as the model reads them (a shared prefix included), padding excluded."""
        ...

    def select(self, rows: Tensor) -> TrainBatch:
        """Rows ``rows`` as a batch of the same layout (a micro-batch; the same numbers per row)."""
        ...

    def scores(self, model, inv_temperature: float = 1.0) -> tuple[Tensor, Tensor]:
        """``(logp, entropy) [N, L]``: actions at ``inv_temperature``, targets at 1, 0 elsewhere. Differentiable."""
        ...

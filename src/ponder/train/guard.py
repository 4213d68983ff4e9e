"""No non-finite number reaches the weights: the optimizer-step guard and the end-of-run check.

Every trainer calls :func:`step_if_finite` in place of ``clip_grad_norm_`` + ``optimizer.step()``
+ ``scheduler.step()``: a step whose loss or gradient norm is inf or NaN is skipped (the caller
counts it), and neither the weights, the optimizer state nor the schedule move. A step can still
produce non-finite weights from finite numbers (a huge but finite learning rate);
:func:`require_finite_weights` refuses to publish such a model as ``final/``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ponder.errors import PonderError


class NonFiniteWeightsError(PonderError):
    """Training ended with inf or NaN weights."""


@dataclass
class StepOutcome:
    """``stepped``: the optimizer stepped; ``grad_norm``: the total norm before clipping (inf/NaN when skipped for it)."""

    stepped: bool
    grad_norm: float
    loss_finite: bool


def _all_agree(ok: bool, device: torch.device) -> bool:
    """True only when ``ok`` on every process of the default group, so replicas skip together."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return ok
    flag = torch.tensor([1.0 if ok else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def step_if_finite(
    loss: torch.Tensor,
    parameters: Iterable[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler=None,
    grad_clip: float = math.inf,
) -> StepOutcome:
    """After ``loss.backward()``: clip the gradients to ``grad_clip``, then step ``optimizer`` (and ``scheduler``)
    only when ``loss`` and the gradient norm are finite, on every process when data-parallel.

    On a skip the gradients are cleared (``set_to_none``); weights, optimizer state and the schedule
    are untouched. The caller counts skips and updates whatever follows the weights (an EMA) only
    when ``stepped``.
    """
    grad_norm = float(torch.nn.utils.clip_grad_norm_(list(parameters), grad_clip))  # inf: measure, never clip
    loss_finite = bool(torch.isfinite(loss.detach()).all())
    if not _all_agree(loss_finite and math.isfinite(grad_norm), loss.device):
        optimizer.zero_grad(set_to_none=True)
        return StepOutcome(False, grad_norm, loss_finite)
    try:
        optimizer.step()
    except RuntimeError as e:  # e.g. a finite lr whose step size overflows the parameters' dtype
        if "overflow" not in str(e):
            raise
        raise NonFiniteWeightsError(f"the optimizer step overflowed ({e}); lower --lr") from None
    if scheduler is not None:
        scheduler.step()
    return StepOutcome(True, grad_norm, loss_finite)


def nonfinite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``model`` holding an inf or NaN."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    return [name for name, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def require_finite_weights(model: torch.nn.Module, where: str = "") -> None:
    """Raise :class:`NonFiniteWeightsError` (exit 2, ``final/`` not written) if any weight is inf or NaN."""
    bad = nonfinite_tensors(model)
    if bad:
        raise NonFiniteWeightsError(
            f"training ended with non-finite weights in {len(bad)} tensors (first: {bad[0]}){where}; final/ was not "
            "written. Lower --lr or check the rewards, then rerun with --no-resume."
        )

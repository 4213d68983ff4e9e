"""A closed-form ridge value head: the planners' value prediction while the replay is small.

Ridge regression of a target ``y [N]`` on features ``x [N, D]`` with ``N`` (a handful of real
transitions) far below ``D`` (hundreds of frozen-LM features), solved in its dual form:
features standardised with the fitted rows' mean and spread, ``alpha = (K + lam * D * I)^-1
(y - mean(y))`` with the linear kernel ``K = X X^T``, and the prediction ``x . X^T alpha + mean(y)``.
``lam`` is per feature (the kernel grows with ``D``), so one setting suits any feature size.
It has no steps, no seed and no learning rate to tune, and with ``lam -> 0`` it is the
minimum-norm interpolant of the fitted rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RidgeHead:
    """A fitted head: ``mu``, ``sd`` ``[D]`` (standardisation), ``basis [N, D]`` (the standardised rows), ``alpha [N]``, ``offset``."""

    mu: Tensor
    sd: Tensor
    basis: Tensor
    alpha: Tensor
    offset: float


def ridge_fit(x: Tensor, y: Tensor, lam: float = 1e-2, eps: float = 1e-6) -> RidgeHead:
    """Fit on ``x [N, D]``, ``y [N]`` (``N >= 1``); a constant feature is ignored (its spread is 0)."""
    if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ValueError(f"need x [N, D] and y [N] with N >= 1, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.double(), y.double()
    mu, sd = x.mean(0), x.std(0, unbiased=False)
    sd = torch.where(sd > eps, sd, torch.full_like(sd, float("inf")))  # a constant column contributes 0
    a = (x - mu) / sd
    offset = float(y.mean())
    k = a @ a.T
    alpha = torch.linalg.solve(k + lam * x.shape[1] * torch.eye(len(a), dtype=a.dtype), y - offset)
    return RidgeHead(mu, sd, a, alpha, offset)


def ridge_predict(head: RidgeHead, x: Tensor) -> Tensor:
    """``[M]`` predictions for ``x [M, D]``."""
    a = (x.double() - head.mu) / head.sd
    return (a @ head.basis.T @ head.alpha + head.offset).float()

"""Masked policy-gradient losses: PPO-style clipped surrogate (RLP / DAPO / Dr.GRPO reductions),
KL penalty and next-token loss.

Shapes: ``N`` sequences (``N = B*G`` thoughts), ``L`` tokens. A mask ``[N, L]`` (bool, or float
weights) selects the tokens that are actions (the thought tokens). Masked-out positions are
replaced by 0 *before* any arithmetic, so padding holding ``-inf``/NaN log-probs can neither leak
into the loss nor its gradient. Empty masks never produce NaN: their means are 0.

Every term has a ``reduction="sum"`` form, summed over the units it averages over (:data:`Unit`):
the engine divides each by the unit's count over the whole step, all parts and ranks
(:class:`Term`), so a term's gradient does not depend on how the step was cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

#: How the clipped surrogate reduces over a batch: the one definition, used by the engine
#: (:class:`~ponder.train.engine.StepBatch`), the recipes and GRPO's ``--loss-reduce``. ``rlp``: mean over
#: sequences of per-token means (RLP, GRPO); ``token``: mean over all action tokens (DAPO);
#: ``constant``: token sum over sequences times a constant budget (Dr. GRPO).
Reduce = Literal["rlp", "token", "constant"]
REDUCES: tuple[str, ...] = ("rlp", "token", "constant")
#: Names of reductions that were renamed, with their current name (a clear error, not a silent alias).
RENAMED_REDUCES = {"seq_sum_const": "constant"}
Reduction = Literal["mean", "sum"]

#: What a loss term averages over: ``sequences`` (rows of the batch), ``tokens`` (action tokens, the
#: loss mask), ``targets`` (RLP's reward tokens after each thought), ``text_tokens`` (predicted
#: tokens of RLP's next-token term on the rollout's text).
Unit = Literal["sequences", "tokens", "targets", "text_tokens"]
UNITS: tuple[str, ...] = ("sequences", "tokens", "targets", "text_tokens")
#: The unit each surrogate reduction averages over (``constant``: sequences, times a constant).
SURROGATE_UNIT: dict[str, str] = {"rlp": "sequences", "token": "tokens", "constant": "sequences"}


def check_reduce(reduce: str) -> str:
    """``reduce`` if it is one of :data:`REDUCES`, else a ValueError that names the right one."""
    if reduce in REDUCES:
        return reduce
    if reduce in RENAMED_REDUCES:
        raise ValueError(f"the reduction {reduce!r} is now called {RENAMED_REDUCES[reduce]!r}")
    raise ValueError(f"unknown reduce {reduce!r}; expected one of {', '.join(REDUCES)}")


@dataclass
class Term:
    """One loss term of a part of a step: ``total``, a scalar summed over ``unit`` in that part.

    The step's loss is ``sum over terms of total / count[unit]``, with ``count`` the unit's
    count over the whole step (every part, every rank): a mean over the step's units, however the
    step is cut into micro-batches and ranks.
    """

    name: str
    total: torch.Tensor
    unit: str

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"unknown unit {self.unit!r}; expected one of {UNITS}")


def _fp32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _weights(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Mask as float weights in the dtype of ``like``."""
    return mask.to(like.dtype)


def _zero_out(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``x`` where the weight is non-zero, else exactly 0 (kills inf/NaN in padding)."""
    return torch.where(weights != 0, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with 0 where ``den == 0`` (and a finite gradient there)."""
    ok = den != 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Weighted mean of ``x`` over ``mask`` (bool or float weights, broadcastable to ``x``).

    ``dim=None``: scalar over everything; else the mean along ``dim`` (that dim removed).
    Returns 0 where the mask is empty.
    """
    x = _fp32(x)
    w = _weights(mask, x).expand_as(x)
    xw = _zero_out(x, w) * w
    if dim is None:
        return _safe_div(xw.sum(), w.sum())
    return _safe_div(xw.sum(dim=dim), w.sum(dim=dim))


def _check_2d(name: str, x: torch.Tensor, shape: torch.Size) -> None:
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")


def clipped_surrogate(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    reduce: Reduce = "rlp",
    max_len: int | None = None,
    token_weights: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate over thought tokens; returns ``(loss, stats)``.

    Per token: ``rho = exp(logp_new - logp_old)``,
    ``j = min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A)``; ``loss = -J`` with J:
      * ``"rlp"``: ``1/N sum_i 1/|c_i| sum_t j_it`` -- each thought gets equal total weight,
        whatever its length (RLP eq.). A sequence with an empty mask contributes 0 but still
        counts in ``N`` (the paper's fixed ``1/(BG)``).
      * ``"token"``: ``sum j / sum |c_i|`` over all masked tokens (DAPO token-level mean).
      * ``"constant"``: ``sum j / (N * max_len)`` (Dr.GRPO; ``max_len`` defaults to ``L``).

    ``reduction="sum"``: the objective before its division by the count of
    ``SURROGATE_UNIT[reduce]`` (``N``, or the masked tokens), e.g. ``-sum_i 1/|c_i| sum_t j_it``.

    Args:
        logp_new: ``[N, L]`` log-probs of the taken tokens under the current policy (has grad).
        logp_old: ``[N, L]`` under the sampling policy (detached here).
        advantages: ``[N]`` one advantage per sequence, or ``[N, L]`` per token (e.g. HICRA); detached here.
        mask: ``[N, L]`` bool or float weights; the thought tokens.
        token_weights: ``[N, L]`` optional per-token factors of the surrogate (e.g. truncated
            importance weights of a sampler/trainer mismatch); detached here.

    Stats (detached 0-dim tensors; masked-token means):
      * ``clip_fraction``: tokens where the clipped branch binds, i.e. ``rho > 1 + eps_high``
        with ``A > 0`` or ``rho < 1 - eps_low`` with ``A < 0`` (there the gradient is 0).
      * ``ratio_mean``: mean ``rho``.
      * ``approx_kl``: mean of ``(rho - 1) - log rho`` (k3 estimate of KL(old || new)).
      * ``tokens``: number (total weight) of masked tokens.
    """
    if logp_new.dim() != 2:
        raise ValueError(f"logp_new must be [N, L], got shape {tuple(logp_new.shape)}")
    _check_2d("logp_old", logp_old, logp_new.shape)
    _check_2d("mask", mask, logp_new.shape)
    if advantages.shape not in (logp_new.shape[:1], logp_new.shape):
        raise ValueError(
            f"advantages must be [N]={tuple(logp_new.shape[:1])} or [N, L]={tuple(logp_new.shape)}, "
            f"got {tuple(advantages.shape)}"
        )
    if token_weights is not None:
        _check_2d("token_weights", token_weights, logp_new.shape)
    check_reduce(reduce)
    if not (0 <= eps_low < 1 and eps_high >= 0):
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {eps_low}, {eps_high}")
    n_seq, length = logp_new.shape

    new = _fp32(logp_new)
    w = _weights(mask, new)
    log_ratio = _zero_out(new - _fp32(logp_old).detach(), w)  # [N, L]; 0 (ratio 1) off-mask
    ratio = torch.exp(log_ratio)
    adv = _fp32(advantages).detach()
    adv = adv.unsqueeze(-1) if adv.dim() == 1 else adv  # [N, 1] or [N, L]
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high) * adv
    per_token = torch.minimum(unclipped, clipped) * w  # [N, L]
    if token_weights is not None:
        per_token = per_token * _zero_out(_fp32(token_weights).detach(), w)

    if reduce == "rlp":
        total = _safe_div(per_token.sum(dim=-1), w.sum(dim=-1)).sum()  # sum of [N] per-sequence means
    elif reduce == "token":
        total = per_token.sum()
    else:  # constant
        total = per_token.sum() / (length if max_len is None else max_len)
    count = w.sum() if SURROGATE_UNIT[reduce] == "tokens" else torch.tensor(float(n_seq), device=w.device)
    objective = total if reduction == "sum" else _safe_div(total, count)

    with torch.no_grad():
        binding = ((adv > 0) & (ratio > 1 + eps_high)) | ((adv < 0) & (ratio < 1 - eps_low))
        stats = {
            "clip_fraction": masked_mean(binding.to(w.dtype), w),
            "ratio_mean": masked_mean(ratio, w),
            "approx_kl": masked_mean((ratio - 1) - log_ratio, w),
            "tokens": w.sum(),
        }
    return -objective, stats


def kl_penalty(
    logp: torch.Tensor,
    logp_ref: torch.Tensor,
    mask: torch.Tensor,
    kind: Literal["k1", "k2", "k3"] = "k3",
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Scalar KL(pi || pi_ref) penalty estimated on sampled tokens; masked mean per sequence, then mean
    (``reduction="sum"``: summed over sequences, a term over ``sequences``).

    With ``d = logp_ref - logp`` (``[N, L]``; ``logp_ref`` detached):
      * ``"k3"`` (default, unbiased and >= 0): ``exp(d) - d - 1``
      * ``"k2"``: ``d**2 / 2``;  ``"k1"``: ``-d``.
    """
    _check_2d("logp_ref", logp_ref, logp.shape)
    _check_2d("mask", mask, logp.shape)
    cur = _fp32(logp)
    w = _weights(mask, cur)
    d = _zero_out(_fp32(logp_ref).detach() - cur, w)
    if kind == "k3":
        per_token = torch.exp(d) - d - 1
    elif kind == "k2":
        per_token = 0.5 * d * d
    elif kind == "k1":
        per_token = -d
    else:
        raise ValueError(f"unknown kind {kind!r}; expected 'k1', 'k2' or 'k3'")
    per_seq = masked_mean(per_token, w, dim=-1)  # [N]
    return per_seq.sum() if reduction == "sum" else per_seq.mean()


def next_token_loss(logp: torch.Tensor, mask: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Mean negative log-likelihood over masked tokens (scalar; 0 for an empty mask; ``reduction="sum"``: the sum).

    ``logp [N, L]``: log-probs of the observed tokens. Used to mix next-token loss into the RL
    objective with a weight ``w``: ``loss = rl_loss + w * next_token_loss``.
    """
    _check_2d("mask", mask, logp.shape)
    if reduction == "sum":
        x = _fp32(logp)
        w = _weights(mask, x)
        return -(_zero_out(x, w) * w).sum()
    return -masked_mean(logp, mask)

"""Rewards and group-relative advantages (RLP, GRPO, Dr.GRPO, HICRA).

All functions are pure, compute in fp32 (fp64 inputs stay fp64) and never let gradients flow
through group statistics. Shapes: ``B`` prompts/positions, ``G`` sampled thoughts per group,
``L`` tokens per thought.
"""

from __future__ import annotations

from typing import Literal

import torch

Reduce = Literal["none", "sum", "mean"]


def _fp32(x: torch.Tensor) -> torch.Tensor:
    """Promote to at least fp32 (bf16/fp16 -> fp32; fp64 stays fp64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def rlp_reward(logp_with_thought: torch.Tensor, logp_no_think: torch.Tensor, reduce: Reduce = "none") -> torch.Tensor:
    """RLP information-gain reward ``r = log p_theta(x_t | x_<t, c) - log p_EMA(x_t | x_<t)``.

    Args:
        logp_with_thought: ``[...]`` (or ``[..., k]``) log-prob of the observed next token(s) under
            the policy conditioned on the sampled thought ``c``.
        logp_no_think: same shape; log-prob under the no-think EMA teacher.
        reduce: ``"none"`` returns the elementwise difference ``[...]``; ``"sum"``/``"mean"``
            reduce the last dim (the multi-token option: ``k`` future tokens scored per thought).

    Returns: ``[...]`` rewards, detached (a reward is never a gradient path in RLP).
    """
    if logp_with_thought.shape != logp_no_think.shape:  # broadcasting would hide a mis-aligned batch
        raise ValueError(f"shape mismatch: {tuple(logp_with_thought.shape)} vs {tuple(logp_no_think.shape)}")
    gain = (_fp32(logp_with_thought) - _fp32(logp_no_think)).detach()
    if reduce == "none":
        return gain
    if reduce == "sum":
        return gain.sum(dim=-1)
    if reduce == "mean":
        return gain.mean(dim=-1)
    raise ValueError(f"unknown reduce {reduce!r}; expected 'none', 'sum' or 'mean'")


def group_advantages(
    rewards: torch.Tensor,
    correction: Literal["rlp", "none"] = "rlp",
    scale: Literal["none", "std"] = "none",
    eps: float = 1e-6,
) -> torch.Tensor:
    """Group-relative advantages ``[B, G]`` from rewards ``[B, G]``.

    ``A_i = k * (r_i - sg(mean_j r_j)) / s`` where ``sg`` is stop-gradient and
      * ``correction="rlp"``: ``k = G/(G-1)``. RLP's inclusive mean includes ``r_i`` itself, which
        shrinks ``E[A_i | r_i]`` to ``(G-1)/G (r_i - mu)``; the factor makes it ``r_i - mu``
        (identical to the leave-one-out baseline ``r_i - mean_{j != i} r_j``).
      * ``correction="none"``: ``k = 1`` (GRPO, Dr.GRPO).
      * ``scale="std"``: ``s = sg(std_j r_j) + eps`` with the unbiased group std (GRPO, as in TRL);
        ``scale="none"``: ``s = 1`` (RLP, Dr.GRPO, which drops the std to avoid favouring
        low-variance groups).

    Recipes: RLP = ("rlp", "none"); GRPO = ("none", "std"); Dr.GRPO = ("none", "none").

    Detached: the group mean and std only; ``dA_i/dr_i = k/s`` and ``dA_i/dr_j = 0`` for ``j != i``.
    Non-finite rewards propagate to their whole group; drop such groups with :func:`valid_groups`.
    Finite rewards never give a NaN: a group whose fp32 statistics overflow (rewards near 3e38, whose
    sum is inf) is recomputed in fp64; an advantage beyond the fp32 range is then +-inf, never NaN,
    and the step guard (:func:`ponder.train.guard.step_if_finite`) skips the step its loss spoils.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [B, G], got shape {tuple(rewards.shape)}")
    group_size = rewards.shape[-1]
    if group_size < 2:
        raise ValueError(f"group methods need G >= 2 (got G={group_size})")
    if correction not in ("rlp", "none"):
        raise ValueError(f"unknown correction {correction!r}; expected 'rlp' or 'none'")
    if scale not in ("std", "none"):
        raise ValueError(f"unknown scale {scale!r}; expected 'none' or 'std'")
    r = _fp32(rewards)
    adv = _centred_scaled(r, correction, scale, eps)
    # fp32 stays the arithmetic of ordinary rewards (results bit-identical to earlier runs); only
    # groups whose statistics overflowed are redone in fp64.
    overflow = ~torch.isfinite(adv).all(dim=-1) & torch.isfinite(r).all(dim=-1)
    if overflow.any():
        wide = _centred_scaled(r.double(), correction, scale, eps).to(adv.dtype)
        adv = torch.where(overflow[:, None], wide, adv)
    return adv


def _centred_scaled(r: torch.Tensor, correction: str, scale: str, eps: float) -> torch.Tensor:
    """The advantage formula of :func:`group_advantages` in ``r``'s dtype."""
    group_size = r.shape[-1]
    adv = r - r.mean(dim=-1, keepdim=True).detach()
    if correction == "rlp":
        adv = adv * (group_size / (group_size - 1))
    if scale == "std":
        adv = adv / (r.std(dim=-1, keepdim=True).detach() + eps)
    return adv


def finite_mask(rewards: torch.Tensor) -> torch.Tensor:
    """``BoolTensor [B]``: True where every reward of the group ``[B, G]`` is finite."""
    return torch.isfinite(rewards).all(dim=-1)


def valid_groups(rewards: torch.Tensor, min_spread: float = 0.0) -> torch.Tensor:
    """``BoolTensor [B]``: groups ``[B, G]`` that carry a learning signal.

    False where a reward is non-finite, or where the rewards' spread (max - min) is at most
    ``min_spread``: with 0, groups whose rewards are exactly equal (every advantage is 0, so the
    group only dilutes the batch mean); a small positive value also drops groups whose only
    differences are float noise (identical thoughts scored in different rows of a batch).
    """
    finite = finite_mask(rewards)
    spread = rewards.amax(dim=-1) - rewards.amin(dim=-1)
    return finite & (spread > min_spread)


def hicra_advantages(advantages: torch.Tensor, planning_mask: torch.Tensor, alpha: float = 0.2) -> torch.Tensor:
    """HICRA: amplify credit on planning tokens, ``A' = A + alpha * |A|`` where the mask is set.

    Args:
        advantages: per-token ``[..., L]`` (e.g. ``[B, G, L]``) or per-sequence ``[...]`` (then
            broadcast over the token dim of ``planning_mask``).
        planning_mask: ``[..., L]`` bool/0-1; True on planning (strategic) tokens.
        alpha: amplification ``>= 0``. Positive advantages grow, negative ones shrink in
            magnitude, so planning tokens are pushed up more and punished less.

    Returns: per-token advantages ``[..., L]`` (fp32).
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    adv = _fp32(advantages)
    if adv.dim() == planning_mask.dim() - 1:
        adv = adv.unsqueeze(-1)
    adv = adv.expand(planning_mask.shape)
    boost = alpha * adv.abs() * planning_mask.to(adv.dtype)
    return adv + boost

"""Optimizers and schedules of the engine's recipes."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pydantic import Field

from ponder.config import SETTINGS
from ponder.train.trackers import TrackingSettings


def adamw_constant_after_warmup(model, lr: float, weight_decay: float = 0.0, warmup_steps: int = 0):
    """``(AdamW, LambdaLR)`` over the parameters that require gradients (a LoRA model's adapters only):
    linear warmup over ``warmup_steps``, then a constant ``lr``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    warm = max(1, warmup_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm))


def warmup_cosine(warmup_steps: int, steps: int, min_lr_ratio: float) -> Callable[[int], float]:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` at ``steps`` (a multiplier of the peak lr)."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def adamw_warmup_cosine(
    model, lr: float, weight_decay: float, betas: tuple[float, float], schedule: Callable[[int], float]
):
    """``(AdamW, LambdaLR)`` over the parameters that require gradients, with the lr multiplier ``schedule(step)``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, betas=betas, weight_decay=weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


class OptimizerSettings(TrackingSettings):
    """Optimizer settings every recipe on the engine has (next-token training and the RL trainers)."""

    model_config = SETTINGS
    warmup_steps: int = Field(0, ge=0, description="linear lr warmup steps")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0, description="gradient norm clip")


class PolicyUpdateSettings(OptimizerSettings):
    """Optimizer and clipped-surrogate settings shared by the RL trainers (RLP, GRPO, TTRL)."""

    eps_low: float = Field(0.2, ge=0, description="clip range below 1")
    eps_high: float = Field(0.2, ge=0, description="clip range above 1")
    ppo_epochs: int = Field(1, ge=1, description="optimizer steps per rollout batch")

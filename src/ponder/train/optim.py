"""Optimizers shared by the RL trainers."""

from __future__ import annotations

import torch


def adamw_constant_after_warmup(model, lr: float, weight_decay: float = 0.0, warmup_steps: int = 0):
    """``(AdamW, LambdaLR)``: linear warmup over ``warmup_steps``, then a constant ``lr``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warm = max(1, warmup_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm))

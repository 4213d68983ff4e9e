"""EMA teacher for RLP's no-think baseline: ``phi <- tau * phi + (1 - tau) * theta``.

The teacher is a frozen deep copy of the policy (no grad, eval mode) that trails it slowly, so
the information-gain reward compares the thinking policy with a stable no-think predictor.

Sharded (FSDP2, :mod:`ponder.rl.sharding`), teacher and policy are DTensors sharded alike, and
the update, elementwise, runs on each rank's local shards.

Precision note: keep the policy's master weights in fp32. In bf16 the per-step change
``(1 - tau) * (theta - phi)`` is usually below bf16 resolution and the teacher stalls.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor


@torch.no_grad()
def ema_update_(target_params: Sequence[torch.Tensor], source_params: Sequence[torch.Tensor], tau: float) -> None:
    """In place, for each pair: ``target <- tau * target + (1 - tau) * source``.

    Each pair must share shape, dtype and device (and, for DTensors, sharding: the update runs on
    the local shards). ``tau=1`` freezes the target, ``tau=0`` copies.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    targets, sources = [_local(t) for t in target_params], [_local(s.detach()) for s in source_params]
    if len(targets) != len(sources):
        raise ValueError(f"{len(targets)} target tensors but {len(sources)} source tensors")
    if targets:
        # lerp_(end, w) = self + w * (end - self) = (1 - w) * self + w * end, so w = 1 - tau.
        torch._foreach_lerp_(targets, sources, 1.0 - tau)


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor; any other tensor as it is."""
    return t.to_local() if isinstance(t, DTensor) else t


def _float_and_other_buffers(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    floating, other = {}, {}
    for name, buf in module.named_buffers():
        (floating if torch.is_floating_point(buf) else other)[name] = buf
    return floating, other


class EMATeacher:
    """Frozen EMA copy of a model.

    Either ``EMATeacher.from_model(model, tau)`` or, lazily, ``teacher = EMATeacher(tau)`` and
    ``teacher.initialize(model)`` on the first batch (``phi <- theta``). Call ``update(model)``
    after each optimizer step. Pass the unwrapped module (not a DDP/compiled wrapper).
    """

    def __init__(self, tau: float = 0.999):
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {tau}")
        self.tau = float(tau)
        self.model: nn.Module | None = None
        self.num_updates = 0

    @classmethod
    def from_model(cls, model: nn.Module, tau: float = 0.999) -> EMATeacher:
        teacher = cls(tau)
        teacher.initialize(model)
        return teacher

    @property
    def initialized(self) -> bool:
        return self.model is not None

    def initialize(self, model: nn.Module) -> None:
        """(Re)set the teacher to a frozen deep copy of ``model`` (``phi <- theta``)."""
        teacher = copy.deepcopy(model)
        for p in teacher.parameters():
            p.requires_grad_(False)
            p.grad = None
        self.model = teacher.eval()
        self.num_updates = 0

    def _require(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError("EMATeacher is not initialized: call initialize(model) first")
        return self.model

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``phi <- tau * phi + (1 - tau) * theta`` for every parameter and floating buffer;
        non-floating buffers (counters, index tables) are copied."""
        teacher = self._require()
        t_params, s_params = dict(teacher.named_parameters()), dict(model.named_parameters())
        if t_params.keys() != s_params.keys():
            raise ValueError("model parameters do not match the teacher's (different architecture?)")
        t_float, t_other = _float_and_other_buffers(teacher)
        s_float, s_other = _float_and_other_buffers(model)
        if t_float.keys() != s_float.keys() or t_other.keys() != s_other.keys():
            raise ValueError("model buffers do not match the teacher's")
        names = list(t_params)
        buf_names = list(t_float)
        ema_update_(
            [t_params[n] for n in names] + [t_float[n] for n in buf_names],
            [s_params[n] for n in names] + [s_float[n] for n in buf_names],
            self.tau,
        )
        for name, buf in t_other.items():
            buf.copy_(s_other[name])
        self.num_updates += 1

    @torch.no_grad()
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Forward through the teacher without building a graph."""
        return self._require()(*args, **kwargs)

    def parameters(self) -> Iterable[torch.Tensor]:
        return self._require().parameters()

    def state_dict(self) -> dict[str, Any]:
        return {"tau": self.tau, "num_updates": self.num_updates, "model": self._require().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint; the teacher must be initialized (it supplies the architecture)."""
        self._require().load_state_dict(state["model"])
        self.tau = float(state["tau"])
        self.num_updates = int(state.get("num_updates", 0))

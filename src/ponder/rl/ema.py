"""EMA teacher for RLP's no-think baseline (and GRPO's KL reference): ``phi <- tau * phi + (1 - tau) * theta``.

The teacher trails the policy slowly, so the information-gain reward compares the thinking policy
with a stable no-think predictor. Two forms, chosen by the model it follows:

* an ordinary model: a frozen deep copy (no grad, eval mode), in the policy's dtype or in bf16
  (``dtype``: half the teacher's memory);
* a LoRA model (:mod:`ponder.lm.adapters`): a second adapter in the same peft model, on the one
  frozen base, holding the EMA of the policy's adapter. Only the adapter's weights are averaged
  (the base never moves) and they stay in the adapter's own dtype (fp32: they are small). The
  teacher's forward runs inside :meth:`EMATeacher.scope`, which switches the shared model to
  the teacher's adapter and back.

Precision: a bf16 teacher cannot take the EMA's increments by rounding to nearest. With
``1 - tau = 1e-3`` the change ``(1 - tau) (theta - phi)`` is far below half a bf16 unit in the
last place (2^-9 relative) and a rounded-to-nearest teacher stalls where it started. The update
is therefore computed in fp32 a chunk of a tensor at a time and rounded *stochastically* to bf16
(:func:`stochastic_round_bf16`): unbiased, so the teacher follows the fp32 EMA on average, at
the cost of a rounding noise of at most one bf16 unit per weight (``bench/ema_dtype.py`` measures
both). The rounding's random bits are drawn from a generator keyed by the update's index, so a
resumed run repeats them.

Sharded (FSDP2, :mod:`ponder.train.sharding`), teacher and policy are DTensors sharded alike, and
the update, elementwise, runs on each rank's local shards.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from ponder.lm import adapters
from ponder.train.checkpoint import load_weights_into

#: Elements updated at once when the target's dtype differs from the source's (4 MiB of fp32).
MIXED_CHUNK = 1 << 20
#: The teacher's adapter in a LoRA model.
TEACHER_ADAPTER = "ema"


def stochastic_round_bf16(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``x`` (fp32) rounded to bf16 up or down at random, up with probability the distance to the lower neighbour.

    Unbiased: ``E[round(x)] = x``. A bf16 number is an fp32 number whose low 16 bits are zero, so
    adding 16 uniform random bits to the fp32 bit pattern and clearing them rounds the magnitude up
    exactly with that probability (sign and magnitude are separate in the pattern).
    """
    bits = x.float().contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, device=x.device, generator=generator)
    return ((bits + noise) & -(1 << 16)).view(torch.float32).to(torch.bfloat16)


@torch.no_grad()
def ema_update_(
    target_params: Sequence[Tensor],
    source_params: Sequence[Tensor],
    tau: float,
    generator: torch.Generator | None = None,
    stochastic: bool = True,
) -> None:
    """In place, for each pair: ``target <- tau * target + (1 - tau) * source``.

    Pairs share shape and device (targets contiguous). Same dtypes: one fused update. A bf16 target (of
    an fp32 or a bf16 source): the update is computed in fp32, :data:`MIXED_CHUNK` elements at a time, and rounded to bf16 stochastically with
    ``generator`` (``stochastic=False``: to nearest, which stalls on small increments; for
    measuring that). DTensors (FSDP2) update their local shards. ``tau=1`` freezes the target, ``tau=0`` copies.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    targets, sources = [_local(t) for t in target_params], [_local(s.detach()) for s in source_params]
    if len(targets) != len(sources):
        raise ValueError(f"{len(targets)} target tensors but {len(sources)} source tensors")
    # A bf16 target takes the fp32 path even beside a bf16 source (a bf16 checkpoint's policy): a bf16 lerp
    # rounds to nearest and stalls.
    fused = [t.dtype == s.dtype and t.dtype != torch.bfloat16 for t, s in zip(targets, sources)]
    same = [(t, s) for (t, s), f in zip(zip(targets, sources), fused) if f]
    if same:
        # lerp_(end, w) = self + w * (end - self) = (1 - w) * self + w * end, so w = 1 - tau.
        torch._foreach_lerp_([t for t, _ in same], [s for _, s in same], 1.0 - tau)
    for (t, s), f in zip(zip(targets, sources), fused):
        if f:
            continue
        # In chunks: the fp32 temporaries stay a few MiB however large the tensor (an embedding of 151,936 rows).
        for tc, sc in zip(t.view(-1).split(MIXED_CHUNK), s.reshape(-1).split(MIXED_CHUNK)):
            value = tc.float().lerp_(sc.float(), 1.0 - tau)
            if t.dtype == torch.bfloat16 and stochastic:
                value = stochastic_round_bf16(value, generator)
            tc.copy_(value)


def _local(t: Tensor) -> Tensor:
    """This rank's shard of a DTensor; any other tensor as it is."""
    return t.to_local() if isinstance(t, DTensor) else t


def _float_and_other_buffers(module: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    floating, other = {}, {}
    for name, buf in module.named_buffers():
        (floating if torch.is_floating_point(buf) else other)[name] = buf
    return floating, other


class EMATeacher:
    """Frozen EMA of a model: a copy of an ordinary model, or an adapter of a LoRA model (module docstring).

    Either ``EMATeacher.from_model(model, tau)`` or, lazily, ``teacher = EMATeacher(tau)`` and
    ``teacher.initialize(model)`` on the first batch (``phi <- theta``). Call ``update(model)``
    after each optimizer step; run the teacher's forwards on the model ``scope()`` yields. Pass the
    unwrapped module (not a DDP/compiled wrapper). ``dtype``: the copy's dtype (None: the
    model's; ignored by an adapter teacher); ``seed`` keys the stochastic rounding of a bf16 copy.
    """

    def __init__(self, tau: float = 0.999, dtype: torch.dtype | None = None, seed: int = 0):
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {tau}")
        self.tau = float(tau)
        self.dtype, self.seed = dtype, seed
        self.model: nn.Module | None = None  # the copy (None for an adapter teacher)
        self.policy = None  # the LoRA model whose adapter TEACHER_ADAPTER is the teacher
        self.num_updates = 0

    @classmethod
    def from_model(
        cls, model: nn.Module, tau: float = 0.999, dtype: torch.dtype | None = None, seed: int = 0
    ) -> EMATeacher:
        teacher = cls(tau, dtype, seed)
        teacher.initialize(model)
        return teacher

    @property
    def initialized(self) -> bool:
        return self.model is not None or self.policy is not None

    @property
    def is_adapter(self) -> bool:
        return self.policy is not None

    def initialize(self, model: nn.Module) -> None:
        """(Re)set the teacher to the model (``phi <- theta``): a frozen copy, or a copy of a LoRA model's adapter."""
        self.num_updates = 0
        if adapters.is_adapted(model):
            if TEACHER_ADAPTER in model.peft_config:
                ema_update_(self._teacher_tensors(model), self._policy_tensors(model), 0.0)
            else:
                adapters.add_adapter_copy(model, TEACHER_ADAPTER)
            self.policy, self.model = model, None
            return
        teacher = copy.deepcopy(model)
        if self.dtype is not None:
            teacher.to(self.dtype)
        for p in teacher.parameters():
            p.requires_grad_(False)
            p.grad = None
        self.model, self.policy = teacher.eval(), None

    @staticmethod
    def _teacher_tensors(model) -> list[Tensor]:
        return list(adapters.adapter_parameters(model, TEACHER_ADAPTER).values())

    @staticmethod
    def _policy_tensors(model) -> list[Tensor]:
        return list(adapters.adapter_parameters(model).values())

    def _require(self) -> None:
        if not self.initialized:
            raise RuntimeError("EMATeacher is not initialized: call initialize(model) first")

    @contextlib.contextmanager
    def scope(self) -> Iterator[nn.Module]:
        """The model to run the teacher's forwards on, inside the block (an adapter teacher: the shared model,
        switched to the teacher's adapter until the block ends)."""
        self._require()
        if self.policy is None:
            yield self.model
            return
        with adapters.active_adapter(self.policy, TEACHER_ADAPTER) as model:
            yield model

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``phi <- tau * phi + (1 - tau) * theta`` for every parameter and floating buffer of a copy (non-floating
        buffers, counters and index tables, are copied), or for the adapter's weights of an adapter teacher."""
        self._require()
        generator = None
        if self.policy is not None:
            targets, sources = self._teacher_tensors(model), self._policy_tensors(model)
        else:
            targets, sources = self._copy_pairs(model)
            device = targets[0].device if targets else torch.device("cpu")
            generator = torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + self.num_updates)
        ema_update_(targets, sources, self.tau, generator)
        self.num_updates += 1

    def _copy_pairs(self, model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
        teacher = self.model
        t_params, s_params = dict(teacher.named_parameters()), dict(model.named_parameters())
        if t_params.keys() != s_params.keys():
            raise ValueError("model parameters do not match the teacher's (different architecture?)")
        t_float, t_other = _float_and_other_buffers(teacher)
        s_float, s_other = _float_and_other_buffers(model)
        if t_float.keys() != s_float.keys() or t_other.keys() != s_other.keys():
            raise ValueError("model buffers do not match the teacher's")
        for name, buf in t_other.items():
            buf.copy_(s_other[name])
        names, buf_names = list(t_params), list(t_float)
        return (
            [t_params[n] for n in names] + [t_float[n] for n in buf_names],
            [s_params[n] for n in names] + [s_float[n] for n in buf_names],
        )

    @torch.no_grad()
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Forward through the teacher without building a graph."""
        with self.scope() as model:
            return model(*args, **kwargs)

    def parameters(self) -> Iterable[Tensor]:
        """The teacher's own tensors: the copy's parameters, or the teacher adapter's."""
        self._require()
        return self._teacher_tensors(self.policy) if self.policy is not None else self.model.parameters()

    @torch.no_grad()
    def distance(self, model: nn.Module) -> float:
        """``||theta - phi|| / ||phi||`` over the averaged tensors: how far the policy has moved from its teacher."""
        theta = self._policy_tensors(model) if self.policy is not None else list(model.parameters())
        num = den = 0.0
        for p, q in zip(theta, self.parameters()):
            num += float((p.float() - q.float()).pow(2).sum())
            den += float(q.float().pow(2).sum())
        return math.sqrt(num / max(den, 1e-30))

    # ------------------------------------------------------------------ files and state
    def checkpointed(self) -> Any:
        """What a checkpoint saves beside the policy: the copy itself (a module, which FSDP shards like the
        policy), or, for an adapter teacher, this teacher (its ``save_pretrained`` writes the adapter)."""
        self._require()
        return self.model if self.policy is None else self

    def save_pretrained(self, path) -> None:
        """The teacher's weights into ``path``: the copy (``save_pretrained``) or the teacher adapter."""
        self._require()
        if self.policy is not None:
            adapters.save_adapter(self.policy, path, TEACHER_ADAPTER)
        else:
            self.model.save_pretrained(path)

    def load_pretrained(self, path) -> None:
        """Weights saved by :meth:`save_pretrained` (the teacher must be initialized: it supplies the shape)."""
        self._require()
        if self.policy is not None:
            adapters.load_adapter_weights(self.policy, Path(path), TEACHER_ADAPTER)
        else:
            load_weights_into(self.model, Path(path))

    def state_dict(self) -> dict[str, Any]:
        self._require()
        weights = (
            dict(adapters.adapter_parameters(self.policy, TEACHER_ADAPTER))
            if self.policy is not None
            else self.model.state_dict()
        )
        return {"tau": self.tau, "num_updates": self.num_updates, "model": weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint; the teacher must be initialized (it supplies the architecture)."""
        self._require()
        if self.policy is not None:
            own = adapters.adapter_parameters(self.policy, TEACHER_ADAPTER)
            with torch.no_grad():
                for key, p in own.items():
                    p.copy_(state["model"][key])
        else:
            self.model.load_state_dict(state["model"])
        self.tau = float(state["tau"])
        self.num_updates = int(state.get("num_updates", 0))

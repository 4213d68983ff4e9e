"""Sharded data parallelism with FSDP2 (``torch.distributed.fsdp.fully_shard``): the engine's ``fsdp`` mode.

**At rest** (between steps, while checkpoints are taken, in every optimizer step) each of the ``N``
ranks holds ``1/N`` of the policy's parameters, of their gradients and of the AdamW moments, and
``1/N`` of each extra model (RLP's EMA teacher, GRPO's KL reference), each model one FSDP unit
(DTensor shards on a 1-D device mesh). The optimizer steps on the local shards; the EMA update is
elementwise, so it runs shard by shard, locally (:meth:`ShardedRun.extras_at_rest`).

**A step gathers**: at its start every rank all-gathers the policy and the extra models once
(:meth:`ShardedRun.step`); sampling, rewards, the EMA baseline and the training forwards then run on
ordinary full tensors, and the model may be called any way (the decoder and the output layer
separately, the shared-prefix tree reading a KV cache, ``generate``-style loops of any length). The
gradients accumulate unsharded over a step's micro-batches and are reduce-scattered once, in the
backward of the last one (:meth:`ShardedRun.accumulating`); a rank without work runs one zero loss
(the engine's idle update), so every rank makes the same collectives in the same order, whatever
its share of the step. After the reduce-scatter the policy is back at rest; a second PPO epoch
all-gathers it again in its first forward.

Why the whole model per step rather than one unit per decoder layer: per-layer units all-gather in
every layer's forward and backward, so every rank would have to make the same layer calls in the
same order. Sampling ends when a rank's own thoughts end, ranks hold different numbers of
micro-batches, and the tree forward's gradients reach a layer's weights through the prefix's KV
cache, which bypasses FSDP's backward hooks (``tests/test_cuda.py`` shows the failure). Gathering
once per step is one collective per model instead of one per layer per decoded token, and keeps
every code path of the single process. The cost is memory: during a step a rank holds the full
policy, the full extra models and, in the backward, full gradients; at rest and in the AdamW state
it holds ``1/N``.

Checkpoints are ordinary Hugging Face checkpoints: the full weights and the full optimizer state
(keyed by parameter name) are gathered onto rank 0 (``torch.distributed.checkpoint.state_dict``
with ``full_state_dict=True, cpu_offload=True``) and written by the usual pickle-free path, so a
run resumes on any number of ranks, sharded or not (:func:`load_optimizer_state`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from ponder.train.checkpoint import load_weights_into
from ponder.train.distributed import Run

#: Gathered onto rank 0, in CPU memory: what a checkpoint writes.
GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
#: Every rank passes the full tensors and keeps its own shard (resume reads the checkpoint on every rank).
SCATTER = StateDictOptions(full_state_dict=True, strict=False)


class ShardedRun:
    """The FSDP2 units of a run: ``run(fn)`` computes ``fn(model)`` through the policy's unit.

    The policy's unit is a :class:`~ponder.train.distributed.Run` around the model (FSDP's hooks fire
    on its forward, so ``fn`` may call the model's parts directly); each extra model gets its own
    ``Run`` unit when :meth:`adopt` first sees it. The model stays an ordinary ``PreTrainedModel``
    (its class, its ``save_pretrained``).
    """

    def __init__(self, model: nn.Module, world: int):
        device = next(model.parameters()).device
        self.model = model
        self.mesh = init_device_mesh(device.type, (world,))
        self.policy = fully_shard(Run(model), mesh=self.mesh)
        self.extras: dict[str, tuple[nn.Module, nn.Module]] = {}  # name -> (model, its unit)
        self.gathered = False

    def __call__(self, fn, **kwargs):
        return self.policy(fn, **kwargs)

    def _units(self) -> list[nn.Module]:
        return [self.policy] + [unit for _, unit in self.extras.values()]

    # ------------------------------------------------------------------ gathering
    def gather(self) -> None:
        """All-gather every unit (a collective): the models hold full, ordinary tensors until :meth:`release`."""
        for unit in self._units():
            unit.unshard()
        self.gathered = True

    def release(self) -> None:
        """Back to rest: every unit keeps its shards only (local, no collective)."""
        for unit in self._units():
            unit.reshard()
        self.gathered = False

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """One training step on gathered models (module docstring); at rest again afterwards."""
        self.gather()
        try:
            yield
        finally:
            self.release()

    def adopt(self, models: dict[str, nn.Module]) -> None:
        """Shard the extra models not seen yet under that name (gathered at once inside a step).

        Every rank must create the same extra models at the same point (recipes initialise them
        on every rank, work or not), as each is sharded from its full copy.
        """
        for name, module in models.items():
            if name in self.extras and self.extras[name][0] is module:
                continue
            unit = fully_shard(Run(module), mesh=self.mesh)
            self.extras[name] = (module, unit)
            if self.gathered:
                unit.unshard()

    @contextlib.contextmanager
    def extras_at_rest(self) -> Iterator[None]:
        """The extra models at rest inside a step (their update after an optimizer step), gathered again after."""
        for _, unit in self.extras.values():
            unit.reshard()
        try:
            yield
        finally:
            if self.gathered:
                for _, unit in self.extras.values():
                    unit.unshard()

    @contextlib.contextmanager
    def accumulating(self, last: bool) -> Iterator[None]:
        """A micro-batch's backward: gradients stay unsharded and local unless ``last`` (then reduce-scattered)."""
        if last:
            yield
            return
        self.policy.set_requires_gradient_sync(False)
        self.policy.set_reshard_after_backward(False)
        try:
            yield
        finally:
            self.policy.set_requires_gradient_sync(True)
            self.policy.set_reshard_after_backward(True)

    # ------------------------------------------------------------------ checkpoints
    def full_weights(self, module: nn.Module) -> FullWeights:
        """``module``'s full weights gathered onto rank 0 (a collective; other ranks get an empty copy)."""
        return FullWeights(module, get_model_state_dict(module, options=GATHER))

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """The full optimizer state keyed by parameter name, on rank 0 (a collective)."""
        return get_optimizer_state_dict(self.model, optimizer, options=GATHER)

    def load_weights(self, module: nn.Module, ckpt: Path) -> None:
        """A checkpoint's full weights into ``module`` at rest: every rank keeps its shard."""
        load_weights_into(module, ckpt, assign=lambda m, state: set_model_state_dict(m, state, options=SCATTER))


class FullWeights:
    """A sharded model's gathered weights, saved like the model (``save_pretrained``: an ordinary HF checkpoint).

    Tied parameters (the output layer sharing the embedding) are written once, under the first
    name, as ``save_pretrained`` writes them for an unsharded model.
    """

    def __init__(self, model: nn.Module, state: dict[str, torch.Tensor]):
        self.model = model
        first: dict[int, str] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            first.setdefault(id(p), name)
        tied = {name for name, p in model.named_parameters(remove_duplicate=False) if first[id(p)] != name}
        self.state = {k: v for k, v in state.items() if k not in tied}

    def save_pretrained(self, path, **kwargs) -> None:
        self.model.save_pretrained(path, state_dict=self.state, **kwargs)

    def named_parameters(self):
        return iter(self.state.items())

    def named_buffers(self):
        return iter(())


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict, sharded: bool) -> None:
    """Restore an optimizer saved by any mode on any number of ranks.

    A sharded run saves the full state keyed by parameter name; an unsharded one, by position
    (``optimizer.state_dict()``). Either is loaded into a sharded or an unsharded optimizer.
    """
    by_name = any(isinstance(k, str) for k in saved.get("state", {}))
    if not by_name and not sharded:
        optimizer.load_state_dict(saved)
        return
    if not by_name:
        saved = _keyed_by_name(model, optimizer, saved)
    set_optimizer_state_dict(model, optimizer, saved, options=StateDictOptions(full_state_dict=True))


def _keyed_by_name(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> dict:
    """``optimizer.state_dict()``'s positions replaced by the names of the parameters they stand for."""
    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    groups = [{**g, "params": [order[i] for i in g["params"]]} for g in saved["param_groups"]]
    return {"state": {order[i]: s for i, s in saved["state"].items()}, "param_groups": groups}

"""Data parallelism for the trainers through ``torch.distributed``: whatever launched the processes.

``torchrun`` and ``accelerate launch`` both export ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``; the
trainer calls :func:`init_from_env` and runs single-process when ``WORLD_SIZE`` is absent or 1.
Each rank takes its share of a step's documents; gradients are averaged by
``DistributedDataParallel`` (mode ``ddp``) or reduce-scattered by FSDP2 (mode ``fsdp``,
:mod:`ponder.train.sharding`), and the loss is scaled so the average equals the single-process
loss over the whole global batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env() -> tuple[int, int]:
    """``(rank, world_size)``; joins the process group named by the launcher's environment (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def parallel_mode(requested: str) -> str:
    """``ddp`` or ``fsdp``: the setting, or ``fsdp`` when ``accelerate launch`` was given an FSDP config."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return "fsdp"
    return requested


class Run(torch.nn.Module):
    """``forward(fn, **kw) = fn(model, **kw)``: a whole loss forward (any number of model calls) as one DDP call."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn, **kwargs):
        return fn(self.model, **kwargs)


def wrap(model: torch.nn.Module, world: int):
    """``run(fn, **kw)`` computing ``fn(model, **kw)``: directly in one process, else through DDP.

    The shared-prefix forward calls the model twice (prefix, then branches) before one backward;
    DDP allows one forward per backward, so the whole function runs inside one DDP forward.
    Sampling and the EMA use the unwrapped module: ranks decode different numbers of steps, and a
    DDP forward outside training would take part in collectives. ``broadcast_buffers`` is off for
    the same reason (the only buffers are rotary tables, identical on every rank).
    """
    if world <= 1:
        return lambda fn, **kwargs: fn(model, **kwargs)
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(Run(model), device_ids=ids, broadcast_buffers=False)


def all_sum(values: list[float], world: int, device=None) -> list[float]:
    """Sums of ``values`` over all ranks (the values themselves in one process)."""
    if world <= 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def all_gather_objects(obj, world: int) -> list:
    """Every rank's ``obj`` in rank order (``[obj]`` in one process); a collective."""
    if world <= 1:
        return [obj]
    out: list = [None] * world
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(per_rank: list[dict], weights: list[float] | None = None, summed: tuple[str, ...] = ()) -> dict:
    """One step's metrics from every rank (rank order) as one dict.

    A recipe's step metrics (reward mean, thought length, share of groups with signal) are means over
    the rank's own share of the step: weighted by each rank's share (``weights``: its work this step,
    e.g. positions or completions; equal when None or all 0) they give the step's mean. The keys in
    ``summed`` are counts and are added up. A key a rank reports as None is left out of its mean;
    anything that is not a number on any rank (None, text) is taken from the first rank that has it.
    """
    if weights is None or not any(weights):
        weights = [1.0] * len(per_rank)
    out: dict = {}
    for key in dict.fromkeys(k for metrics in per_rank for k in metrics):
        pairs = [(m[key], w) for m, w in zip(per_rank, weights) if key in m]
        numbers = [(v, w) for v, w in pairs if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not numbers:
            out[key] = pairs[0][0]
        elif key in summed:
            out[key] = sum(v for v, _ in numbers)
        else:
            total = sum(w for _, w in numbers)
            out[key] = (
                sum(v * w for v, w in numbers) / total if total > 0 else sum(v for v, _ in numbers) / len(numbers)
            )
    return out


def rank_device(requested: str | None, world: int) -> str | None:
    """The device a rank loads its model onto: under a multi-GPU launcher, this rank's GPU."""
    if world > 1 and requested in (None, "cuda") and torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()}"
    return requested

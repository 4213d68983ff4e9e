"""ponder's FSDP2 mechanics (:mod:`ponder.train.sharding`) in one process: a 1-rank gloo group on the CPU.

The 2-rank runs (the collectives themselves, RLP/GRPO/TTRL end to end, resuming on another number of
ranks) are in ``tests/test_distributed.py``; ``tests/test_cuda.py`` runs :func:`sharded_step_matches_plain`
on a GPU.
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.distributed.tensor import DTensor

from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model
from ponder.rl.batches import rlp_tree_batch
from ponder.rl.ema import EMATeacher
from ponder.train.sharding import ShardedRun, load_optimizer_state
from test_rlp_tree import CLOSE, OPEN, PAD, _case

ARCH = TinyArch(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


def sharded_step_matches_plain(device: str) -> None:
    """One RLP-style step, sharded and not: the tree forward in two micro-batches (gradients reduce-scattered
    once), a direct call of the gathered model, AdamW on the shards, the EMA teacher updated on its shards."""
    docs, positions, thoughts = _case()
    tb = rlp_tree_batch(docs, positions, 2, thoughts, OPEN, CLOSE, PAD, device=device)
    parts = [tb.select(torch.arange(0, 3)), tb.select(torch.arange(3, 6))]
    plain = build_tiny_model(build_char_tokenizer(), ARCH, seed=0).to(device).train()
    model = copy.deepcopy(plain)
    sharded = ShardedRun(model, dist.get_world_size())
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (plain, model)]  # model's: the shards
    assert all(isinstance(p, DTensor) for p in model.parameters())
    teacher_plain, teacher = EMATeacher.from_model(plain, tau=0.5), EMATeacher(tau=0.5)

    for part in parts:
        (part.scores(plain)[0] * part.loss_mask).sum().backward()
    with sharded.step():
        teacher.initialize(model)  # a full copy of the gathered policy, then sharded like it
        sharded.adopt({"ema": teacher.model})
        ids = tb.prefix_ids
        with torch.no_grad():  # sampling calls the gathered model directly, any number of times
            torch.testing.assert_close(model(input_ids=ids).logits, plain(input_ids=ids).logits)
            torch.testing.assert_close(teacher.model(input_ids=ids).logits, plain(input_ids=ids).logits)
        for i, part in enumerate(parts):
            with sharded.accumulating(last=i == len(parts) - 1):
                (sharded(lambda m, b=part: b.scores(m)[0]) * part.loss_mask).sum().backward()
        assert all(isinstance(p, DTensor) for p in model.parameters())  # at rest after the reduce-scatter
        for p, q in zip(plain.parameters(), model.parameters()):
            torch.testing.assert_close(_full(q.grad), p.grad, atol=1e-5, rtol=1e-5)
        for opt in optimizers:
            opt.step()
        teacher_plain.update(plain)
        with sharded.extras_at_rest():
            assert all(isinstance(p, DTensor) for p in teacher.model.parameters())
            teacher.update(model)
    for mine, theirs in ((model, plain), (teacher.model, teacher_plain.model)):
        for p, q in zip(theirs.parameters(), mine.parameters()):
            assert isinstance(q, DTensor)
            torch.testing.assert_close(_full(q.detach()), p.detach(), atol=1e-6, rtol=1e-6)


@contextlib.contextmanager
def single_rank_group(backend: str):
    """A process group of this process alone (``gloo`` or ``nccl``), destroyed on exit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.fixture
def one_gloo_rank():
    with single_rank_group("gloo"):
        yield


def test_a_sharded_step_matches_the_unsharded_one(one_gloo_rank, one_thread):
    sharded_step_matches_plain("cpu")


def test_gathered_weights_save_as_the_unsharded_model_does(one_gloo_rank, one_thread, tmp_path):
    plain = build_tiny_model(build_char_tokenizer(), ARCH, seed=0)
    model = copy.deepcopy(plain)
    sharded = ShardedRun(model, 1)
    plain.save_pretrained(tmp_path / "plain")
    sharded.full_weights(model).save_pretrained(tmp_path / "sharded")
    want, got = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("plain", "sharded"))
    assert set(got) == set(want) and "lm_head.weight" not in got  # the tied output layer once, as unsharded
    for name, value in want.items():
        assert torch.equal(got[name], value), name
    other = build_tiny_model(build_char_tokenizer(), ARCH, seed=1)
    ShardedRun(other, 1).load_weights(other, tmp_path / "plain")  # every rank keeps its shard of the full weights
    for p, q in zip(plain.parameters(), other.parameters()):
        assert torch.equal(_full(q.detach()), p.detach())


def test_an_optimizer_saved_by_position_loads_by_name(one_thread):
    """An unsharded run's ``optimizer.state_dict()`` restored through the by-name path a sharded run uses."""
    model = build_tiny_model(build_char_tokenizer(), ARCH, seed=0)
    ids = torch.randint(0, 20, (2, 8), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(input_ids=ids).logits.square().mean().backward()
    optimizer.step()
    saved = copy.deepcopy(optimizer.state_dict())
    twins = []
    for sharded in (False, True):
        twin = copy.deepcopy(model)
        opt = torch.optim.AdamW(twin.parameters(), lr=1e-2)
        load_optimizer_state(twin, opt, copy.deepcopy(saved), sharded)
        twins.append((twin, opt))
    for m, opt in [(model, optimizer), *twins]:
        opt.zero_grad()
        m(input_ids=ids).logits.square().mean().backward()
        opt.step()
    for twin, _ in twins:
        for p, q in zip(model.parameters(), twin.parameters()):
            assert torch.equal(p, q)

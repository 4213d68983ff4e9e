"""The memory model (``ponder.train.memory_model``) against measured peaks, and the README's per-GPU table.

Default: (1) one output-layer chunk's backward, counted by a live-storage tracker (every tensor an op
creates, until it is freed: exact on CPU, no allocator noise): the chunk-sized fp32 tensors alive at
once (``CHUNK_WORKING_COPIES``); (2) the peak of one RLP micro-batch's forward + backward of a small
random-init Qwen3-shaped model (tree and padded layouts, with and without checkpointing), by the same
tracker, against the formula (gradients + activations); (3) the formula against the peaks
``bench/memory.py`` recorded (``bench/results/memory_cpu.json``: process RSS, so with the allocator's
noise). ``--table``: the README table (Qwen3 0.6B, 1.7B, 8B at the RLP paper's settings), from the formula::

    OMP_NUM_THREADS=1 python bench/memory_model_check.py [--table]
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ponder.lm import logprobs  # noqa: E402
from ponder.lm.shapes import SHAPES, Shape, build_shape_tokenizer, shape_config  # noqa: E402
from ponder.rl.batches import rlp_padded_batch, rlp_tree_batch  # noqa: E402
from ponder.train import memory_model as mm  # noqa: E402

GB = 10**9
H100 = 80 * GB
PAPER = dict(group=16, context=2048, thought=2048)  # RLP paper: G = 16, thoughts up to 2048, context 2048
SMALL = Shape("qwen3", 256, 2, 4, 2, 64, 768, 4096, 1e4, 1e-6, 4096)


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the storages alive among those created while the mode is on (each op's outputs, until freed)."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                self.live.setdefault(storage._cdata, (StorageWeakRef(storage), storage.nbytes()))
        self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
        self.peak = max(self.peak, sum(n for _, n in self.live.values()))
        return out


def small_model(shape: Shape, checkpointing: bool = False):
    from transformers import AutoModelForCausalLM

    from ponder.lm import hf_compat

    tok = build_shape_tokenizer(shape)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(shape_config(shape, tok), attn_implementation="sdpa").train()
    if checkpointing:
        hf_compat.enable_activation_checkpointing(model)
    return model


def chunk_copies(vocab: int = 32768, hidden: int = 64, rows: int = 96) -> float:
    """Peak of one scoring pass through a ``[vocab, hidden]`` output layer, in chunk-sized fp32 tensors."""
    saved = logprobs.CHUNK_ELEMENTS
    logprobs.CHUNK_ELEMENTS = 1 << 20
    try:
        head = torch.nn.Linear(hidden, vocab, bias=False)
        scorer = logprobs.TokenScorer.__new__(logprobs.TokenScorer)
        scorer.model, scorer.parts = types.SimpleNamespace(config=types.SimpleNamespace()), (None, head)
        head.weight.requires_grad_(False)
        hid = torch.randn(1, rows, hidden, requires_grad=True)
        target, mask = torch.randint(0, vocab, (1, rows)), torch.ones(1, rows, dtype=torch.bool)
        with LiveBytes() as live:
            logp, ent = scorer.score(hid, target, mask, return_entropy=True)
            (logp.sum() + ent.sum()).backward()
        return live.peak / (4 * logprobs.CHUNK_ELEMENTS)
    finally:
        logprobs.CHUNK_ELEMENTS = saved


def thoughts(lengths: list[int], group: int, vocab: int):
    gen = torch.Generator().manual_seed(0)
    ids = [torch.randint(10, vocab, (n,), generator=gen).tolist() for n in lengths]
    return types.SimpleNamespace(
        ids=ids,
        closed=torch.ones(len(ids), dtype=torch.bool),
        n=group,
        logprobs=[torch.zeros(n + 1) for n in lengths],
        lengths=torch.tensor(lengths),
    )


def micro_batch_peak(shape: Shape, layout: str, checkpointing: bool, context=256, group=4, thought=64) -> dict:
    """One RLP micro-batch (1 position, ``group`` thoughts, one shorter: rows are padded) measured and modelled."""
    model = small_model(shape, checkpointing)
    lengths = [thought] * (group - 1) + [thought - 8]
    gen = torch.Generator().manual_seed(1)
    doc = torch.randint(10, shape.vocab_size, (context + 4,), generator=gen).tolist()
    th = thoughts(lengths, group, shape.vocab_size)
    if layout == "tree":
        batch = rlp_tree_batch([doc], [(0, context)], 1, th, 1, 2, 0)
    else:
        batch = rlp_padded_batch([doc[:context]], [doc[context : context + 1]], th, 1, 2, 0)
    with LiveBytes() as live:
        logp, ent = batch.scores(model)
        (logp.sum() + ent.sum()).backward()
    mb = mm.MicroBatch(1, group, context, thought, layout=layout)
    grads = mm.held_state(shape)[1].gradients
    model_bytes = grads + mm.activation_bytes(shape, mb, checkpointing=checkpointing)
    return {"layout": layout, "checkpointing": checkpointing, "measured": live.peak, "formula": model_bytes}


def recorded_rows(path: Path) -> list[dict]:
    """The formula for ``bench/memory.py``'s recorded scoring rows (padded rows, output layer frozen)."""
    data = json.loads(path.read_text())
    grid, out = data["grid"], []
    for r in data["rows"]:
        if r["kind"] != "score":
            continue
        name, layers = r["model"].split(":")
        shape, layers = SHAPES[name], int(layers)
        thought = grid["completion"] - 3  # completions of `completion` tokens: branch = thought + 2 + 1
        mb = mm.MicroBatch(1, grid["completions"], grid["prompt"], thought, layout="padded", kv_repeated=False)
        frozen = shape.vocab_size * shape.hidden_size  # the (tied) embedding: no gradient in these rows
        grads = mm.F * (shape.num_parameters(layers) - frozen)
        chunked = r["config"] == "chunked"
        formula = grads + mm.activation_bytes(shape, mb, layers=layers, chunked=chunked)
        out.append({"row": f"{r['model']} score {r['config']}", "measured": r["peak_bytes"], "formula": formula})
    return out


def paper_table() -> str:
    """Per-GPU memory at the RLP paper's settings, FSDP over 80 GB GPUs, bf16 autocast, fp32 weights and AdamW."""
    lines = [
        "| model | params | training | during a step, per GPU (N = 8) | of which held state | at rest, per GPU (N = 8) | smallest N (80 GB) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("qwen3-0.6b-shape", "qwen3-1.7b-shape", "qwen3-8b-shape"):
        shape = SHAPES[name]
        for label, kw in (
            ("full, FSDP, tree layout", dict(sharded=True, layout="tree", checkpointing=False)),
            ("full, FSDP, checkpointing", dict(sharded=True, layout="padded", checkpointing=True)),
            (
                "full, FSDP, checkpointing, bf16 EMA",
                dict(sharded=True, layout="padded", checkpointing=True, ema="bf16"),
            ),
            ("LoRA r=16, DDP, checkpointing", dict(sharded=False, layout="padded", checkpointing=True, lora=16)),
        ):
            mb = mm.MicroBatch(1, layout=kw["layout"], **PAPER)
            args = dict(
                shape=shape,
                mb=mb,
                sharded=kw["sharded"],
                lora_rank=kw.get("lora"),
                ema_dtype=kw.get("ema", "fp32"),
                checkpointing=kw["checkpointing"],
            )
            at8 = mm.step_peak_bytes(world=8, **args)
            n = mm.smallest_world(H100, **args)
            fits = "none fits" if n is None else (str(n) if kw["sharded"] else f"{n} (replicas)")
            lines.append(
                f"| {name.removesuffix('-shape')} | {shape.num_parameters() / 1e9:.2f}B | {label} | "
                f"{at8['during_step'] / GB:.1f} GB | {at8['held_during_step'] / GB:.1f} GB | "
                f"{at8['at_rest'] / GB:.1f} GB | {fits} |"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", action="store_true", help="print only the README's per-GPU table (the formula)")
    ap.add_argument("--recorded", type=Path, default=ROOT / "bench/results/memory_cpu.json")
    args = ap.parse_args(argv)
    if args.table:
        print(paper_table())
        return
    torch.manual_seed(0)
    print(f"output-layer chunk: peak {chunk_copies():.2f} chunk-sized fp32 tensors (model: {mm.CHUNK_WORKING_COPIES})")
    print("\n| check | measured MiB | formula MiB | formula / measured |\n| --- | --- | --- | --- |")
    rows = [
        {
            **r,
            "row": f"live peak, small Qwen3 shape, {r['layout']}" + (" + checkpointing" if r["checkpointing"] else ""),
        }
        for r in (
            micro_batch_peak(SMALL, "tree", False),
            micro_batch_peak(SMALL, "padded", False),
            micro_batch_peak(SMALL, "padded", True),
        )
    ]
    if args.recorded.exists():
        rows += [{**r, "row": f"recorded RSS peak, {r['row']}"} for r in recorded_rows(args.recorded)]
    for r in rows:
        print(
            f"| {r['row']} | {r['measured'] / 2**20:.1f} | {r['formula'] / 2**20:.1f} | {r['formula'] / r['measured']:.2f} |"
        )


if __name__ == "__main__":
    main()

"""The memory model (``ponder.train.memory_model``) against what a trainer and a forward actually hold, exactly.

The held state against ``bench/memory.py``'s ``training_state_bytes`` after one RLP step (full, bf16 EMA,
LoRA); the activations each decoder layer stores for the backward, counted tensor by tensor through
autograd's saved-tensor hooks, against ``layer_token_bytes`` + ``layer_kv_bytes`` for the tree and the
padded layouts. (Whole-step peaks, which also carry the allocator's noise, are compared in
``bench/memory_model_check.py``.)
"""

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from ponder.lm.shapes import Shape, build_shape_tokenizer, shape_config
from ponder.rl.batches import rlp_padded_batch, rlp_tree_batch
from ponder.rl.rlp import RLPConfig, RLPTrainer
from ponder.train import memory_model as mm

ROOT = Path(__file__).resolve().parents[1]
SHAPE = Shape(
    arch="qwen3",
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=32,
    intermediate_size=192,
    vocab_size=512,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    max_positions=512,
)


def bench_memory():
    spec = importlib.util.spec_from_file_location("bench_memory", ROOT / "bench/memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(layers: int):
    tok = build_shape_tokenizer(SHAPE)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(shape_config(SHAPE, tok, layers), attn_implementation="sdpa")
    return model.train(), tok


@pytest.mark.parametrize("extra", [{}, {"ema_dtype": "bf16"}, {"lora_rank": 4}], ids=["full", "ema-bf16", "lora"])
def test_held_state_equals_the_trainers_tensors(extra, tmp_path, one_thread):
    if "lora_rank" in extra and importlib.util.find_spec("peft") is None:
        pytest.skip("peft not installed")
    model, tok = build(SHAPE.num_layers)

    class Texts:
        def stream(self):
            while True:
                yield "the cat sat on the mat and then it ran off to see the dog " * 3, None

    cfg = RLPConfig(
        steps=1, docs_per_step=1, group_size=2, max_thought_tokens=3, context_length=32, report_to=["none"], **extra
    )
    trainer = RLPTrainer(model, tok, Texts(), cfg, tmp_path / "run")
    trainer.train_step()
    measured = bench_memory().training_state_bytes(trainer)
    rest, step = mm.held_state(SHAPE, lora_rank=extra.get("lora_rank"), ema_dtype=extra.get("ema_dtype", "fp32"))
    assert rest.total == measured
    assert step.total - rest.total == step.gradients > 0  # the gradients exist during a step only


def test_fsdp_shards_at_rest_but_gathers_for_the_step():
    rest1, step1 = mm.held_state(SHAPE)
    rest8, step8 = mm.held_state(SHAPE, world=8, sharded=True)
    assert abs(rest8.total - rest1.total / 8) < 8  # integer division
    # During a step: full weights, gradients and teacher beside their shards; the moments stay sharded.
    assert step8.weights == rest1.weights + rest1.weights // 8
    assert step8.moments == rest1.moments // 8
    assert step8.total > step1.total - step1.moments
    with pytest.raises(ValueError, match="LoRA under FSDP"):
        mm.held_state(SHAPE, lora_rank=4, world=2, sharded=True)


def saved_activation_bytes(fn, model) -> int:
    """Bytes of the distinct storages autograd saves for the backward during ``fn()``, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def thoughts(lengths: list[int], group: int):
    ids = [torch.randint(10, SHAPE.vocab_size, (n,)).tolist() for n in lengths]
    return types.SimpleNamespace(
        ids=ids,
        closed=torch.ones(len(lengths), dtype=torch.bool),
        n=group,
        logprobs=[torch.zeros(n + 1) for n in lengths],
        lengths=torch.tensor(lengths),
    )


@pytest.mark.parametrize("layout", ["tree", "padded"])
@pytest.mark.parametrize("equal", [True, False], ids=["equal-thoughts", "padded-thoughts"])
def test_stored_activations_per_layer_match_the_count(layout, equal, one_thread):
    """One layer's saved tensors (2 layers minus 1) match the docstring's count in fp32 (padded rows: byte for byte)."""
    context, group, thought = 40, 4, 12
    lengths = [thought] * group if equal else [thought, thought - 5, thought - 2, thought]
    torch.manual_seed(1)
    doc = torch.randint(10, SHAPE.vocab_size, (context + 4,)).tolist()
    th = thoughts(lengths, group)
    if layout == "tree":
        batch = rlp_tree_batch([doc], [(0, context)], 1, th, 1, 2, 0)
    else:
        batch = rlp_padded_batch([doc[:context]], [doc[context : context + 1]], th, 1, 2, 0)
    per_model = [saved_activation_bytes(lambda m=m: batch.scores(m), m) for m in (build(1)[0], build(2)[0])]
    mb = mm.MicroBatch(1, group, context, thought, layout=layout, kv_repeated=layout == "tree" or not equal)
    layer = mb.query_tokens * mm.layer_token_bytes(SHAPE) + mm.layer_kv_bytes(SHAPE, mb)
    measured = per_model[1] - per_model[0]
    assert abs(measured - layer) <= 0.02 * layer, (measured, layer)  # padded: exact; tree: one [C, h] tensor more
    # The whole forward's saved tensors: every layer, plus the once-per-micro-batch terms (mask and chunk aside).
    whole = mm.activation_bytes(SHAPE, mb, layers=1) - mm.mask_bytes(mb) - mm.output_layer_bytes(SHAPE, mb)
    assert 0.95 < per_model[0] / whole < 1.05


def test_checkpointing_and_chunking_bound_the_paper_setting():
    shape = mm_shape("qwen3-0.6b-shape")
    tree = mm.MicroBatch(1, 16, 2048, 2048, layout="tree")
    padded = mm.MicroBatch(1, 16, 2048, 2048, layout="padded")
    plain = mm.activation_bytes(shape, tree, autocast_bf16=True)
    ckpt = mm.activation_bytes(shape, padded, checkpointing=True, autocast_bf16=True)
    assert ckpt < plain / 4
    # Whole logits of 16 thoughts of ~2k tokens at vocabulary 151,936 dwarf one chunk.
    assert mm.output_layer_bytes(shape, tree, chunked=False, act=2) > 20 * mm.output_layer_bytes(shape, tree)
    with pytest.raises(ValueError, match="padded"):
        mm.activation_bytes(shape, tree, checkpointing=True)


def mm_shape(name: str) -> Shape:
    from ponder.lm.shapes import SHAPES

    return SHAPES[name]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))

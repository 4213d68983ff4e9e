"""Random-init models of real shapes: sizes match the real models, the tokenizer round-trips, ponder trains them."""

from __future__ import annotations

import json

import pytest
import torch

from ponder.errors import ModelLoadError
from ponder.lm.shapes import SHAPES, build_shape_model, build_shape_tokenizer, is_shape_spec, parse_shape_spec


@pytest.mark.parametrize(
    ("name", "params", "non_embedding"),
    [
        # SmolLM2-135M: 134.5M parameters (embeddings tied); Qwen3-0.6B: 0.60B of which 0.44B outside the embeddings.
        ("smollm2-135m-shape", 134_515_008, 106_203_456),
        ("qwen3-0.6b-shape", 596_049_920, 440_467_456),
    ],
)
def test_full_shapes_have_the_real_parameter_counts(name, params, non_embedding):
    model, tok = build_shape_model(name, device="meta")  # no memory: shapes only
    shape = SHAPES[name]
    assert sum(p.numel() for p in model.parameters()) == params == shape.num_parameters()
    assert params - shape.vocab_size * shape.hidden_size == non_embedding
    assert len(tok) == model.config.vocab_size == shape.vocab_size
    assert model.config.num_hidden_layers == shape.num_layers
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.weight.shape == (shape.num_heads * shape.head_dim, shape.hidden_size)
    assert attn.k_proj.weight.shape == (shape.num_kv_heads * shape.head_dim, shape.hidden_size)


def test_reduced_depth_keeps_width_and_vocabulary():
    shape, layers = parse_shape_spec("qwen3-0.6b-shape:2")
    assert layers == 2 and shape is SHAPES["qwen3-0.6b-shape"]
    model, _ = build_shape_model("qwen3-0.6b-shape:2", device="meta")
    assert model.config.num_hidden_layers == 2 and model.config.head_dim == 128
    assert sum(p.numel() for p in model.parameters()) == shape.num_parameters(2)
    assert is_shape_spec("smollm2-135m-shape:3") and not is_shape_spec("smollm2-135m") and not is_shape_spec("x-shape")
    for bad in ("qwen3-0.6b-shape:0", "qwen3-0.6b-shape:29", "qwen3-0.6b-shape:x", "nope-shape"):
        with pytest.raises(ModelLoadError):
            parse_shape_spec(bad)


def test_tokenizer_round_trips_ids_and_encodes_text():
    tok = build_shape_tokenizer(SHAPES["smollm2-135m-shape"])
    assert len(tok) == 49152
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(len(tok), (3000,), generator=gen).tolist() + [0, 1, 2, 3, len(tok) - 1]
    text = tok.decode(ids, skip_special_tokens=False)
    assert tok(text, add_special_tokens=False)["input_ids"] == ids
    enc = tok("12+34=<think>ab</think>46")["input_ids"]  # characters, think delimiters, a leading <bos>
    assert enc[0] == tok.bos_token_id and len(enc) == 1 + 6 + 1 + 2 + 1 + 2
    assert tok.convert_ids_to_tokens(enc[7]) == "<think>" and tok.decode(enc[1:7]) == "12+34="


@pytest.mark.slow
def test_one_rlp_step_on_a_two_layer_smollm2_shape(tmp_path, one_thread):
    from ponder.jobs.rlp import RLPJob, run_rlp
    from ponder.models.lookup import load_model

    lm = load_model("smollm2-135m-shape:2", device="cpu")
    assert lm.model.config.num_hidden_layers == 2 and len(lm.tokenizer) == 49152
    job = RLPJob(
        model="smollm2-135m-shape:2",
        task="add2",
        steps=1,
        docs_per_step=2,
        group_size=2,
        max_thought_tokens=4,
        context_length=24,
        device="cpu",
        out=str(tmp_path / "rlp"),
    )
    summary = run_rlp(job, progress=False)
    assert summary["steps"] == 1 and summary["positions"] == 2 and summary["thought_tokens"] > 0
    row = json.loads((tmp_path / "rlp" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["step"] == 1 and row["grad_norm"] > 0
    assert (tmp_path / "rlp" / "final" / "config.json").is_file()

"""Shared-prefix decode attention: the same samples and log-probs as decoding with the copied prefix cache."""

import pytest
import torch

from ponder.lm import shared_prefix
from ponder.lm.decode import DecodeRules, sample


@pytest.mark.parametrize("kv_heads", [2, 1])  # 1: grouped-query attention (2 query heads per key head)
def test_shared_prefix_decoding_matches_copied_cache(one_thread, tok, monkeypatch, kv_heads):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    assert shared_prefix.supported(model)
    prompts = ["12+34=", "7+8=", "123+4567="]  # different lengths: left padding inside the shared prefix
    calls = {"n": 0}
    real = shared_prefix.attention

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(shared_prefix, "attention", counting)

    def run():
        return sample(
            model,
            tok,
            prompts,
            n=4,
            max_new_tokens=12,
            temperature=1.0,
            rules=DecodeRules(stop_strings=("\n",)),
            generator=torch.Generator().manual_seed(3),
        )

    shared = run()
    assert calls["n"] > 0  # the shared-prefix path really ran
    monkeypatch.setattr(shared_prefix, "supported", lambda m: False)
    copied = run()
    assert torch.equal(shared.tokens, copied.tokens) and torch.equal(shared.mask, copied.mask)
    torch.testing.assert_close(shared.logprobs, copied.logprobs, atol=1e-5, rtol=0)
    assert model.config._attn_implementation != shared_prefix.NAME  # restored after decoding


def test_unsupported_models_are_left_alone(model):
    model.config.sliding_window = 16
    try:
        assert not shared_prefix.supported(model)
    finally:
        model.config.sliding_window = None

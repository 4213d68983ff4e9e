"""Every transformers internal ponder relies on (isolated in ponder.lm.hf_compat), checked against the installed release.

Each test names the assumption it checks, so a transformers upgrade that breaks one fails here,
loudly and by name, before it breaks a run.
"""

import inspect

import pytest
import torch
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import DynamicLayer

from ponder.lm import hf_compat


def _llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


def test_forward_takes_a_cache_argument_and_returns_the_cache():
    model = _llama()
    name = next(iter(hf_compat.cache_kwargs(model, None)))
    assert name in inspect.signature(type(model).forward).parameters, f"forward has no {name!r} argument any more"
    ids = torch.tensor([[1, 2, 3]])
    out = model(input_ids=ids, use_cache=True)
    cache = hf_compat.output_cache(out)
    assert cache is not None, "the forward no longer returns its KV cache"
    more = model(input_ids=torch.tensor([[4]]), use_cache=True, **hf_compat.cache_kwargs(model, cache))
    full = model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits[:, -1]
    torch.testing.assert_close(more.logits[:, -1], full, atol=1e-5, rtol=0, msg="the cache argument was ignored")
    assert hf_compat.supports_logits_to_keep(model), "logits_to_keep is gone from the causal-LM forward"


def test_dynamic_cache_layers_expose_keys_values_and_reorder():
    model = _llama()
    cache = hf_compat.output_cache(model(input_ids=torch.tensor([[1, 2, 3], [4, 5, 6]]), use_cache=True))
    layers = hf_compat.cache_layers(cache)
    assert len(layers) == 2, "Cache.layers no longer lists one entry per decoder layer"
    assert all(hf_compat.is_plain_dynamic(x) for x in layers), "the default cache layer is no longer DynamicLayer"
    k, v = hf_compat.layer_keys_values(layers[0])
    assert k.shape == (2, 1, 3, 8) and v.shape == (2, 1, 3, 8), "cache keys/values are no longer [B, Hkv, T, D]"
    hf_compat.select_rows(cache, torch.tensor([1, 1, 0]))
    assert torch.equal(hf_compat.layer_keys_values(hf_compat.cache_layers(cache)[0])[0][2], k[0])


def test_preallocated_layer_is_a_drop_in_dynamic_layer():
    for method in ("update", "reorder_cache", "crop", "batch_select_indices", "batch_repeat_interleave"):
        assert hasattr(DynamicLayer, method), f"DynamicLayer.{method} is gone"
    model = _llama()
    ids = torch.tensor([[1, 2, 3]])
    cache = hf_compat.output_cache(model(input_ids=ids, use_cache=True))
    hf_compat.preallocate(cache, 4)
    assert all(isinstance(x, hf_compat.PreallocatedLayer) for x in hf_compat.cache_layers(cache))
    step = model(input_ids=torch.tensor([[4]]), use_cache=True, **hf_compat.cache_kwargs(model, cache)).logits[:, -1]
    torch.testing.assert_close(step, model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits[:, -1], atol=1e-5, rtol=0)


def test_custom_attention_is_registered_selected_and_restored():
    model = _llama()
    calls = []
    sdpa = AttentionInterface()["sdpa"]

    def spy(module, *args, **kwargs):
        calls.append(module.layer_idx)
        return sdpa(module, *args, **kwargs)

    before = hf_compat.attention_implementation(model)
    with hf_compat.attention_function(model, "ponder_test_spy", spy):
        model(input_ids=torch.tensor([[1, 2, 3]]))
    assert calls == [0, 1], "config._attn_implementation no longer selects a registered attention function"
    assert hf_compat.attention_implementation(model) == before
    assert hf_compat.takes_4d_mask(model)


def test_hidden_state_path_is_exact_for_llama():
    model = _llama()
    parts = hf_compat.decoder_and_unembed(model)
    assert parts is not None, "get_decoder() / get_output_embeddings() no longer give the decoder and the head"
    decoder, unembed = parts
    ids = torch.tensor([[1, 2, 3, 4]])
    hidden = decoder(input_ids=ids).last_hidden_state
    torch.testing.assert_close(hf_compat.finish_logits(model, unembed(hidden)), model(input_ids=ids).logits)


@pytest.mark.parametrize("model_type", sorted(hf_compat.HIDDEN_PATH_MODEL_TYPES))
def test_hidden_state_path_is_exact_for_every_listed_model_type(model_type):
    """For each type ponder scores through ``unembed(decoder(x))``, that equals the model's own logits."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(
        model_type,
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=64,
        final_logit_softcapping=None,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    decoder, unembed = hf_compat.decoder_and_unembed(model)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        mine = hf_compat.finish_logits(model, unembed(decoder(input_ids=ids).last_hidden_state))
        torch.testing.assert_close(mine, model(input_ids=ids).logits, atol=1e-5, rtol=0, msg=model_type)

"""Think delimiters: wrap/strip/split, registration on a tokenizer that lacks them."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ponder.lm.delimiters import (
    ensure_think_tokens,
    has_think_tokens,
    split_thought,
    strip_thoughts,
    think_token_ids,
    wrap_thought,
)


def test_wrap_strip_split():
    assert wrap_thought("a b") == "<think>a b</think>"
    assert strip_thoughts("x<think>1</think>y<think>2") == "xy"
    assert split_thought("<think>t</think>ans") == ("t", "ans", True)
    assert split_thought("ans") == (None, "ans", True)
    assert split_thought("<think>never closed") == ("never closed", "", False)


def _word_tokenizer():
    vocab = {"<unk>": 0, "<pad>": 1, "a": 2, "b": 3, "c": 4}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>")


def small_llama(vocab: int, tied: bool, seed: int = 0):
    """A one-layer Llama of width 16 over ``vocab`` tokens (eval mode)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("tied", [True, False])
def test_ensure_think_tokens_adds_rows_at_the_mean(tied):
    tok = _word_tokenizer()
    assert not has_think_tokens(tok)
    with pytest.raises(ValueError, match="ensure_think_tokens"):
        think_token_ids(tok)
    model = small_llama(5, tied)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    out_before = model.get_output_embeddings().weight.detach().clone()
    assert ensure_think_tokens(model, tok) == 2
    open_id, close_id = think_token_ids(tok)
    assert tok("a <think> b </think>", add_special_tokens=False)["input_ids"] == [2, open_id, 3, close_id]
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == 7
    torch.testing.assert_close(emb[:5], emb_before)
    torch.testing.assert_close(emb[open_id], emb_before.mean(0))
    torch.testing.assert_close(model.get_output_embeddings().weight[close_id], out_before.mean(0))
    logits = model(torch.tensor([[2, open_id, 3, close_id]])).logits
    assert torch.isfinite(logits).all()
    assert ensure_think_tokens(model, tok) == 0  # idempotent


def test_drop_stop_removes_only_the_ending_stop():
    from ponder.lm.thinking import drop_stop

    assert [drop_stop(t, ["\n", ";"]) for t in ["12\n", "\n12\n", "7;", "99"]] == ["12", "\n12", "7", "99"]
    assert drop_stop("a\n", []) == "a\n"


@pytest.mark.parametrize("tied", [True, False])
def test_new_delimiters_start_at_their_phrases_mean_embedding(tied):
    """Issue 27: a new <think> reads (and is predicted) like the phrase it stands for."""
    tok, model = _word_tokenizer(), small_llama(5, tied)
    emb0 = model.get_input_embeddings().weight.detach().clone()
    out0 = model.get_output_embeddings().weight.detach().clone()
    assert ensure_think_tokens(model, tok, "a b", "c") == 2
    open_id, close_id = think_token_ids(tok)
    emb, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    torch.testing.assert_close(emb[:5], emb0)
    torch.testing.assert_close(emb[open_id], (emb0[2] + emb0[3]) / 2)
    torch.testing.assert_close(emb[close_id], emb0[4])
    torch.testing.assert_close(out[open_id], (out0[2] + out0[3]) / 2)
    torch.testing.assert_close(out[close_id], out0[4])
    # A registered token keeps its (possibly trained) row: a checkpoint is never re-initialised.
    with torch.no_grad():
        emb[open_id] += 1.0
    trained = emb[open_id].detach().clone()
    assert ensure_think_tokens(model, tok, "c", "c") == 0
    torch.testing.assert_close(model.get_input_embeddings().weight[open_id], trained)


def test_a_phrase_without_tokens_is_refused():
    from ponder.lm.thinking import ThinkSettings

    with pytest.raises(ValueError, match="no tokens"):
        ensure_think_tokens(small_llama(5, True), _word_tokenizer(), "", "a")
    with pytest.raises(ValueError, match="at least 1"):
        ThinkSettings(think_open_phrase="")

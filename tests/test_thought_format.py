"""The thought format a pretrained model can read (issue 27): no special token of the tokenizer (chat
structure, EOS...) inside a thought; phrase-initialised delimiters are tested in test_delimiters.py."""

import pytest
import torch

from ponder.lm.delimiters import structure_token_ids, think_token_ids
from ponder.lm.thinking import ThinkSettings, ThoughtFormat, sample_thoughts, think_then_answer
from test_delimiters import small_llama


def test_structure_tokens_are_every_special_token_but_the_kept_ones(char_tokenizer):
    tok = char_tokenizer
    open_id, close_id = think_token_ids(tok)
    ids = structure_token_ids(tok, keep=(open_id, close_id))
    assert {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id} <= set(ids)
    assert open_id not in ids and close_id not in ids
    assert tok.convert_tokens_to_ids("a") not in ids


def _chat_tiny():
    """A char tokenizer plus ChatML structure tokens, and a model that prefers them to anything else."""
    from ponder.lm.tiny import build_char_tokenizer

    tok = build_char_tokenizer()
    tok.add_special_tokens(
        {"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]}, replace_extra_special_tokens=False
    )
    model = small_llama(len(tok), True)
    structure = [tok.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")]
    favour = torch.zeros(len(tok))
    favour[structure] = 50.0
    favour[tok.unk_token_id] = 40.0
    model.lm_head.register_forward_hook(lambda mod, inp, out: out + favour)
    return model, tok, structure


def test_no_chat_structure_token_inside_a_thought():
    model, tok, structure = _chat_tiny()
    fmt = ThoughtFormat.of(model, tok)
    assert set(structure) <= set(fmt.thought_rules().ban_ids)
    banned = set(structure_token_ids(tok, keep=(fmt.open_id, fmt.close_id))) | {fmt.open_id}
    prompts = [tok("ab", add_special_tokens=True)["input_ids"], tok("c", add_special_tokens=True)["input_ids"]]
    th = sample_thoughts(model, tok, fmt, prompts, n=3, max_tokens=12, temperature=1.0, generator=torch.Generator())
    for ids in th.ids:
        assert len(ids) == 12 and not banned & set(ids)  # the favoured tokens never came: the budget ran out
    greedy = think_then_answer(model, tok, fmt, prompts, max_thought_tokens=6, max_answer_tokens=4)
    assert all(not banned & set(ids) for ids in greedy.thoughts.ids)


@pytest.mark.slow
@pytest.mark.smollm
def test_smollm2_default_format_keeps_chat_structure_out_of_thoughts(smollm2_gguf):
    """SmolLM2's real tokenizer and weights, the default format, think mode as `ponder eval` runs it."""
    from ponder.data.registry import get_task
    from ponder.models.lookup import load_model

    lm = load_model("smollm2-135m", device="cpu")
    tok, model = lm.tokenizer, lm.model
    fmt = ThoughtFormat.of(model, tok)
    chat = {tok.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>")}
    assert chat <= set(fmt.thought_rules().ban_ids)
    assert len(fmt.structure_ids) >= 17  # SmolLM2's 17 special tokens (ids 0-16: ChatML, repo and jupyter markers)
    # The delimiters were initialised from the default phrases, not the vocabulary mean.
    emb = model.get_input_embeddings().weight
    phrase = tok(ThinkSettings().think_open_phrase, add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(emb[fmt.open_id], emb[phrase].mean(0))
    task = get_task("add1")
    problems = task.problems(4, seed=0, split="test")
    prompt_ids = fmt.prompt_ids(tok, [p.prompt for p in problems])
    out = think_then_answer(model, tok, fmt, prompt_ids, n=2, temperature=1.0, max_thought_tokens=24,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
    for ids in out.thoughts.ids:
        assert not set(fmt.structure_ids) & set(ids)


def test_insert_thought_places_a_closed_thought_before_the_token():
    from ponder.data.thought_docs import answered_thought, insert_thought

    assert insert_thought([1, 2, 3], 1, [7, 8], 90, 91) == [1, 90, 7, 8, 91, 2, 3]
    assert insert_thought([1, 2, 3], 3, [], 90, 91) == [1, 2, 3, 90, 91]  # after the last token: an empty tail
    assert answered_thought([5, 6], [7], [4, 2], 90, 91) == [5, 6, 90, 7, 91, 4, 2]
    for bad in (0, 4):
        with pytest.raises(ValueError, match="non-empty prefix"):
            insert_thought([1, 2, 3], bad, [7], 90, 91)


def test_cut_at_natural_end_keeps_the_first_line_or_sentence():
    from ponder.data.thought_docs import cut_at_natural_end

    ends = frozenset({9})
    assert cut_at_natural_end([1, 9, 2, 9], ends) == [1, 9]
    assert cut_at_natural_end([1, 9, 2, 9], ends, min_tokens=3) == [1, 9, 2, 9]  # an end before the minimum is passed
    assert cut_at_natural_end([9], ends) == [9]
    assert cut_at_natural_end([1, 2], ends) is None
    assert cut_at_natural_end([], ends) is None


def test_natural_end_ids_are_line_and_sentence_ends():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from ponder.data.thought_docs import natural_end_ids

    vocab = {"<unk>": 0, "<pad>": 1, "a": 2, ".": 3, "b?": 4, "\n": 5, "c.d": 6, "e! ": 7, "x\ny": 8}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>")),
        unk_token="<unk>",
        pad_token="<pad>",
    )
    assert natural_end_ids(tok) == {3, 4, 5, 7, 8}


def test_first_verified_picks_each_rows_first_answer_its_label_accepts():
    from ponder.data.thought_docs import first_verified

    labels = ["6", "9", "3"]
    rows = [["6", "7"], ["8", "x 9", "9"], ["4", "5"]]
    calls = []

    def verify(r, text):
        calls.append((r, text))
        return text.split()[-1] == labels[r]

    assert first_verified(rows, verify) == [0, 1, None]
    assert calls == [(0, "6"), (1, "8"), (1, "x 9"), (2, "4"), (2, "5")]  # stops at a row's first pass
    assert first_verified([], verify) == []
    assert first_verified([[]], verify) == [None]


def test_thought_in_target_moves_the_last_thought_into_the_loss():
    from ponder.data.thought_docs import thought_in_target

    assert thought_in_target("a <think>x</think> b <think>5+9=14.", "</think>14", "<think>") == (
        "a <think>x</think> b <think>",
        "5+9=14.</think>14",
    )
    # An empty thought moves nothing; the text round-trips either way.
    assert thought_in_target("q<think>", "</think>a", "<think>") == ("q<think>", "</think>a")
    with pytest.raises(ValueError, match="no '<think>'"):
        thought_in_target("no thought here", "x", "<think>")

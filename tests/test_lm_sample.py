from contextlib import contextmanager

import pytest
import torch

from ponder.lm.decode import DecodeRules, Samples, cut_at_stop, sample
from ponder.lm.delimiters import THINK_CLOSE, THINK_OPEN, think_ban_ids, think_token_ids
from ponder.lm.logprobs import token_logprobs

PROMPTS = ["a", "Question: what is 2+2? Answer:", "hello there"]


pytestmark = pytest.mark.usefixtures("one_thread")


@contextmanager
def biased(model, bias: dict[int, float]):
    """Add ``bias[id]`` to the model's output logits for those ids."""
    ids, amounts = torch.tensor(list(bias)), torch.tensor(list(bias.values()))

    def hook(module, inputs, output):
        output = output.clone()
        output[..., ids] += amounts.to(output.dtype)
        return output

    handle = model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def greedy_no_cache(model, tok, prompt_ids, max_new_tokens, ban=()):
    """Reference: full forward over the growing sequence every step, argmax, stop at EOS."""
    ids = list(prompt_ids)
    out = []
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        logits[list(ban)] = float("-inf")
        nxt = int(logits.argmax())
        out.append(nxt)
        ids.append(nxt)
        if nxt == tok.eos_token_id:
            break
    return out


def row_tokens(samples: Samples, row: int) -> list[int]:
    return samples.tokens[row][samples.mask[row]].tolist()


def test_greedy_matches_reference_with_left_padding_and_shared_prefix(model, tok):
    samples = sample(model, tok, PROMPTS, n=3, max_new_tokens=12, temperature=0)
    assert samples.prompt_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for i, prompt in enumerate(PROMPTS):
        expected = greedy_no_cache(model, tok, tok(prompt)["input_ids"], 12)
        for row in range(*samples.group(i).indices(len(samples))):
            assert row_tokens(samples, row) == expected
        # One prompt alone (no padding, no expansion) gives the same continuation.
        alone = sample(model, tok, [prompt], n=1, max_new_tokens=12, temperature=0)
        assert row_tokens(alone, 0) == expected and alone.texts(tok)[0] == samples.texts(tok)[3 * i]
    # Chunked decoding (prompts sorted by length internally) keeps the prompt order.
    chunked = sample(model, tok, PROMPTS, n=3, max_new_tokens=12, temperature=0, batch_size=2)
    assert chunked.texts(tok) == samples.texts(tok)


def test_shapes_and_max_new_tokens(model, tok):
    samples = sample(model, tok, PROMPTS, n=2, max_new_tokens=7, generator=torch.Generator().manual_seed(0))
    assert len(samples) == 6 and samples.tokens.shape[0] == 6 and samples.tokens.shape[1] <= 7
    assert samples.mask.dtype == torch.bool and samples.logprobs.dtype == torch.float32
    assert (samples.num_tokens <= 7).all()
    assert (samples.tokens[~samples.mask] == tok.pad_token_id).all() and (samples.logprobs[~samples.mask] == 0).all()
    for row in range(len(samples)):
        ended_by_eos = tok.eos_token_id in row_tokens(samples, row)
        assert bool(samples.finished[row]) == ended_by_eos
        if not ended_by_eos:
            assert samples.num_tokens[row] == 7
    empty = sample(model, tok, PROMPTS, n=2, max_new_tokens=0)
    assert empty.tokens.shape == (6, 0) and empty.texts(tok) == [""] * 6 and not empty.finished.any()


def test_eos_ends_rows_and_is_kept(model, tok):
    with biased(model, {tok.eos_token_id: 100.0}):
        samples = sample(model, tok, PROMPTS, n=2, max_new_tokens=5)
    assert samples.finished.all() and (samples.num_tokens == 1).all()
    assert (samples.tokens[:, 0] == tok.eos_token_id).all() and samples.texts(tok) == [""] * 6
    # Extra ids from the generation config also end rows.
    z = tok.convert_tokens_to_ids("z")
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tok.eos_token_id, z]
    try:
        with biased(model, {z: 100.0}):
            samples = sample(model, tok, PROMPTS, max_new_tokens=5)
    finally:
        model.generation_config.eos_token_id = saved
    assert samples.finished.all() and (samples.tokens[:, 0] == z).all() and (samples.num_tokens == 1).all()


def test_stop_strings_cut_text_and_finish(model, tok):
    free = sample(model, tok, PROMPTS, max_new_tokens=10, temperature=0)
    stop = free.texts(tok)[0][3:5]  # a string the greedy continuation of prompt 0 contains
    stopped = sample(model, tok, PROMPTS, max_new_tokens=10, temperature=0, rules=DecodeRules(stop_strings=(stop,)))
    for row, text in enumerate(free.texts(tok)):
        cut = text.find(stop)
        if cut >= 0:
            assert stopped.texts(tok, [stop])[row] == text[: cut + len(stop)] and stopped.finished[row]
            assert stopped.num_tokens[row] == cut + len(stop)  # char tokenizer: one token per char
        else:
            assert stopped.texts(tok, [stop])[row] == text
    # Sampling from a two-letter alphabet with a three-letter stop string.
    x, y = tok.convert_tokens_to_ids(["x", "y"])
    stops = ["xyx", "yyy"]
    with biased(model, {x: 30.0, y: 30.0}):
        samples = sample(
            model,
            tok,
            PROMPTS,
            n=8,
            max_new_tokens=16,
            rules=DecodeRules(stop_strings=tuple(stops)),
            generator=torch.Generator().manual_seed(1),
        )
    assert samples.finished.any()
    for row, text in enumerate(samples.texts(tok, stops)):
        firsts = [text.find(s) + len(s) for s in stops if s in text]
        if samples.finished[row]:
            assert firsts and min(firsts) == len(text)  # ends right after its first stop string
            assert len(text) == samples.num_tokens[row]  # the completing token is the last one kept
        else:
            assert not firsts and samples.num_tokens[row] == 16


def test_stop_at_think_close(model, tok):
    _, close = think_token_ids(tok)
    with biased(model, {close: 8.0}):
        samples = sample(
            model,
            tok,
            PROMPTS,
            n=4,
            max_new_tokens=30,
            rules=DecodeRules(stop_strings=(THINK_CLOSE,)),
            generator=torch.Generator().manual_seed(0),
        )
    for row, text in enumerate(samples.texts(tok)):
        assert text.count(THINK_CLOSE) <= 1
        assert text.endswith(THINK_CLOSE) == bool(samples.finished[row])
        if samples.finished[row]:
            assert row_tokens(samples, row)[-1] == close


def test_banned_ids_never_appear(model, tok):
    open_id, close_id = think_token_ids(tok)
    with biased(model, {open_id: 50.0}):
        free = sample(model, tok, PROMPTS, max_new_tokens=3, temperature=0)
        assert (free.tokens[:, 0] == open_id).all() and all(t.startswith(THINK_OPEN) for t in free.texts(tok))
        for temperature in (0.0, 1.0):
            banned = sample(
                model,
                tok,
                PROMPTS,
                n=4,
                max_new_tokens=20,
                temperature=temperature,
                rules=DecodeRules(ban_ids=tuple(think_ban_ids(tok))),
                generator=torch.Generator().manual_seed(0),
            )
            assert not torch.isin(banned.tokens, torch.tensor([open_id, close_id])).any()
            assert not any(THINK_OPEN in t or THINK_CLOSE in t for t in banned.texts(tok))


@pytest.mark.parametrize("temperature,top_p,eos_bias", [(1.0, 1.0, 0.0), (0.7, 0.9, 0.0), (1.0, 1.0, 4.0)])
def test_logprobs_match_rescoring(model, tok, temperature, top_p, eos_bias):
    # Behaviour log-probs are the policy's at the sampling temperature (before top-p and bans):
    # exactly what the trainer's teacher-forced forward computes at the same temperature.
    # eos_bias makes rows end at different steps, so finished rows get dropped mid-decode.
    with biased(model, {tok.eos_token_id: eos_bias}):
        samples = sample(
            model,
            tok,
            PROMPTS,
            n=4,
            max_new_tokens=15,
            temperature=temperature,
            top_p=top_p,
            generator=torch.Generator().manual_seed(0),
        )
        if eos_bias:
            assert len(set(samples.num_tokens.tolist())) > 2
        for row in range(len(samples)):
            prompt = samples.prompt_ids[int(samples.prompt_index[row])]
            gen = row_tokens(samples, row)
            ids = torch.tensor([prompt + gen])
            with torch.no_grad():
                rescored = token_logprobs(model, ids, torch.ones_like(ids), inv_temperature=1 / temperature)[
                    0, len(prompt) :
                ]
            torch.testing.assert_close(samples.logprobs[row, : len(gen)], rescored, atol=1e-4, rtol=0)


def test_reproducible_with_seeded_generator(model, tok):
    def draw(seed):
        return sample(
            model, tok, PROMPTS, n=4, max_new_tokens=12, top_p=0.95, generator=torch.Generator().manual_seed(seed)
        )

    a, b, c = draw(3), draw(3), draw(4)
    assert torch.equal(a.tokens, b.tokens) and a.texts(tok) == b.texts(tok) and torch.equal(a.logprobs, b.logprobs)
    assert a.texts(tok) != c.texts(tok)


def test_top_p_tiny_keeps_only_the_argmax(model, tok):
    greedy = sample(model, tok, PROMPTS, max_new_tokens=8, temperature=0)
    nucleus = sample(model, tok, PROMPTS, max_new_tokens=8, top_p=1e-6, generator=torch.Generator().manual_seed(0))
    assert nucleus.texts(tok) == greedy.texts(tok)


def test_token_id_prompts_and_progress(model, tok):
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    by_text = sample(model, tok, PROMPTS, max_new_tokens=6, temperature=0)
    by_ids = sample(model, tok, ids, max_new_tokens=6, temperature=0, progress=True)
    assert by_ids.texts(tok) == by_text.texts(tok) and by_ids.prompt_ids == ids
    with pytest.raises(ValueError):
        sample(model, tok, [[]], max_new_tokens=2)


def _other_arch(name, vocab_size, eos_id):
    from transformers import GPT2Config, GPT2LMHeadModel, MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    if name == "gpt2":  # absolute positions, LayerNorm
        config = GPT2Config(vocab_size=vocab_size, n_positions=128, n_embd=32, n_layer=2, n_head=2, eos_token_id=eos_id)
        return GPT2LMHeadModel(config).eval()
    # GQA and a sliding window shorter than the prompts
    config = MistralConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=8,
        eos_token_id=eos_id,
    )
    return MistralForCausalLM(config).eval()


@pytest.mark.parametrize("arch", ["gpt2", "mistral"])
def test_other_architectures_greedy(tok, arch):
    model = _other_arch(arch, len(tok), tok.eos_token_id)
    samples = sample(model, tok, PROMPTS, n=2, max_new_tokens=10, temperature=0)
    for i, prompt in enumerate(PROMPTS):
        expected = greedy_no_cache(model, tok, tok(prompt)["input_ids"], 10)
        assert row_tokens(samples, 2 * i) == expected and row_tokens(samples, 2 * i + 1) == expected


def test_stop_token_ids_end_rows_and_min_new_tokens_delays_them(model, tok):
    _, close = think_token_ids(tok)
    with biased(model, {close: 50.0, tok.eos_token_id: 40.0}):
        plain = sample(
            model,
            tok,
            PROMPTS,
            n=2,
            max_new_tokens=10,
            temperature=1.0,
            rules=DecodeRules(end_ids=(close,)),
            generator=torch.Generator().manual_seed(0),
        )
        # close is (almost surely) the first token: every row is one token long, finished, text kept.
        assert plain.finished.all() and (plain.num_tokens == 1).all()
        assert all(t == THINK_CLOSE for t in plain.texts(tok))
        delayed = sample(
            model,
            tok,
            PROMPTS,
            n=2,
            max_new_tokens=10,
            temperature=1.0,
            rules=DecodeRules(end_ids=(close,), min_new_tokens=3),
            generator=torch.Generator().manual_seed(0),
        )
    # Neither close nor EOS may appear before the 4th token; then close (the top token) ends the row.
    assert (delayed.num_tokens == 4).all() and delayed.finished.all()
    first3 = delayed.tokens[:, :3]
    assert not torch.isin(first3, torch.tensor([close, tok.eos_token_id])).any()
    assert (delayed.tokens[:, 3] == close).all()


def test_stop_strings_after_text_skip_the_leading_whitespace(model, tok):
    """An answer a chat model opens with a newline runs on to its first visible line, then stops."""
    nl, a = tok.convert_tokens_to_ids(["\n", "a"])
    first = {"n": 0}

    def forced(module, inputs, output):  # step 1: newline; steps 2-3: "a"; then newline again
        first["n"] += 1
        output = output.clone()
        output[..., nl if first["n"] in (1, 4) else a] += 100.0
        return output

    handle = model.get_output_embeddings().register_forward_hook(forced)
    try:
        plain = sample(
            model, tok, PROMPTS[:1], max_new_tokens=8, temperature=0, rules=DecodeRules(stop_strings=("\n",))
        )
        first["n"] = 0
        after = sample(
            model,
            tok,
            PROMPTS[:1],
            max_new_tokens=8,
            temperature=0,
            rules=DecodeRules(stop_strings=("\n",), stops_after_text=True),
        )
    finally:
        handle.remove()
    assert plain.texts(tok, ["\n"]) == ["\n"] and plain.finished.all()  # the old rule: an empty answer
    assert after.texts(tok) == ["\naa\n"] and after.finished.all() and int(after.num_tokens[0]) == 4
    assert cut_at_stop("\n\n12\n3", ["\n"], after_text=True) == ("\n\n12\n", True)
    assert cut_at_stop("\n\n12\n3", ["\n"]) == ("\n", True)
    assert cut_at_stop("  \n ", ["\n"], after_text=True) == ("  \n ", False)

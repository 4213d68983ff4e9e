"""Token log-probs without full logits: the hidden-state path equals the model's own logits, chunks equal one pass."""

import pytest
import torch

from ponder.lm import hf_compat
from ponder.lm.logprobs import TokenScorer, logprobs_from_logits, token_logprobs

pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB = 50


def _model(kind: str):
    return _build(kind).eval()  # eval: no dropout (GPT-2 has some); gradients still flow


def _build(kind: str):
    import transformers as tf

    torch.manual_seed(0)
    small = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    if kind == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**small, tie_word_embeddings=True))
    if kind == "qwen3":
        return tf.Qwen3ForCausalLM(tf.Qwen3Config(**small, head_dim=8))
    if kind == "mistral":
        return tf.MistralForCausalLM(tf.MistralConfig(**small))
    if kind == "gemma2":  # final logit soft-capping: the hidden path must apply it
        return tf.Gemma2ForCausalLM(tf.Gemma2Config(**small, head_dim=8, final_logit_softcapping=3.0))
    if kind == "gpt2":  # not on the hidden path: falls back to the model's logits
        return tf.GPT2LMHeadModel(
            tf.GPT2Config(
                vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0
            )
        )
    raise ValueError(kind)


def _batch():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding
    mask[2, :2] = 0  # left padding
    score = torch.rand(3, 9, generator=gen) > 0.3
    return ids, mask, score


def _reference(model, ids, mask, inv):
    """Full logits, fp32 log-softmax: what every path must equal."""
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, :-1].float() * inv
    logp = logits.log_softmax(-1)
    return logp.gather(-1, ids[:, 1:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("kind", ["llama", "qwen3", "mistral", "gemma2", "gpt2"])
@pytest.mark.parametrize("inv", [1.0, 1 / 0.7])
def test_scorer_equals_full_logits_in_values_and_gradients(kind, inv):
    model = _model(kind)
    assert TokenScorer(model).hidden_path == (kind != "gpt2")
    ids, mask, score = _batch()
    scored = score & (mask != 0) & (mask.roll(1, 1) != 0)
    scored[:, 0] = False

    model.zero_grad()
    logp, ent = token_logprobs(model, ids, mask, return_entropy=True, score_mask=score, inv_temperature=inv)
    (logp.sum() + 0.3 * ent.sum()).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    ref_logp, ref_ent = _reference(model, ids, mask, inv)
    keep = scored[:, 1:]
    ((ref_logp * keep).sum() + 0.3 * (ref_ent * keep).sum()).backward()
    torch.testing.assert_close(logp[:, 1:], ref_logp * keep, atol=1e-5, rtol=0)
    torch.testing.assert_close(ent[:, 1:], ref_ent * keep, atol=1e-5, rtol=0)
    assert not logp[:, 0].any() and not logp[~scored].any()
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[name], p.grad, atol=1e-5, rtol=1e-5, msg=name)


def test_chunked_head_equals_one_pass_in_values_and_gradients(monkeypatch):
    """Chunks of 3 scored tokens through the output layer: the same numbers and gradients as one chunk."""
    model = _model("llama")
    ids, mask, score = _batch()

    def run():
        model.zero_grad()
        logp, ent = token_logprobs(model, ids, mask, return_entropy=True, score_mask=score, inv_temperature=1.3)
        (logp.sum() - ent.sum()).backward()
        return logp.detach(), ent.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}

    whole = run()
    monkeypatch.setattr("ponder.lm.logprobs.CHUNK_ELEMENTS", 3 * VOCAB)
    chunked = run()
    torch.testing.assert_close(chunked[0], whole[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked[1], whole[1], atol=1e-5, rtol=0)
    for k in whole[2]:
        torch.testing.assert_close(chunked[2][k], whole[2][k], atol=1e-5, rtol=1e-5, msg=k)


def test_head_chunks_never_hold_more_logits_than_the_cap(monkeypatch):
    """The output layer only ever sees at most one chunk of scored rows (the [tokens, vocab] logits are never whole),
    in the forward and in the backward, which recomputes each chunk's logits."""
    model = _model("llama")
    ids, mask, score = _batch()
    seen = []
    unembed = model.get_output_embeddings()
    hook = unembed.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    monkeypatch.setattr("ponder.lm.logprobs.CHUNK_ELEMENTS", 4 * VOCAB)
    scored = int((score[:, 1:] & (mask[:, 1:] != 0) & (mask[:, :-1] != 0)).sum())
    try:
        logp = token_logprobs(model, ids, mask, score_mask=score)
        assert seen and max(seen) <= 4 and sum(seen) == scored
        logp.sum().backward()
    finally:
        hook.remove()
    assert max(seen) <= 4 and sum(seen) == 2 * scored  # the backward recomputed every chunk, one at a time


def test_logprobs_from_logits_temperature_by_hand():
    logits = torch.tensor([[[2.0, 0.0, -1.0]]])
    t = torch.tensor([[0]])
    for inv in (1.0, 2.0):
        expected = inv * 2.0 - torch.logsumexp(torch.tensor([2.0, 0.0, -1.0]) * inv, 0)
        assert float(logprobs_from_logits(logits, t, inv)) == pytest.approx(float(expected), abs=1e-6)
    per_position = logprobs_from_logits(logits.expand(2, 1, 3), t.expand(2, 1), torch.tensor([[1.0], [2.0]]))
    assert per_position[0, 0] < per_position[1, 0] < 0  # a cooler distribution puts more mass on its argmax
    assert hf_compat.finish_logits(_model("gemma2"), torch.tensor([100.0])).item() == pytest.approx(3.0, abs=1e-4)

import pytest
import torch

from ponder.lm.logprobs import logprobs_from_logits, token_logprobs
from ponder.lm.padding import left_pad, position_ids_from_mask
from ponder.lm.score import PairScores, score_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def manual_logprobs(model, ids: list[int]) -> torch.Tensor:
    """[len(ids) - 1] log p(ids[t] | ids[:t]) for t >= 1, one unpadded forward."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    return logits[:-1].log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)


CONTEXTS = ["a", "The quick brown fox jumps over the lazy dog, again and again.", "xy", "12345"]
CONTINUATIONS = [" long continuation text here", "!", "z", "<think>678</think>9"]


def test_score_pairs_matches_unpadded_forward(model, tok):
    scores = score_pairs(model, tok, CONTEXTS, CONTINUATIONS)
    assert isinstance(scores, PairScores) and len(scores) == len(CONTEXTS)
    for i, (ctx, cont) in enumerate(zip(CONTEXTS, CONTINUATIONS)):
        ctx_ids = tok(ctx)["input_ids"]  # with <bos>
        cont_ids = tok(cont, add_special_tokens=False)["input_ids"]
        assert ctx_ids[0] == tok.bos_token_id and tok.bos_token_id not in cont_ids
        expected = manual_logprobs(model, ctx_ids + cont_ids)[-len(cont_ids) :]
        torch.testing.assert_close(scores.logprobs[i], expected, atol=1e-5, rtol=0)
        assert scores.num_tokens[i] == len(cont_ids)
        # A sum of per-token values each within 1e-5 is within 1e-5 per summed token (about 129 nats here).
        torch.testing.assert_close(scores.sum[i], expected.sum(), atol=1e-5 * len(cont_ids), rtol=0)
        torch.testing.assert_close(scores.mean[i], expected.mean(), atol=1e-5, rtol=0)
    # Small batches (different padding) and id inputs give the same numbers.
    ctx_ids = [tok(c)["input_ids"] for c in CONTEXTS]
    cont_ids = [tok(c, add_special_tokens=False)["input_ids"] for c in CONTINUATIONS]
    again = score_pairs(model, tok, ctx_ids, cont_ids, batch_size=2)
    for a, b in zip(again.logprobs, scores.logprobs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_score_pairs_edge_cases(model, tok):
    scores = score_pairs(model, tok, ["abc", "d"], ["", "e"])
    assert scores.logprobs[0].numel() == 0 and scores.sum[0] == 0 and scores.mean[0] == 0
    assert scores.num_tokens.tolist() == [0, 1]
    with pytest.raises(ValueError):
        score_pairs(model, tok, [[]], [[5]])
    with pytest.raises(ValueError):
        score_pairs(model, tok, ["a", "b"], ["c"])
    # Results are ordinary tensors (no_grad, not inference mode): usable inside autograd graphs.
    weight = torch.ones(2, requires_grad=True)
    (weight * score_pairs(model, tok, ["ab", "c"], ["d", "ef"]).sum).sum().backward()
    assert weight.grad is not None


@pytest.mark.parametrize("side", ["right", "left"])
def test_token_logprobs_matches_manual(model, tok, side):
    texts = ["hi", "a much longer sequence of characters", "mid length"]
    seqs = [tok(t)["input_ids"] for t in texts]
    if side == "left":
        ids, mask = left_pad(seqs, tok.pad_token_id)
    else:
        width = max(map(len, seqs))
        ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    with torch.no_grad():
        logp, ent = token_logprobs(model, ids, mask, return_entropy=True)
    assert logp.shape == ids.shape and logp.dtype == torch.float32
    assert (logp[:, 0] == 0).all() and (logp[mask == 0] == 0).all() and (ent[mask == 0] == 0).all()
    for row, seq in enumerate(seqs):
        cols = mask[row].nonzero().squeeze(-1)[1:]  # scored positions: all real tokens but the first
        torch.testing.assert_close(logp[row, cols], manual_logprobs(model, seq), atol=1e-5, rtol=0)
        with torch.no_grad():
            dist = model(input_ids=torch.tensor([seq])).logits[0, :-1].float().log_softmax(-1)
        expected_ent = -(dist.exp() * dist).sum(-1)
        torch.testing.assert_close(ent[row, cols], expected_ent, atol=1e-5, rtol=0)


def test_token_logprobs_is_differentiable(model, tok):
    ids = torch.tensor([tok("gradients")["input_ids"]])
    model.zero_grad()
    logp = token_logprobs(model, ids, torch.ones_like(ids))
    logp.sum().backward()
    grad = model.get_input_embeddings().weight.grad
    assert grad is not None and grad.abs().sum() > 0
    model.zero_grad()


@pytest.mark.parametrize("chunk", [1 << 28, 30, 5])  # whole, several rows, parts of a row
def test_logprobs_from_logits_and_positions(monkeypatch, chunk):
    monkeypatch.setattr("ponder.lm.logprobs.CHUNK_ELEMENTS", chunk)
    logits = torch.randn(3, 6, 11, dtype=torch.bfloat16)[:, :-1]  # non-contiguous, like logits[:, :-1]
    targets = torch.randint(0, 11, (3, 5))
    logp, ent = logprobs_from_logits(logits, targets, return_entropy=True)
    assert logp.dtype == torch.float32
    ref = logits.float().log_softmax(-1)
    torch.testing.assert_close(logp, ref.gather(-1, targets[..., None]).squeeze(-1))
    torch.testing.assert_close(ent, -(ref.exp() * ref).sum(-1))
    assert logprobs_from_logits(torch.zeros(0, 4, 11), torch.zeros(0, 4, dtype=torch.long)).shape == (0, 4)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 2]]

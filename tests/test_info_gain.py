"""Held-out information gain against a base model: checked against plain forwards, position sampling, batching."""

import copy
import math

import pytest
import torch

from ponder.eval.info_gain import heldout_information_gain
from ponder.lm.delimiters import think_token_ids
from ponder.rl.positions import Doc

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def two_models(random_tiny):
    """(model, base, tokenizer): a random tiny model and a perturbed copy as its base."""
    model, tok = random_tiny
    base = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model, base, tok


def _docs(tok):
    texts = ["the cat sat on the mat", "12+34=46", "a river ran past a quiet town"]
    return [Doc(tok(t)["input_ids"]) for t in texts]


def _last_logp(model, ids: list[int], target: int) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    return float(logits.log_softmax(-1)[target])


def test_heldout_gain_matches_plain_forwards(two_models):
    model, base, tok = two_models
    docs = _docs(tok)
    res = heldout_information_gain(model, base, tok, docs, positions_per_doc=2, group_size=2, max_thought_tokens=3)
    open_id, close_id = think_token_ids(tok)
    assert len(res.positions) == 6 and len(res.thoughts) == 12 and res.with_thought.shape == (6, 2)
    direct = []
    for b, (d, t) in enumerate(res.positions):
        ids = docs[d].ids
        scored = [_last_logp(model, ids[:t] + [open_id, *c, close_id], ids[t]) for c in res.thoughts[2 * b : 2 * b + 2]]
        torch.testing.assert_close(res.with_thought[b], torch.tensor(scored), atol=1e-4, rtol=0)
        base_lp = _last_logp(base, ids[:t], ids[t])
        assert math.isclose(res.base_logp[b], base_lp, abs_tol=1e-4)
        assert math.isclose(res.no_think_logp[b], _last_logp(model, ids[:t], ids[t]), abs_tol=1e-4)
        direct.append(sum(scored) / 2 - base_lp)
    s = res.summary()
    assert math.isclose(s["info_gain"], sum(direct) / len(direct), abs_tol=1e-4)
    # The loss without thinking: every predicted token of every document, by the model's own loss.
    with torch.no_grad():
        losses = [
            (model(input_ids=torch.tensor([d.ids]), labels=torch.tensor([d.ids])).loss, len(d.ids) - 1) for d in docs
        ]
    expected = sum(float(loss) * n for loss, n in losses) / sum(n for _, n in losses)
    assert math.isclose(s["ntp_loss"], expected, abs_tol=1e-4) and s["ntp_tokens"] == sum(n for _, n in losses)
    assert 1 <= s["thought_tokens_mean"] <= 3 and 0 <= s["closed_fraction"] <= 1


def test_positions_are_seeded_per_document_and_shared_across_models(two_models):
    model, base, tok = two_models
    docs = _docs(tok)
    kw = dict(positions_per_doc=3, group_size=2, max_thought_tokens=3, seed=5)
    one = heldout_information_gain(model, base, tok, docs, batch_size=1, **kw)
    many = heldout_information_gain(model, base, tok, docs, batch_size=8, **kw)
    itself = heldout_information_gain(base, base, tok, docs, **kw)
    assert one.positions == many.positions == itself.positions
    assert [t for d, t in one.positions if d == 1] == sorted({t for d, t in one.positions if d == 1})  # distinct
    assert all(1 <= t < len(docs[d].ids) for d, t in one.positions)
    assert one.thoughts == many.thoughts  # a document's thoughts follow its own generator, not the batch
    torch.testing.assert_close(one.gains, many.gains, atol=1e-4, rtol=0)
    other_seed = heldout_information_gain(model, base, tok, docs, **{**kw, "seed": 6})
    assert other_seed.positions != one.positions
    # For M = base the gain is the base's own: against base and against itself are the same number.
    s = itself.summary()
    assert math.isclose(s["info_gain"], s["self_info_gain"], abs_tol=1e-5)
    # A one-token document has no position and no predicted token; the others still count.
    short = heldout_information_gain(model, base, tok, [Doc([tok.bos_token_id])], **kw)
    assert short.positions == [] and math.isnan(short.summary()["info_gain"]) and short.ntp_tokens == 0

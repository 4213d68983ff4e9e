"""One call per input: the fused answer + reference log-likelihood against the two separate calls."""

from __future__ import annotations

import pytest
import torch

from ponder.data import get_task
from ponder.lm.decode import sample
from ponder.lm.load import LM
from ponder.lm.score import score_pairs
from ponder.lm.thinking import ANSWER_STOPS, ThoughtFormat
from ponder.plan.env import PlanEnv
from ponder.plan.fused import answer_and_score
from ponder.plan.state import Chain


@pytest.fixture
def trained(trained_tiny_dir, one_thread):
    from ponder.models.lookup import load_model

    return load_model(str(trained_tiny_dir))


@pytest.fixture
def random_lm(random_tiny, one_thread):
    model, tok = random_tiny
    return LM(model, tok, "random-tiny")


def _cases(tok):
    # Contexts of different lengths (left padding differs per row), references of 1-3 tokens.
    prompts = ["12+7=", "3+45=", "1+1=", "58+31=", "9+9="]
    refs = ["19", "48", "2", "89", "18"]
    ctx = tok(prompts, add_special_tokens=True)["input_ids"]
    return ctx, [tok(r, add_special_tokens=False)["input_ids"] for r in refs], refs


@pytest.mark.parametrize("which", ["trained", "random_lm"])
def test_fused_gives_the_answers_and_logliks_of_the_two_separate_calls(which, request):
    lm = request.getfixturevalue(which)
    model, tok = lm.model, lm.tokenizer
    fmt = ThoughtFormat.of(model, tok)
    ctx, ref_ids, refs = _cases(tok)
    rules = fmt.answer_rules(ANSWER_STOPS)
    both = answer_and_score(model, tok, rules, ctx, ref_ids, max_new_tokens=6)
    alone = sample(model, tok, ctx, n=1, max_new_tokens=6, temperature=0.0, rules=rules)
    assert both.answer_ids == [alone.ids(r) for r in range(len(ctx))]
    assert torch.equal(both.finished, alone.finished.cpu())
    scored = score_pairs(model, tok, ctx, refs)
    # log-likelihoods of a few nats: agree to 1e-4 of their magnitude (float rounding of different paddings)
    tol = 1e-4 * max(1.0, float(scored.sum.abs().max()))
    assert torch.allclose(both.ref_sum, scored.sum, atol=tol, rtol=0)
    for a, b in zip(both.ref_logprobs, scored.logprobs):
        assert a.shape == b.shape and torch.allclose(a, b, atol=tol, rtol=0)
    assert both.ref_tokens.tolist() == scored.num_tokens.tolist()
    # the behaviour log-probs of the greedy answer match the sampler's too
    for r in range(len(ctx)):
        assert torch.allclose(both.answer_logprobs[r], alone.row_logprobs(r), atol=tol, rtol=0)


@pytest.mark.parametrize("fmt_name", ["direct", "qa", "think"])
def test_fused_evaluation_counts_one_call_per_input_and_matches_the_separate_one(trained, fmt_name):
    task = get_task("add2")
    chain = Chain(exemplars=("12+7=19",), answer_format=fmt_name)
    kw = dict(n_train=5, n_heldout=2, max_thought_tokens=8, max_answer_tokens=6)
    fused, apart = PlanEnv(trained, task, **kw), PlanEnv(trained, task, fused=False, **kw)
    a, b = fused.per_input(chain, fused.train), apart.per_input(chain, apart.train)
    assert a.correct == b.correct and a.generated == b.generated
    tol = 1e-4 * max(1.0, max(abs(v) for v in b.loglik))
    assert a.loglik == pytest.approx(b.loglik, abs=tol)
    assert (a.calls, b.calls) == (5, 10)  # one call per input, against two
    # tokens: the context and the reference read once (fused) against twice, the same answers written
    assert a.tokens < b.tokens
    out = fused.evaluate(chain)
    assert fused.counters.calls == 5 and fused.counters.evaluations == 1
    assert apart.evaluate(chain).accuracy == out.accuracy and apart.counters.calls == 10


@pytest.mark.slow
def test_fused_evaluation_on_smollm2_matches_the_separate_calls(smollm2_gguf, one_thread):
    """The real model (left padding, a right-padded reference, the cropped cache): same answers and log-likelihoods."""
    from ponder.models.lookup import load_model

    lm = load_model("smollm2-135m")
    task = get_task("add1")
    kw = dict(n_train=4, n_heldout=2, max_answer_tokens=12)
    fused, apart = PlanEnv(lm, task, **kw), PlanEnv(lm, task, fused=False, **kw)
    for chain in (
        Chain(instructions=("Think step by step.",), exemplars=("8+7=15",), answer_format="direct"),
        Chain(exemplars=("Q: 1+1= A: 2",), answer_format="qa"),
    ):
        a, b = fused.per_input(chain, fused.train), apart.per_input(chain, apart.train)
        assert a.correct == b.correct and a.generated == b.generated and (a.calls, b.calls) == (4, 8)
        assert a.loglik == pytest.approx(b.loglik, abs=1e-3 * max(1.0, max(abs(v) for v in b.loglik)))

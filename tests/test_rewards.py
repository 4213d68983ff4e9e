"""Reward functions: hand-computed values for the pure math, manual recomputation for the model-based ones."""

from __future__ import annotations

import math

import pytest
import torch

from ponder.data.synthetic import Addition
from ponder.data.task import Problem
from ponder.lm.score import score_pairs
from ponder.rewards import (
    REWARDS,
    answer_confidence,
    answer_likelihood,
    answer_likelihood_reward,
    combine,
    format_reward,
    gather_answers_for_vote,
    length_penalty,
    length_reward,
    majority_stats,
    majority_vote,
    margin_confidence_from_logprobs,
    prompt_group_id,
    self_certainty,
    self_certainty_from_logprobs,
    thought_token_counts,
    trl_reward,
    verifiable,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TASK = Addition(2)

# group 0: answers 5, 7, 7, None, "5 " -> tie 5/7 (2 each), earliest seen (5) wins
# group 1: 12, "12." (normalises to 12), 13 -> 12
# group 2: no answers at all -> no majority
COMPLETIONS = [
    "<think>a</think>5",
    "12",
    "<think>b</think>7",
    "<think>x</think>12.",
    "<think>c</think>7",
    "<think>d",
    "13",
    "5 ",
    "<think>",
    "<think>y",
]
GROUPS = [0, 1, 0, 1, 0, 0, 1, 0, 2, 2]
PROMPTS = [f"p{g}" for g in GROUPS]


def test_majority_vote_hand_group_with_tie_and_no_answers():
    r = majority_vote(PROMPTS, COMPLETIONS, GROUPS, task=TASK)
    assert r.dtype == torch.float32 and r.shape == (10,)
    assert r.tolist() == [1, 1, 0, 1, 0, 0, 0, 1, 0, 0]
    r = majority_vote(PROMPTS, COMPLETIONS, torch.tensor(GROUPS), task=TASK, no_answer_reward=-0.5)
    assert r.tolist() == [1, 1, 0, 1, 0, -0.5, 0, 1, -0.5, -0.5]


def test_majority_vote_rejects_singleton_groups():
    with pytest.raises(ValueError, match=r"group methods need G >= 2"):
        majority_vote(["a", "a", "b"], ["1", "1", "2"], [0, 0, 1], task=TASK)
    with pytest.raises(ValueError, match=r"group ids"):
        majority_vote(["a", "a"], ["1", "1"], [0], task=TASK)


def test_majority_stats_by_hand():
    refs = ["7" if g == 0 else "12" if g == 1 else "1" for g in GROUPS]
    s = majority_stats(PROMPTS, COMPLETIONS, GROUPS, task=TASK, reference_answers=refs)
    assert s["num_groups"] == 3
    assert s["majority_ratio"] == pytest.approx((2 / 5 + 2 / 3 + 0) / 3)
    assert s["no_answer_fraction"] == pytest.approx(3 / 10)
    assert s["label_accuracy"] == pytest.approx(1 / 3)  # only group 1's majority is right
    # group 0: vote 1,0,0,na,1 vs truth 0,1,1,na,0 -> 1 agrees; group 1: 3 agree; group 2: 2 agree
    assert s["reward_accuracy"] == pytest.approx(6 / 10)
    assert "label_accuracy" not in majority_stats(PROMPTS, COMPLETIONS, GROUPS, task=TASK)


def test_vote_gathers_across_ranks(monkeypatch):
    """Simulated 2-rank run: the vote (and the G check) use the whole group, rewards stay local."""
    import torch.distributed as dist

    other_rank = (["5", "5", "9"], [0, 0, 3])

    def fake_all_gather(out, obj):
        out[0], out[1] = obj, other_rank

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_gather_object", fake_all_gather)
    answers, ids = gather_answers_for_vote(["7", "5", "9"], [0, 0, 3])
    assert answers == ["7", "5", "9", "5", "5", "9"] and ids == [0, 0, 3, 0, 0, 3]
    # locally group 0 ties 7/5 (7 first) and group 3 is a singleton; gathered, 5 wins and group 3 has G=2
    r = majority_vote(["q"] * 3, ["7", "5", "<think>t</think>9"], [0, 0, 3], task=TASK)
    assert r.tolist() == [0, 1, 1]


def test_gather_is_identity_without_distributed():
    assert gather_answers_for_vote(["1", None], torch.tensor([4, 4])) == (["1", None], [4, 4])


def test_verifiable_uses_task_score():
    problems = [TASK.make(12, 34), TASK.make(12, 34)]
    r = verifiable([p.prompt for p in problems], ["<think>t</think>46", "45"], [0, 0], problems=problems, task=TASK)
    assert r.tolist() == [1.0, 0.0]
    r = verifiable(["1+1=", "1+1="], ["2", "3"], [0, 0], problems=["2", "2"], task=TASK)  # bare answers
    assert r.tolist() == [1.0, 0.0]


def test_format_reward_hand_strings():
    cases = {
        "<think>a</think>5": (1, 1),
        "<think></think>5": (1, 1),
        " <think>a</think> 5\n": (1, 1),
        "<think>a</think>": (0, 0),
        "<think>a</think>  \n": (0, 0),
        "<think>a": (0, 0),
        "<think>a</think><think>b</think>5": (0, 0),
        "<think>a</think>5<think>b": (0, 0),
        "x<think>a</think>5": (0, 0),
        "</think>5": (0, 0),
        "</think><think>5": (0, 0),
        "5": (0, 1),
        "": (0, 0),
    }
    texts = list(cases)
    assert format_reward(texts).tolist() == [float(v[0]) for v in cases.values()]
    assert format_reward(texts, require_think=False).tolist() == [float(v[1]) for v in cases.values()]


def test_length_penalty_and_counts(tok):
    assert length_penalty([0, 10, 15, 30], target=10, scale=0.5).tolist() == [0.0, 0.0, -0.25, -1.0]
    with pytest.raises(ValueError):
        length_penalty([1], target=0)
    comps = ["<think>abc</think>4", "4", "<think>abcdef"]
    assert thought_token_counts(comps).tolist() == [3, 0, 6]
    assert thought_token_counts(comps, tok).tolist() == [3, 0, 6]  # char tokenizer: one token per char
    assert length_reward(["p"] * 3, comps, None, target=2).tolist() == pytest.approx([-0.5, 0.0, -2.0])


def test_combine_arithmetic_and_errors():
    rewards = {"a": torch.tensor([1.0, 0.0, 1.0]), "b": torch.tensor([0.5, 0.5, -1.0]), "log": torch.zeros(3)}
    assert combine(rewards, {"a": 2.0, "b": -1.0}).tolist() == [1.5, -0.5, 3.0]
    with pytest.raises(KeyError, match="typo"):
        combine(rewards, {"a": 1.0, "typo": 1.0})
    with pytest.raises(ValueError):
        combine({"a": torch.ones(3), "b": torch.ones(2)}, {"a": 1.0, "b": 1.0})
    assert torch.isnan(combine({"a": torch.tensor([float("nan"), 1.0])}, {"a": 1.0})[0])  # caller's job


def test_self_certainty_pure_hand_values():
    v = 5
    uniform = torch.full((2, 3, v), -math.log(v))
    assert self_certainty_from_logprobs(uniform, torch.ones(2, 3)).abs().max() < 1e-6
    # near one-hot: mass 1-eps on one token -> -log V - (1/V)(log(1-eps) + (V-1) log(eps/(V-1))), unbounded
    for eps in (1e-3, 1e-8):
        p = torch.full((v,), eps / (v - 1))
        p[0] = 1 - eps
        want = -math.log(v) - (math.log(1 - eps) + (v - 1) * math.log(eps / (v - 1))) / v
        got = self_certainty_from_logprobs(p.log().view(1, 1, v), torch.ones(1, 1))
        assert got.item() == pytest.approx(want, rel=1e-5)
    assert got.item() > math.log(v)
    # V=2, tokens: uniform (0), (0.75, 0.25) (= 0.5 log(4/3)), a masked-out junk position; empty row -> 0
    lp = torch.tensor([[[0.5, 0.5], [0.75, 0.25], [0.99, 0.01]]] * 2).log()
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert self_certainty_from_logprobs(lp, mask).tolist() == pytest.approx([0.5 * math.log(4 / 3) / 2, 0.0], abs=1e-6)


def test_margin_confidence_hand_values():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2], [0.1, 0.3, 0.6]])
    lp = torch.stack([p, p]).log()  # [2, 3, 3]
    mask = torch.tensor([[1, 1, 0], [0, 0, 1]])
    assert margin_confidence_from_logprobs(lp, mask).tolist() == pytest.approx([0.25, 0.3], abs=1e-6)
    assert margin_confidence_from_logprobs(lp, torch.zeros(2, 3)).tolist() == [0.0, 0.0]


def _manual_logprobs(model, tok, prompt: str, completion: str) -> torch.Tensor:
    """Full-vocab log-probs [len(completion ids), V] predicting each completion token (one unpadded forward)."""
    ctx = tok(prompt)["input_ids"]
    cont = tok(completion, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ctx + cont])).logits[0].float()
    return torch.log_softmax(logits, -1)[len(ctx) - 1 : -1]


def test_self_certainty_model_matches_manual(model, tok):
    prompts = ["12+34=", "7+8=", "12+34="]
    comps = ["<think>4+2</think>46", "15", "<think>x"]
    got = self_certainty(model, tok, prompts, comps)
    assert torch.allclose(got, self_certainty(model, tok, prompts, comps, batch_size=1), atol=1e-5)
    for i, (p, c) in enumerate(zip(prompts, comps)):
        lp = _manual_logprobs(model, tok, p, c)
        assert got[i].item() == pytest.approx(
            self_certainty_from_logprobs(lp[None], torch.ones(1, len(lp))).item(), abs=1e-5
        )
    logits = torch.randn(2, 4, 7)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert torch.allclose(
        self_certainty(logits, mask=mask), self_certainty_from_logprobs(torch.log_softmax(logits, -1), mask)
    )


def test_answer_confidence_model_matches_manual(model, tok):
    prompts = ["12+34=", "7+8=", "1+1="]
    comps = ["<think>4+2</think>46", "15", "<think>unclosed"]
    got = answer_confidence(model, tok, prompts, comps)
    lp = _manual_logprobs(model, tok, prompts[0], comps[0])
    assert got[0].item() == pytest.approx(
        margin_confidence_from_logprobs(lp[None, -2:], torch.ones(1, 2)).item(), abs=1e-5
    )  # the two answer tokens after </think>
    lp = _manual_logprobs(model, tok, prompts[1], comps[1])
    assert got[1].item() == pytest.approx(margin_confidence_from_logprobs(lp[None], torch.ones(1, 2)).item(), abs=1e-5)
    assert got[2].item() == 0.0


def test_answer_likelihood_matches_score_pairs(model, tok):
    prompts, thoughts, answers = ["12+34=", "12+34=", "7+8="], ["4+2", "zz", None], ["46", "46", "15"]
    got = answer_likelihood(model, tok, prompts, thoughts, answers)
    with_t = score_pairs(
        model, tok, ["12+34=<think>4+2</think>", "12+34=<think>zz</think>", "7+8=<think></think>"], answers
    )
    base = score_pairs(model, tok, prompts, answers)
    assert torch.allclose(got, with_t.mean - base.mean, atol=1e-5)
    assert torch.allclose(
        answer_likelihood(model, tok, prompts, thoughts, answers, reduce="sum"), with_t.sum - base.sum, atol=1e-5
    )
    assert torch.allclose(
        answer_likelihood(model, tok, prompts, thoughts, answers, baseline=False), with_t.mean, atol=1e-5
    )
    comps = ["<think>4+2</think>46", "<think>zz</think>40", "15"]
    r = answer_likelihood_reward(prompts, comps, [0, 0, 1], model=model, tokenizer=tok, reference_answers=answers)
    assert torch.allclose(r, got, atol=1e-5)
    with pytest.raises(ValueError):
        answer_likelihood(model, tok, prompts, thoughts, answers, reduce="max")


def test_trl_adapter_groups_identical_prompts():
    seen = {}

    def spy(prompts, completions, group_ids, **kw):
        seen.update(ids=group_ids.tolist(), kw=kw, completions=completions)
        return torch.arange(len(completions), dtype=torch.float32)

    f = trl_reward(spy, columns={"reference_answers": "answer"}, scale=2)
    out = f(
        ["p", "q", "p", "q"],
        ["a", "b", [{"role": "assistant", "content": "c"}], "d"],
        answer=[1, 2, 1, 2],
        trainer_state=None,
    )
    assert out == [0.0, 1.0, 2.0, 3.0] and all(isinstance(x, float) for x in out)
    ids = seen["ids"]
    assert ids[0] == ids[2] == prompt_group_id("p") and ids[1] == ids[3] and ids[0] != ids[1]
    assert seen["completions"] == ["a", "b", "c", "d"]
    assert seen["kw"]["reference_answers"] == [1, 2, 1, 2] and seen["kw"]["scale"] == 2 and "answer" not in seen["kw"]
    assert f.__name__ == "spy"

    vote = trl_reward("majority_vote", task=TASK)
    assert vote.__name__ == "majority_vote"
    assert vote(["a", "b", "a", "b"], ["1", "2", "1", "3"]) == [1.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match=r"G >= 2"):
        vote(["a", "b", "a"], ["1", "2", "1"])
    ver = trl_reward("verifiable", columns={"problems": "answer"}, task=TASK)
    assert ver(["1+1="] * 2, ["2", "3"], answer=["2", "2"]) == [1.0, 0.0]


def test_registry_uniform_signature(model, tok):
    names = {
        "verifiable",
        "majority_vote",
        "format",
        "length",
        "answer_likelihood",
        "self_certainty",
        "answer_confidence",
    }
    assert names <= set(REWARDS)
    prompts, comps = ["1+1=", "1+1="], ["<think>1+1</think>2", "<think>x</think>3"]
    cols = dict(
        task=TASK,
        problems=[Problem("1+1=", "2")] * 2,
        target=2,
        model=model,
        tokenizer=tok,
        reference_answers=["2", "2"],
        unused_column=[0, 0],
    )
    for name in sorted(names):
        r = REWARDS[name](prompts, comps, [0, 0], **cols)
        assert r.shape == (2,) and r.dtype == torch.float32 and torch.isfinite(r).all(), name


# ---------------------------------------------------------------- TRL-signature rewards in ponder's mix


def _digits(prompts, completions, **kwargs) -> list[float]:
    _digits.seen = kwargs
    return [float(sum(ch.isdigit() for ch in c)) for c in completions]


def test_from_trl_reward_passes_columns_and_returns_its_values():
    from ponder.rewards import from_trl_reward

    batch = from_trl_reward(_digits)
    ids = torch.tensor([7, 7, 9])
    out = batch(["1+1=", "1+1=", "2+2="], ["2", "12", "four"], ids, task="T", completion_ids=[[1], [2], [3]])
    assert out.dtype == torch.float32 and out.tolist() == [1.0, 2.0, 0.0]
    assert _digits.seen["task"] == "T" and _digits.seen["completion_ids"] == [[1], [2], [3]]
    assert _digits.seen["group_ids"] is ids and batch.__name__ == "_digits"
    # the inverse of trl_reward: the round trip gives TRL's list back
    from ponder.rewards import trl_reward

    assert trl_reward(batch)(["a", "b"], ["x1", "22"]) == [1.0, 2.0]


def test_from_trl_reward_rejects_a_wrong_count_or_none():
    from ponder.rewards import from_trl_reward

    with pytest.raises(ValueError, match="<lambda>.*one number per completion"):
        from_trl_reward(lambda p, c, **k: [1.0])(["a", "b"], ["x", "y"])

    def gappy(prompts, completions, **kwargs):
        return [1.0, None]

    with pytest.raises(ValueError, match="gappy.*one number per completion"):
        from_trl_reward(gappy)(["a", "b"], ["x", "y"])


def test_register_reward_makes_a_name_the_mix_knows():
    from ponder.rewards import REWARDS, parse_reward_spec, register_reward
    from ponder.rl.grpo import GRPOConfig

    with pytest.raises(ValueError, match="built-in"):
        register_reward("verifiable", _digits)
    try:
        register_reward("digits", _digits)
        assert parse_reward_spec("verifiable=1,digits=0.2") == {"verifiable": 1.0, "digits": 0.2}
        assert GRPOConfig(reward="verifiable=1,digits=0.2").reward == "verifiable=1,digits=0.2"
        assert REWARDS["digits"](["q"], ["123"]).tolist() == [3.0]
        register_reward("digits", lambda p, c, **k: [0.5] * len(c))  # a registered name may be replaced
        assert REWARDS["digits"](["q"], ["123"]).tolist() == [0.5]
    finally:
        REWARDS.pop("digits", None)

"""The engine's behaviour policy, TIS, and the GRPO family's reachable variants (HICRA, Dr. GRPO).

Hand computations for the pure pieces; for the wiring, one GRPO step on a small random model whose
rollouts are either sampled (the behaviour-policy checks) or hand-made (HICRA and Dr. GRPO, where
the expected advantages and loss follow from the batch by hand).
"""

import math

import pytest
import torch

import ponder.rl.generation as generation
from ponder.data.synthetic import Addition
from ponder.lm.thinking import Completions, Thoughts
from ponder.rl.grpo import GRPOConfig, GRPOTrainer
from ponder.rl.hicra import phrase_pattern, planning_token_mask
from ponder.train.engine import mismatch_stats, tis_weights

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- pure pieces


def test_tis_weights_and_mismatch_stats_by_hand():
    behaviour = torch.tensor([[-1.0, -2.0, -9.0]])
    trainer = torch.tensor([[-1.5, -1.0, 5.0]])
    mask = torch.tensor([[True, True, False]])  # the third token is off the mask: weight 1, never counted
    w = tis_weights(trainer, behaviour, mask, cap=2.0)
    assert w[0].tolist() == pytest.approx([math.exp(-0.5), 2.0, 1.0])  # e^1 = 2.718 is truncated at the cap
    stats = mismatch_stats(behaviour, trainer, mask)
    assert stats["logp_mismatch_abs"] == pytest.approx(0.75)
    # k3 = (r - 1) - log r with log r = d: d = -0.5 -> e^-0.5 - 1 + 0.5; d = 1 -> e - 2.
    assert stats["logp_mismatch_kl"] == pytest.approx(((math.exp(-0.5) - 0.5) + (math.e - 2)) / 2)
    same = mismatch_stats(behaviour, behaviour, mask)
    assert same == {"logp_mismatch_abs": 0.0, "logp_mismatch_kl": 0.0}


def test_planning_token_mask_marks_the_phrase_tokens_only(char_tokenizer):
    pattern = phrase_pattern(["carry the  one", "check"])
    text = "5+7=12 carry the one, recheck: check"
    ids = char_tokenizer.encode(text, add_special_tokens=False)
    mask = planning_token_mask(char_tokenizer, ids, pattern)
    marked = "".join(ch if m else "_" for ch, m in zip(text, mask))
    # Word boundaries: "recheck" is not the phrase "check"; the phrase's inner spaces are marked.
    assert marked == "_______carry the one" + "_" * len(", recheck: ") + "check"
    assert planning_token_mask(char_tokenizer, ids, None) == [False] * len(ids)


# ---------------------------------------------------------------- one step on a random model


def _cfg(**kw):
    base = dict(
        steps=2,
        prompts_per_step=2,
        group_size=4,
        pool_size=4,
        max_thought_tokens=6,
        max_answer_tokens=3,
        lr=1e-3,
        save_every=100,
        reward="index",
        no_answer_reward=-1.0,
    )
    return GRPOConfig(**{**base, **kw})


@pytest.fixture
def index_reward(monkeypatch):
    """A reward that differs within every group (the completion's index), so no group is filtered."""
    from ponder.rewards import REWARDS

    monkeypatch.setitem(REWARDS, "index", lambda prompts, completions, group_ids, **_: torch.arange(len(completions)))


@pytest.mark.parametrize("logprob_temperature", ["sampling", "one"])
def test_sampler_logprobs_are_logp_old_first_ratio_one_then_clipping(
    random_tiny, tmp_path, index_reward, logprob_temperature
):
    """logp_old is the sampler's: the first epoch's ratio is 1 (same weights), the second's moves and clips."""
    model, tok = random_tiny
    cfg = _cfg(ppo_epochs=2, lr=0.05, temperature=0.7, logprob_temperature=logprob_temperature)
    m = GRPOTrainer(model, tok, Addition(2), cfg, tmp_path).train_step()
    assert m["groups_trained"] == 2
    # Sampler (incremental decode) and trainer (one padded forward) agree to float error at T = 0.7
    # and at T = 1, so the first epoch's ratio is 1 and nothing is clipped yet.
    assert m["logp_mismatch_abs"] < 1e-4 and m["logp_mismatch_kl"] < 1e-6
    assert m["ratio_mean_first_epoch"] == pytest.approx(1.0, abs=1e-4)
    assert m["clip_fraction_first_epoch"] == 0.0
    # The second epoch's ratio is against the same behaviour log-probs after one large step: it clips.
    assert m["clip_fraction"] > 0 and m["ratio_mean"] != pytest.approx(1.0, abs=1e-3)


def _hand_completions(tok, prompts: list[list[int]], thoughts: list[str], answers: list[str], n: int) -> Completions:
    enc = [tok.encode(t, add_special_tokens=False) for t in thoughts]
    thought_lp = [torch.full((len(t) + 1,), -1.0) for t in enc]  # + the model's own </think>
    th = Thoughts(prompts, n, enc, thought_lp, torch.ones(len(enc), dtype=torch.bool))
    ans = [tok.encode(a, add_special_tokens=False) for a in answers]
    open_id, close_id = tok.convert_tokens_to_ids(["<think>", "</think>"])
    return Completions(
        prompts,
        n,
        th,
        ans,
        [torch.full((len(a),), -1.0) for a in ans],
        torch.ones(len(ans), dtype=bool),
        open_id,
        close_id,
    )


@pytest.fixture
def hand_rollouts(monkeypatch, index_reward):
    """Replace sampling in GRPO by fixed completions: group 0 plans ("carry the one"), group 1 does not."""
    thoughts = ["carry the one", "7", "add", "x", "1+1", "ok", "12", "9"]
    answers = ["1", "2", "3", "4", "5", "6", "7", "8"]

    def fake(model, tokenizer, fmt, prompt_ids, n, *_, **__):
        return _hand_completions(tokenizer, prompt_ids, thoughts, answers, n)

    monkeypatch.setattr(generation, "complete", fake)  # what GRPO's transformers backend samples with
    return thoughts


def test_hicra_boosts_exactly_the_planning_tokens(random_tiny, tmp_path, hand_rollouts):
    model, tok = random_tiny
    cfg = _cfg(hicra_alpha=0.5, planning_lexicon=["carry the one"], max_thought_tokens=16)
    trainer = GRPOTrainer(model, tok, Addition(2), cfg, tmp_path)
    sb = trainer.recipe.make_step(trainer)
    adv, mask = sb.advantages, sb.batch.loss_mask
    assert adv.shape == mask.shape  # per-token advantages
    plain = torch.tensor([adv[i][mask[i]][-1] for i in range(len(adv))])  # the answer token: never planning
    # Index rewards 0..3 in each group: GRPO's std-scaled advantages are the same in both groups.
    expected = (torch.arange(4.0) - 1.5) / torch.arange(4.0).std()
    assert plain.tolist() == pytest.approx(torch.cat([expected, expected]).tolist(), abs=1e-5)
    boosted = adv != plain[:, None]
    # Row 0's thought is the phrase: its 13 tokens (spaces included) get A + 0.5 |A|; nothing else changes.
    assert boosted.sum().item() == len("carry the one")
    assert boosted[0].sum().item() == len("carry the one")
    a0 = plain[0].item()
    assert adv[0][boosted[0]].tolist() == pytest.approx([a0 + 0.5 * abs(a0)] * 13)
    assert trainer.recipe.counters["planning_tokens"] == 13


@pytest.mark.parametrize("loss_reduce", ["rlp", "token", "constant"])
def test_loss_reductions_by_hand(random_tiny, tmp_path, hand_rollouts, loss_reduce):
    """At ratio 1 the surrogate is the advantage summed with each reduction's weights (Dr. GRPO: / budget)."""
    model, tok = random_tiny
    cfg = _cfg(loss_reduce=loss_reduce, max_thought_tokens=16, max_answer_tokens=3)
    trainer = GRPOTrainer(model, tok, Addition(2), cfg, tmp_path)
    sb = trainer.recipe.make_step(trainer)
    # Behaviour log-probs of the hand-made rollouts are -1, not the model's: make the ratio exactly 1.
    sb.batch.behaviour_logp = sb.batch.scores(model, trainer.inv_temperature)[0].detach()
    lengths = sb.batch.loss_mask.sum(1).float()  # [N] actions per completion
    a = sb.advantages
    n = len(a)
    expected = {
        "rlp": -(a * lengths / lengths).sum() / n,  # each completion's mean over its tokens, then the mean
        "token": -(a * lengths).sum() / lengths.sum(),
        "constant": -(a * lengths).sum() / (n * (16 + 2 + 3)),  # Dr. GRPO: the completion budget, fixed
    }[loss_reduce]
    assert sb.max_len == (21 if loss_reduce == "constant" else None)
    stats = trainer._update(sb)
    assert stats["ratio_mean_first_epoch"] == pytest.approx(1.0, abs=1e-6)
    assert stats["loss"] == pytest.approx(float(expected), abs=1e-6)


@pytest.mark.parametrize("tis_cap", [None, 1.5])
def test_a_sampler_that_differs_is_seen_and_corrected(random_tiny, tmp_path, hand_rollouts, tis_cap):
    """Hand-made rollouts carry behaviour log-probs of -1: the update reads them, not a fresh forward."""
    model, tok = random_tiny
    trainer = GRPOTrainer(model, tok, Addition(2), _cfg(max_thought_tokens=16, tis_cap=tis_cap), tmp_path)
    sb = trainer.recipe.make_step(trainer)
    mask = sb.batch.loss_mask
    logp = sb.batch.scores(model, trainer.inv_temperature)[0].detach()[mask]
    assert sb.batch.behaviour_logp[mask].eq(-1.0).all()
    ratio = torch.exp(logp + 1.0)  # trainer / sampler
    stats = trainer._update(sb)
    assert stats["logp_mismatch_abs"] == pytest.approx(float((logp + 1).abs().mean()), rel=1e-5)
    if tis_cap is None:  # PPO against the sampler: the first epoch's ratio is trainer / sampler
        assert stats["ratio_mean_first_epoch"] == pytest.approx(float(ratio.mean()), rel=1e-5)
    else:  # TIS: PPO against the trainer's own log-probs, each token weighted by the truncated ratio
        assert stats["ratio_mean_first_epoch"] == pytest.approx(1.0, abs=1e-6)
        assert stats["tis_weight_mean"] == pytest.approx(float(ratio.clamp(max=tis_cap).mean()), rel=1e-5)

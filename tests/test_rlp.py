"""RLP: batch layout and masks, positions, the training step, non-finite rewards, exact resume."""

import math

import pytest
import torch

from ponder.data.sources import TaskSource
from ponder.data.synthetic import Addition
from ponder.lm.delimiters import think_token_ids
from ponder.lm.thinking import Thoughts
from ponder.rl.batches import rlp_padded_batch
from ponder.rl.positions import ANSWER, OTHER, Doc, choose_positions, eligible_range, tokenize_docs
from ponder.rl.rlp import RLPConfig, RLPTrainer


def _thoughts(ids, closed, prompts, n=2):
    closed = torch.tensor(closed)
    return Thoughts(prompts, n, ids, [torch.zeros(len(t) + int(c)) for t, c in zip(ids, closed.tolist())], closed)


def test_policy_batch_layout_and_masks():
    open_id, close_id, pad = 90, 91, 0
    prefixes = [[1, 5, 6], [1, 7]]
    targets = [[8], [9]]
    thoughts = _thoughts([[20, 21], [22], [23, 24, 25], [26]], [True, False, True, True], prefixes)
    b = rlp_padded_batch(prefixes, targets, thoughts, open_id=open_id, close_id=close_id, pad_id=pad)
    assert b.input_ids[0].tolist() == [1, 5, 6, 90, 20, 21, 91, 8]
    assert b.input_ids[1].tolist() == [1, 5, 6, 90, 22, 91, 8, pad]
    assert b.input_ids[2].tolist() == [1, 7, 90, 23, 24, 25, 91, 9]
    # Loss mask: thought tokens, plus </think> only when the model closed the thought itself.
    assert b.loss_mask[0].nonzero().flatten().tolist() == [4, 5, 6]
    assert b.loss_mask[1].nonzero().flatten().tolist() == [4]  # forced close is not an action
    assert b.loss_mask[2].nonzero().flatten().tolist() == [3, 4, 5, 6]
    assert b.target_mask[1].nonzero().flatten().tolist() == [6]
    assert b.attention_mask[1].tolist() == [1] * 7 + [0]
    assert not (b.loss_mask & b.target_mask).any()


def test_loss_ignores_non_thought_tokens():
    """Perturbing a non-thought token's log-prob leaves the RLP loss unchanged."""
    from ponder.train.losses import clipped_surrogate

    thoughts = _thoughts([[20, 21], [22]], [True, True], [[1, 5]])
    b = rlp_padded_batch([[1, 5]], [[8]], thoughts, 90, 91, 0)
    logp = torch.randn(b.input_ids.shape)
    adv = torch.tensor([1.0, 0.3])  # asymmetric: symmetric advantages with equal ratios cancel exactly
    base, _ = clipped_surrogate(logp, logp.detach() - 0.1, adv, b.loss_mask)
    outside = ~b.loss_mask
    bumped = logp + 3.0 * outside
    same, _ = clipped_surrogate(bumped, logp.detach() - 0.1, adv, b.loss_mask)
    assert torch.equal(base, same)
    moved, _ = clipped_surrogate(logp + 0.05 * b.loss_mask, logp.detach() - 0.1, adv, b.loss_mask)
    assert not torch.equal(base, moved)


def test_tokenize_docs_marks_answer_and_splits_windows(char_tokenizer):
    docs = tokenize_docs(char_tokenizer, [("12+34=46", 6), ("abcdefghij", None)], context_length=4)
    first = docs[0]
    assert first.ids[0] == char_tokenizer.bos_token_id
    # "<bos>12+34=46": windows of 4 tokens; the answer "46" starts at token 7 -> window 1, offset 3.
    assert [len(d.ids) for d in docs[:3]] == [4, 4, 1]
    assert docs[0].answer_start is None and docs[1].answer_start == 3 and docs[2].answer_start == 0
    assert docs[1].position_class(3) == ANSWER and docs[1].position_class(2) == OTHER
    assert all(d.answer_start is None for d in docs[3:])


def test_positions_never_at_first_token_and_respect_k():
    assert list(eligible_range(1)) == []  # a one-token document has no position
    assert list(eligible_range(5)) == [1, 2, 3, 4]
    gen = torch.Generator().manual_seed(0)
    docs = [Doc([1]), Doc([1, 2, 3, 4, 5])]
    pos = choose_positions(docs, per_doc=10, generator=gen)
    assert pos == [(1, 1), (1, 2), (1, 3), (1, 4)]
    weights = [torch.zeros(1), torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])]
    assert choose_positions(docs, 1, gen, weights) == [(1, 3)]


def test_zero_thought_budget_is_rejected():
    with pytest.raises(ValueError, match="thought budget must be at least 1"):
        RLPConfig(max_thought_tokens=0)


def _cfg(**kw):
    base = dict(
        steps=3,
        docs_per_step=3,
        group_size=3,
        max_thought_tokens=6,
        context_length=32,
        lr=1e-3,
        save_every=2,
        log_every=1,
        ema_tau=0.9,
    )
    return RLPConfig(**{**base, **kw})


def _model(seed=0):
    from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model

    tok = build_char_tokenizer()
    return build_tiny_model(
        tok, TinyArch(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), seed=seed
    ), tok


def test_rlp_step_updates_only_through_thoughts_and_moves_ema(tmp_path):
    model, tok = _model()
    trainer = RLPTrainer(model, tok, TaskSource(Addition(2), seed=0), _cfg(steps=2), tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    m = trainer.train_step()
    ema = trainer.recipe.ema
    assert ema.initialized and ema.num_updates == 1
    for key in (
        "reward_mean",
        "reward_std",
        "info_gain_answer",
        "info_gain_other",
        "thought_tokens_mean",
        "unclosed_fraction",
        "clip_fraction",
        "policy_entropy",
        "ema_param_distance",
        "positions_per_s",
        "logp_mismatch_abs",
        "logp_mismatch_kl",
        "ratio_mean_first_epoch",
    ):
        assert key in m and (isinstance(m[key], float))
    assert math.isfinite(m["reward_mean"]) and 0 <= m["unclosed_fraction"] <= 1
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    # EMA with tau=0.9 after one step: phi = 0.9 theta0 + 0.1 theta1.
    name, p = next(iter(model.named_parameters()))
    ema_p = dict(ema.model.named_parameters())[name]
    torch.testing.assert_close(ema_p, 0.9 * before[name] + 0.1 * p.detach())


def test_reward_token_loss_is_the_rewards_own_term(tmp_path):
    """With --reward-token-weight the loss adds -log p(x_t | x_<t, c): its logged value is minus the mean of the
    rewards' policy term (reward + baseline)."""
    model, tok = _model()
    trainer = RLPTrainer(model, tok, TaskSource(Addition(2), seed=0), _cfg(steps=1, reward_token_weight=1.0), tmp_path)
    m = trainer.train_step()
    rollout, group = trainer.recipe.rollout, trainer.recipe.settings.group_size
    baseline = float(rollout.baseline_logp.float().mean())  # every position has G thoughts: a plain mean
    assert len(rollout.baseline_logp) * group == len(rollout.thoughts.ids)
    assert m["reward_token_loss"] == pytest.approx(-(m["reward_mean"] + baseline), abs=1e-4)


@pytest.mark.parametrize("layout", ["padded", "tree"])
def test_rewards_are_scored_without_dropout(tmp_path, layout):
    """A model with dropout (attention dropout 0.5 here; a LoRA dropout alike): the rewards, and so the advantages,
    are those of the model in eval mode, whatever the dropout noise; GRPO scores its rewards the same way."""
    model, tok = _model()
    for module in model.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.5
    advantages, rewards = [], []
    for noise in (1, 2):
        trainer = RLPTrainer(
            model, tok, TaskSource(Addition(2), seed=0), _cfg(steps=1, batch_layout=layout), tmp_path / str(noise)
        )
        torch.manual_seed(noise)  # the dropout masks' generator: the thoughts are drawn from keyed generators
        sb = trainer.recipe.make_step(trainer)
        advantages.append(sb.advantages)
        rewards.append(sb.metrics["reward_mean"])
    assert torch.count_nonzero(advantages[0]) > 0
    assert torch.equal(advantages[0], advantages[1]) and rewards[0] == rewards[1]


def test_next_token_term_averages_over_predicted_tokens(tmp_path):
    """The next-token term's count leaves out each text's first token, which nothing predicts (its log-prob is 0)."""
    from ponder.lm.logprobs import token_logprobs
    from ponder.lm.padding import pad_ids
    from ponder.rl.rlp import text_of

    model, tok = _model()
    trainer = RLPTrainer(model, tok, TaskSource(Addition(2), seed=0), _cfg(steps=1, next_token_weight=1.0), tmp_path)
    sb = trainer.recipe.make_step(trainer)
    texts = text_of(trainer.recipe.rollout)
    nll, count = trainer.recipe._next_token_term(trainer.recipe.rollout, trainer)
    assert count == sum(len(t) - 1 for t in texts) == sb.counts["text_tokens"]
    ids, mask = pad_ids(texts, trainer.recipe.pad_id)
    with torch.no_grad():
        logp = token_logprobs(model, ids, mask)
    by_hand = -sum(float(logp[i, 1 : len(t)].sum()) for i, t in enumerate(texts)) / count
    assert float(nll.detach()) / count == pytest.approx(by_hand, rel=1e-5)


def test_nonfinite_reward_skips_the_step(tmp_path, monkeypatch):
    import ponder.rl.rlp as rlp_mod

    model, tok = _model()
    trainer = RLPTrainer(model, tok, TaskSource(Addition(2), seed=0), _cfg(steps=1), tmp_path)
    real = rlp_mod.rlp_reward
    monkeypatch.setattr(rlp_mod, "rlp_reward", lambda a, b: real(a, b).index_fill(0, torch.tensor([0]), float("nan")))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    m = trainer.train_step()
    assert m["skipped"] == 1 and trainer.counters["skipped_nonfinite"] == 1
    for k, v in model.state_dict().items():
        assert torch.equal(before[k], v)


def test_model_without_think_tokens_gets_them(tmp_path):
    """A model whose tokenizer lacks the delimiters is prepared by ensure_think_tokens, then trains."""
    from ponder.lm.delimiters import ensure_think_tokens

    model, tok = _model()
    assert ensure_think_tokens(model, tok) == 0  # the tiny tokenizer has them; real ones are covered in test_delimiters
    think_token_ids(tok)


def test_resume_matches_uninterrupted_run(tmp_path):
    cfg = _cfg(steps=4, save_every=2)
    full_model, tok = _model(seed=3)
    RLPTrainer(full_model, tok, TaskSource(Addition(2), seed=1), cfg, tmp_path / "full").train(progress=False)

    part_model, _ = _model(seed=3)
    trainer = RLPTrainer(part_model, tok, TaskSource(Addition(2), seed=1), cfg, tmp_path / "part")
    for _ in range(3):  # steps 1-3; the step-2 checkpoint survives, step 3 is lost in the "kill"
        trainer.train_step()
        if trainer.step % cfg.save_every == 0:
            trainer.save()
    resumed_model, _ = _model(seed=42)
    resumed = RLPTrainer(resumed_model, tok, TaskSource(Addition(2), seed=1), cfg, tmp_path / "part")
    summary = resumed.train(resume=True, progress=False)
    assert summary["steps"] == 4
    for (name, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    from ponder.train.checkpoint import latest_checkpoint

    assert (latest_checkpoint(tmp_path / "part") / "ema" / "config.json").is_file()


@pytest.mark.slow
@pytest.mark.smollm
def test_rlp_runs_on_smollm2_with_a_text_corpus(tmp_path, smollm2_gguf):
    """A few RLP steps on the real 135M model over a plain-text file: finite rewards, logged."""
    from ponder.data.sources import FileSource
    from ponder.models.lookup import load_model
    from ponder.train.metrics import read_metrics

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "The cat sat on the mat because it was warm.\n\nTwo plus three is five, and five plus five is ten.\n"
    )
    lm = load_model("smollm2-135m", device="cpu")
    cfg = RLPConfig(
        steps=2,
        docs_per_step=2,
        group_size=2,
        max_thought_tokens=4,
        context_length=24,
        lr=1e-6,
        save_every=2,
        log_every=1,
    )
    summary = RLPTrainer(lm.model, lm.tokenizer, FileSource(str(corpus)), cfg, tmp_path / "run").train(progress=False)
    assert summary["steps"] == 2 and summary["skipped_nonfinite"] == 0
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["reward_mean"]) and math.isfinite(r["loss"]) for r in rows)
    assert (tmp_path / "run" / "final" / "config.json").is_file()


def test_baseline_pass_aligns_each_figure_with_the_position_it_predicts(random_tiny):
    from ponder.lm.delimiters import think_token_ids
    from ponder.rl.rollout import doc_logprobs

    model, tok = random_tiny
    open_id, _ = think_token_ids(tok)
    docs = [tok("12+34=46")["input_ids"], tok("7+8=15")["input_ids"]]  # different lengths: right padding
    base = doc_logprobs(model, docs, tok.pad_token_id, think_id=open_id)
    assert doc_logprobs(model, docs, tok.pad_token_id).think_prob is None
    for doc, lp, ent, p in zip(docs, base.logp, base.entropy, base.think_prob):
        assert lp.shape == ent.shape == p.shape == (len(doc),) and lp[0] == ent[0] == p[0] == 0
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([doc])).logits[0]
        for t in range(1, len(doc)):  # everything at t comes from the logits at t - 1
            dist = logits[t - 1].log_softmax(-1)
            assert torch.isclose(lp[t], dist[doc[t]], atol=1e-5)
            assert torch.isclose(ent[t], -(dist.exp() * dist).sum(), atol=1e-5)
            assert torch.isclose(p[t], dist[open_id].exp(), atol=1e-6)

"""Micro-batches with gradient accumulation: the accumulated update equals the one-batch update.

Each case trains one step from the same weights twice, the whole step in one forward/backward and
in micro-batches of one position / completion / window, and compares the accumulated gradients
(unclipped: ``grad_clip`` is huge, so a wrong scale cannot hide behind clipping or Adam's
normalization) and the weights after the step.
"""

import copy

import pytest
import torch

from ponder.data.sources import TaskSource
from ponder.data.synthetic import Addition
from ponder.lm.tiny import TinyArch, build_tiny_model
from ponder.rl.batches import rlp_tree_batch
from ponder.rl.grpo import GRPOConfig, GRPOTrainer
from ponder.rl.rlp import RLPConfig, RLPTrainer
from ponder.train.engine import Engine
from ponder.train.micro import part_rows, scores_in_parts
from ponder.train.next_token import NextTokenConfig, NextTokenRecipe, collate_windows, training_windows
from test_rlp_tree import CLOSE, OPEN, PAD, _case

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerics]
NO_CLIP = 1e9


def _model(tok):
    return build_tiny_model(tok, TinyArch(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), seed=0)


ADAM_EPS = 1e-8  # torch.optim.AdamW's default, which the engine uses


def _grads(model):
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _assert_same_step(whole, parts, grads_whole, grads_parts):
    assert grads_whole and grads_whole.keys() == grads_parts.keys()
    assert any(float(g.abs().max()) > 1e-4 for g in grads_whole.values())  # there was a real gradient
    for k in grads_whole:
        torch.testing.assert_close(grads_parts[k], grads_whole[k], atol=1e-6, rtol=1e-5, msg=k)
    # Adam's first step moves a weight by lr * g / (|g| + eps): where a gradient is ~0 its sign is float noise
    # (summation order) and the weights may differ by 2 lr; where |g| is near eps (1e-8) the move still follows the
    # noise (a 10% error in g moved a weight by 2e-5 under ATEN_CPU_CAPABILITY=default). Compared where the sign is
    # decided and |g| >= 100 eps: there |d move| <= lr * eps * |dg| / |g|^2 <= lr / 1000.
    for (k, a), (_, b) in zip(whole.named_parameters(), parts.named_parameters()):
        decided = torch.ones_like(a, dtype=torch.bool)
        if k in grads_whole:
            g, h = grads_whole[k], grads_parts[k]
            decided = (g.abs() > 10 * (g - h).abs()) & (g.abs() >= 100 * ADAM_EPS)
        torch.testing.assert_close(b.detach()[decided], a.detach()[decided], atol=1e-5, rtol=0, msg=k)


@pytest.mark.parametrize(
    "layout,extra",
    [
        ("tree", {}),
        ("padded", {}),
        ("tree", {"kl_coef": 0.1, "next_token_weight": 0.3, "ppo_epochs": 2}),
        ("padded", {"reward_token_weight": 0.5}),
    ],
)
def test_rlp_micro_batches_equal_one_batch(char_tokenizer, tmp_path, layout, extra):
    cfg = dict(
        steps=1,
        docs_per_step=3,
        positions_per_doc=2,
        group_size=3,
        max_thought_tokens=5,
        context_length=24,
        lr=1e-3,
        grad_clip=NO_CLIP,
        batch_layout=layout,
        min_reward_spread=0.0,
        **extra,
    )
    base = _model(char_tokenizer)
    runs = {}
    for micro in (None, 1):
        model = copy.deepcopy(base)
        trainer = RLPTrainer(
            model,
            char_tokenizer,
            TaskSource(Addition(2), seed=0),
            RLPConfig(**cfg, micro_batch=micro),
            tmp_path / str(micro),
        )
        metrics = trainer.train_step()
        runs[micro] = (model, _grads(model), metrics)
    (whole, g_whole, m_whole), (parts, g_parts, m_parts) = runs[None], runs[1]
    assert m_whole["micro_batches"] == 1 and m_parts["micro_batches"] == 6  # 3 docs x 2 positions
    assert m_parts["reward_mean"] == pytest.approx(m_whole["reward_mean"], abs=1e-6)
    for key in ("loss", "policy_entropy", "ratio_mean", "logp_mismatch_abs"):
        assert m_parts[key] == pytest.approx(m_whole[key], abs=1e-6), key
    _assert_same_step(whole, parts, g_whole, g_parts)


@pytest.mark.parametrize("loss_reduce,kl", [("rlp", 0.0), ("token", 0.1), ("constant", 0.0)])
def test_grpo_micro_batches_equal_one_batch(char_tokenizer, tmp_path, monkeypatch, loss_reduce, kl):
    from ponder.rewards import REWARDS

    monkeypatch.setitem(
        REWARDS, "index", lambda prompts, completions, group_ids, **_: torch.arange(len(completions)).float()
    )
    cfg = dict(
        steps=1,
        prompts_per_step=2,
        group_size=3,
        pool_size=4,
        max_thought_tokens=5,
        max_answer_tokens=3,
        lr=1e-3,
        grad_clip=NO_CLIP,
        reward="index",
        loss_reduce=loss_reduce,
        kl_coef=kl,
        ppo_epochs=2,
    )
    base = _model(char_tokenizer)
    runs = {}
    for micro in (None, 2):
        model = copy.deepcopy(base)
        trainer = GRPOTrainer(
            model, char_tokenizer, Addition(2), GRPOConfig(**cfg, micro_batch=micro), tmp_path / str(micro)
        )
        metrics = trainer.train_step()
        runs[micro] = (model, _grads(model), metrics)
    assert runs[None][2]["micro_batches"] == 1 and runs[2][2]["micro_batches"] == 3
    assert runs[2][2]["loss"] == pytest.approx(runs[None][2]["loss"], abs=1e-6)
    _assert_same_step(runs[None][0], runs[2][0], runs[None][1], runs[2][1])


def test_next_token_micro_batches_equal_one_batch(char_tokenizer, tmp_path):
    """The next-token recipe on the engine: ragged windows (one predicts nothing but EOS, one an example's target
    only); its loss is the mean over the step's predicted tokens, and micro-batches of 1 and 3 windows (parts
    predicting different numbers of tokens) give the whole step's loss and gradient."""
    from ponder.data.early_experience import Example

    docs = ["12+34=46", "7+5=12 and a longer line of text", "x", Example("99+1=", "100", eos=True)]
    base = _model(char_tokenizer)
    runs = {}
    for micro in (None, 1, 3):
        model = copy.deepcopy(base)
        cfg = NextTokenConfig(
            steps=1, batch_size=4, micro_batch=micro, lr=1e-3, warmup_steps=0, grad_clip=NO_CLIP, save_every=10
        )
        recipe = NextTokenRecipe(model, char_tokenizer, lambda: iter(docs), cfg)
        metrics = Engine(model, char_tokenizer, recipe, tmp_path / str(micro)).train_step()
        runs[micro] = (model, _grads(model), metrics)
    rows = list(training_windows(char_tokenizer, iter(docs), 256))
    ids, mask, labels = collate_windows([r for r, _ in rows], PAD, None, [start for _, start in rows])
    with torch.no_grad():
        logp = torch.log_softmax(base.train()(input_ids=ids, attention_mask=mask).logits[:, :-1].double(), -1)
    predicted = labels[:, 1:] != -100
    nll = -logp.gather(-1, labels[:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)
    assert runs[None][2]["loss"] == pytest.approx(float(nll[predicted].mean()), rel=1e-5)
    assert [runs[m][2]["micro_batches"] for m in (None, 1, 3)] == [1, 4, 2]
    for micro in (1, 3):
        assert runs[micro][2]["loss"] == pytest.approx(runs[None][2]["loss"], rel=1e-6)
        _assert_same_step(runs[None][0], runs[micro][0], runs[None][1], runs[micro][1])


def test_tree_parts_hold_only_their_documents_and_score_the_same(char_tokenizer):
    """A micro-batch of the tree layout keeps its own prefixes only; scoring part by part equals one pass."""
    docs, positions, thoughts = _case()
    tb = rlp_tree_batch(docs, positions, 2, thoughts, OPEN, CLOSE, PAD)
    last = tb.select(torch.tensor([4, 5]))  # the position of document 1 only
    assert last.prefix_ids.tolist() == [docs[1][:3]] and last.row.tolist() == [0, 0]
    assert last.allowed.shape == (2, last.branch_ids.shape[1], 3 + last.branch_ids.shape[1])
    assert [len(r) for r in part_rows(6, 4)] == [4, 2] and len(part_rows(6, None)) == 1
    model = _model(char_tokenizer).float().eval()
    with torch.no_grad():
        whole = tb.scores(model, 1.3)
        parts = scores_in_parts(tb, 2, lambda part: part.scores(model, 1.3))
    torch.testing.assert_close(parts[0], whole[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(parts[1], whole[1], atol=1e-6, rtol=0)

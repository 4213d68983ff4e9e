"""The one batch contract: both layouts are a TrainBatch, carry the same ids and give the engine the same loss."""

import typing

import pytest
import torch

from ponder.rl.batches import PaddedBatch, TreeBatch, rlp_padded_batch, rlp_tree_batch
from ponder.train.batch import TrainBatch
from ponder.train.engine import StepBatch
from ponder.train.losses import SURROGATE_UNIT, clipped_surrogate
from ponder.train.micro import split_step
from test_rlp_tree import CLOSE, OPEN, PAD, _case, _model


def _layouts():
    docs, positions, thoughts = _case()
    prefixes = [docs[d][:t] for d, t in positions]
    targets = [docs[d][t : t + 2] for d, t in positions]
    padded = rlp_padded_batch(prefixes, targets, thoughts, OPEN, CLOSE, PAD)
    tree = rlp_tree_batch(docs, positions, 2, thoughts, OPEN, CLOSE, PAD)
    return padded, tree, prefixes, targets, thoughts


def test_both_layouts_are_the_one_contract_and_carry_the_same_ids():
    padded, tree, prefixes, targets, thoughts = _layouts()
    assert typing.get_type_hints(StepBatch)["batch"] == TrainBatch | None
    for batch in (padded, tree):
        assert isinstance(batch, TrainBatch) and len(batch) == 6
    assert not isinstance(object(), TrainBatch)
    for n in range(6):
        b = n // thoughts.n
        expected = prefixes[b] + [OPEN, *thoughts.ids[n], CLOSE] + targets[b]
        assert padded.sequence(n) == tree.sequence(n) == expected
        # The same actions and behaviour log-probs, whatever the coordinates.
        for batch in (padded, tree):
            assert torch.equal(batch.behaviour_logp[n][batch.loss_mask[n]], thoughts.logprobs[n])
    # A micro-batch keeps each row's ids.
    rows = torch.tensor([1, 4])
    for batch in (padded, tree):
        part = batch.select(rows)
        assert type(part) is type(batch) and [part.sequence(i) for i in range(2)] == [
            batch.sequence(1),
            batch.sequence(4),
        ]


def _engine_loss(batch, model, advantages, micro, reduce):
    """The engine's surrogate over ``batch``: parts of ``micro`` rows, each sum divided by the step's count."""
    sb = StepBatch(batch, advantages, reduce=reduce, max_len=20 if reduce == "constant" else None)
    unit = SURROGATE_UNIT[reduce]
    count = len(batch) if unit == "sequences" else float(batch.loss_mask.sum())
    model.zero_grad()
    loss = 0.0
    for part in split_step(sb, micro):
        logp, _ = part.batch.scores(model, 1 / 0.7)
        old = part.batch.behaviour_logp + 0.05 * part.batch.loss_mask  # ratios off 1: the clip binds somewhere
        total, _ = clipped_surrogate(
            logp, old, part.advantages, part.batch.loss_mask, 0.02, 0.02, part.reduce, part.max_len, reduction="sum"
        )
        (total / count).backward()
        loss += float(total.detach() / count)
    return loss, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("reduce", ["rlp", "token", "constant"])
def test_both_layouts_give_the_engine_equal_losses_and_gradients(one_thread, reduce):
    padded, tree, *_ = _layouts()
    model, _ = _model("sdpa")
    model.double()
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0], dtype=torch.float64)
    results = {
        (layout, micro): _engine_loss(batch, model, adv, micro, reduce)
        for layout, batch in (("padded", padded), ("tree", tree))
        for micro in (None, 2)
    }
    loss, grad = results[("padded", None)]
    assert loss != 0 and grad.norm() > 0
    for other_loss, other_grad in results.values():
        # fp64 model; the scorer's fp32 steps leave ~1e-8 relative between the two forwards
        assert other_loss == pytest.approx(loss, rel=1e-6)
        assert (other_grad - grad).norm() <= 1e-6 * grad.norm()


def test_layout_classes_are_the_ones_rlp_and_grpo_build():
    padded, tree, *_ = _layouts()
    assert isinstance(padded, PaddedBatch) and padded.layout == "padded"
    assert isinstance(tree, TreeBatch) and tree.layout == "tree"


def test_a_step_batch_counts_every_unit_its_terms_average_over():
    """Sequences and action tokens from the batch (either layout), the recipe's own units beside them."""
    padded, tree, *_ = _layouts()
    for batch in (padded, tree):
        counts = StepBatch(batch, torch.zeros(6), counts={"targets": float(batch.target_mask.sum())}).unit_counts()
        # thoughts of 2, 1, 3, 1, 2, 4 tokens, four closed by the model: 13 + 4 actions; 3 positions x G=2 x k=2 targets
        assert counts == {"sequences": 6.0, "tokens": 17.0, "targets": 12.0, "text_tokens": 0.0}
    assert StepBatch(None, torch.zeros(0)).unit_counts() == dict.fromkeys(counts, 0.0)


def test_next_token_windows_are_a_layout_of_the_contract(one_thread):
    """The next-token recipe's batch is a TrainBatch too: its scores are the loss's log-probs, row by row."""
    from ponder.train.next_token import WindowBatch, collate_windows, next_token_sum

    model, _ = _model()
    windows = [[5, 6, 7, 8, 9], [5, 7, 9], [6, 8, 10, 12]]
    ids, mask, labels = collate_windows(
        windows, PAD, torch.device("cpu"), [0, 1, 0]
    )  # row 1: its first token is context
    batch = WindowBatch(ids, mask, labels)
    assert isinstance(batch, TrainBatch) and len(batch) == 3 and batch.num_tokens == 12
    assert [batch.sequence(r) for r in range(3)] == windows
    assert batch.loss_mask.sum() == 4 + 2 + 3 and not batch.target_mask.any() and not batch.behaviour_logp.any()
    logp, entropy = batch.scores(model)
    assert logp.shape == batch.loss_mask.shape and (entropy[batch.loss_mask] > 0).all()
    torch.testing.assert_close(-logp.sum(), next_token_sum(model, batch).float(), rtol=1e-5, atol=1e-5)
    part = batch.select(torch.tensor([1]))
    assert len(part) == 1 and part.sequence(0) == windows[1]
    torch.testing.assert_close(part.scores(model)[0].sum(), logp[1].sum(), rtol=1e-5, atol=1e-5)

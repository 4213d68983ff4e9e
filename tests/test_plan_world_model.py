"""Transition and losses against hand computations; the world model learns a planted replay."""

from __future__ import annotations

import math

import pytest
import torch

from plan_fakes import FakeFeatures, planted_value
from ponder.plan.edits import Edit
from ponder.plan.state import Chain
from ponder.plan.world_model import (
    LossWeights,
    Replay,
    WorldModel,
    bisimulation_loss,
    consistency_loss,
    fit_world_model,
    reward_loss,
    transition,
    world_model_loss,
)


def test_transition_is_residual_on_the_concatenation():
    f = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        f.weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, -1.0]]))
    z, e = torch.tensor([1.0, 2.0]), torch.tensor([3.0])
    # f([1, 2, 3]) = [1 + 3, 4 - 3] = [4, 1]; z' = z + f = [5, 3]
    assert torch.allclose(transition(z, e, f), torch.tensor([5.0, 3.0]))


def test_consistency_loss_by_hand_and_stop_gradient():
    pred = torch.tensor([[[1.0, 1.0]], [[0.0, 2.0]]], requires_grad=True)  # [H=2, B=1, d=2]
    target = torch.tensor([[[0.0, 1.0]], [[0.0, 0.0]]], requires_grad=True)
    # step errors: (1 + 0) / 2 = 0.5 and (0 + 4) / 2 = 2; weights 1, 0.5; divided by H = 2
    loss = consistency_loss(pred, target, rho=0.5)
    assert loss.item() == pytest.approx((0.5 + 0.5 * 2.0) / 2)
    loss.backward()
    assert target.grad is None and pred.grad is not None
    masked = consistency_loss(pred.detach(), target.detach(), mask=torch.tensor([[1.0], [0.0]]), rho=0.5)
    assert masked.item() == pytest.approx(0.5 / 2)


def test_reward_loss_by_hand():
    assert reward_loss(torch.tensor([1.0, 2.0, 3.0]), torch.ones(3)).item() == pytest.approx(5 / 3)
    assert reward_loss(torch.tensor([1.0, 2.0, 3.0]), torch.ones(3), torch.tensor([1, 1, 0])).item() == pytest.approx(
        0.5
    )


def test_bisimulation_loss_by_hand():
    z = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    r = torch.tensor([0.0, 1.0, 0.5])
    want = ((5 - 1) ** 2 + (1 - 0.5) ** 2 + (math.sqrt(18) - 0.5) ** 2) / 3
    assert bisimulation_loss(z, r).item() == pytest.approx(want, rel=1e-5)
    nz = torch.tensor([[0.0, 0.0], [0.0, 2.0], [0.0, 2.0]])  # successor distances 2, 2, 0
    want_g = ((5 - 2) ** 2 + (1 - 1.5) ** 2 + (math.sqrt(18) - 0.5) ** 2) / 3
    assert bisimulation_loss(z, r, nz, gamma=0.5).item() == pytest.approx(want_g, rel=1e-5)
    assert bisimulation_loss(z[:1], r[:1]).item() == 0.0
    # distances that equal the outcome gaps cost nothing
    assert bisimulation_loss(torch.tensor([[0.0], [0.3]]), torch.tensor([0.1, 0.4])).item() == pytest.approx(
        0.0, abs=1e-10
    )


def test_replay_windows_cover_every_start_up_to_the_horizon():
    a, b, c, d = (Chain(instructions=(s,)) for s in "abcd")
    e = Edit("remove_instruction")
    replay = Replay()
    replay.add([a, b, c, d], [e, e, e], [0.0, 0.1, 0.2, 0.3])
    wins = replay.windows(horizon=2)
    assert [len(w.edits) for w in wins] == [2, 2, 1]
    assert wins[1].chains == [b, c, d] and wins[2].values == [0.2, 0.3]
    with pytest.raises(ValueError):
        replay.add([a, b], [], [0.0, 0.1])


@pytest.mark.numerics
def test_world_model_fits_a_planted_replay(one_thread):
    """Over four seeds (one fit can land near the tolerance, and which one depends on the CPU's kernels: seed 0
    imagines 0.66, 0.73 and 0.73 under ATEN_CPU_CAPABILITY default, avx2 and avx512, against 0.8)."""
    from ponder.plan.edits import apply_edit

    feats = FakeFeatures()
    start = Chain(instructions=("x",), answer_format="think")
    edits = [
        Edit("set_format", payload="qa"),
        Edit("set_format", payload="direct"),
        Edit("remove_instruction"),
        Edit("add_instruction", payload="y"),
    ]
    replay = Replay()
    for first in edits:
        mid = apply_edit(start, first)
        for second in edits:
            try:
                end = apply_edit(mid, second)
            except ValueError:
                continue
            replay.add(
                [start, mid, end], [first, second], [planted_value(start), planted_value(mid), planted_value(end)]
            )
    errors = []
    for seed in range(4):
        torch.manual_seed(seed)
        model = WorldModel(feats.chain_dim, feats.edit_dim, latent=16, hidden=64)
        before = fit_world_model(model, replay, feats, horizon=2, steps=1, weights=LossWeights())
        # 600 steps: at 300 the fit's error depended on the initialisation (with one more edit operation, hence one
        # more edit feature, two seeds of four ended at 0.06-0.08); at 600 eight seeds end within 0.03.
        after = fit_world_model(model, replay, feats, horizon=2, steps=600, lr=1e-2)
        assert after["reward"] < 0.2 * before["reward"] and after["reward"] < 0.01
        assert after["consistency"] < before["consistency"]
        with torch.no_grad():  # imagined two-step value of start -> qa -> no instruction vs the planted one
            z = model.encode(feats.chains([start]))
            for e, c in [(edits[0], start), (edits[2], apply_edit(start, edits[0]))]:
                z = model.step(z, model.embed_edit(feats.edits([e], [c])))
            errors.append(abs(model.reward(z).item() - planted_value(Chain(answer_format="qa"))))
    assert sorted(errors)[2] < 0.05 and max(errors) < 0.2, errors  # three seeds of four within 0.05, all within 0.2


def test_unknown_values_are_left_out_of_the_reward_and_bisimulation_terms(one_thread):
    """A chain passed on the way inside a multi-edit plan has a NaN value: it still takes part in the
    latent consistency, but not in the reward regression or the bisimulation distances."""
    torch.manual_seed(0)
    model = WorldModel(6, 4, latent=8, hidden=16, heads=2)
    cf, ef = torch.randn(1, 3, 6), torch.randn(1, 2, 4)
    mask = torch.ones(1, 3)
    values = torch.tensor([[0.2, math.nan, 0.5]])
    total, parts = world_model_loss(model, cf, ef, values, mask)
    assert math.isfinite(float(total.detach()))
    with torch.no_grad():
        enc = model.encode(cf)[0]  # [3, d]
        rolled = [enc[0]]
        for t in range(2):
            rolled.append(model.step(rolled[-1], model.embed_edit(ef[0, t])))
        known = torch.tensor([0.2, 0.5])
        r_enc = ((model.rewards(enc[[0, 2]]) - known) ** 2).mean()
        r_rolled = ((model.rewards(torch.stack([rolled[0], rolled[2]])) - known) ** 2).mean()
        assert parts["reward"] == pytest.approx(float(0.5 * (r_enc + r_rolled)), rel=1e-5)
        assert parts["bisim"] == pytest.approx(float(bisimulation_loss(enc[[0, 2]], known)), rel=1e-5)
    # The middle chain's features move the consistency term only.
    cf2 = cf.clone()
    cf2[0, 1] += torch.randn(6)  # not a constant shift: the encoder starts with a LayerNorm
    _, moved = world_model_loss(model, cf2, ef, values, mask)
    assert moved["consistency"] != pytest.approx(parts["consistency"], rel=1e-3)
    assert moved["reward"] == pytest.approx(parts["reward"], rel=1e-6) and moved["bisim"] == pytest.approx(
        parts["bisim"], rel=1e-6
    )

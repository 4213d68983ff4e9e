"""Pure RL math: RLP reward and advantages, clipped surrogate, KL, EMA teacher, Prop. 1."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ponder.rl.advantages import finite_mask, group_advantages, hicra_advantages, rlp_reward, valid_groups
from ponder.rl.ema import EMATeacher, ema_update_
from ponder.rl.theory import cross_entropy, expected_info_gain
from ponder.train.losses import clipped_surrogate, kl_penalty, masked_mean, next_token_loss

# ---------------------------------------------------------------- rewards and advantages


def test_rlp_reward_difference_and_multi_token():
    a = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]])
    b = torch.tensor([[-1.5, -2.5], [-0.5, -1.0]])
    assert torch.allclose(rlp_reward(a, b), a - b)
    assert torch.allclose(rlp_reward(a, b, reduce="sum"), torch.tensor([1.0, -2.0]))
    assert torch.allclose(rlp_reward(a, b, reduce="mean"), torch.tensor([0.5, -1.0]))
    assert not rlp_reward(a.requires_grad_(), b).requires_grad
    with pytest.raises(ValueError):
        rlp_reward(a, b[:1])


def test_group_advantages_hand_values():
    r = torch.tensor([[1.0, 2.0, 3.0, 6.0]])  # mean 3
    assert torch.allclose(group_advantages(r), torch.tensor([[-2.0, -1.0, 0.0, 3.0]]) * 4 / 3)
    assert torch.allclose(group_advantages(r, correction="none"), torch.tensor([[-2.0, -1.0, 0.0, 3.0]]))
    std = math.sqrt((4 + 1 + 0 + 9) / 3)
    expected = torch.tensor([[-2.0, -1.0, 0.0, 3.0]]) / (std + 1e-6)
    assert torch.allclose(group_advantages(r, correction="none", scale="std"), expected)
    # RLP correction == leave-one-out baseline r_i - mean_{j != i} r_j
    loo = torch.stack([r[0, i] - (r[0].sum() - r[0, i]) / 3 for i in range(4)])
    assert torch.allclose(group_advantages(r)[0], loo)


def test_group_correction_monte_carlo():
    """Fix r_1 = a, draw the other G-1 iid with mean mu: E[A_1 | r_1] = a - mu with the G/(G-1)
    correction and (G-1)/G (a - mu) without it."""
    gen = torch.Generator().manual_seed(0)
    n_groups, group_size, mu, a = 200_000, 4, 0.3, 1.5
    r = mu + torch.randn(n_groups, group_size, generator=gen)
    r[:, 0] = a
    corrected = group_advantages(r)[:, 0].mean().item()
    uncorrected = group_advantages(r, correction="none")[:, 0].mean().item()
    # std of A_1 is 1/sqrt(G-1): standard error ~1.3e-3, so 0.01 is > 7 sigma
    assert corrected == pytest.approx(a - mu, abs=0.01)
    assert uncorrected == pytest.approx((group_size - 1) / group_size * (a - mu), abs=0.01)


@pytest.mark.parametrize("scale", ["none", "std"])
def test_group_mean_and_std_are_detached(scale):
    r = torch.tensor([[0.5, 2.0, -1.0]], requires_grad=True)
    group_advantages(r, scale=scale)[0, 0].backward()
    k = 3 / 2 if scale == "none" else 3 / 2 / (r.detach().std().item() + 1e-6)
    # only the own-reward path survives: dA_1/dr_1 = k, dA_1/dr_j = 0
    assert torch.allclose(r.grad, torch.tensor([[k, 0.0, 0.0]]))


def test_group_size_one_raises():
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages(torch.zeros(3, 1))


def test_valid_groups_and_finite_mask():
    r = torch.tensor([[1.0, 1.0], [1.0, 2.0], [float("nan"), 2.0], [float("inf"), float("inf")]])
    assert finite_mask(r).tolist() == [True, True, False, False]
    assert valid_groups(r).tolist() == [False, True, False, False]
    near = torch.tensor([[1.0, 1.0 + 1e-6], [1.0, 1.5]])  # float noise vs a real difference
    assert valid_groups(near).tolist() == [True, True]
    assert valid_groups(near, min_spread=1e-4).tolist() == [False, True]
    assert valid_groups(near, min_spread=0.5).tolist() == [False, False]  # the spread must exceed it


def test_hicra_amplifies_planning_tokens():
    adv = torch.tensor([2.0, -2.0])  # per-sequence, broadcast over L
    plan = torch.tensor([[True, False], [True, False]])
    out = hicra_advantages(adv, plan, alpha=0.5)
    assert torch.allclose(out, torch.tensor([[3.0, 2.0], [-1.0, -2.0]]))
    per_token = torch.tensor([[[1.0, -4.0]]])
    assert torch.allclose(
        hicra_advantages(per_token, torch.tensor([[[0, 1]]]), alpha=0.25), torch.tensor([[[1.0, -3.0]]])
    )


# ---------------------------------------------------------------- Prop. 1


def test_prop1_expected_info_gain():
    gen = torch.Generator().manual_seed(1)
    vocab = 6
    p_star, p_phi, p_theta_c = (
        torch.softmax(torch.randn(vocab, generator=gen, dtype=torch.float64), -1) for _ in range(3)
    )
    gain = expected_info_gain(p_star, p_phi, p_theta_c).item()
    exact = (p_star * (p_theta_c.log() - p_phi.log())).sum().item()
    assert gain == pytest.approx(exact, abs=1e-6)
    assert cross_entropy(p_star, p_star).item() == pytest.approx(-(p_star * p_star.log()).sum().item(), abs=1e-12)
    x = torch.multinomial(p_star, 200_000, replacement=True, generator=gen)
    rewards = rlp_reward(p_theta_c.log()[x], p_phi.log()[x])
    se = rewards.std().item() / math.sqrt(len(x))
    assert rewards.mean().item() == pytest.approx(gain, abs=6 * se)


def test_cross_entropy_zero_log_zero():
    p = torch.tensor([1.0, 0.0])
    q = torch.tensor([0.5, 0.0])
    assert cross_entropy(p, q).item() == pytest.approx(math.log(2))


# ---------------------------------------------------------------- clipped surrogate


def _hand_example():
    """2x3 example, eps = 0.2, logp_old = -1.
    seq 0: A = +1, ratios 0.5 (below range, unclipped branch is the min), 1.0, 1.5 (clipped to 1.2)
    seq 1: A = -2, ratios 0.5 (clipped to 0.8 -> -1.6), 1.5 (unclipped -3.0), masked-out position."""
    ratios = torch.tensor([[0.5, 1.0, 1.5], [0.5, 1.5, 7.0]])
    logp_old = torch.full((2, 3), -1.0)
    logp_new = (logp_old + ratios.log()).requires_grad_()
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    return logp_new, logp_old, adv, mask


def test_clipped_surrogate_hand_value_and_gradient():
    logp_new, logp_old, adv, mask = _hand_example()
    loss, stats = clipped_surrogate(logp_new, logp_old, adv, mask)
    # seq 0 terms: 0.5, 1.0, 1.2 -> mean 0.9; seq 1 terms: -1.6, -3.0 -> mean -2.3
    # J = (0.9 - 2.3) / 2 = -0.7, loss = 0.7
    assert loss.item() == pytest.approx(0.7, abs=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(2 / 5)  # seq0 t2, seq1 t0
    assert stats["ratio_mean"].item() == pytest.approx((0.5 + 1.0 + 1.5 + 0.5 + 1.5) / 5)
    k = lambda rho: (rho - 1) - math.log(rho)  # noqa: E731
    assert stats["approx_kl"].item() == pytest.approx((2 * k(0.5) + k(1.0) + 2 * k(1.5)) / 5, abs=1e-6)
    assert stats["tokens"].item() == 5
    loss.backward()
    # d loss / d logp_new = -(1/N)(1/|c_i|) rho A where unclipped, 0 where clipped or masked
    expected = torch.tensor([[-(1 / 6) * 0.5, -(1 / 6) * 1.0, 0.0], [0.0, -(1 / 4) * 1.5 * -2.0, 0.0]])
    assert torch.allclose(logp_new.grad, expected, atol=1e-6)


def test_clipped_surrogate_other_reductions():
    logp_new, logp_old, adv, mask = _hand_example()
    total = 0.5 + 1.0 + 1.2 - 1.6 - 3.0  # -1.9
    token_loss, _ = clipped_surrogate(logp_new, logp_old, adv, mask, reduce="token")
    assert token_loss.item() == pytest.approx(-total / 5, abs=1e-6)
    const_loss, _ = clipped_surrogate(logp_new, logp_old, adv, mask, reduce="constant")
    assert const_loss.item() == pytest.approx(-total / (2 * 3), abs=1e-6)
    asym_loss, _ = clipped_surrogate(logp_new, logp_old, adv, mask, eps_high=0.6)  # 1.5 no longer clipped
    assert asym_loss.item() == pytest.approx(-((0.5 + 1.0 + 1.5) / 3 - 2.3) / 2, abs=1e-6)


def test_loss_mask_covers_exactly_the_thought_tokens():
    logp_new, logp_old, adv, mask = _hand_example()
    base, _ = clipped_surrogate(logp_new, logp_old, adv, mask)
    off = logp_new.detach().clone()
    off[1, 2] = float("-inf")  # masked-out: any value, even -inf, is ignored
    assert clipped_surrogate(off, logp_old, adv, mask)[0].item() == pytest.approx(base.item(), abs=0)
    on = logp_new.detach().clone()
    on[1, 1] += 0.1
    assert clipped_surrogate(on, logp_old, adv, mask)[0].item() != pytest.approx(base.item(), abs=1e-4)


def test_per_thought_weighting_is_length_independent():
    logp = torch.zeros(2, 4, requires_grad=True)
    mask = torch.tensor([[True, False, False, False], [True, True, True, True]])
    adv = torch.ones(2)
    clipped_surrogate(logp, logp.detach(), adv, mask)[0].backward()
    per_seq = logp.grad.sum(dim=-1)
    assert torch.allclose(per_seq, torch.tensor([-0.5, -0.5]))
    logp.grad = None
    clipped_surrogate(logp, logp.detach(), adv, mask, reduce="token")[0].backward()
    assert torch.allclose(logp.grad.sum(dim=-1), torch.tensor([-0.2, -0.8]))  # token mean favours long ones


def test_empty_masks_are_finite():
    logp = torch.full((2, 3), -1.0, requires_grad=True)
    old = torch.full((2, 3), float("nan"))
    none = torch.zeros(2, 3, dtype=torch.bool)
    for reduce in ("rlp", "token", "constant"):
        loss, stats = clipped_surrogate(logp, old, torch.ones(2), none, reduce=reduce)
        loss.backward()
        assert loss.item() == 0 and all(torch.isfinite(v) for v in stats.values())
        assert torch.isfinite(logp.grad).all() and (logp.grad == 0).all()
        logp.grad = None
    partial = torch.tensor([[True, True, False], [False, False, False]])
    loss, _ = clipped_surrogate(logp, logp.detach() - 0.1, torch.ones(2), partial)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert kl_penalty(logp, old, none).item() == 0
    assert next_token_loss(logp, none).item() == 0
    assert masked_mean(logp, none, dim=-1).tolist() == [0.0, 0.0]


# ---------------------------------------------------------------- KL, NLL, masked mean


def test_kl_penalty_and_next_token_loss_by_hand():
    logp = torch.tensor([[0.0, -1.0], [-2.0, 0.0]])
    ref = torch.tensor([[1.0, -1.0], [-2.0, 5.0]])
    mask = torch.tensor([[True, True], [True, False]])
    k3 = lambda d: math.exp(d) - d - 1  # noqa: E731
    # seq 0: (k3(1) + 0) / 2; seq 1: k3(0) = 0 -> mean over sequences
    assert kl_penalty(logp, ref, mask).item() == pytest.approx((k3(1.0) / 2 + 0.0) / 2, abs=1e-6)
    assert kl_penalty(logp, ref, mask, kind="k1").item() == pytest.approx((-1.0 / 2) / 2)
    assert next_token_loss(logp, mask).item() == pytest.approx((0.0 + 1.0 + 2.0) / 3)
    assert masked_mean(logp, mask.float() * 2, dim=-1).tolist() == pytest.approx([-0.5, -2.0])


# ---------------------------------------------------------------- EMA teacher


class _TwoParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(1.0))
        self.b = nn.Parameter(torch.tensor(0.0))
        self.register_buffer("running", torch.tensor(10.0))
        self.register_buffer("count", torch.tensor(0))

    def forward(self, x):
        return self.a * x + self.b


def _set(model, a, b, running, count):
    with torch.no_grad():
        model.a.fill_(a), model.b.fill_(b), model.running.fill_(running), model.count.fill_(count)


def test_ema_update_two_steps_by_hand():
    model = _TwoParam()
    teacher = EMATeacher.from_model(model, tau=0.9)
    _set(model, 3.0, -2.0, 20.0, 1)
    teacher.update(model)
    # phi = 0.9 phi + 0.1 theta: a 0.9*1 + 0.3 = 1.2, b -0.2, running 9 + 2 = 11; int buffer copied
    _set(model, 0.0, 1.0, 0.0, 2)
    teacher.update(model)
    # a 0.9*1.2 = 1.08, b 0.9*-0.2 + 0.1 = -0.08, running 9.9
    t = teacher.model
    assert t.a.item() == pytest.approx(1.08) and t.b.item() == pytest.approx(-0.08)
    assert t.running.item() == pytest.approx(9.9) and t.count.item() == 2
    assert teacher.num_updates == 2


def test_ema_lazy_init_frozen_and_checkpoint():
    model = _TwoParam()
    teacher = EMATeacher(tau=0.5)
    assert not teacher.initialized
    with pytest.raises(RuntimeError):
        teacher.update(model)
    _set(model, 4.0, 5.0, 1.0, 3)
    teacher.initialize(model)  # phi <- theta on the first batch
    assert all(torch.equal(p, q) for p, q in zip(teacher.model.state_dict().values(), model.state_dict().values()))
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.model.training
    out = teacher(torch.tensor(2.0))
    assert not out.requires_grad and out.item() == pytest.approx(13.0)
    _set(model, 0.0, 0.0, 0.0, 0)  # a deep copy: the teacher does not move with the model
    assert teacher.model.a.item() == 4.0
    state = teacher.state_dict()
    other = EMATeacher.from_model(_TwoParam(), tau=0.1)
    other.load_state_dict(state)
    assert other.tau == 0.5 and other.model.a.item() == 4.0


def test_ema_update_pure_function():
    target = [torch.tensor([1.0, 2.0]), torch.tensor(4.0)]
    source = [torch.tensor([3.0, 0.0]), torch.tensor(0.0, requires_grad=True)]
    ema_update_(target, source, tau=0.75)
    assert torch.allclose(target[0], torch.tensor([1.5, 1.5])) and target[1].item() == pytest.approx(3.0)
    with pytest.raises(ValueError):
        ema_update_(target, source[:1], tau=0.5)


def test_the_reduction_is_defined_once():
    """One Literal: the engine's StepBatch, the surrogate, its units and GRPO's --loss-reduce share it."""
    import typing

    from ponder.rl.grpo import GRPOConfig
    from ponder.train import engine, losses

    assert typing.get_args(losses.Reduce) == losses.REDUCES == tuple(losses.SURROGATE_UNIT)
    assert GRPOConfig.model_fields["loss_reduce"].annotation is losses.Reduce
    assert typing.get_type_hints(engine.StepBatch)["reduce"] is losses.Reduce
    logp_new, logp_old, adv, mask = _hand_example()
    with pytest.raises(ValueError, match="'seq_sum_const' is now called 'constant'"):
        clipped_surrogate(logp_new, logp_old, adv, mask, reduce="seq_sum_const")
    with pytest.raises(ValueError, match="expected one of rlp, token, constant"):
        clipped_surrogate(logp_new, logp_old, adv, mask, reduce="mean")

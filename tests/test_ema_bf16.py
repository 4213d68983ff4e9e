"""A bf16 EMA teacher: stochastic rounding keeps the EMA's small increments, rounding to nearest loses them."""

import pytest
import torch

from ponder.rl.ema import EMATeacher, ema_update_, stochastic_round_bf16

pytestmark = pytest.mark.numerics
ULP = 2.0**-7  # bf16's unit in the last place at 1 (7 stored mantissa bits)


def test_stochastic_rounding_keeps_bf16_numbers_and_is_unbiased_by_hand():
    exact = torch.tensor([0.0, 1.0, -2.5, 1 + ULP, 3 * 2.0**-130, 65280.0])  # all bf16 numbers (one subnormal)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(stochastic_round_bf16(exact.repeat(100), gen).float(), exact.repeat(100))
    for x in (1 + 0.25 * ULP, -(1 + 0.25 * ULP), 2 + 1.5 * 2 * ULP):
        n = 20_000
        out = stochastic_round_bf16(torch.full((n,), x), gen).float()
        below, above = (1.0, 1 + ULP) if abs(x) < 2 else (2 + 2 * ULP, 2 + 4 * ULP)
        sign = 1.0 if x > 0 else -1.0
        assert set(out.abs().unique().tolist()) <= {below, above}  # the two bf16 neighbours of |x|
        assert torch.all(torch.sign(out) == sign)
        # Up with probability (|x| - below) / (above - below): the mean is x, within 4 standard errors.
        p = (abs(x) - below) / (above - below)
        assert out.mean().item() == pytest.approx(x, abs=4 * (above - below) * (p * (1 - p) / n) ** 0.5)


def test_bf16_ema_update_by_hand():
    # tau = 0.75: 1 -> 0.75 * 1 + 0.25 * (1 + ULP) = 1 + ULP / 4, a quarter of the way to the next bf16 number.
    n = 20_000
    source = [torch.full((n,), 1 + ULP)]
    nearest = [torch.ones(n, dtype=torch.bfloat16)]
    ema_update_(nearest, source, tau=0.75, stochastic=False)
    assert torch.all(nearest[0] == 1.0)  # rounded to nearest: the increment is lost
    stochastic = [torch.ones(n, dtype=torch.bfloat16)]
    ema_update_(stochastic, source, tau=0.75, generator=torch.Generator().manual_seed(1))
    assert stochastic[0].float().mean().item() == pytest.approx(1 + ULP / 4, abs=4 * ULP * (0.1875 / n) ** 0.5)
    # Same dtypes still take the fused update, exactly.
    same = [torch.tensor([1.0, 2.0])]
    ema_update_(same, [torch.tensor([3.0, 0.0])], tau=0.75)
    assert same[0].tolist() == [1.5, 1.5]


def test_a_bf16_teacher_follows_the_fp32_ema_where_nearest_rounding_stalls():
    """tau = 0.999 for 1000 steps towards a source 0.01 away: fp32 moves 0.01 (1 - 0.999^1000) = 0.006323."""
    n, tau, steps = 4096, 0.999, 1000
    source = [torch.full((n,), 1.01)]
    want = 1 + 0.01 * (1 - tau**steps)
    fp32, nearest, stochastic = (
        [torch.ones(n)],
        [torch.ones(n, dtype=torch.bfloat16)],
        [torch.ones(n, dtype=torch.bfloat16)],
    )
    for step in range(steps):
        ema_update_(fp32, source, tau)
        ema_update_(nearest, source, tau, stochastic=False)
        ema_update_(stochastic, source, tau, generator=torch.Generator().manual_seed(step))
    assert fp32[0][0].item() == pytest.approx(want, rel=1e-6)
    assert torch.all(nearest[0] == 1.0)  # 1e-5 a step is far below half a unit (2^-8): it never moves
    moved = stochastic[0].float().mean().item() - 1
    assert moved == pytest.approx(want - 1, rel=0.05)


def test_bf16_teacher_holds_half_the_bytes_and_repeats_its_rounding(random_tiny):
    model, _ = random_tiny
    fp32 = EMATeacher.from_model(model, tau=0.99)
    bf16_a = EMATeacher.from_model(model, tau=0.99, dtype=torch.bfloat16)
    bf16_b = EMATeacher.from_model(model, tau=0.99, dtype=torch.bfloat16)
    size = lambda t: sum(p.numel() * p.element_size() for p in t.parameters())  # noqa: E731
    assert size(bf16_a) * 2 == size(fp32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3)
    for teacher in (bf16_a, bf16_b):
        teacher.update(model)
    for p, q in zip(bf16_a.parameters(), bf16_b.parameters()):
        assert p.dtype == torch.bfloat16 and torch.equal(p, q)  # rounding keyed by the update's index


def test_a_bf16_teacher_of_a_bf16_policy_follows_the_fp32_ema():
    """A bf16 policy (a bf16 HF checkpoint loaded with its own dtype) and a bf16 teacher share a dtype: the update
    still runs in fp32 and rounds stochastically, where a same-dtype lerp rounds to nearest and stalls at 1."""
    n, tau, updates = 4096, 0.999, 200
    policy = torch.nn.Linear(n, 1, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        policy.weight.fill_(1.0)
    teacher = EMATeacher.from_model(policy, tau=tau, dtype=torch.bfloat16, seed=0)
    with torch.no_grad():
        policy.weight.fill_(1.25)  # a bf16 number: the policy moved, the teacher trails it
    for _ in range(updates):
        teacher.update(policy)
    fp32 = 1.25 - 0.25 * tau**updates  # 1.0454
    got = teacher.model.weight.float().mean().item()
    # Each weight carries at most one bf16 unit (2^-7 at 1) of rounding noise: its mean over n weights far less.
    assert got == pytest.approx(fp32, abs=4 * ULP / n**0.5)
    # Rounding to nearest, as a same-dtype lerp does, loses every increment.
    stalled = [torch.ones(n, dtype=torch.bfloat16)]
    for _ in range(updates):
        ema_update_(stalled, [torch.full((n,), 1.25, dtype=torch.bfloat16)], tau, stochastic=False)
    assert torch.all(stalled[0] == 1.0)

import pytest
import torch

from ponder.plan.value_head import ridge_fit, ridge_predict


def test_one_feature_matches_the_hand_computed_ridge_slope():
    # x = 0, 1, 2 standardise to a = -s, 0, s with s = sqrt(3/2); y - mean(y) = -1, 0, 1;
    # primal ridge: w = a.y / (a.a + lam * D) = 2 s / (3 + lam), so f(x = 2) = 1 + s * 2 s / (3 + lam) = 1 + 3 / (3 + lam).
    x, y = torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([0.0, 1.0, 2.0])
    for lam in (0.01, 1.0):
        got = ridge_predict(ridge_fit(x, y, lam=lam), torch.tensor([[2.0], [1.0]]))
        assert got[0].item() == pytest.approx(1 + 3 / (3 + lam), rel=1e-6)
        assert got[1].item() == pytest.approx(1.0, rel=1e-6)  # the mean input predicts the mean


@pytest.mark.parametrize("n,d", [(6, 40), (30, 5)])
def test_dual_solution_equals_the_primal_one(n, d):
    g = torch.Generator().manual_seed(0)
    x, y, q = torch.randn(n, d, generator=g), torch.randn(n, generator=g), torch.randn(4, d, generator=g)
    lam = 0.3
    head = ridge_fit(x, y, lam=lam)
    a = ((x - x.mean(0)) / x.std(0, unbiased=False)).double()
    w = torch.linalg.solve(a.T @ a + lam * d * torch.eye(d, dtype=a.dtype), a.T @ (y.double() - y.double().mean()))
    want = ((q.double() - x.double().mean(0)) / x.double().std(0, unbiased=False)) @ w + y.double().mean()
    assert torch.allclose(ridge_predict(head, q).double(), want, rtol=1e-4, atol=1e-5)


def test_few_rows_are_interpolated_as_lam_vanishes_and_a_constant_feature_is_ignored():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 50, generator=g), torch.randn(5, generator=g)
    assert torch.allclose(ridge_predict(ridge_fit(x, y, lam=1e-9), x), y, atol=1e-4)
    with_const = torch.cat([x, torch.full((5, 1), 7.0)], 1)
    q = torch.cat([x[:2], torch.full((2, 1), -3.0)], 1)  # the constant column moved: no effect
    assert torch.allclose(ridge_predict(ridge_fit(with_const, y, lam=1e-9), q), y[:2], atol=1e-4)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="N >= 1"):
        ridge_fit(torch.zeros(3, 2), torch.zeros(2))

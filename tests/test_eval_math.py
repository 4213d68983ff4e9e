"""pass@k and majority vote against hand computations."""

import math

import pytest

from ponder.eval.accuracy import majority_answer, pass_at_k


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 5, 3) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # with k = n it is "any correct"
    assert pass_at_k(3, 1, 3) == 1.0


def test_pass_at_k_matches_enumeration():
    import itertools

    n, c, k = 6, 2, 3
    items = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    expected = sum(any(items[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(expected)
    assert math.isclose(expected, 1 - 4 / 20)


def test_pass_at_k_rejects_bad_input():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_majority_answer():
    assert majority_answer(["12", " 12 ", "13", None]) == "12"
    assert majority_answer(["a", "b"]) == "a"  # tie: earliest seen
    assert majority_answer(["b", "a", "a", "b"]) == "b"
    assert majority_answer([None, None]) is None

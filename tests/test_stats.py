"""Distribution statistics against hand computations and identities (ponder.report.stats)."""

import math

import pytest

from ponder.report.stats import bootstrap_interval, compare, distribution, iqr, median, quartiles, win_share


def test_median_and_quartiles_by_hand():
    assert median([3, 1, 2]) == 2 and median([4, 1, 3, 2]) == 2.5
    # [1..5]: quartile positions 0.25 * 4 = 1 and 0.75 * 4 = 3 -> values 2 and 4
    assert quartiles([5, 1, 4, 2, 3]) == (2.0, 4.0) and iqr([5, 1, 4, 2, 3]) == 2.0
    # [1..4]: positions 0.75 and 2.25 -> 1 + 0.75 = 1.75 and 3 + 0.25 = 3.25
    assert quartiles([1, 2, 3, 4]) == (1.75, 3.25) and iqr([1, 2, 3, 4]) == 1.5
    assert quartiles([0.4]) == (0.4, 0.4) and iqr([0.4]) == 0.0
    with pytest.raises(ValueError):
        median([])


def test_win_share_counts_ties_half_paired_or_against_one_number():
    assert win_share([1, 2, 3], [0, 2, 4]) == pytest.approx((1 + 0.5 + 0) / 3)
    assert win_share([1, 2, 3], 2) == pytest.approx(0.5)
    assert win_share([0.3, 0.4, 0.5, 0.6], 0.155) == 1.0
    assert win_share([100, 300], [200, 200], higher_is_better=False) == 0.5  # calls: fewer is better
    with pytest.raises(ValueError):
        win_share([1, 2], [1, 2, 3])


def test_bootstrap_of_two_differences_by_hand():
    # differences [0, 1]: a resample's mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% quantiles of 10,000 resamples are 0 and 1 (each end holds ~2,500 draws)
    assert bootstrap_interval([1, 3], [1, 2]) == (0.0, 1.0)
    assert bootstrap_interval([1, 3], [1, 2], statistic="median") == (0.0, 1.0)


def test_bootstrap_identities():
    a, b = [0.41, 0.35, 0.47, 0.30, 0.52], [0.18, 0.17, 0.18, 0.20, 0.16]
    lo, hi = bootstrap_interval(a, b)
    assert bootstrap_interval(a, b) == (lo, hi)  # fixed generator: the same interval every run
    d = [x - y for x, y in zip(a, b)]
    assert min(d) <= lo <= sum(d) / len(d) <= hi <= max(d)
    shifted = bootstrap_interval([x + 0.25 for x in a], b)
    assert shifted == pytest.approx((lo + 0.25, hi + 0.25))  # shifting every difference shifts the interval
    assert bootstrap_interval([0.5, 0.5, 0.5], 0.2) == pytest.approx((0.3, 0.3))  # no spread, no width
    narrow = bootstrap_interval(a, b, level=0.5)
    assert lo <= narrow[0] <= narrow[1] <= hi


def test_distribution_and_compare_fields():
    d = distribution([0.2, 0.4, 0.6])
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.4) and d["std"] == pytest.approx(0.2)
    # quartile positions 0.5 and 1.5 -> 0.3 and 0.5
    assert d["median"] == 0.4 and d["q1"] == pytest.approx(0.3) and d["iqr"] == pytest.approx(0.2)
    c = compare([0.2, 0.4, 0.6], 0.1)
    assert c["win_share"] == 1.0 and c["diff"] == pytest.approx(0.3) and c["shown"]
    not_shown = compare([0.05, 0.4, 0.1, 0.3], 0.155)  # two seeds below the base, two above
    assert not_shown["win_share"] == 0.5 and not not_shown["shown"]
    assert not_shown["diff_low"] < 0 < not_shown["diff_high"]


def test_rank_correlation_by_hand_and_its_identities():
    from ponder.report.stats import average_ranks, rank_correlation

    assert average_ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [2.5, 0.0, 2.5, 1.0]  # the tied pair shares ranks 2 and 3
    # x ranks 0,1,2,3; y = [1, 3, 2, 4] ranks 0,2,1,3: d = 0,-1,1,0, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert rank_correlation([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert rank_correlation([1, 2, 3], [10, 20, 1000]) == pytest.approx(1.0)  # monotone: 1 whatever the spacing
    assert rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))  # a constant side has no ranking
    with pytest.raises(ValueError):
        rank_correlation([1, 2], [1])

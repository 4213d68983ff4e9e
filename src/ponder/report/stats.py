"""Distributions of a result over seeds: median, quartiles, win share and a paired bootstrap interval.

A method's figure over seeds is reported as its median and interquartile range (quartiles by
linear interpolation between order statistics, numpy's default and ``statistics.quantiles(...,
method="inclusive")``), the share of seeds where it beats its comparison (ties count half), and a
percentile bootstrap interval of the mean or median *paired* difference: seed ``i`` of the method
against seed ``i`` of the comparison (or against one number, such as a base model measured once),
resampled with a generator of fixed seed so the interval is the same on every run.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

#: Resamples and generator seed of every bootstrap interval the project reports.
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def median(xs: Sequence[float]) -> float:
    if not xs:
        raise ValueError("median of no values")
    return float(statistics.median(xs))


def quartiles(xs: Sequence[float]) -> tuple[float, float]:
    """First and third quartiles (linear interpolation; one value is its own quartiles)."""
    if not xs:
        raise ValueError("quartiles of no values")
    q1, q3 = np.quantile(np.asarray(xs, dtype=float), [0.25, 0.75])
    return float(q1), float(q3)


def iqr(xs: Sequence[float]) -> float:
    """Interquartile range ``q3 - q1``."""
    q1, q3 = quartiles(xs)
    return q3 - q1


def average_ranks(xs: Sequence[float]) -> np.ndarray:
    """Ranks ``[n]`` of ``xs`` from 0, tied values sharing the mean of their ranks."""
    a = np.asarray(xs, dtype=float)
    order = np.argsort(a, kind="stable")
    ranks = np.empty(a.size)
    ranks[order] = np.arange(a.size, dtype=float)
    for value in np.unique(a):
        tied = a == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def rank_correlation(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation of paired values (Pearson's on average ranks); NaN when either side is constant."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(
            f"rank correlation needs two equally long lists of 2 or more values, got {len(xs)} and {len(ys)}"
        )
    rx, ry = average_ranks(xs), average_ranks(ys)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float(np.sqrt((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / den) if den else float("nan")


def paired_differences(method: Sequence[float], comparison: Sequence[float] | float) -> np.ndarray:
    """``method[i] - comparison[i]`` per seed ``[n]``; a scalar comparison is the same for every seed."""
    a = np.asarray(method, dtype=float)
    b = np.full_like(a, float(comparison)) if np.isscalar(comparison) else np.asarray(comparison, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or not a.size:
        raise ValueError(f"paired values need two equally long non-empty lists, got {a.shape} and {b.shape}")
    return a - b


def win_share(method: Sequence[float], comparison: Sequence[float] | float, higher_is_better: bool = True) -> float:
    """Share of seeds where ``method`` beats ``comparison`` (paired, or against one number); a tie counts half."""
    d = paired_differences(method, comparison)
    if not higher_is_better:
        d = -d
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


def bootstrap_interval(
    method: Sequence[float],
    comparison: Sequence[float] | float,
    statistic: str = "mean",
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the ``statistic`` ("mean" or "median") of the paired differences.

    Resamples seeds (pairs) with replacement ``resamples`` times: ``[resamples, n]`` draws of the
    differences, one statistic per row, and the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles.
    """
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic must be 'mean' or 'median', not {statistic!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    d = paired_differences(method, comparison)
    idx = np.random.default_rng(seed).integers(0, d.size, size=(resamples, d.size))
    draws = d[idx]
    stats = draws.mean(axis=1) if statistic == "mean" else np.median(draws, axis=1)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def distribution(xs: Sequence[float]) -> dict:
    """``n``, ``mean``, ``std`` (sample), ``median``, ``q1``, ``q3``, ``iqr``, ``min``, ``max`` of ``xs``."""
    q1, q3 = quartiles(xs)
    return {
        "n": len(xs),
        "mean": float(statistics.fmean(xs)),
        "std": float(statistics.stdev(xs)) if len(xs) > 1 else 0.0,
        "median": median(xs),
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "min": float(min(xs)),
        "max": float(max(xs)),
    }


def compare(
    method: Sequence[float],
    comparison: Sequence[float] | float,
    statistic: str = "mean",
    higher_is_better: bool = True,
    level: float = 0.95,
) -> dict:
    """The method's distribution plus its comparison: ``win_share``, the ``statistic`` of the paired
    difference and its bootstrap interval (``diff_low``, ``diff_high``), and ``shown``: whether the interval
    excludes no effect (lies wholly on the better side of zero)."""
    d = paired_differences(method, comparison)
    lo, hi = bootstrap_interval(method, comparison, statistic, level)
    return {
        **distribution(method),
        "win_share": win_share(method, comparison, higher_is_better),
        "diff_statistic": statistic,
        "diff": float(d.mean() if statistic == "mean" else np.median(d)),
        "diff_low": lo,
        "diff_high": hi,
        "level": level,
        "shown": bool(lo > 0) if higher_is_better else bool(hi < 0),
    }

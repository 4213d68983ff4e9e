"""BIG-bench's JSON-task metrics as pure functions (the definitions of ``bigbench/api/task_metrics.py``, v1.0.0).

Each function takes what BIG-bench's takes (targets, post-processed responses, per-option
log-probs in the file's option order, target scores) and returns the same number. Per-example
scores (``*_scores``) are given where BIG-bench's aggregate is their mean; :func:`measure`
computes every metric of a file.

Multiple choice, as BIG-bench computes it: the log-prob of each option (the option's tokens
after the prompt) is *absolute*; the *normalised* log-probs are these minus their logsumexp
(a softmax over the options). ``multiple_choice_grade``, the calibration metrics and
``macro_f1`` read the normalised ones unless the file sets ``absolute_normalization`` (the
argmax is the same either way); ``weighted_log_probabilities`` / ``weighted_probabilities``
always read the absolute ones. The chosen option is the argmax, ties broken by BIG-bench's
deterministic hash of the log-prob array; the example scores that option's target score
(so a soft ``target_scores`` gives partial credit).

Metrics that need an external model or package (``bleu``, ``rouge``, ``bleurt``,
``sequence_f1``) are not computed: :data:`NOT_COMPUTED` says why.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

GENERATIVE_METRICS = (
    "bleu",
    "bleurt",
    "exact_str_match",
    "case_insensitive_str_match",
    "sequence_f1",
    "numeric_match_with_0_1_relative_error",
    "rouge",
)
SCORING_METRICS = ("log_likelihood",)
MULTIPLE_CHOICE_METRICS = (
    "multiple_choice_grade",
    "calibration_multiple_choice_brier_score",
    "expected_calibration_error",
    "weighted_log_probabilities",
    "weighted_probabilities",
    "macro_f1",
)
NOT_COMPUTED = {
    "bleu": "needs sacrebleu (t5.evaluation)",
    "rouge": "needs rouge-score (t5.evaluation)",
    "bleurt": "needs the BLEURT-20 model",
    "sequence_f1": "needs t5.evaluation",
}


# ---------------------------------------------------------------- generative


def exact_str_match_scores(targets: Sequence[Sequence[str]], responses: Sequence[str]) -> list[float]:
    """1.0 where the response is one of the example's targets, character for character."""
    return [float(r in list(t)) for t, r in zip(targets, responses)]


def case_insensitive_str_match_scores(targets: Sequence[Sequence[str]], responses: Sequence[str]) -> list[float]:
    """1.0 where the stripped, lower-cased response is one of the stripped, lower-cased targets."""
    return [float(r.strip().lower() in [t.strip().lower() for t in ts]) for ts, r in zip(targets, responses)]


def numeric_match_scores(
    targets: Sequence[Sequence[str]], responses: Sequence[str], rel_error: float = 0.1
) -> list[float]:
    """``numeric_match_with_0_1_relative_error``: |response - target| / |target| <= 0.1 (absolute when target is 0).

    BIG-bench asserts one target per example and divides by the signed target; both kept.
    """
    out = []
    for ts, r in zip(targets, responses):
        if len(ts) != 1:
            raise ValueError("numeric_match_with_0_1_relative_error needs exactly one target per example")
        try:
            target, value = float(ts[0]), float(r)
        except ValueError:
            out.append(0.0)
            continue
        out.append(float(abs(value - target) / (target if target != 0 else 1) <= rel_error))
    return out


GENERATIVE_SCORES = {
    "exact_str_match": exact_str_match_scores,
    "case_insensitive_str_match": case_insensitive_str_match_scores,
    "numeric_match_with_0_1_relative_error": numeric_match_scores,
}


# ---------------------------------------------------------------- multiple choice


def normalized_log_probs(absolute: Sequence[float]) -> list[float]:
    """Option log-probs renormalised over the options: ``x - logsumexp(x)``."""
    x = np.asarray(absolute, dtype=np.float64)
    top = float(np.max(x))
    return list(x - (top + math.log(float(np.sum(np.exp(x - top))))))


def bigbench_argmax(values: Sequence[float]) -> int:
    """Index of the largest value; ties broken by sha256 of the float64 array, as BIG-bench's ``argmax``."""
    arr = np.asarray(values, dtype=np.float64)
    winners = np.arange(len(arr))[arr == np.max(arr)]
    return int(winners[int(hashlib.sha256(arr.tobytes()).hexdigest(), 16) % len(winners)])


def multiple_choice_grade_scores(
    choices: Sequence[Sequence[str]], target_scores: Sequence[dict], log_probs: Sequence[Sequence[float]]
) -> list[float]:
    """Per example: the target score of the option with the highest log-prob."""
    return [float(ts[c[bigbench_argmax(lp)]]) for c, ts, lp in zip(choices, target_scores, log_probs)]


def _probabilities(choices: Sequence[str], target_scores: dict, log_probs: Sequence[float]):
    """``(probs, target_probs)`` of one example: softmax of the log-probs; target scores over their sum."""
    total = sum(target_scores.values())
    ordered = [target_scores[c] for c in choices]
    target_probs = [0.0] * len(ordered) if total == 0 else [s / sum(ordered) for s in ordered]
    lp = np.asarray(log_probs, dtype=np.float64)
    lp = lp - np.max(lp)
    probs = np.exp(lp) / np.sum(np.exp(lp))
    return probs, target_probs


def brier_score(
    choices: Sequence[Sequence[str]], target_scores: Sequence[dict], log_probs: Sequence[Sequence[float]]
) -> float:
    """``calibration_multiple_choice_brier_score``: squared error of each option's probability, averaged over options."""
    total, count = 0.0, 0
    for c, ts, lp in zip(choices, target_scores, log_probs):
        probs, target_probs = _probabilities(c, ts, lp)
        for t, p in zip(target_probs, probs):
            total += t * (p - 1) ** 2 + (1 - t) * p**2
            count += 1
    return total / count


def expected_calibration_error(
    choices: Sequence[Sequence[str]],
    target_scores: Sequence[dict],
    log_probs: Sequence[Sequence[float]],
    num_buckets: int = 15,
) -> float:
    """ECE over ``num_buckets`` confidence buckets; correct when the top option is the top target probability."""
    confidences, correct = [], []
    for c, ts, lp in zip(choices, target_scores, log_probs):
        probs, target_probs = _probabilities(c, ts, lp)
        confidences.append(float(np.max(probs)))
        correct.append(int(np.argmax(target_probs) == np.argmax(probs)))
    buckets: list[list[int]] = [[] for _ in range(num_buckets)]
    for i, conf in enumerate(confidences):
        j = 0
        for j in range(num_buckets):  # noqa: B007 - the loop variable is the bucket, as in BIG-bench
            if conf < (j + 1) / num_buckets:
                break
        buckets[j].append(i)
    n = len(confidences)
    ece = 0.0
    for idx in buckets:
        if idx:
            acc = float(np.mean([correct[i] for i in idx]))
            conf = float(np.mean([confidences[i] for i in idx]))
            ece += len(idx) / n * abs(acc - conf)
    return ece


def weighted_log_probability_scores(
    choices: Sequence[Sequence[str]], target_scores: Sequence[dict], absolute: Sequence[Sequence[float]]
) -> list[float]:
    """Per example: sum over options of target score x absolute log-prob."""
    return [float(sum(ts[o] * lp for o, lp in zip(c, a))) for c, ts, a in zip(choices, target_scores, absolute)]


def weighted_probability_scores(
    choices: Sequence[Sequence[str]], target_scores: Sequence[dict], absolute: Sequence[Sequence[float]]
) -> list[float]:
    """Per example: sum over options of target score x absolute probability."""
    return [
        float(sum(ts[o] * math.exp(lp) for o, lp in zip(c, a))) for c, ts, a in zip(choices, target_scores, absolute)
    ]


def macro_f1(choices: Sequence[Sequence[str]], target_scores: Sequence[dict], log_probs: Sequence[Sequence[float]]):
    """Macro-averaged F1 of the chosen option against the single correct one (labels: every true or chosen option).

    As scikit-learn's ``f1_score(average="macro")``, which BIG-bench calls: a label never
    predicted or never true has F1 0.
    """
    if not all(list(ts.values()).count(1) == 1 and sum(ts.values()) == 1 for ts in target_scores):
        raise ValueError("macro_f1 needs exactly one option scored 1 (the rest 0) in every example")
    y_true = [next(k for k, v in ts.items() if v == 1) for ts in target_scores]
    y_pred = [c[bigbench_argmax(lp)] for c, lp in zip(choices, log_probs)]
    f1s = []
    for label in sorted(set(y_true) | set(y_pred)):
        tp = sum(t == label and p == label for t, p in zip(y_true, y_pred))
        fp = sum(t != label and p == label for t, p in zip(y_true, y_pred))
        fn = sum(t == label and p != label for t, p in zip(y_true, y_pred))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


# ---------------------------------------------------------------- scoring


def log_likelihood(log_probs_gen: Sequence[Sequence[float]], targets: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean log-likelihood of the targets; with one target per example also per word and per character."""
    if any(len(t) > 1 for t in targets):
        return {"log_likelihood": float(np.mean([_logsumexp(lp) for lp in log_probs_gen]))}
    n = len(log_probs_gen)
    return {
        "log_likelihood": sum(lp[0] for lp in log_probs_gen) / n,
        "log_likelihood_per_word": sum(lp[0] / len(t[0].split()) for lp, t in zip(log_probs_gen, targets)) / n,
        "log_likelihood_per_char": sum(lp[0] / len(t[0]) for lp, t in zip(log_probs_gen, targets)) / n,
    }


def _logsumexp(x: Sequence[float]) -> float:
    top = max(x)
    return top + math.log(sum(math.exp(v - top) for v in x))


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def measure(
    metrics: Sequence[str],
    targets: Sequence[Sequence[str]],
    responses: Sequence[str] | None = None,
    choices: Sequence[Sequence[str]] | None = None,
    target_scores: Sequence[dict] | None = None,
    absolute_log_probs: Sequence[Sequence[float]] | None = None,
    target_log_probs: Sequence[Sequence[float]] | None = None,
    absolute_normalization: bool = False,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Every metric in ``metrics`` BIG-bench's way: ``(aggregate {name: value}, per-example {name: value})``.

    ``responses``: post-processed generations (generative metrics); ``choices`` / ``target_scores``
    / ``absolute_log_probs``: options in file order, their scores, their absolute log-probs
    (multiple-choice metrics); ``target_log_probs``: absolute log-prob of each target
    (``log_likelihood``). Metrics in :data:`NOT_COMPUTED` are left out. Per-example values are
    given for metrics whose aggregate is a mean over examples (and the Brier score of each example).
    """
    n = len(targets)
    out: dict[str, float] = {}
    per: list[dict[str, float]] = [{} for _ in range(n)]

    def add(name: str, scores: list[float]) -> None:
        out[name] = mean(scores)
        for row, v in zip(per, scores):
            row[name] = v

    for name in metrics:
        if name in GENERATIVE_SCORES:
            add(name, GENERATIVE_SCORES[name](targets, responses))
    mc = [m for m in metrics if m in MULTIPLE_CHOICE_METRICS]
    if mc:
        normalised = [normalized_log_probs(a) for a in absolute_log_probs]
        lp = absolute_log_probs if absolute_normalization else normalised
        for name in mc:
            if name == "multiple_choice_grade":
                add(name, multiple_choice_grade_scores(choices, target_scores, lp))
            elif name == "calibration_multiple_choice_brier_score":
                out[name] = brier_score(choices, target_scores, lp)
                for row, c, ts, x in zip(per, choices, target_scores, lp):
                    row[name] = brier_score([c], [ts], [x])
            elif name == "expected_calibration_error":
                out[name] = expected_calibration_error(choices, target_scores, lp)
            elif name == "weighted_log_probabilities":
                add(name, weighted_log_probability_scores(choices, target_scores, absolute_log_probs))
            elif name == "weighted_probabilities":
                add(name, weighted_probability_scores(choices, target_scores, absolute_log_probs))
            elif name == "macro_f1":
                out[name] = macro_f1(choices, target_scores, lp)
    if "log_likelihood" in metrics:
        out.update(log_likelihood(target_log_probs, targets))
        for row, x, t in zip(per, target_log_probs, targets):
            row["log_likelihood"] = _logsumexp(x) if len(t) > 1 else x[0]
    return out, per

"""The audit report says only what it measured: scope from the data, no None, numeric order, no unfounded readings."""

from __future__ import annotations

import re
from html import unescape

import pytest
import torch

from ponder.audit.budget import BudgetCurveResult
from ponder.audit.dtr import dtr_result, lens_token_cap, think_at_n_warning
from ponder.audit.evidence import MIN_TRACES_FOR_INTERPRETATION, interpretation_withheld
from ponder.audit.sparsity import layer_sort_key, update_sparsity
from ponder.audit.step_gain import StepGainResult
from ponder.jobs.audit import finite
from ponder.report.audit_report import build_report, dtr_scope


def _html(payload_part: dict) -> str:
    payload = {"model": "m", "task": "add2", "problems": 4, "samples": 4, "thought_budget": 32, **payload_part}
    return build_report(finite(payload)).render()


def _prose(html: str) -> str:
    """The report's visible text (figures dropped)."""
    return unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<img[^>]*>", "", html)))


def _divergences(shallow: int, deep: int) -> torch.Tensor:
    """``[L=4, T]``: ``shallow`` tokens settling at layer 1, then ``deep`` settling only at the last layer (4)."""
    early = torch.tensor([[0.1], [0.1], [0.1], [0.0]]).expand(4, shallow)
    late = torch.tensor([[0.9], [0.9], [0.9], [0.0]]).expand(4, deep)
    return torch.cat([early, late], dim=1)


def test_dtr_is_measured_over_the_tokens_asked_for_and_the_caption_says_so():
    divs = [_divergences(16, 24), _divergences(10, 0)]  # 40 and 10 thought tokens
    capped = dtr_result(divs, [False, False], max_tokens=16)
    # deep_from(4, 0.85) = 4: the first 16 tokens of the first response are shallow, so its DTR is 0, not 24/40.
    assert capped.per_response == [0.0, 0.0] and capped.tokens == [16, 10]
    assert dtr_result(divs, [False, False]).per_response == [pytest.approx(24 / 40), 0.0]
    data = finite(capped.to_json())
    assert data["max_tokens"] == 16 and data["tokens_measured"] == 26 and data["longest_measured"] == 16
    assert dtr_scope(data) == (
        "Measured over the first 16 thought tokens of each response: 26 tokens in 2 responses, at most 16 in one."
    )
    # The lens covers the DTR's tokens and Think@n's prefix; the DTR itself is not widened to the prefix.
    assert lens_token_cap(16, 50) == 50 and lens_token_cap(None, 50) is None
    html = _html({"dtr": data})
    assert "first 16 thought tokens" in html and "first 50" not in html


def test_missing_means_are_said_in_words_never_as_none():
    data = finite(dtr_result([_divergences(3, 2)], [False]).to_json())  # no correct response: its mean is NaN
    assert data["mean_dtr_correct"] is None
    prose = _prose(_html({"dtr": data}))
    assert "n/a (no correct responses)" in prose and "None" not in prose
    planning = {
        "strategic_ngram_source": "mined from successful traces",
        "strategic_ngrams": 0,
        "checkpoints": [
            {
                "name": "m",
                "traces": 4,
                "planning_token_share": 0.0,
                "planning_semantic_entropy_bits": None,
                "execution_entropy_nats": 2.8,
                "format_diversity_bits": 1.0,
            }
        ],
    }
    prose = _prose(_html({"planning_tokens": planning}))
    assert "n/a (no strategic n-grams)" in prose and "none found" in prose and "None" not in prose


def test_layers_are_listed_in_numeric_order():
    names = [f"model.layers.{i}.w" for i in range(12)] + ["lm_head.weight"]
    before = {n: torch.zeros(2, 2) + i for i, n in enumerate(names)}
    after = {n: t + 1 for n, t in before.items()}
    per_layer = update_sparsity(before, after, ranks=False).per_layer
    assert list(per_layer) == [f"layer {i}" for i in range(12)] + ["lm_head.weight"]
    assert sorted(["layer 10", "layer 2", "layer 1"], key=layer_sort_key) == ["layer 1", "layer 2", "layer 10"]
    # A report of a JSON whose rows are in text order still lists them by number.
    text_order = {k: per_layer[k] for k in sorted(per_layer)}
    assert list(text_order)[:3] == ["layer 0", "layer 1", "layer 10"]
    sparsity = {
        "tol": 1e-5,
        "rank_tolerance": "default",
        "parameters": 52,
        "sparsity_bf16": 0.0,
        "sparsity_fp32": 0.0,
        "sparsity_fp32_exact": 0.0,
        "mean_rank_ratio": None,
        "per_layer": text_order,
    }
    prose = _prose(_html({"sparsity": sparsity}))
    rows = re.findall(r"layer (\d+)", prose)
    assert rows == [str(i) for i in range(12)]


def test_no_peak_from_an_all_zero_curve_or_too_few_problems():
    many = MIN_TRACES_FOR_INTERPRETATION
    zero = BudgetCurveResult([4, 8, 16], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], problems=many).to_json()
    assert "peak_truncation" not in zero and zero["peak_withheld"] == "every accuracy is 0"
    few = BudgetCurveResult([4, 8], [0.25, 0.5], [0.0, 0.25], problems=4).to_json()
    assert "peak_forcing" not in few and few["peak_withheld"] == f"too few problems (4 < {many})"
    real = BudgetCurveResult([8, 16, 32, 64], [0.2, 0.6, 0.6, 0.4], [0.1, 0.1, 0.1, 0.1], problems=many).to_json()
    assert real["peak_truncation"] == {"budget": 16, "accuracy": 0.6} and "peak_withheld" not in real
    zero.update(mean_thought_tokens={"truncation": [4, 8, 16], "forcing": [4, 8, 16]})
    prose = _prose(_html({"budget_curve": zero}))
    assert "Peak (" not in prose and "No peak is named: every accuracy is 0" in prose
    assert f"at least {many} problems" in prose


def _gains(traces: int, accuracy: float, total: float) -> dict:
    return {
        "traces": traces,
        "accuracy": accuracy,
        "mean_total_gain": total,
        "mean_gain_per_step": total / 3,
        "gain_by_step": {"1": total},
        "mean_steps": 3,
    }


def test_no_rationalization_reading_from_few_traces_or_zero_accuracy():
    few = StepGainResult({"a": _gains(4, 0.0, -2.0), "b": _gains(4, 0.0, -3.0)}).to_json()
    assert few["interpretation_withheld"] == f"too few traces (4 < {MIN_TRACES_FOR_INTERPRETATION})"
    prose = _prose(_html({"step_information_gain": finite(few)}))
    assert "post-hoc rationalization" not in prose and "No interpretation: too few traces" in prose
    zero = StepGainResult({"a": _gains(30, 0.0, 2.0), "b": _gains(30, 0.0, 1.0)}).to_json()
    assert zero["interpretation_withheld"] == "every accuracy is 0"
    held = StepGainResult({"a": _gains(30, 0.5, 2.0), "b": _gains(30, 0.5, 1.0)}).to_json()
    assert held["interpretation_withheld"] is None and held["total_gain_change"] == pytest.approx(-0.5)
    prose = _prose(_html({"step_information_gain": finite(held)}))
    assert "-50.0%" in prose and "points to post-hoc rationalization" in prose
    flat = finite(StepGainResult({"a": _gains(30, 0.5, 0.0), "b": _gains(30, 0.5, 1.0)}).to_json())
    assert "n/a (the first checkpoint's total gain is 0)" in _prose(_html({"step_information_gain": flat}))
    assert interpretation_withheld(MIN_TRACES_FOR_INTERPRETATION) is None  # no accuracy to check: traces decide


def test_think_at_n_warns_when_its_prefix_cannot_stop_anything():
    long_prefix = think_at_n_warning(50, 32, 1.0)
    assert "prefix (50 tokens) is not shorter than the thought budget (32)" in long_prefix
    assert "token ratio 1.000" in long_prefix and "--prefix-tokens below 32" in long_prefix
    assert "no sample ran past" in think_at_n_warning(16, 32, 1.0)
    assert think_at_n_warning(16, 32, 0.75) is None
    tn = {
        "n": 4,
        "problems": 4,
        "prefix_tokens": 50,
        "think_at_n_accuracy": 0.0,
        "think_at_n_tokens": 640,
        "self_consistency_accuracy": 0.0,
        "self_consistency_tokens": 640,
        "half_vote_accuracy": 0.0,
        "mean_sample_accuracy": 0.0,
        "token_ratio": 1.0,
        "no_answer_samples": 1,
        "warnings": [long_prefix],
    }
    assert "Warning: the Think@n prefix (50 tokens) is not shorter" in _prose(_html({"think_at_n": tn}))


def test_audit_job_measures_the_dtr_it_was_asked_for_and_warns_on_stderr(random_tiny, tmp_path, capsys, one_thread):
    from ponder.cli import main

    model, tok = random_tiny
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    out = tmp_path / "audit"
    argv = ["audit", "--model", str(tmp_path / "m"), "--compare", str(tmp_path / "m"), "--task", "add2"]
    argv += ["--n", "2", "--samples", "2", "--max-thought-tokens", "6", "--dtr-max-tokens", "3"]
    argv += ["--diagnostics", "dtr,think_at_n,step_information_gain", "--out", str(out), "--json", str(out / "a.json")]
    assert main([*argv, "--quiet"]) == 0
    import json

    data = json.loads((out / "a.json").read_text())
    assert data["dtr"]["max_tokens"] == 3 and data["dtr"]["longest_measured"] <= 3
    assert data["think_at_n"]["prefix_tokens"] == 50 and data["think_at_n"]["thought_budget"] == 6
    assert "not shorter than the thought budget (6)" in data["think_at_n"]["warnings"][0]
    assert "not shorter than the thought budget (6)" in capsys.readouterr().err.replace("\n", " ")
    assert len(data["step_information_gain"]["models"]) == 2  # a model against itself: two rows, not one
    html = (out / "report.html").read_text()
    assert "first 3 thought tokens" in html and "None" not in _prose(html)

"""The demo pipeline end to end on a seconds-trained model (the real demo runs in `make demo`)."""

import json

import pytest

from ponder.cli import main
from ponder.eval.info_gain import information_gain
from ponder.rl.positions import Doc


@pytest.mark.slow
def test_demo_pipeline_json_and_report(trained_tiny_dir, tmp_path):
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(
        f"base: {trained_tiny_dir}\ntask: add2\nseeds: [0, 1]\neval_n: 10\ninfo_gain_docs: 4\ncpt_batch_size: 8\n"
        "rlp: {steps: 2, docs_per_step: 3, group_size: 2, max_thought_tokens: 8, context_length: 32, save_every: 1}\n"
    )
    out_json = tmp_path / "demo.json"
    assert (
        main(["demo", "--config", str(cfg), "--out", str(tmp_path / "runs"), "--json", str(out_json), "--quiet"]) == 0
    )
    data = json.loads(out_json.read_text())
    assert data["seeds"] == [0, 1]
    for key in ("base", "cpt", "rlp"):
        r = data[key]
        for field in (
            "think_accuracy",
            "no_think_accuracy",
            "info_gain_answer",
            "info_gain_other",
            "think_accuracy_per_seed",
            "think_accuracy_median",
            "think_accuracy_iqr",
            "info_gain_answer_median",
        ):
            assert field in r
    assert len(data["rlp"]["think_accuracy_per_seed"]) == 2
    mean = sum(data["rlp"]["think_accuracy_per_seed"]) / 2
    assert abs(data["rlp"]["think_accuracy"] - mean) < 1e-12
    # CPT is FLOP-matched: it trained on exactly the RLP run's T_flop = rollout + input tokens.
    rlp = json.loads((tmp_path / "runs" / "rlp-s0" / "rlp_summary.json").read_text())
    cpt = json.loads((tmp_path / "runs" / "cpt-s0" / "cpt_summary.json").read_text())
    assert cpt["budget_tokens"] == rlp["flop_matched_tokens"] == rlp["rollout_tokens"] + rlp["input_tokens"]
    assert cpt["tokens_seen"] == cpt["planned_tokens"]
    html = (tmp_path / "runs" / "report.html").read_text()
    assert "RLP training curves" in html and "data:image/png;base64" in html


def test_information_gain_covers_every_position_once_by_class(random_tiny):
    """Every eligible position of the document is measured once and lands in its class."""
    model, tok = random_tiny
    docs = [Doc(tok("12+34=46")["input_ids"], answer_start=7)]
    ig = information_gain(model, tok, docs, group_size=2, max_thought_tokens=3)
    assert ig["n_answer"] == 2 and ig["n_other"] == 6
    assert all(v == v for v in (ig["answer"], ig["other"], ig["all"]))  # finite, not NaN


def test_demo_aggregate_reports_median_and_iqr_by_hand():
    from ponder.jobs.demo import _aggregate, _versus

    per_seed = [{"think_accuracy": a, "info_gain_answer": g} for a, g in ((0.4, 0.1), (0.1, -0.2), (0.3, 0.0))]
    out = _aggregate(per_seed, [0, 1, 2])
    assert out["think_accuracy_median"] == 0.3 and out["think_accuracy_iqr"] == pytest.approx(0.35 - 0.2)
    assert out["info_gain_answer_median"] == 0.0 and out["think_accuracy"] == pytest.approx(0.8 / 3)
    assert out["think_accuracy_per_seed"] == [0.4, 0.1, 0.3]
    versus = _versus(out["think_accuracy_per_seed"], 0.155)
    assert (
        versus["win_share"] == pytest.approx(2 / 3) and versus["gain_low"] <= versus["gain_mean"] <= versus["gain_high"]
    )

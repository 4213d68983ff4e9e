"""bench/smollm2_thinking.py's readers: the RLP positions a run trained, and the issue's table (warm row)."""

import pytest

from bench_scripts import load_bench


def test_positions_trained_reads_the_rlp_run_summary(tiny_hf_dir, tmp_path, one_thread):
    from ponder.jobs.rlp import RLPJob, run_rlp

    out = tmp_path / "rlp-s0"
    job = RLPJob(model=str(tiny_hf_dir), task="add2", steps=2, docs_per_step=3, group_size=2, max_thought_tokens=4)
    run_rlp(job.model_copy(update={"out": str(out)}), resume=False, progress=False)
    bench = load_bench("smollm2_thinking")
    assert bench.positions_trained(out / "final") == 2 * 3  # steps x documents x one position each
    assert bench.positions_trained(tmp_path / "unfinished" / "final") is None


def test_table_has_base_and_warm_rows_then_medians():
    bench = load_bench("smollm2_thinking")
    one = {"task": "add2", "heldout_accuracy": 0.25, "heldout_accuracy_no_think": 0.5, "closed_fraction": 0.0}
    one["thought_tokens"] = 32.0
    warm = {**one, "heldout_accuracy": 0.5, "closed_fraction": 0.75, "thought_tokens": 6.0}
    seeds = [{**one, "seed": s, "heldout_accuracy": a, "closed_fraction": 0.5} for s, a in enumerate((0.1, 0.4, 0.3))]
    t = bench.table({"grpo": seeds}, one, warm)
    assert [r["model"] for r in t["rows"]] == ["base", "warm", "grpo"]
    assert t["rows"][1]["closed_fraction"] == 0.75 and t["rows"][1]["positions_trained"] == 0
    assert t["rows"][2]["heldout_accuracy_median"] == 0.3 and t["base_accuracy"] == 0.25
    assert [r["model"] for r in bench.table({}, one)["rows"]] == ["base"]


def test_table_only_reads_the_cells_measured_so_far(tmp_path):
    import json

    corpus, out = tmp_path / "corpus", tmp_path / "out"
    corpus.mkdir()
    (corpus / "heldout.jsonl").write_text("")
    (out / "paper").mkdir(parents=True)
    cell = {"task": "add2", "heldout_accuracy": 0.25, "heldout_accuracy_no_think": 0.5, "closed_fraction": 0.5}
    cell["thought_tokens"] = 8.0
    (out / "cell-base.json").write_text(json.dumps(cell))
    (out / "cell-grpo-s1.json").write_text(json.dumps({**cell, "seed": 1, "heldout_accuracy": 0.5}))
    ig = {"heldout_info_gain": -1.0, "heldout_ntp_loss": 3.0, "share_positive_gain": 0.25, "positions_trained": 8}
    (out / "paper" / "cell-rlp-s0.json").write_text(json.dumps({**cell, **ig, "seed": 0}))
    argv = [
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--seeds",
        "0-2",
        "--table-only",
        "--json",
        str(tmp_path / "t.json"),
    ]
    load_bench("smollm2_thinking").main(argv)
    rows = {r["model"]: r for r in json.loads((tmp_path / "t.json").read_text())["rows"]}
    assert set(rows) == {"base", "grpo", "rlp"}  # ttrl and cpt: nothing measured yet, no row
    assert rows["grpo"]["seeds"] == [1] and rows["rlp"]["heldout_info_gain"] == -1.0
    assert rows["rlp"]["positions_trained"] == 8


def test_table_carries_transfer_accuracy_per_seed():
    bench = load_bench("smollm2_thinking")
    one = {"task": "add1", "heldout_accuracy": 0.25, "heldout_accuracy_no_think": 0.5, "closed_fraction": 1.0}
    one["thought_tokens"] = 4.0
    rg = lambda a, b: {"rg:chain_sum": {"heldout_accuracy": a, "heldout_accuracy_no_think": b}}  # noqa: E731
    seeds = [{**one, "seed": s, "transfer": rg(a, 0.5)} for s, a in enumerate((0.1, 0.2))]
    t = bench.table({"grpo": seeds}, {**one, "transfer": rg(0.0, 0.25)})
    assert t["rows"][0]["transfer"]["rg:chain_sum"]["heldout_accuracy_no_think"] == 0.25
    assert t["rows"][1]["transfer_accuracy_per_seed"] == {"rg:chain_sum": [0.1, 0.2]}
    assert t["rows"][1]["transfer_accuracy_no_think_per_seed"] == {"rg:chain_sum": [0.5, 0.5]}
    assert "transfer_accuracy_per_seed" not in bench.table({"grpo": [{**one, "seed": 0}]}, one)["rows"][1]
    assert "transfer_task_score_per_seed" not in t["rows"][1]  # cells measured without the benchmark's own score
    scored = [{**c, "transfer": {k: {**v, "heldout_accuracy_task_score": 0.3} for k, v in c["transfer"].items()}}
              for c in seeds]  # fmt: skip
    assert bench.table({"grpo": scored}, one)["rows"][1]["transfer_task_score_per_seed"] == {"rg:chain_sum": [0.3, 0.3]}


def test_text_figures_are_added_to_a_cell_measured_without_them(tmp_path, monkeypatch):
    import argparse
    import json

    bench = load_bench("smollm2_thinking")
    (tmp_path / "cell-grpo-s0.json").write_text(
        json.dumps({"cell": "grpo-s0", "heldout_accuracy": 0.5, "eval_wall_s": 7})
    )
    monkeypatch.setattr(bench, "load_model", lambda *a, **k: "model")
    monkeypatch.setattr(bench, "accuracy", lambda *a: pytest.fail("the cell's accuracy is measured again"))
    ig = {"heldout_info_gain": -4.5, "heldout_ntp_loss": 3.5, "per_position_gain": [0.5, -1.0], "closed_fraction": 0.25}
    monkeypatch.setattr(bench.rlp_smollm2, "measure", lambda *a: {**ig, "thought_tokens_mean": 3.0})
    args = argparse.Namespace(transfer="", task="add1")
    cell = bench.measure_cell("grpo-s0", tmp_path / "run", None, args, tmp_path, True, {})
    assert (cell["heldout_accuracy"], cell["heldout_info_gain"], cell["heldout_ntp_loss"]) == (0.5, -4.5, 3.5)
    assert (cell["share_positive_gain"], cell["closed_fraction_text"]) == (0.5, 0.25)
    assert json.loads((tmp_path / "cell-grpo-s0.json").read_text())["heldout_info_gain"] == -4.5  # cached
    assert bench.measure_cell("grpo-s0", tmp_path / "run", None, args, tmp_path, True, {}) == cell  # nothing rerun


def test_a_run_that_trained_nothing_is_measured_as_its_start(tmp_path):
    import argparse
    import json

    bench = load_bench("smollm2_thinking")
    run = tmp_path / "grpo-s1"
    run.mkdir()
    (run / "grpo_summary.json").write_text(json.dumps({"steps": 10, "trained_nothing": True}))
    args = argparse.Namespace(
        start=str(tmp_path / "warm"), task="add1", rl_steps=10, prompts_per_step=4, rl_group=4,
        max_thought_tokens=32, rl_lr=1e-5, rl_args="", answer_rule="last_number",
    )  # fmt: skip
    assert bench.rl_cell("grpo", 1, args, tmp_path) == (tmp_path / "warm", 0.0)  # no ponder run started
    assert not bench.trained_nothing(tmp_path / "absent.json")
    (run / "grpo_summary.json").write_text(json.dumps({"trained_nothing": False}))
    assert not bench.trained_nothing(run / "grpo_summary.json")


def test_rlp_and_cpt_are_launched_alike_data_parallel_with_lora(tmp_path, monkeypatch):
    # The FLOP match compares like with like only if CPT trains what RLP trains (the same adapters) and is
    # launched the same way; --nproc 2 goes through torchrun for both.
    bench = load_bench("rlp_smollm2")
    launched = []
    monkeypatch.setattr(bench, "run_cli", lambda argv, log, nproc=1: launched.append((argv, nproc)) or 1.0)
    args = bench.parse_args(["--corpus", str(tmp_path), "--nproc", "2", "--lora-rank", "16", "--lora-alpha", "32"])
    walls = bench.train(0, args, tmp_path)
    assert [argv[0] for argv, _ in launched] == ["rlp", "cpt"] and {n for _, n in launched} == {2}
    for argv, _ in launched:
        assert argv[argv.index("--lora-rank") + 1] == "16" and argv[argv.index("--lora-alpha") + 1] == "32.0"
    assert set(walls) == {"rlp_wall_s", "cpt_wall_s"}
    full = bench.parse_args(["--corpus", str(tmp_path)])
    launched.clear()
    bench.train(1, full, tmp_path)
    assert all("--lora-rank" not in argv and n == 1 for argv, n in launched)  # the defaults: full model, one process
    launched.clear()
    bench.train(2, args, tmp_path, cpt=False)  # the reward-token variant: RLP alone (the CPT run was launched anyway)
    assert [argv[0] for argv, _ in launched] == ["rlp"]


def test_rl_cells_reward_answers_read_as_the_bench_reads_them(tmp_path, monkeypatch):
    import argparse

    bench = load_bench("smollm2_thinking")
    launched = []
    monkeypatch.setattr(bench.rlp_smollm2, "run_cli", lambda argv, log: launched.append(argv) or 1.0)
    args = argparse.Namespace(
        start=None, task="add1", rl_steps=2, prompts_per_step=4, rl_group=8,
        max_thought_tokens=32, rl_lr=1e-5, rl_args="", answer_rule="last_number",
    )  # fmt: skip
    bench.rl_cell("ttrl", 0, args, tmp_path)
    argv = launched[0]
    assert argv[0] == "ttrl" and argv[argv.index("--answer-rule") + 1] == "last_number"

"""The benches' seed lists and distribution summaries (bench/plan_compare.py), without running a search."""

import subprocess
import sys

import pytest

from bench_scripts import BENCH, load_bench
from ponder.config import parse_choices, parse_seeds
from ponder.errors import ConfigError


def test_seed_ranges_and_lists():
    assert parse_seeds("0-9") == list(range(10))
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("0-2,7") == [0, 1, 2, 7]
    assert parse_seeds(4) == [4] and parse_seeds([0, "3-4"]) == [0, 3, 4]
    for bad in ("", "a", "5-3", "0-x", "1,1", "-1", [], True):
        with pytest.raises(ConfigError, match="^seeds: "):
            parse_seeds(bad)


@pytest.mark.parametrize("script", ["plan_compare", "rewards_compare"])
def test_bench_bad_seeds_exit_2_with_one_line(script):
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{script}.py"), "--seeds", "3-1"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: seeds: range '3-1' runs backwards; write it low-high, e.g. 1-3"]


def test_plan_method_distributions_by_hand():
    bench = load_bench("plan_compare")

    def row(seed, method, calls):
        return {"model": "m", "task": "t", "seed": seed, "repeat": 0, "method": method}, calls

    rows = []
    # seed 0: random is the best baseline (400 calls), mppi 200, hill never; seed 1: random 300, mppi never, hill 600
    for seed, calls in (
        (0, {"random": 400, "mppi": 200, "hill": None}),
        (1, {"random": 300, "mppi": None, "hill": 600}),
    ):
        for method, c in calls.items():
            r, _ = row(seed, method, c)
            rows.append({**r, "calls_to_best_baseline_accuracy": c, "best_baseline": "random"})
    d = bench.method_distributions(rows, budget=1200)
    mppi = d["mppi"]  # calls [200, 1201 (never)] against [400, 300]
    assert mppi["cells"] == 2 and mppi["never"] == 1 and mppi["win_share"] == 0.5
    assert mppi["median"] == pytest.approx((200 + 1201) / 2)
    assert mppi["saving_median"] == pytest.approx(((1 - 200 / 400) + (1 - 1201 / 300)) / 2)
    assert mppi["saving_min"] == pytest.approx(1 - 1201 / 300)
    assert d["random"]["win_share"] == 0.5 and d["random"]["saving_median"] == 0.0  # ties with itself
    assert d["hill"]["win_share"] == 0.0 and d["hill"]["never"] == 1


def test_robustness_report_merges_chunks_and_partial_demo_runs(tmp_path):
    report = load_bench("robustness_report")
    base = {"think_accuracy": 0.155}
    final = {  # ponder demo --json of seeds 0, 1
        "seeds": [0, 1],
        "base": base,
        "rlp": {"per_seed": {"0": {"think_accuracy": 0.4}, "1": {"think_accuracy": 0.3}}},
        "cpt": {"per_seed": {"0": {"think_accuracy": 0.2}, "1": {"think_accuracy": 0.1}}},
    }
    partial = {"seeds": [2], "base": base, "rlp": [{"think_accuracy": 0.1}], "cpt": [{"think_accuracy": 0.2}]}
    _, per_model = report.demo_seeds([final, partial])
    assert per_model["rlp"] == {0: {"think_accuracy": 0.4}, 1: {"think_accuracy": 0.3}, 2: {"think_accuracy": 0.1}}
    rows = {r[1]: r for r in report.demo_rows({"A": [final, partial]})}
    assert rows["RLP vs base"][2:4] == [3, 0.3] and rows["RLP vs base"][5] == pytest.approx(2 / 3)
    assert rows["RLP vs CPT (same seed)"][5] == pytest.approx(2 / 3)  # 0.4 > 0.2, 0.3 > 0.1, 0.1 < 0.2
    (tmp_path / "d.json").write_text(__import__("json").dumps(final))
    assert report.main(["--demo", f"A={tmp_path / 'd.json'}"]) == 0
    with pytest.raises(ConfigError, match="no such file"):
        report.main(["--demo", f"A={tmp_path / 'missing.json'}"])


def test_parse_choices_keeps_known_names_and_names_the_unknown():
    assert parse_choices(" a, ,b", ("a", "b", "c"), "conditions") == ["a", "b"]
    with pytest.raises(ConfigError, match=r"unknown conditions \['x', 'z'\]; choose from a, b"):
        parse_choices("a,z,x", ("a", "b"), "conditions")


def test_robustness_report_per_seed_rows_and_label_correlation():
    report = load_bench("robustness_report")

    def run(reward, seed, acc, label=None):
        r = {"reward": reward, "seed": seed, "think_accuracy": acc, "sampled_accuracy": acc / 2}
        return r if label is None else {**r, "label_accuracy": label, "majority_ratio": 0.5}

    a = {"runs": [run("majority_vote", 1, 0.4, 0.3), run("majority_vote", 0, 0.2, 0.1), run("verifiable", 0, 0.6)]}
    b = {"runs": [run("majority_vote", 0, 0.9, 0.8), run("majority_vote", 1, 0.7, 0.9)]}
    rows = report.rewards_seed_rows({"A": [a]})
    assert [r[1:4] for r in rows] == [["majority_vote", 0, 0.2], ["majority_vote", 1, 0.4], ["verifiable", 0, 0.6]]
    assert rows[2][5:] == ["-", "-"]  # no vote, no label accuracy
    corr = report.label_correlations({"A": [a], "B": [b]})
    assert corr["A"] == pytest.approx(1.0) and corr["B"] == pytest.approx(-1.0)  # two points each: +-1 exactly
    accs, labels = [0.4, 0.2, 0.9, 0.7], [0.3, 0.1, 0.8, 0.9]
    ma, ml = sum(accs) / 4, sum(labels) / 4
    cov = sum((x - ma) * (y - ml) for x, y in zip(accs, labels))
    sa, sl = sum((x - ma) ** 2 for x in accs) ** 0.5, sum((y - ml) ** 2 for y in labels) ** 0.5
    assert corr["pooled"] == pytest.approx(cov / (sa * sl))

    def cell(method, seed, reached, final, calls=1200, model="m"):
        return {
            "model": model,
            "task": "t",
            "seed": seed,
            "method": method,
            "best_baseline": "random",
            "calls_to_best_baseline_accuracy": reached,
            "final_accuracy": final,
            "calls": calls,
        }

    plan = {
        "rows": [
            cell("mppi", 0, None, 0.0),
            cell("random", 0, 600, 0.9),
            cell("mppi", 1, 150, 1.0),
            cell("random", 1, 300, 1.0),
            cell("mppi", 0, 100, 0.5, model="m2"),  # another model, same task and seed: its own cell
            cell("random", 0, 400, 0.5, model="m2"),
        ]
    }
    rows = report.plan_seed_rows({"B": [plan]})
    assert [r[1:4] for r in rows] == [["m", "t", 0], ["m", "t", 1], ["m2", "t", 0]]
    assert rows[0][4:6] == [0, "0.900 (random)"]
    assert rows[0][6] == "mppi never (0.000) / random 600 (0.900)"
    assert rows[0][7] == f"mppi {1 - 1201 / 600:+.2f}" and rows[1][7] == "mppi +0.50" and rows[2][7] == "mppi +0.75"


def _cell(task, seed, method, final, curve):
    """A finished cell as bench/plan_smollm2.py stores it (``curve``: (calls, held-out accuracy) points)."""
    points = [{"calls": c, "heldout_accuracy": h} for c, h in curve]
    run = {"best_heldout_accuracy": final, "calls": curve[-1][0], "evaluations": None, "seconds": 1.0, "curve": points}
    return {"task": task, "method": method, "seed": seed, **run}


SMOL_CELLS = [
    # seed 0: target = hill's 0.5 (reached at 100); mppi reaches it at 40 (saving 0.6); mipro never (0.25)
    _cell("add1", 0, "hill", 0.5, [(8, 0.0), (100, 0.5)]),
    _cell("add1", 0, "mipro", 0.25, [(150, 0.25)]),
    _cell("add1", 0, "mppi", 0.5, [(8, 0.0), (40, 0.5)]),
    # seed 1: target = mipro's 0.5 at its 200 calls; mppi never gets there (241 = budget + 1: saving 1 - 241/200)
    _cell("add1", 1, "hill", 0.25, [(8, 0.25)]),
    _cell("add1", 1, "mipro", 0.5, [(200, 0.5)]),
    _cell("add1", 1, "mppi", 0.25, [(8, 0.0), (240, 0.25)]),
]


def test_smollm2_cells_and_summary_by_hand():
    data = load_bench("plan_smollm2").payload(SMOL_CELLS, budget=240, baselines=("hill", "mipro"))
    reach = {(c["seed"], c["method"]): c["calls_to_target"] for c in data["cells"]}
    assert reach == {
        **{(0, "hill"): 100, (0, "mipro"): None, (0, "mppi"): 40},
        **{(1, "hill"): None, (1, "mipro"): 200, (1, "mppi"): None},
    }
    assert {c["best_baseline"] for c in data["cells"] if c["seed"] == 1} == {"mipro"}
    mppi = next(s for s in data["summary"] if s["method"] == "mppi")
    assert mppi["calls_to_target_median"] == (40 + 241) / 2 and mppi["never"] == 1
    assert mppi["final_heldout_accuracy_median"] == 0.375
    assert mppi["saving_vs_best_baseline_median"] == pytest.approx((0.6 + 1 - 241 / 200) / 2)
    lo, hi = mppi["saving_interval"]
    assert lo == pytest.approx(1 - 241 / 200) and hi == pytest.approx(0.6)  # two seeds: the bootstrap spans both


def test_smollm2_resumes_finished_cells_without_a_model(tmp_path, capsys):
    import json

    path = tmp_path / "plan_smollm2.json"
    path.write_text(json.dumps({"cells": SMOL_CELLS}))
    bench = load_bench("plan_smollm2")
    args = ["--model", "no-such-model", "--tasks", "add1", "--seeds", "0-1", "--methods", "mppi,hill,mipro"]
    assert bench.main([*args, "--json", str(path)]) == 0
    assert len(json.loads(path.read_text())["cells"]) == 6  # nothing ran again, nothing was lost
    assert "| add1 | mppi | 2 |" in capsys.readouterr().out


def test_smollm2_resumes_from_the_file_it_wrote(tmp_path):
    """The stored cells use the issue's names (final_heldout_accuracy, calls_used): a rerun must read them back."""
    bench = load_bench("plan_smollm2")
    path = tmp_path / "plan_smollm2.json"
    first = bench.write(str(path), SMOL_CELLS, 240, ("hill", "mipro"))
    again = bench.payload(bench.load_cells(str(path)), 240, ("hill", "mipro"))
    assert again["summary"] == first["summary"]
    assert [c["calls_to_target"] for c in again["cells"]] == [c["calls_to_target"] for c in first["cells"]]


def test_smollm2_a_rerun_of_one_method_keeps_the_stored_baselines_targets(tmp_path):
    import json

    path = tmp_path / "plan_smollm2.json"
    path.write_text(json.dumps({"cells": [c for c in SMOL_CELLS if c["method"] != "mppi"]}))
    bench = load_bench("plan_smollm2")
    # --methods hill: only already-stored cells, but mipro's stored cell still sets seed 1's target
    assert (
        bench.main(
            ["--model", "no-such-model", "--tasks", "add1", "--seeds", "0-1", "--methods", "hill", "--json", str(path)]
        )
        == 0
    )
    reach = {(c["seed"], c["method"]): c["calls_to_target"] for c in json.loads(path.read_text())["cells"]}
    assert reach == {(0, "hill"): 100, (0, "mipro"): None, (1, "hill"): None, (1, "mipro"): 200}


def test_smollm2_variant_is_a_method_with_its_own_cells(tmp_path):
    """``mppi_ridge`` (MPPI with --value-head ridge) is accepted, stored and summarised beside ``mppi``."""
    import json

    bench = load_bench("plan_smollm2")
    assert bench.VARIANTS["mppi_ridge"] == ("mppi", {"value_head": "ridge"})
    ridge = [{**c, "method": "mppi_ridge"} for c in SMOL_CELLS if c["method"] == "mppi"]
    path = tmp_path / "plan_smollm2.json"
    path.write_text(json.dumps({"cells": SMOL_CELLS + ridge}))
    args = ["--model", "no-such-model", "--tasks", "add1", "--seeds", "0-1", "--methods", "mppi,mppi_ridge"]
    assert bench.main([*args, "--json", str(path)]) == 0  # all stored: nothing runs
    summary = {s["method"]: s for s in json.loads(path.read_text())["summary"]}
    assert summary["mppi_ridge"]["calls_to_target_median"] == summary["mppi"]["calls_to_target_median"]
    assert bench.main(["--no-run", "--seeds", "0-9", "--json", str(path)]) == 0  # missing cells, none run
    assert len(json.loads(path.read_text())["cells"]) == 8
    from ponder.errors import ConfigError

    with pytest.raises(ConfigError, match="known: .*mppi_ridge"):
        bench.main(["--methods", "mppi_lasso", "--json", str(path)])


def test_plan_merge_runs_puts_relabelled_runs_beside_the_baselines(tmp_path):
    """Two MPPI files under different labels, baselines from a third file: per seed the target is the best
    baseline's accuracy, and each label's calls to it are read from its own curve."""
    import json

    def result(seed, runs):
        return {
            "task": "add5",
            "seed": seed,
            "runs": {m: {k: v for k, v in c.items() if k not in ("task", "method", "seed")} for m, c in runs.items()},
        }

    base = [result(0, {"hill": _cell("add5", 0, "hill", 0.5, [(8, 0.0), (100, 0.5)])})]
    new = [result(0, {"mppi": _cell("add5", 0, "mppi", 0.5, [(8, 0.0), (40, 0.5)])})]
    old = [result(0, {"mppi": _cell("add5", 0, "mppi", 0.5, [(8, 0.0), (80, 0.5)])})]
    files = []
    for name, results in (("base", base), ("new", new), ("old", old)):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps({"results": results}))
    out = tmp_path / "merged.json"
    args = [f"={files[0]}", f"mppi={files[1]}", f"mppi_world_model={files[2]}", "--budget", "240", "--json", str(out)]
    assert load_bench("plan_merge_runs").main(args) == 0
    summary = {s["method"]: s for s in json.loads(out.read_text())["summary"]}
    assert summary["mppi"]["calls_to_target_median"] == 40
    assert summary["mppi"]["saving_vs_best_baseline_median"] == pytest.approx(0.6)
    assert summary["mppi_world_model"]["saving_vs_best_baseline_median"] == pytest.approx(0.2)


def test_diagnosis_rank_correlation_and_noise_by_hand():
    import numpy as np

    diag = load_bench("plan_diagnose_smol")
    assert diag.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert diag.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert diag.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / 3**0.5)  # ranks (0.5, 0.5, 2) vs (0, 1, 2)
    assert diag.spearman([1, 1, 1], [1, 2, 3]) == 0.0
    # Three chains whose every training input agrees with their held-out accuracy: no noise at any size.
    correct = np.array([[0.0] * 8, [0.0, 1.0] * 4, [1.0] * 8])
    loglik = np.full((3, 8), -20.0)  # the log-likelihood term clipped to 0: the value is accuracy / 2
    rows = diag.noise_table(correct, loglik, np.array([0.0, 0.5, 1.0]), sizes=(8,), draws=5)
    assert rows[0]["spearman_accuracy"] == pytest.approx(1.0) and rows[0]["heldout_of_pick_value"] == 1.0
    assert rows[0]["spearman_loglik"] == 0.0  # a constant term ranks nothing


def test_smollm2_diagnostics_say_whether_the_training_value_predicts_held_out_accuracy():
    bench = load_bench("plan_smollm2")
    cells = [{**_cell("t", s, "hill", h, [(8, h)]), "n_heldout": 32} for s, h in enumerate([0.0625, 0.125, 0.25])]
    for c, train in zip(cells, [0.5, 0.25, 0.125]):  # the best training value, the worst held out
        c["curve"][-1]["best_train_accuracy"] = train
    (diag,) = bench.payload(cells, 240, ("hill",))["diagnostics"]
    assert diag["train_heldout_rank_correlation"] == pytest.approx(-1.0)
    assert diag["heldout_accuracy_median"] == 0.125
    assert diag["heldout_binomial_se"] == pytest.approx((0.125 * 0.875 / 32) ** 0.5)
    (diag,) = bench.payload(SMOL_CELLS, 240, ("hill", "mipro"))["diagnostics"]  # no training figures stored
    assert diag["train_heldout_rank_correlation"] is None and diag["heldout_binomial_se"] is None

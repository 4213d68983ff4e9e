"""The benches' seed lists and distribution summaries (bench/plan_compare.py), without running a search."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from ponder.config import parse_choices, parse_seeds
from ponder.errors import ConfigError

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    bench = _bench("plan_compare")

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
    report = _bench("robustness_report")
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

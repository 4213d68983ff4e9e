"""Distributions over seeds (and bases) of the headline comparisons, from the benches' JSON files.

Reads what ``ponder demo --json``, ``bench/rewards_compare.py --json`` and ``bench/plan_compare.py
--json`` wrote (several files per base are merged: seeds run in chunks, or a demo's
``demo_partial.json`` of a run stopped early) and prints Markdown tables: per base and method, the
seeds, median, IQR, the share of seeds where the method beats its comparison (ties half) and a
bootstrap interval of the mean paired gain (``ponder.report.stats``, fixed generator). A claim
holds where that interval excludes 0.

    python bench/robustness_report.py --demo A=runs/demoA.json,runs/demoA2.json --demo B=runs/demoB.json \\
        --rewards A=rc_A.json --plan A=plan_s0.json,plan_s1.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ponder.errors import ConfigError, exit_code
from ponder.report.stats import compare
from ponder.report.tables import markdown_table

sys.path.insert(0, str(Path(__file__).parent))
from plan_compare import cells_of, censored_calls, method_distributions  # noqa: E402  (a sibling script, not a package)


def _sources(specs: list[str]) -> dict[str, list[dict]]:
    """``BASE=file,file`` -> {BASE: [parsed JSON, ...]} in the order given."""
    out: dict[str, list[dict]] = {}
    for spec in specs:
        base, eq, files = spec.partition("=")
        if not eq or not files:
            raise ConfigError(f"expected BASE=FILE[,FILE...], got {spec!r}")
        for f in files.split(","):
            if not Path(f).is_file():
                raise ConfigError(f"{f}: no such file")
            out.setdefault(base, []).append(json.loads(Path(f).read_text()))
    return out


def demo_seeds(payloads: list[dict]) -> tuple[float, dict[str, dict[int, dict]]]:
    """The base's measurement and, per model (rlp, cpt), each seed's measurement, merged over files."""
    per_model: dict[str, dict[int, dict]] = {"rlp": {}, "cpt": {}}
    base = None
    for p in payloads:
        base = base if base is not None else p["base"]
        for model in per_model:
            entry = p[model]
            if isinstance(entry, list):  # demo_partial.json: one measurement per finished seed
                per_model[model].update(zip(p["seeds"], entry))
            else:
                per_model[model].update({int(s): r for s, r in entry["per_seed"].items()})
    return base, per_model


def _gain_cells(c: dict) -> list:
    return [c["win_share"], c["diff"], f"[{c['diff_low']:+.3f}, {c['diff_high']:+.3f}]", "yes" if c["shown"] else "no"]


def demo_rows(sources: dict[str, list[dict]], key: str = "think_accuracy") -> list[list]:
    rows = []
    for name, payloads in sources.items():
        base, per_model = demo_seeds(payloads)
        seeds = sorted(set(per_model["rlp"]) & set(per_model["cpt"]))
        rlp = [per_model["rlp"][s][key] for s in seeds]
        cpt = [per_model["cpt"][s][key] for s in seeds]
        rows.append([name, "base", 1, base[key], 0.0, "-", "-", "-", "-"])
        for label, values, against, what in (
            ("CPT", cpt, base[key], "base"),
            ("RLP", rlp, base[key], "base"),
            ("RLP", rlp, cpt, "CPT (same seed)"),
        ):
            c = compare(values, against)
            rows.append([name, f"{label} vs {what}", len(values), c["median"], c["iqr"], *_gain_cells(c)])
    return rows


def rewards_rows(sources: dict[str, list[dict]]) -> list[list]:
    rows = []
    for name, payloads in sources.items():
        base = payloads[0]["base_think_accuracy"]
        rows.append([name, "(base)", 1, base, 0.0, "-", "-", "-", "-", "-"])
        accs: dict[str, dict[int, float]] = {}
        labels: dict[str, list[float]] = {}
        for p in payloads:
            for run in p["runs"]:
                accs.setdefault(run["reward"], {})[run["seed"]] = run["think_accuracy"]
                if "label_accuracy" in run:
                    labels.setdefault(run["reward"], []).append(run["label_accuracy"])
        for reward, by_seed in accs.items():
            c = compare([by_seed[s] for s in sorted(by_seed)], base)
            label = labels.get(reward)
            label_cell = f"{compare(label, 0.0)['median']:.3f}" if label else "-"
            rows.append([name, reward, len(by_seed), c["median"], c["iqr"], *_gain_cells(c), label_cell])
    return rows


def plan_rows(sources: dict[str, list[dict]]) -> list[list]:
    rows = []
    for name, payloads in sources.items():
        cells = [row for p in payloads for row in p["rows"]]
        budget = max(r["calls"] for r in cells)
        for method, d in method_distributions(cells, budget).items():
            rows.append(
                [name, method, d["cells"], d["never"], d["median"], d["iqr"], d["win_share"], d["saving_median"]]
                + [d["saving_iqr"], d["saving_min"], f"[{d['saving_median_low']:+.3f}, {d['saving_median_high']:+.3f}]"]
            )
    return rows


def rewards_seed_rows(sources: dict[str, list[dict]]) -> list[list]:
    """One row per base, reward and seed: greedy and sampled accuracy, TTRL's label accuracy and majority ratio."""
    rows = []
    for name, payloads in sources.items():
        runs = sorted((r for p in payloads for r in p["runs"]), key=lambda r: (r["reward"], r["seed"]))
        for r in runs:
            extra = [r.get("label_accuracy", "-"), r.get("majority_ratio", "-")]
            rows.append([name, r["reward"], r["seed"], r["think_accuracy"], r["sampled_accuracy"], *extra])
    return rows


def label_correlations(sources: dict[str, list[dict]]) -> dict[str, float]:
    """Pearson correlation, over TTRL runs, of the final think accuracy with the majority's label accuracy:
    per base and, under ``"pooled"``, over all bases' runs together (a base with one run has none)."""
    pairs: dict[str, list[tuple[float, float]]] = {}
    for name, payloads in sources.items():
        for p in payloads:
            for r in p["runs"]:
                if "label_accuracy" in r:
                    pairs.setdefault(name, []).append((r["think_accuracy"], r["label_accuracy"]))
    pairs["pooled"] = [pair for v in pairs.values() for pair in v]
    return {k: float(np.corrcoef(np.array(v).T)[0, 1]) for k, v in pairs.items() if len(v) > 1}


def plan_seed_rows(sources: dict[str, list[dict]]) -> list[list]:
    """One row per base and cell (model, task, seed, repeat): the target (best baseline's final held-out accuracy),
    that baseline, each method's calls to it ("never (final accuracy)" when it never got there) and each
    method's saving against the baseline (censored at budget + 1, as in ``method_distributions``)."""
    rows = []
    for name, payloads in sources.items():
        cells = cells_of([r for p in payloads for r in p["rows"]])
        budget = max(r["calls"] for c in cells.values() for r in c.values())
        for (model, task, seed, repeat), cell in sorted(cells.items()):
            best = next(iter(cell.values()))["best_baseline"]
            if best not in cell:
                continue
            calls = {m: censored_calls(row, budget) for m, row in cell.items()}
            shown = [f"{m} {c if c <= budget else 'never'} ({cell[m]['final_accuracy']:.3f})" for m, c in calls.items()]
            savings = [f"{m} {1 - c / calls[best]:+.2f}" for m, c in calls.items() if m != best]
            target = cell[best]["final_accuracy"]
            rows.append(
                [name, model, task, seed, repeat, f"{target:.3f} ({best})", " / ".join(shown), ", ".join(savings)]
            )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", action="append", default=[], metavar="BASE=FILE[,FILE]")
    p.add_argument("--rewards", action="append", default=[], metavar="BASE=FILE[,FILE]")
    p.add_argument("--plan", action="append", default=[], metavar="BASE=FILE[,FILE]")
    p.add_argument("--per-seed", action="store_true", help="also print every seed's figures (rewards, planning)")
    a = p.parse_args(argv)
    demo, rewards, plan = _sources(a.demo), _sources(a.rewards), _sources(a.plan)
    gain = ["win share", "mean gain", "95% bootstrap interval", "shown"]
    if a.demo:
        print("demo: greedy think accuracy over seeds\n")
        print(markdown_table(["base", "model vs", "seeds", "median", "IQR", *gain], demo_rows(demo)))
    if a.rewards:
        print("\nrewards: greedy think accuracy over seeds, against the base\n")
        header = ["base", "reward", "seeds", "median", "IQR", *gain, "TTRL label accuracy (median)"]
        print(markdown_table(header, rewards_rows(rewards)))
        if a.per_seed:
            header = ["base", "reward", "seed", "think acc", "sampled acc", "label accuracy", "majority ratio"]
            print("\n" + markdown_table(header, rewards_seed_rows(rewards)))
            corr = label_correlations(rewards)
            if corr:
                cells = ", ".join(f"{k} {v:.2f}" for k, v in corr.items())
                print(f"\nTTRL: correlation of final think accuracy with the majority's label accuracy: {cells}")
    if a.plan:
        print("\nplanning: calls to the best baseline's final held-out accuracy (never = budget + 1)\n")
        header = ["base", "method", "cells", "never", "calls median", "IQR", "win share vs best baseline"]
        header += ["saving median", "saving IQR", "saving min", "95% interval of the median saving"]
        print(markdown_table(header, plan_rows(plan)))
        if a.per_seed:
            header = [
                "base",
                "model",
                "task",
                "seed",
                "repeat",
                "target (best baseline)",
                "calls per method (final accuracy)",
                "saving vs it",
            ]
            print("\n" + markdown_table(header, plan_seed_rows(plan)))
    return 0


if __name__ == "__main__":
    raise SystemExit(exit_code(main))

"""Print the headline figures of ``ponder audit --json`` files as markdown tables.

python bench/audit_table.py runs/audit-tiny.json runs/audit-smollm2.json
"""

from __future__ import annotations

import json
import sys


def fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main(paths: list[str]) -> None:
    runs = [json.load(open(p)) for p in paths]
    print(
        "| model | task | problems | n | Think@n acc | Think@n tokens | SC acc | SC tokens | token ratio | random-half vote acc | mean DTR |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        t, d = r["think_at_n"], r["dtr"]
        if "skipped" in t:
            print(f"| {r['model']} | {r['task']} | skipped: {t['skipped']} |")
            continue
        print(
            f"| {r['model']} | {r['task']} | {t['problems']} | {t['n']} | {fmt(t['think_at_n_accuracy'])} | "
            f"{t['think_at_n_tokens']} | {fmt(t['self_consistency_accuracy'])} | {t['self_consistency_tokens']} | "
            f"{fmt(t['token_ratio'])} | {fmt(t.get('half_vote_accuracy'))} | {fmt(d.get('mean_dtr'))} |"
        )
    print()
    print("| model | diagnostic | figure | value |")
    print("| --- | --- | --- | --- |")
    for r in runs:
        rows = []
        if "skipped" not in r["step_information_gain"]:
            for m, v in r["step_information_gain"]["models"].items():
                rows.append(("step information gain", f"total gain (nats), {m}", v["mean_total_gain"]))
        pe = r["policy_entropy"]
        if "skipped" not in pe:
            rows.append(("policy entropy", "on-policy (nats)", pe["on_policy_entropy"]))
            rows += [("policy entropy", f"ratio, {k}", v) for k, v in pe["ratio_off_over_on"].items()]
        rf = r["reflection"]
        if "skipped" not in rf:
            rows += [
                ("reflection", "no-answer traces", rf["no_answer_traces"]),
                ("reflection", "token share after first answer", rf["token_share_after_first_answer"]),
                ("reflection", "accuracy stopped at first answer", rf["accuracy_if_stopped_at_first_answer"]),
            ]
        bc = r["budget_curve"]
        if "skipped" not in bc:
            for name in ("truncation", "forcing"):
                pk = bc.get(f"peak_{name}")
                if pk:
                    rows.append(
                        ("budget curve", f"peak ({name}): budget / accuracy", f"{pk['budget']} / {pk['accuracy']:.3f}")
                    )
        va = r["validity"]
        if "skipped" not in va:
            rows += [("validity", f"accuracy, {k} exemplars", v) for k, v in va["accuracy"].items()]
        sp = r["sparsity"]
        if "skipped" not in sp:
            rows += [
                (
                    "sparsity",
                    "bf16 / fp32 / unchanged at all",
                    f"{sp['sparsity_bf16']:.4f} / {sp['sparsity_fp32']:.4f} / {sp['sparsity_fp32_exact']:.4f}",
                ),
                ("sparsity", "mean update rank / min(shape)", sp["mean_rank_ratio"]),
            ]
        pt = r["planning_tokens"]
        if "skipped" not in pt:
            for c in pt["checkpoints"]:
                rows.append(
                    (
                        "planning",
                        f"planning SE bits / exec. entropy nats / format bits, {c['name']}",
                        f"{fmt(c['planning_semantic_entropy_bits'])} / {fmt(c['execution_entropy_nats'])} / "
                        f"{fmt(c['format_diversity_bits'])}",
                    )
                )
        for diag, name, value in rows:
            print(f"| {r['model']} | {diag} | {name} | {fmt(value)} |")


if __name__ == "__main__":
    main(sys.argv[1:])

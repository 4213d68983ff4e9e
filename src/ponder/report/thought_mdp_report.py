"""The thought-MDP report: the summary table and one figure of four panels (thinking, return,
richness sweep, thinking length vs return)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ponder.report.html import Report

_COLOURS = {"rich": "tab:green", "single": "tab:orange", "poor": "tab:blue"}


def condition_label(init: str, thinking: bool, gradient: str) -> str:
    return f"{init}{'' if thinking else ', no thought actions'} ({gradient})"


def summary_table(payload: dict) -> tuple[list[str], list[list]]:
    """Header and rows of the main table: one row per condition, means over seeds."""
    header = [
        "initial policy",
        "return start",
        "return end",
        "optimum",
        "P(think first) start",
        "peak",
        "end",
        "thoughts / episode end",
        "iterations to 90% of optimum (per seed)",
    ]
    rows = []
    for s in payload["summary"]:
        reach = " ".join("never" if v is None else str(v) for v in s["iterations_to_90pct"])
        rows.append(
            [
                condition_label(s["init"], s["thinking"], s["gradient"]),
                s["value_start_mean"],
                s["value_end_mean"],
                s["optimal_value_mean"],
                s["first_thought_start_mean"],
                s["first_thought_peak_mean"],
                s["first_thought_end_mean"],
                s["thoughts_end_mean"],
                reach,
            ]
        )
    return header, rows


def _mean_curve(curves: list[dict], key: str, optima: dict | None = None) -> tuple[list, np.ndarray]:
    ys = []
    for c in curves:
        y = np.array(c[key], dtype=float)
        ys.append(y / optima[c["seed"]] if optima else y)
    return curves[0]["iteration"], np.mean(ys, 0)


def figure(payload: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    optima = {}
    for r in payload["runs"]:
        optima[(r["seed"], r["thinking"])] = r["optimal_value"]
    groups: dict[tuple, list[dict]] = {}
    for c in payload["curves"]:
        groups.setdefault((c["init"], c["thinking"], c["gradient"]), []).append(c)
    for (init, thinking, gradient), curves in groups.items():
        style = dict(
            color=_COLOURS[init] if thinking else "black",
            linestyle="-" if gradient == "exact" else "--",
            label=condition_label(init, thinking, gradient),
            linewidth=1.4,
        )
        if thinking:
            axes[0, 0].plot(*_mean_curve(curves, "first_thought"), **style)
        opt = {c["seed"]: optima[(c["seed"], thinking)] for c in curves}
        axes[0, 1].plot(*_mean_curve(curves, "value", opt), **style)
    axes[0, 0].set(title="thinking emerges only from the rich policy", xlabel="policy-gradient step")
    axes[0, 0].set_ylabel("P(first action is a thought)")
    axes[0, 1].set(title="return", xlabel="policy-gradient step", ylabel="return / optimum")
    axes[0, 1].legend(fontsize=7)

    sweep = payload["skill_sweep"]
    skills = sorted({r["skill"] for r in sweep})
    ax = axes[1, 0]
    ft = [np.mean([r["first_thought_end"] for r in sweep if r["skill"] == k]) for k in skills]
    ret = [np.mean([r["value_end"] / r["optimal_value"] for r in sweep if r["skill"] == k]) for k in skills]
    ax.plot(skills, ft, "o-", color="tab:green", label="P(think first) after training")
    ax.plot(skills, ret, "s--", color="tab:gray", label="return / optimum after training")
    ax.set(title="richness of the initial policy", xlabel="sub-policy strength (0 = uniform)", ylim=(0, 1.05))
    ax.legend(fontsize=7)

    ax = axes[1, 1]
    width = 0.38
    for offset, key, colour in ((-width / 2, "initial", "tab:gray"), (width / 2, "trained", "tab:green")):
        rows = payload["thinking_vs_return"][key]
        xs = np.array([r["thoughts"] for r in rows], dtype=float)
        ax.bar(xs + offset, [r["share"] for r in rows], width, color=colour, alpha=0.35, label=f"{key}: share")
        ax.plot(xs + offset, [r["mean_return"] for r in rows], "o-", color=colour, label=f"{key}: mean return")
    ax.set(title="rich policy: thoughts per episode vs return", xlabel="thought actions in the episode")
    ax.set_xlim(-0.6, 6.6)
    ax.legend(fontsize=7)
    for a in axes.flat:
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def write_thought_mdp_report(payload: dict, path: str | Path) -> Path:
    """Write the HTML report to ``path`` and its figure beside it (same name, ``.png``)."""
    s = payload["settings"]
    report = Report("ponder thought-mdp: thinking as selecting among sub-policies")
    sec = report.section("Setting")
    sec.text(
        f"{s['size']}x{s['size']} grid, {s['tasks']} tasks (goal cells), horizon {s['horizon']}, gamma {s['gamma']}, "
        f"thought cost {s['think_cost']}; the policy is a tabular softmax over (task, cell, thought state) with four "
        f"moves and two thought actions (thought state +1 / -1). Sub-policy strength {s['skill']}, initial thought "
        f"probability {s['think_prob']} in every state; {s['iterations']} policy-gradient steps of size {s['lr']} "
        f"(sampled: {s['episodes']} episodes per step); seeds {s['seeds']} (goal layouts)."
    )
    header, rows = summary_table(payload)
    report.section("Summary (means over seeds)").table(header, rows)
    fig = figure(payload)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(path).with_suffix(".png"), dpi=110, bbox_inches="tight")  # the plot on its own, too
    report.section("Curves").figure(fig, alt="thinking rate, return, richness sweep, thinking vs return")
    report.section("What the trained rich policy does per task (sampled episodes)").table(
        ["seed", "task", "thoughts needed", "goal distance", "thoughts taken", "mean return"],
        [
            [r["seed"], r["task"], r["thoughts_needed"], r["distance"], r["thoughts_taken"], r["mean_return"]]
            for r in payload["per_task"]
        ],
    )
    tvr = report.section("Thinking length vs return (rich policy, episodes pooled over seeds)")
    for key in ("initial", "trained"):
        tvr.text(key)
        tvr.table(
            ["thoughts", "episodes", "share", "mean return"],
            [[r["thoughts"], r["episodes"], r["share"], r["mean_return"]] for r in payload["thinking_vs_return"][key]],
        )
    return report.write(path)

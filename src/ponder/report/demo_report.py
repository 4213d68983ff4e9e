"""The demo's HTML report: the results table and RLP's reward and information-gain curves."""

from __future__ import annotations

from pathlib import Path

from ponder.report.html import Report, line_plot
from ponder.train.metrics import read_metrics

ROWS = (("base", "base"), ("cpt", "CPT (FLOP-matched)"), ("rlp", "RLP"))
COLUMNS = ("think_accuracy", "no_think_accuracy", "info_gain_answer", "info_gain_other")


def demo_table(payload: dict) -> tuple[list[str], list[list]]:
    header = ["model", "think acc", "± std (seeds)", "median", "IQR", "win share vs base"]
    header += ["no-think acc", "IG answer (nats)", "IG other (nats)"]
    rows = []
    for key, label in ROWS:
        r = payload[key]
        rows.append(
            [
                label,
                r["think_accuracy"],
                r.get("think_accuracy_std", 0.0),
                r.get("think_accuracy_median", r["think_accuracy"]),
                r.get("think_accuracy_iqr", 0.0),
                r.get("think_accuracy_vs_base", {}).get("win_share", "-"),
                r["no_think_accuracy"],
                r["info_gain_answer"],
                r["info_gain_other"],
            ]
        )
    return header, rows


def _smooth(ys: list[float], k: int = 5) -> list[float]:
    out = []
    for i in range(len(ys)):
        window = [y for y in ys[max(0, i - k + 1) : i + 1] if y == y]
        out.append(sum(window) / len(window) if window else float("nan"))
    return out


def write_demo_report(payload: dict, out: Path, job) -> Path:
    report = Report("ponder demo: RLP on the built-in tiny model")
    s = report.section("Results")
    s.text(
        f"Task {payload['task']}: {payload['eval_n']} held-out problems, greedy decoding; seeds {payload['seeds']}. "
        "Information gain (IG) = mean over held-out positions of log p(x_t | x_<t, own thought) - log p(x_t | x_<t)."
    )
    s.table(*demo_table(payload))
    curves = {}
    for key in (
        "reward_mean",
        "info_gain_answer",
        "info_gain_other",
        "thought_tokens_mean",
        "policy_entropy",
        "clip_fraction",
    ):
        series = {}
        for seed in payload["seeds"]:
            rows = read_metrics(Path(out) / f"rlp-s{seed}")
            kept = [r for r in rows if r.get(key) is not None]
            series[f"seed {seed}"] = ([r["step"] for r in kept], _smooth([float(r[key]) for r in kept]))
        curves[key] = series
    c = report.section("RLP training curves")
    c.text(
        "Per-step means over the step's positions, smoothed over 5 steps. Information gain at answer positions "
        "should rise while it stays near zero elsewhere."
    )
    for key, series in curves.items():
        c.figure(line_plot(series, key.replace("_", " "), "step", key.replace("_", " ")), alt=key)
    cfg = report.section("Settings")
    cfg.code(job.model_dump_json(indent=2))
    return report.write(Path(out) / "report.html")

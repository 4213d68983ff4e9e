"""HTML report of ``ponder audit``: one section per diagnostic, headings in :data:`HEADINGS`."""

from __future__ import annotations

from pathlib import Path

from ponder.audit.evidence import MIN_TRACES_FOR_INTERPRETATION
from ponder.audit.sparsity import layer_sort_key
from ponder.report.html import Report, Section, line_plot

#: Section heading of each diagnostic, in report order (the end-to-end test looks for these).
HEADINGS = {
    "dtr": "1. Deep-thinking ratio",
    "think_at_n": "1b. Think@n vs self-consistency",
    "step_information_gain": "2. Information gain per reasoning step",
    "policy_entropy": "3. On-policy vs off-policy entropy",
    "reflection": "4. Reflection after the first answer",
    "budget_curve": "5. Thinking-budget curve",
    "validity": "6. Validity ablation",
    "sparsity": "7. Update sparsity and rank",
    "planning_tokens": "8. Planning vs execution tokens",
}


def _bar(labels, values, title, ylabel):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.bar([str(x) for x in labels], values, color="#4a7ab5")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right", fontsize=8)
    return fig


def _or(value, missing: str):
    """``value``, or the reason it is missing (the JSON's None: a mean over nothing) as the report's words."""
    return f"n/a ({missing})" if value is None else value


def dtr_scope(d: dict) -> str:
    """The tokens the DTR figures were measured over, from what was measured (not the settings asked for)."""
    where = f"the first {d['max_tokens']} thought tokens of each response" if d.get("max_tokens") else "whole thoughts"
    if "tokens_measured" not in d:  # an audit.json written before the counts were recorded
        return f"Measured over {where}."
    return (
        f"Measured over {where}: {d['tokens_measured']} tokens in {len(d['per_response'])} responses, "
        f"at most {d['longest_measured']} in one."
    )


def _dtr(s: Section, d: dict) -> None:
    s.text(
        f"Logit lens with the final norm; JSD against the final layer in log base {d['log_base']:g} "
        f"(values in [0, 1]); settling depth c_t = min{{l : min_(j<=l) JSD_j <= g}}, g = {d['g']}; a token is deep "
        f"when c_t >= {d['deep_from_layer']} of L = {d['num_layers']} layers (rho = {d['rho']}, rule '{d['depth_rule']}'). "
        + dtr_scope(d)
    )
    s.table(
        ["measure", "value"],
        [
            ["mean DTR per response", _or(d["mean_dtr"], "no thought tokens")],
            ["deep share of all tokens", _or(d["per_token_deep_fraction"], "no thought tokens")],
            ["mean DTR, correct responses", _or(d["mean_dtr_correct"], "no correct responses")],
            ["mean DTR, wrong responses", _or(d["mean_dtr_incorrect"], "no wrong responses")],
            ["responses", len(d["per_response"])],
        ],
    )
    hist = d["settling_depth_histogram"]
    s.figure(
        _bar(list(range(1, len(hist) + 1)), hist, "settling depth of the thought tokens", "tokens"),
        "settling depth histogram",
    )
    if d["example_settling_depths"]:
        ys = d["example_settling_depths"]
        s.figure(
            line_plot(
                {"settling depth": (list(range(len(ys))), ys)},
                "settling depth per token (first response)",
                "thought token",
                "layer",
            ),
            "settling depth per token",
        )


def _think(s: Section, d: dict) -> None:
    s.text(
        f"n = {d['n']} samples per problem on {d['problems']} problems. Think@n keeps the half with the highest DTR "
        f"over the first {d['prefix_tokens']} thought tokens and votes among them; the other half is stopped after "
        "the prefix (its tokens are counted up to there). Self-consistency votes over all n."
    )
    s.table(
        ["method", "accuracy", "tokens"],
        [
            ["Think@n", d["think_at_n_accuracy"], d["think_at_n_tokens"]],
            ["self-consistency", d["self_consistency_accuracy"], d["self_consistency_tokens"]],
            ["vote over a random half (control)", d["half_vote_accuracy"], ""],
            ["single sample (mean)", d["mean_sample_accuracy"], ""],
        ],
    )
    s.text(
        f"Token ratio Think@n / self-consistency: {d['token_ratio']:.3f}; samples without an answer: {d['no_answer_samples']}."
    )
    for warning in d.get("warnings", []):
        s.text(f"Warning: {warning}.", css="skipped")


def _gain(s: Section, d: dict) -> None:
    s.text(
        "Change in the log-likelihood (nats) of the reference answer as each step of the model's own thought is "
        "added (a step is a line, or a space-separated chunk of a one-line scratchpad)."
    )
    s.table(
        ["model", "traces", "accuracy", "mean total gain", "mean gain per step", "mean steps"],
        [
            [m, v["traces"], v["accuracy"], v["mean_total_gain"], v["mean_gain_per_step"], v["mean_steps"]]
            for m, v in d["models"].items()
        ],
    )
    if "total_gain_change" in d:
        change = d["total_gain_change"]
        figure = "n/a (the first checkpoint's total gain is 0)" if change is None else f"{change:+.1%}"
        withheld = d.get("interpretation_withheld")
        s.text(
            f"Total gain, second vs first checkpoint: {figure}. "
            + (
                f"No interpretation: {withheld} (an interpretation needs at least {MIN_TRACES_FOR_INTERPRETATION} "
                "traces per checkpoint and a nonzero accuracy)."
                if withheld
                else "A fall while accuracy holds points to post-hoc rationalization."
            )
        )
    series = {
        m: ([int(k) for k in v["gain_by_step"]], list(v["gain_by_step"].values())) for m, v in d["models"].items()
    }
    s.figure(line_plot(series, "mean information gain by step", "step", "gain (nats)"), "gain by step")


def _entropy(s: Section, d: dict) -> None:
    s.text(
        "Mean next-token entropy (nats) while the model reads trajectories, teacher-forced; the ratio is "
        "off-policy / on-policy."
    )
    rows = [["own trajectories (on-policy)", d["on_policy_entropy"], 1.0]]
    rows += [[k, v, d["ratio_off_over_on"][k]] for k, v in d["off_policy_entropy"].items()]
    s.table(["trajectories", "entropy", "ratio"], rows)
    s.figure(_bar([r[0] for r in rows], [r[1] for r in rows], "next-token entropy", "nats"), "entropy by source")


def _reflection(s: Section, d: dict) -> None:
    s.text(
        "The first line that states a candidate answer (the answer line when the thought states none) ends the "
        "pre-answer part; what follows is classified."
    )
    s.table(
        ["measure", "value"],
        [
            ["traces", d["traces"]],
            ["traces with no detectable answer", d["no_answer_traces"]],
            *[[f"reflection: {k}", v] for k, v in d["kinds"].items()],
            ["token share after the first answer", d["token_share_after_first_answer"]],
            ["accuracy (final answer)", d["accuracy_final"]],
            ["accuracy if stopped at the first answer", d["accuracy_if_stopped_at_first_answer"]],
        ],
    )


def _budget(s: Section, d: dict) -> None:
    s.text(
        "Greedy accuracy against the thought budget. Truncation cuts the thought at the budget; forcing replaces an "
        "early end-of-thought with the force text and keeps thinking up to the budget."
    )
    series = {"truncation": (d["budgets"], d["accuracy_truncation"]), "forcing": (d["budgets"], d["accuracy_forcing"])}
    fig = line_plot(series, "accuracy vs thought budget", "thought budget (tokens)", "accuracy")
    ax = fig.axes[0]
    for name in ("truncation", "forcing"):
        pk = d.get(f"peak_{name}")
        if pk:
            ax.axvline(pk["budget"], linestyle=":", color="gray")
            ax.annotate(f"peak ({name})", (pk["budget"], pk["accuracy"]), fontsize=8)
    s.figure(fig, "budget curve")
    s.table(
        ["budget", "accuracy (truncation)", "accuracy (forcing)", "thought tokens (trunc.)", "thought tokens (forced)"],
        [
            [b, t, f, mt, mf]
            for b, t, f, mt, mf in zip(
                d["budgets"],
                d["accuracy_truncation"],
                d["accuracy_forcing"],
                d["mean_thought_tokens"]["truncation"],
                d["mean_thought_tokens"]["forcing"],
            )
        ],
    )
    for name in ("truncation", "forcing"):
        if d.get(f"peak_{name}"):
            s.text(
                f"Peak ({name}, overthinking threshold): budget {d[f'peak_{name}']['budget']}, accuracy {d[f'peak_{name}']['accuracy']:.3f}."
            )
    if d.get("peak_withheld"):
        s.text(
            f"No peak is named: {d['peak_withheld']} (a peak needs at least {MIN_TRACES_FOR_INTERPRETATION} "
            "problems and a nonzero accuracy)."
        )


def _validity(s: Section, d: dict) -> None:
    s.text(
        f"{d['exemplars']} few-shot exemplars before each of {d['problems']} held-out problems: valid worked "
        "thoughts, thoughts whose every step states a wrong result (answer kept), or answers only."
    )
    s.table(["exemplars", "accuracy"], [[k, v] for k, v in d["accuracy"].items()])


def _sparsity(s: Section, d: dict) -> None:
    s.text(
        f"An entry is updated when |delta| > {d['tol']:g}; bf16 rounds both checkpoints to bfloat16 first. "
        f"Rank: {d['rank_tolerance']}."
    )
    rows = [
        ["parameters", d["parameters"]],
        ["sparsity (bf16)", d["sparsity_bf16"]],
        ["sparsity (fp32)", d["sparsity_fp32"]],
        ["share unchanged at all (fp32, no tolerance)", d["sparsity_fp32_exact"]],
        ["mean update rank / min(shape)", d["mean_rank_ratio"]],
    ]
    if d.get("overlap"):
        rows += [
            ["updated-set overlap with the second run (Jaccard)", d["overlap"]["jaccard_bf16"]],
            ["overlap of random sets of the same density", d["overlap"]["random_baseline"]],
        ]
    s.table(["measure", "value"], rows)
    s.table(
        ["layer", "parameters", "sparsity bf16", "sparsity fp32", "unchanged at all"],
        [
            [k, v["parameters"], v["sparsity_bf16"], v["sparsity_fp32"], v["sparsity_exact"]]
            for k, v in sorted(d["per_layer"].items(), key=lambda item: layer_sort_key(item[0]))
        ],
    )


def _planning(s: Section, d: dict) -> None:
    found = d["strategic_ngrams"] or "none found, so no token counts as planning"
    s.text(
        f"Strategic n-grams: {d['strategic_ngram_source']} ({found}). Semantic entropy of planning "
        "is over clusters of strategic n-grams (exact match after lower-casing and mapping digits to 0), in bits; "
        "execution entropy is the model's next-token entropy (nats) on the other tokens; format diversity is the "
        "entropy (bits) of the traces' format classes."
    )
    cps = d["checkpoints"]
    s.table(
        [
            "checkpoint",
            "traces",
            "planning share",
            "planning semantic entropy",
            "execution entropy",
            "format diversity",
        ],
        [
            [
                c["name"],
                c["traces"],
                _or(c["planning_token_share"], "no words"),
                _or(c["planning_semantic_entropy_bits"], "no strategic n-grams"),
                _or(c["execution_entropy_nats"], "no execution tokens"),
                c["format_diversity_bits"],
            ]
            for c in cps
        ],
    )
    xs = list(range(len(cps)))
    s.figure(
        line_plot(
            {
                "planning semantic entropy (bits)": (xs, [c["planning_semantic_entropy_bits"] for c in cps]),
                "execution entropy (nats)": (xs, [c["execution_entropy_nats"] for c in cps]),
                "format diversity (bits)": (xs, [c["format_diversity_bits"] for c in cps]),
            },
            "across checkpoints",
            "checkpoint index",
            "entropy",
        ),
        "planning across checkpoints",
    )


_RENDER = {
    "dtr": _dtr,
    "think_at_n": _think,
    "step_information_gain": _gain,
    "policy_entropy": _entropy,
    "reflection": _reflection,
    "budget_curve": _budget,
    "validity": _validity,
    "sparsity": _sparsity,
    "planning_tokens": _planning,
}


def build_report(payload: dict) -> Report:
    title = f"Thought audit: {payload['model']}" + (f" vs {payload['compare']}" if payload.get("compare") else "")
    report = Report(title)
    intro = report.section("Setup")
    intro.text(
        f"Task {payload['task']}: {payload['problems']} held-out problems, {payload['samples']} samples each, "
        f"thought budget {payload['thought_budget']} tokens. All figures are also in audit.json."
    )
    for key, heading in HEADINGS.items():
        section = report.section(heading)
        data = payload.get(key) or {"skipped": "no result"}
        if "skipped" in data:
            section.text(f"Skipped: {data['skipped']}", css="skipped")
        else:
            _RENDER[key](section, data)
    return report


def write_report(payload: dict, path: str | Path) -> Path:
    return build_report(payload).write(path)

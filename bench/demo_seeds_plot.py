"""The RLP demo's think accuracy per seed on two bases, as a picture for the docs' results page.

    python bench/demo_seeds_plot.py docs/img/demo_seeds.png

Reads the committed demo runs of the robustness study (bench/results/robustness/demo{A,B}-*.json: ten seeds
each of `ponder demo` on two retrained `tiny-lazy` bases, bench/RESULTS.md "Robustness") and draws, per
base, the base's accuracy and every seed of compute-matched CPT and of RLP, with their medians.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_figures import small_png  # noqa: E402

RUNS = Path(__file__).resolve().parent / "results" / "robustness"


def per_seed(run: dict, model: str) -> dict[int, float]:
    """seed -> held-out think accuracy of ``model`` (rlp, cpt) in one demo JSON (two layouts exist)."""
    block = run[model]
    values = block["think_accuracy_per_seed"] if isinstance(block, dict) else [r["think_accuracy"] for r in block]
    return dict(zip(run["seeds"], values))


def base_accuracies(base: str) -> tuple[float, dict[str, list[float]]]:
    """The base's think accuracy and, per model, every seed's (seeds deduplicated across files)."""
    runs = [json.loads(p.read_text()) for p in sorted(RUNS.glob(f"demo{base}-*.json"))]
    seeds = {m: {} for m in ("cpt", "rlp")}
    for run in runs:
        for model in seeds:
            seeds[model].update(per_seed(run, model))
    return runs[0]["base"]["think_accuracy"], {m: [v for _, v in sorted(s.items())] for m, s in seeds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="PNG path (docs/img/demo_seeds.png)")
    args = parser.parse_args(argv)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, base in zip(axes, "AB"):
        base_acc, seeds = base_accuracies(base)
        ax.axhline(base_acc, color="grey", linestyle="--", label=f"base ({base_acc:.3f})")
        for x, (model, color) in enumerate((("cpt", "tab:orange"), ("rlp", "tab:green"))):
            values = seeds[model]
            ax.scatter([x + 0.06 * (i - len(values) / 2) / 2 for i in range(len(values))], values, color=color, s=18)
            median = sorted(values)[len(values) // 2 - 1 : len(values) // 2 + 1]
            ax.hlines(sum(median) / len(median), x - 0.25, x + 0.25, color=color, linewidth=2)
        ax.set_xticks([0, 1], [f"CPT ({len(seeds['cpt'])} seeds)", f"RLP ({len(seeds['rlp'])} seeds)"])
        ax.set_xlim(-0.6, 1.6)
        ax.set_title(f"tiny-lazy base {base}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("held-out think accuracy (add3-5)")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    Path(args.out).write_bytes(small_png(png.getvalue()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

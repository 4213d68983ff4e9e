"""Why RLP's reward is what it is on SmolLM2: what a thought costs, and how much of it the policy can change.

At held-out positions of the real-text corpus (the windows ``bench/rlp_smollm2.py`` measures), the
next token's log-prob under a model (default: the SmolLM2-135M base) is compared without a thought,
after an empty thought ``<think></think>`` and after ``G`` sampled thoughts of each budget in
``--budgets``. Per variant: the mean gain over no thought (nats: RLP's reward against a perfect
baseline), the spread of that gain *within* a position's group (what the group advantage can use) and
*between* positions (what it cannot), the best thought of each group (the most any single thought
gave), and the share of positions where the group's mean beats no thought::

    OMP_NUM_THREADS=1 python bench/rlp_smollm2_diagnose.py --corpus data/realtext --json diag.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).parent))

from ponder.lm.padding import pad_id_of  # noqa: E402
from ponder.lm.thinking import ThoughtFormat, sample_thoughts  # noqa: E402
from ponder.models.lookup import load_model  # noqa: E402
from ponder.rl.positions import eligible_range, keyed_generators  # noqa: E402
from ponder.rl.rollout import doc_logprobs  # noqa: E402
from rlp_smollm2 import MODEL, heldout_windows  # noqa: E402  (a sibling script, not a package)


@torch.no_grad()
def last_token_logprobs(model, sequences: list[list[int]], pad: int, batch: int = 16) -> torch.Tensor:
    """``[len(sequences)]``: log p(last token | the rest) of each sequence (the baseline pass, ``batch`` rows at a time)."""
    out = []
    for a in range(0, len(sequences), batch):
        out += [lp[-1] for lp in doc_logprobs(model, sequences[a : a + batch], pad).logp]
    return torch.stack(out)


def choose(windows, per_window: int, seed: int) -> list[tuple[list[int], int]]:
    """``(prefix ids, next token)`` at ``per_window`` distinct positions of each window (keyed draws)."""
    picks = []
    for w, g in zip(windows, keyed_generators(seed, range(len(windows)))):
        span = eligible_range(len(w.ids))
        for i in torch.randperm(len(span), generator=g)[:per_window].tolist():
            t = span[i]
            picks.append((w.ids[:t], w.ids[t]))
    return picks


def summarize(gains: torch.Tensor) -> dict:
    """``gains [B, G]`` (nats over no thought) -> the figures of the module docstring."""
    mean = gains.mean(1)
    within = gains.std(1).mean() if gains.shape[1] > 1 else torch.tensor(0.0)
    return {
        "gain_mean": float(mean.mean()),
        "gain_median": float(mean.median()),
        "within_group_std": float(within),
        "between_position_std": float(mean.std()),
        "best_of_group_mean": float(gains.max(1).values.mean()),
        "share_positions_mean_above_none": float((mean > 0).float().mean()),
        "share_thoughts_above_none": float((gains > 0).float().mean()),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True, help="folder written by `ponder corpus build`")
    p.add_argument("--model", default=MODEL, help="the model measured (a run's final/ folder, or smollm2-135m)")
    p.add_argument("--windows", type=int, default=24)
    p.add_argument("--positions", type=int, default=2, help="positions per window")
    p.add_argument("--context-length", type=int, default=128)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--budgets", default="4,24", help="thought budgets, comma separated")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t0 = time.time()
    lm = load_model(args.model, device="cpu", dtype=torch.float32)
    model, tok = lm.model.eval(), lm.tokenizer
    fmt, pad = ThoughtFormat.of(model, tok), pad_id_of(tok)
    picks = choose(
        heldout_windows(Path(args.corpus), tok, args.context_length, args.windows), args.positions, args.seed
    )
    none = last_token_logprobs(model, [prefix + [x] for prefix, x in picks], pad)
    empty = last_token_logprobs(model, [prefix + [fmt.open_id, fmt.close_id, x] for prefix, x in picks], pad)
    rows = {"empty thought": summarize((empty - none)[:, None])}
    G = args.group_size
    for budget in (int(b) for b in args.budgets.split(",")):
        gens = keyed_generators(args.seed, range(len(picks)))
        thoughts = sample_thoughts(
            model, tok, fmt, [prefix + [fmt.open_id] for prefix, _ in picks], G, budget, args.temperature,
            prompt_generators=gens, batch_size=8,
        )  # fmt: skip
        seqs = [
            picks[r // G][0] + [fmt.open_id, *thoughts.ids[r], fmt.close_id, picks[r // G][1]]
            for r in range(len(picks) * G)
        ]
        scored = last_token_logprobs(model, seqs, pad).view(len(picks), G)
        rows[f"sampled, budget {budget}"] = {
            **summarize(scored - none[:, None]),
            "thought_tokens_mean": statistics.fmean(len(t) for t in thoughts.ids),
            "closed_fraction": float(thoughts.closed.float().mean()),
        }
    print(f"{args.model}: {len(picks)} held-out positions, no-thought log-prob mean {float(none.mean()):.3f}")
    cols = ["gain_mean", "gain_median", "within_group_std", "between_position_std", "best_of_group_mean",
            "share_positions_mean_above_none", "share_thoughts_above_none"]  # fmt: skip
    print("| variant | " + " | ".join(cols) + " |\n" + "| --- " * (len(cols) + 1) + "|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[c]:+.3f}" for c in cols) + " |")
    payload = {
        "model": args.model,
        "positions": len(picks),
        "no_thought_logp_mean": float(none.mean()),
        "rows": rows,
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "wall_s": round(time.time() - t0, 1),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return payload


if __name__ == "__main__":
    main()

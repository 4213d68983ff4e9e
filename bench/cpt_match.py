"""Does ``ponder cpt --match-run`` spend the RLP run's budget on long documents? The former estimate vs now.

A random-init small tiny model, a corpus of ``--docs`` documents of ``--chars`` characters (one
token per character), a short ``ponder rlp`` run, then for each CPT ``--max-length``: the tokens the
former step estimate (full document lengths) would have trained, and the tokens ``ponder cpt
--match-run`` really trains (its own count from the attention mask), against the budget T_flop::

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/cpt_match.py --max-length 64,256
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

WORDS = "the river ran past a quiet town where people read books at night".split()


def main() -> None:
    import torch

    from ponder.cli import main as ponder
    from ponder.data.sources import FileSource
    from ponder.jobs.rlp import trained_tokens_per_step
    from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=30)
    ap.add_argument("--chars", type=int, default=1000)
    ap.add_argument("--max-length", default="64,256", help="CPT truncation lengths to try, comma separated")
    ap.add_argument("--batch-size", type=int, default=1, help="CPT documents per step")
    ap.add_argument("--rlp-steps", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="cpt_match_"))
    tok = build_char_tokenizer()
    build_tiny_model(tok, TinyArch(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)).save_pretrained(
        tmp / "model"
    )
    tok.save_pretrained(tmp / "model")
    rng = random.Random(0)
    corpus = tmp / "long.jsonl"
    lines = []
    for _ in range(args.docs):
        text = ""
        while len(text) < args.chars:
            text += rng.choice(WORDS) + " "
        lines.append(json.dumps({"text": text[: args.chars]}) + "\n")
    corpus.write_text("".join(lines))
    common = ["--model", str(tmp / "model"), "--corpus", str(corpus), "--quiet"]
    rlp_flags = [
        "--steps",
        str(args.rlp_steps),
        "--docs-per-step",
        "2",
        "--positions-per-doc",
        "16",
        "--group-size",
        "2",
    ]
    ponder(
        ["rlp", *common, *rlp_flags, "--max-thought-tokens", "4", "--context-length", "64", "--out", str(tmp / "rlp")]
    )
    budget = json.loads((tmp / "rlp" / "rlp_summary.json").read_text())["flop_matched_tokens"]
    stream = FileSource(str(corpus)).stream()
    docs = [next(stream)[0] for _ in range(256)]
    mean_doc = sum(len(ids) + 1 for ids in tok(docs)["input_ids"]) / len(docs)  # the former mean_doc_tokens
    print(f"RLP budget T_flop = {budget} tokens; documents of {args.chars} characters ({mean_doc:.1f} tokens)")
    print(
        "| CPT max length | batch | former steps | former tokens | former / budget | steps | CPT trained tokens | / budget |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for max_length in (int(x) for x in args.max_length.split(",")):
        old_steps = max(1, math.ceil(budget / (args.batch_size * mean_doc)))
        texts = (t for t, _ in FileSource(str(corpus)).stream())
        old_tokens = sum(
            t for _, t in zip(range(old_steps), trained_tokens_per_step(tok, texts, args.batch_size, max_length))
        )
        out = tmp / f"cpt-{max_length}"
        cpt_flags = ["--batch-size", str(args.batch_size), "--max-length", str(max_length), "--lr", "1e-4"]
        ponder(["cpt", *common, "--match-run", str(tmp / "rlp"), *cpt_flags, "--out", str(out)])
        cpt = json.loads((out / "cpt_summary.json").read_text())
        print(
            f"| {max_length} | {args.batch_size} | {old_steps} | {old_tokens} | {old_tokens / budget:.1%} | "
            f"{cpt['steps']} | {cpt['tokens_seen']} | {cpt['tokens_seen'] / budget:.1%} |"
        )


if __name__ == "__main__":
    main()

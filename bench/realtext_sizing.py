"""Sizing of the real-text corpus for SmolLM2 runs: its size in SmolLM2 tokens and one forward's cost.

Reads a corpus written by ``ponder corpus build`` and prints, per split, documents, characters,
SmolLM2 tokens and windows of ``--context`` tokens (what RLP reads), then times a no-grad forward
of SmolLM2-135M over ``--batch`` sequences of each context length cut from the held-out text
(best of ``--repeats``)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/realtext_sizing.py --corpus data/realtext --context 128,256,512
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    from ponder.data.corpus import read_documents
    from ponder.models.lookup import load_model
    from ponder.rl.positions import tokenize_docs

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True, help="folder written by `ponder corpus build`")
    ap.add_argument("--context", default="128,256,512", help="window lengths in tokens, comma separated")
    ap.add_argument("--batch", type=int, default=4, help="windows per timed forward")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    contexts = [int(c) for c in args.context.split(",")]
    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "1")))
    lm = load_model("smollm2-135m", device="cpu", dtype=torch.float32)
    manifest = json.loads((Path(args.corpus) / "manifest.json").read_text())
    print(f"corpus fingerprint {manifest['fingerprint'][:16]}, {len(manifest['sources'])} source units")
    print(
        "| split | documents | characters | SmolLM2 tokens | chars/token | "
        + " | ".join(f"windows of {c}" for c in contexts)
        + " |"
    )
    print("| --- " * (5 + len(contexts)) + "|")
    rows, docs_by_split = {}, {}
    for split in ("train", "heldout"):
        texts = read_documents(str(Path(args.corpus) / f"{split}.jsonl"))
        ids = lm.tokenizer(texts, add_special_tokens=False)["input_ids"]
        tokens, chars = sum(map(len, ids)), sum(map(len, texts))
        windows = {c: len(tokenize_docs(lm.tokenizer, [(t, None) for t in texts], c)) for c in contexts}
        docs_by_split[split] = texts
        rows[split] = {"documents": len(texts), "chars": chars, "tokens": tokens, "windows": windows}
        cells = " | ".join(str(windows[c]) for c in contexts)
        print(f"| {split} | {len(texts)} | {chars} | {tokens} | {chars / tokens:.2f} | {cells} |")
    print(f"\n| context | sequences | forward s (best of {args.repeats}) | tokens/s |")
    print("| --- | --- | --- | --- |")
    forwards = {}
    # Timed input: consecutive c-token pieces of the held-out text (documents are shorter than 512 tokens).
    stream = [i for ids in lm.tokenizer(docs_by_split["heldout"], add_special_tokens=False)["input_ids"] for i in ids]
    for c in contexts:
        batch = [stream[i * c : (i + 1) * c] for i in range(args.batch)]
        ids = torch.tensor(batch)
        best = float("inf")
        with torch.no_grad():
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                lm.model(input_ids=ids, use_cache=False)
                best = min(best, time.perf_counter() - t0)
        forwards[c] = {"sequences": len(batch), "seconds": best, "tokens_per_s": ids.numel() / best}
        print(f"| {c} | {len(batch)} | {best:.3f} | {ids.numel() / best:.0f} |")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"splits": rows, "forward": forwards, "threads": torch.get_num_threads()}, indent=2)
        )


if __name__ == "__main__":
    main()

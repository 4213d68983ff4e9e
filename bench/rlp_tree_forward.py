"""RLP training forward + backward: shared-prefix tree batch vs one padded row per thought.

Same model, same rollout (4 documents x 4 positions, prefix ~512 tokens, G = 8 thoughts of 50 tokens),
the same log-probs: times ``batch.logprobs`` and the backward of the thought tokens' sum::

    OMP_NUM_THREADS=1 python bench/rlp_tree_forward.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from ponder.lm.thinking import Thoughts
    from ponder.rl.batches import rlp_padded_batch, rlp_tree_batch
    from rlp_throughput import build_model

    torch.set_num_threads(1)
    model, tok = build_model("tiny")
    model.train()
    g = torch.Generator().manual_seed(0)
    docs = [torch.randint(5, 90, (513,), generator=g).tolist() for _ in range(4)]
    positions = [(d, 512 - j) for d in range(4) for j in range(4)]
    thoughts = Thoughts(
        [docs[d][:t] for d, t in positions],
        8,
        [torch.randint(5, 90, (50,), generator=g).tolist() for _ in range(128)],
        [torch.zeros(51) for _ in range(128)],
        torch.ones(128, dtype=torch.bool),
    )
    tree = rlp_tree_batch(docs, positions, 1, thoughts, 98, 99, 0)
    padded = rlp_padded_batch(
        [docs[d][:t] for d, t in positions], [docs[d][t : t + 1] for d, t in positions], thoughts, 98, 99, 0
    )
    print("| layout | tokens computed | forward s | backward s |\n| --- | --- | --- | --- |")
    for name, batch in (("tree", tree), ("padded", padded)):
        model.zero_grad()
        t0 = time.perf_counter()
        logp = batch.scores(model)[0]
        t1 = time.perf_counter()
        (logp * batch.loss_mask).sum().backward()
        t2 = time.perf_counter()
        print(f"| {name} | {batch.num_tokens} | {t1 - t0:.2f} | {t2 - t1:.2f} |")


if __name__ == "__main__":
    main()

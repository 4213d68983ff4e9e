"""A format warm start for SmolLM2-135M: next-token training on its own short thoughts, inserted and closed (issue 27).

Documents (:mod:`ponder.data.thought_docs`): ``--docs`` windows of the real-text corpus's train split,
each with one thought of ``--thought-tokens`` tokens that the base itself sampled at a random
position (inserted before that token and closed); and ``--prompts`` task prompts of the train split
(chat template) followed by a thought the base sampled, ``</think>`` and the answer the base then
gave greedily. No label is used: the warm start teaches the format, not the task. Trained with
ponder's one next-token loop (:func:`ponder.train.next_token.train_next_token`), every token of
each document, ``--steps`` steps.

Measured before and after: on the task's test split (chat prompts, greedy, thought budget
``--task-budget``) the share of thoughts the model closed, the thought length and think accuracy
(the task's score and the last number of the answer); on held-out windows the plain next-token
loss (no thought; the issue asks for it within 0.02 nats of the base) and the cost of an empty
thought. Compute: sampling (2 FLOPs per parameter and token) plus training (6 per trained token)::

    OMP_NUM_THREADS=1 python bench/format_warmstart.py --corpus /tmp/realtext --out /tmp/warm \\
        --json bench/results/format_warmstart.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).parent))

from ponder.data.registry import get_task  # noqa: E402
from ponder.data.thought_docs import answered_thought, insert_thought  # noqa: E402
from ponder.lm.padding import pad_id_of  # noqa: E402
from ponder.lm.thinking import ANSWER_STOPS, ThoughtFormat, sample_answers, sample_thoughts  # noqa: E402
from ponder.models.lookup import load_model  # noqa: E402
from ponder.rl.rollout import doc_logprobs  # noqa: E402
from ponder.train.compute import FORWARD, TRAIN, model_size  # noqa: E402
from ponder.train.next_token import NextTokenConfig, train_next_token  # noqa: E402
from rlp_smollm2 import MODEL, heldout_windows  # noqa: E402  (a sibling script, not a package)
from rlp_smollm2_diagnose import choose, last_token_logprobs  # noqa: E402
from thought_format_smollm2 import last_number  # noqa: E402


def heldout_loss(model, windows, pad) -> float:
    """Mean next-token loss (nats) over every predicted token of the windows, no thought."""
    with torch.no_grad():
        lps = [lp for a in range(0, len(windows), 8) for lp in doc_logprobs(model, windows[a : a + 8], pad).logp]
    return -float(torch.cat(lps).mean())


def measure(model, tok, fmt, args, problems, task, windows, picks) -> dict:
    pad = pad_id_of(tok)
    prompts = fmt.prompt_ids(tok, [p.prompt for p in problems])
    th = sample_thoughts(model, tok, fmt, prompts, 1, args.task_budget, 0.0, batch_size=24)
    contexts = [p + [fmt.open_id, *t, fmt.close_id] for p, t in zip(prompts, th.ids)]
    texts = sample_answers(model, tok, fmt, contexts, 24, stops=ANSWER_STOPS, batch_size=24).texts(tok, ANSWER_STOPS)
    none = last_token_logprobs(model, [p + [x] for p, x in picks], pad)
    empty = last_token_logprobs(model, [p + [fmt.open_id, fmt.close_id, x] for p, x in picks], pad)
    return {
        "closed_fraction": float(th.closed.float().mean()),
        "thought_tokens": float(th.lengths.mean()),
        "think_accuracy": statistics.fmean(task.score(p, t) for p, t in zip(problems, texts)),
        "think_accuracy_last_number": statistics.fmean(last_number(t) == p.answer for p, t in zip(problems, texts)),
        "heldout_ntp_loss": heldout_loss(model, [w.ids for w in windows], pad),
        "empty_thought_gain": float((empty - none).mean()),
        "example": tok.decode(contexts[0][len(prompts[0]) :]) + " || " + texts[0],
    }


def documents(model, tok, fmt, args, task) -> tuple[list[list[int]], int]:
    """The warm-start documents (token ids) and the tokens sampled to make them."""
    rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    train = heldout_windows(Path(args.corpus), tok, args.context_length, args.docs, split="train")
    cuts = [rng.randrange(1, len(w.ids)) for w in train]
    th = sample_thoughts(
        model, tok, fmt, [w.ids[:t] for w, t in zip(train, cuts)], 1, args.thought_tokens, 0.7,
        generator=gen, batch_size=16,
    )  # fmt: skip
    docs = [insert_thought(w.ids, t, ids, fmt.open_id, fmt.close_id) for w, t, ids in zip(train, cuts, th.ids)]
    sampled = int(th.lengths.sum())
    problems = task.problems(args.prompts, seed=args.seed, split="train")
    prompts = fmt.prompt_ids(tok, [p.prompt for p in problems])
    pt = sample_thoughts(model, tok, fmt, prompts, 1, args.thought_tokens, 0.7, generator=gen, batch_size=16)
    contexts = [p + [fmt.open_id, *t, fmt.close_id] for p, t in zip(prompts, pt.ids)]
    ans = sample_answers(model, tok, fmt, contexts, 16, stops=ANSWER_STOPS, batch_size=16)
    for r, p in enumerate(prompts):
        docs.append(answered_thought(p, pt.ids[r], [*ans.ids(r), *fmt.eos_ids[:1]], fmt.open_id, fmt.close_id))
    sampled += int(pt.lengths.sum()) + int(ans.num_tokens.sum())
    rng.shuffle(docs)
    return docs, sampled


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", required=True, help="run directory of the warm start (its final/ is the warm model)")
    p.add_argument("--task", default="add2")
    p.add_argument("--docs", type=int, default=64, help="corpus windows with a thought inserted")
    p.add_argument("--prompts", type=int, default=64, help="task prompts (train split) with a thought and answer")
    p.add_argument("--thought-tokens", type=int, default=8, help="length of each inserted thought")
    p.add_argument("--context-length", type=int, default=128)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--task-n", type=int, default=24, help="test problems measured")
    p.add_argument("--task-budget", type=int, default=64)
    p.add_argument("--windows", type=int, default=24, help="held-out windows measured")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t0 = time.time()
    lm = load_model(MODEL, device="cpu", dtype=torch.float32)
    model, tok = lm.model, lm.tokenizer
    fmt = ThoughtFormat.of(model, tok)
    task = get_task(args.task)
    problems = task.problems(args.task_n, seed=0, split="test")
    windows = heldout_windows(Path(args.corpus), tok, args.context_length, args.windows)
    picks = choose(windows, 2, 0)
    before = measure(model.eval(), tok, fmt, args, problems, task, windows, picks)
    print("before:", json.dumps(before), flush=True)
    t1 = time.time()
    docs, sampled = documents(model, tok, fmt, args, task)
    cfg = NextTokenConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=0, min_lr_ratio=1.0,
        weight_decay=0.0, max_length=args.context_length + args.thought_tokens + 2, seed=args.seed,
        save_every=args.steps, report_to=["none"],
    )  # fmt: skip
    summary = train_next_token(model, tok, lambda: itertools.cycle(docs), cfg, args.out, progress=False)
    trained = int(summary["tokens_seen"])
    size = model_size(model)
    after = measure(model.eval(), tok, fmt, args, problems, task, windows, picks)
    print("after:", json.dumps(after), flush=True)
    payload = {
        "model": MODEL,
        "task": args.task,
        "before": before,
        "after": after,
        "documents": len(docs),
        "sampled_tokens": sampled,
        "trained_tokens": trained,
        "flops": FORWARD * size.params * sampled + TRAIN * size.params * trained,
        "warm_wall_s": round(time.time() - t1, 1),
        "summary": {k: v for k, v in summary.items() if isinstance(v, (int, float, str))},
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "wall_s": round(time.time() - t0, 1),
    }
    print("| | closed | thought tokens | think acc (score / last number) | held-out NTP loss | empty thought (nats) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in ("before", "after"):
        r = payload[name]
        print(f"| {name} | {r['closed_fraction']:.2f} | {r['thought_tokens']:.1f} | {r['think_accuracy']:.3f} / "
              f"{r['think_accuracy_last_number']:.3f} | {r['heldout_ntp_loss']:.4f} | {r['empty_thought_gain']:+.3f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return payload


if __name__ == "__main__":
    main()

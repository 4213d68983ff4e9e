"""A format warm start for SmolLM2-135M: next-token training on its own short thoughts, inserted and closed (issue 27).

Documents (:mod:`ponder.data.thought_docs`): ``--docs`` windows of the real-text corpus's train split,
each with one thought of ``--thought-tokens`` tokens that the base itself sampled at a random
position (inserted before that token and closed); and ``--prompts`` task prompts of the train split
(chat template) followed by a thought the base sampled, ``</think>`` and the answer the base then
gave greedily. No label is used: the warm start teaches the format, not the task. Trained with
ponder's one next-token loop (:func:`ponder.train.next_token.train_next_token`), every token of
each document, ``--steps`` steps.

``--answers correct`` (an answered warm start, STaR-style): a task example's answer is the first of the
base's own answers (greedy, then sampled, after the thought; then without a thought) whose last number
is the train-split problem's label; prompts with none are dropped. Train labels filter, test labels are
never read. ``--train lora`` / ``delimiters+lora`` train LoRA adapters (and the delimiter rows) so the
body learns to answer after its own ``</think>``; ``--init`` trains a previous warm start instead of
the base (``--sample-from init``: the examples are that model's own, else the base's).

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

from ponder.data.early_experience import Example  # noqa: E402
from ponder.data.registry import get_task  # noqa: E402
from ponder.data.thought_docs import (  # noqa: E402
    answered_thought,
    cut_at_natural_end,
    first_verified,
    insert_thought,
    natural_end_ids,
    thought_in_target,
)
from ponder.lm.padding import pad_id_of  # noqa: E402
from ponder.lm.thinking import ANSWER_STOPS, ThoughtFormat, sample_answers, sample_thoughts  # noqa: E402
from ponder.models.lookup import load_model  # noqa: E402
from ponder.rl.rollout import doc_logprobs  # noqa: E402
from ponder.train.compute import FORWARD, TRAIN, model_size  # noqa: E402
from ponder.train.engine import prepare_model  # noqa: E402
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
    plain = sample_answers(model, tok, fmt, prompts, 24, stops=ANSWER_STOPS, batch_size=24).texts(tok, ANSWER_STOPS)
    gen = torch.Generator().manual_seed(0)  # text positions: sampled as RLP samples them (T = 0.7)
    at_text = sample_thoughts(model, tok, fmt, [p for p, _ in picks], 1, args.task_budget, 0.7, generator=gen,
                              batch_size=24)  # fmt: skip
    none = last_token_logprobs(model, [p + [x] for p, x in picks], pad)
    empty = last_token_logprobs(model, [p + [fmt.open_id, fmt.close_id, x] for p, x in picks], pad)
    return {
        "closed_fraction": float(th.closed.float().mean()),
        "thought_tokens": float(th.lengths.mean()),
        "closed_fraction_text": float(at_text.closed.float().mean()),
        "thought_tokens_text": float(at_text.lengths.mean()),
        "think_accuracy": statistics.fmean(task.score(p, t) for p, t in zip(problems, texts)),
        "think_accuracy_last_number": statistics.fmean(last_number(t) == p.answer for p, t in zip(problems, texts)),
        # Without the sampler's close at the budget (s1's budget forcing) an unclosed thought has no answer.
        "think_accuracy_own_close": statistics.fmean(
            bool(c) and last_number(t) == p.answer for p, t, c in zip(problems, texts, th.closed)
        ),
        "no_think_accuracy_last_number": statistics.fmean(last_number(t) == p.answer for p, t in zip(problems, plain)),
        "heldout_ntp_loss": heldout_loss(model, [w.ids for w in windows], pad),
        "empty_thought_gain": float((empty - none).mean()),
        "example": tok.decode(contexts[0][len(prompts[0]) :]) + " || " + texts[0],
    }


def inserted_documents(model, tok, fmt, args, task) -> tuple[list[list[int]], int]:
    """``--form inserted`` (the first measurement): a fixed-length thought inserted in each corpus window,
    task prompts with thought and answer; every token trained. The documents and the tokens sampled."""
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


def closing_documents(model, tok, fmt, args, task) -> tuple[list[Example], int, dict]:
    """``--form closing``: the base's own thoughts cut at their first line or sentence end, then closed.

    Each example's context is ``prefix <think> thought`` and its loss falls on ``</think>`` and what
    follows (``--after`` tokens of the window's text; or, after a train-split task prompt, the
    answer the base gave greedily after the thought or, ``--answers no-think``, without one; and EOS), so the
    warm start trains closing and reading on after a thought, and no prefix text (no continued pretraining).
    No label is used, except with ``--answers correct`` (:func:`verified_answers`: train labels filter the
    model's own answers). Thoughts
    without a natural end within ``--thought-tokens`` are dropped. The examples, the tokens
    sampled, and counts.
    """
    rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    ends = natural_end_ids(tok)
    text = lambda ids: tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)  # noqa: E731
    train = heldout_windows(Path(args.corpus), tok, args.context_length, args.docs, split="train") if args.docs else []
    cuts = [rng.randrange(8, max(9, len(w.ids) - args.after)) for w in train]
    th = sample_thoughts(
        model, tok, fmt, [w.ids[:t] for w, t in zip(train, cuts)], 1, args.thought_tokens, 0.7,
        generator=gen, batch_size=16,
    ) if train else None  # fmt: skip
    examples, sampled = [], int(th.lengths.sum()) if th else 0
    for w, t, ids in zip(train, cuts, th.ids if th else []):
        cut = cut_at_natural_end(ids, ends, args.min_thought)
        if cut is not None:
            context, target = [*w.ids[:t], fmt.open_id, *cut], [fmt.close_id, *w.ids[t : t + args.after]]
            examples.append(Example(text(context), text(target)))
    text_kept = len(examples)
    problems = task.problems(args.prompts, seed=args.seed, split="train")
    prompts = fmt.prompt_ids(tok, [p.prompt for p in problems])
    pt = sample_thoughts(model, tok, fmt, prompts, 1, args.thought_tokens, 0.7, generator=gen, batch_size=16)
    kept = [(p, c) for p, ids in zip(prompts, pt.ids) if (c := cut_at_natural_end(ids, ends, args.min_thought))]
    if args.answers == "correct":
        task_examples, task_sampled, task_counts = verified_answers(model, tok, fmt, args, problems, prompts, pt, gen)
        examples += task_examples
        rng.shuffle(examples)
        counts = {"text_examples": text_kept, "task_examples": len(task_examples), **task_counts}
        return examples, sampled + int(pt.lengths.sum()) + task_sampled, counts
    # The answer the base gave after that thought, or (no-think) the one it gives with no thought at all: the
    # delimiters then learn that a thought leaves the answer as the model would give it.
    contexts = [p + [fmt.open_id, *c, fmt.close_id] if args.answers == "after-thought" else p for p, c in kept]
    ans = sample_answers(model, tok, fmt, contexts, 16, stops=ANSWER_STOPS, batch_size=16)
    for r, (p, c) in enumerate(kept):
        examples.append(Example(text([*p, fmt.open_id, *c]), text([fmt.close_id, *ans.ids(r)]), eos=True))
    sampled += int(pt.lengths.sum()) + int(ans.num_tokens.sum())
    rng.shuffle(examples)
    return examples, sampled, {"text_examples": text_kept, "task_examples": len(kept)}


def verified_answers(model, tok, fmt, args, problems, prompts, pt, gen) -> tuple[list[Example], int, dict]:
    """``--answers correct`` (STaR-style): each train-split prompt's thought (cut at its natural end) is followed
    by ``</think>`` and the first of the model's own answers whose last number is the problem's train label.

    Candidates, in order: the greedy answer after the thought, ``--answer-tries`` answers sampled after it
    (T = 0.7), then the greedy answer with no thought and ``--answer-tries`` sampled without one (the
    model's no-think answer, placed after the thought). Prompts with no verified candidate are dropped.
    Only train labels are read (the measurement uses the test split). The examples, tokens sampled, counts.
    """
    ends, k = natural_end_ids(tok), args.answer_tries
    text = lambda ids: tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)  # noqa: E731
    # A thought the model closed itself ends there (its natural end); another is cut at its first line end.
    cut = lambda r, ids: list(ids) if bool(pt.closed[r]) else cut_at_natural_end(ids, ends, args.min_thought)  # noqa: E731
    kept = [(r, c) for r, ids in enumerate(pt.ids) if (c := cut(r, ids)) is not None]
    after = [prompts[r] + [fmt.open_id, *c, fmt.close_id] for r, c in kept]
    plain = [prompts[r] for r, _ in kept]
    phases = []  # (contexts, temperature): each gives one candidate per kept row and try
    for contexts in (after, plain):
        phases.append((contexts, 0.0))
        phases.append(([c for c in contexts for _ in range(k)], 0.7))
    samples = [sample_answers(model, tok, fmt, c, 24, t, stops=ANSWER_STOPS, generator=gen, batch_size=32)
               for c, t in phases]  # fmt: skip
    texts = [s.texts(tok, ANSWER_STOPS) for s in samples]
    # Row j's candidates: (phase, index in that phase's samples).
    where = [[(0, j), *((1, j * k + i) for i in range(k)), (2, j), *((3, j * k + i) for i in range(k))]
             for j in range(len(kept))]  # fmt: skip
    candidates = [[texts[ph][i] for ph, i in row] for row in where]
    verify = lambda j, t: last_number(t) == problems[kept[j][0]].answer.strip()  # noqa: E731
    picks = first_verified(candidates, verify)
    examples, source = [], {"after_thought_greedy": 0, "after_thought_sampled": 0, "no_think_greedy": 0,
                            "no_think_sampled": 0, "no_verified_answer": 0}  # fmt: skip
    names = ("after_thought_greedy", "after_thought_sampled", "no_think_greedy", "no_think_sampled")
    for j, pick in enumerate(picks):
        if pick is None:
            source["no_verified_answer"] += 1
            continue
        ph, i = where[j][pick]
        source[names[ph]] += 1
        r, c = kept[j]
        examples.append(
            Example(text([*prompts[r], fmt.open_id, *c]), text([fmt.close_id, *samples[ph].ids(i)]), eos=True)
        )
    sampled = sum(int(s.num_tokens.sum()) for s in samples)
    return examples, sampled, {"thoughts_with_natural_end": len(kept), **source}


def train_delimiters_only(model, fmt, freeze_rest: bool = True) -> None:
    """Train the delimiters' embedding rows (input and output; tied or not), and with ``freeze_rest`` nothing else.

    The rows' gradients are masked to the two ids, so AdamW (weight decay 0) never moves another row:
    plain text without a thought is then read exactly as before, only ``</think>``'s logit can change.
    ``freeze_rest=False`` (LoRA): the adapters stay trainable beside the rows.
    """
    rows = torch.zeros(model.get_input_embeddings().weight.shape[0], 1)
    rows[[fmt.open_id, fmt.close_id]] = 1.0
    tables = {id(t.weight): t.weight for t in (model.get_input_embeddings(), model.get_output_embeddings()) if t}
    for param in model.parameters():
        if freeze_rest or id(param) in tables:
            param.requires_grad_(id(param) in tables)
    for weight in tables.values():
        weight.register_hook(lambda g: g * rows.to(g.dtype))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", required=True, help="run directory of the warm start (its final/ is the warm model)")
    p.add_argument("--task", default="add2")
    p.add_argument("--form", choices=["closing", "inserted"], default="closing", help="the documents (see above)")
    p.add_argument("--docs", type=int, default=64, help="corpus windows with a thought inserted")
    p.add_argument("--prompts", type=int, default=64, help="task prompts (train split) with a thought and answer")
    p.add_argument("--thought-tokens", type=int, default=8, help="inserted: each thought's length; closing: its budget")
    p.add_argument("--min-thought", type=int, default=2, help="closing: a thought's natural end at this token or later")
    p.add_argument("--answers", choices=["after-thought", "no-think", "correct"], default="after-thought",
                   help="closing: a task example's answer, the base's greedy one after the thought or without one, "
                        "or (correct) the first of its own answers a train label verifies")  # fmt: skip
    p.add_argument("--answer-tries", type=int, default=4, help="correct: sampled answers tried per prompt and mode")
    p.add_argument("--examples", help="closing: a JSON file of the sampled examples, written once and then reused")
    p.add_argument("--init", help="train this model (e.g. a warm start's final/) instead of the base")
    p.add_argument("--sample-from", choices=["base", "init"], default="base",
                   help="with --init: which model samples the examples' thoughts and answers")  # fmt: skip
    p.add_argument("--after", type=int, default=8, help="closing: text tokens trained after a text position's thought")
    p.add_argument(
        "--thought-loss",
        action="store_true",
        help="closing: the thought's own tokens in the loss too (not only </think> and what follows)",
    )
    p.add_argument(
        "--plain",
        type=int,
        default=0,
        help="plain train-split corpus windows (no thought) mixed into the documents, every token trained",
    )
    p.add_argument("--context-length", type=int, default=128)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--train", choices=["all", "delimiters", "lora", "delimiters+lora"], default="all",
                   help="which weights the warm start moves (LoRA: the warm model is <out>/final/merged)")  # fmt: skip
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--task-n", type=int, default=24, help="test problems measured")
    p.add_argument("--task-budget", type=int, default=64)
    p.add_argument("--windows", type=int, default=24, help="held-out windows measured")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--before", help="a previous run's --json: reuse its `before` figures (same measurement settings)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.thought_loss and args.form != "closing":
        p.error("--thought-loss moves a closing example's thought into its loss: use it with --form closing")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t0 = time.time()
    lm = load_model(MODEL, device="cpu", dtype=torch.float32)
    model, tok = lm.model, lm.tokenizer
    fmt = ThoughtFormat.of(model, tok)
    sampler = model  # the examples' thoughts and answers: the base's own
    if args.init:
        start = load_model(args.init, device="cpu", dtype=torch.float32)
        model, tok, fmt0 = start.model, start.tokenizer, fmt
        fmt = ThoughtFormat.of(model, tok)
        if (fmt.open_id, fmt.close_id) != (fmt0.open_id, fmt0.close_id):
            raise SystemExit(f"{args.init} has other delimiter ids than the base: not a warm start of {MODEL}")
        if args.sample_from == "init":
            sampler = model
    task = get_task(args.task)
    problems = task.problems(args.task_n, seed=0, split="test")
    windows = heldout_windows(Path(args.corpus), tok, args.context_length, args.windows)
    picks = choose(windows, 2, 0)
    reuse = json.loads(Path(args.before).read_text()) if args.before else None
    keys = ("task", "task_n", "task_budget", "windows", "context_length", "init")
    if (
        reuse
        and all(reuse["settings"].get(k) == getattr(args, k) for k in keys)
        and "no_think_accuracy_last_number" in reuse["before"]
    ):
        before = reuse["before"]
    else:
        before = measure(model.eval(), tok, fmt, args, problems, task, windows, picks)
    print("before:", json.dumps(before), flush=True)
    t1 = time.time()
    counts = {}
    if args.form == "closing":
        cache = Path(args.examples) if args.examples else None
        if cache and cache.is_file():  # the same sampled examples for another training setting
            saved = json.loads(cache.read_text())
            docs, sampled, counts = [Example(*e) for e in saved["examples"]], saved["sampled"], saved["counts"]
        else:
            docs, sampled, counts = closing_documents(sampler.eval(), tok, fmt, args, task)
            if cache:
                cache.write_text(json.dumps({"examples": docs, "sampled": sampled, "counts": counts}))
    else:
        docs, sampled = inserted_documents(model, tok, fmt, args, task)
    if args.thought_loss:  # the thought's own tokens in the loss: the body learns where its thought stops
        open_text = tok.decode([fmt.open_id], skip_special_tokens=False)
        docs = [Example(*thought_in_target(e.context, e.target, open_text), e.eos) for e in docs]
    if args.plain:  # plain train-split windows, every token trained: they hold plain next-token loss
        plain = heldout_windows(Path(args.corpus), tok, args.context_length, args.plain, split="train")
        docs = [*docs, *(w.ids for w in plain)]
        random.Random(args.seed).shuffle(docs)
        counts["plain_windows"] = len(plain)
    if args.form == "closing":
        first = next(d for d in docs if isinstance(d, Example))
        print("documents:", json.dumps(counts), "e.g.", json.dumps([first.context[-200:], first.target]), flush=True)
    if sampler is not model:
        del sampler, lm
    lora = "lora" in args.train
    cfg = NextTokenConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=0, min_lr_ratio=1.0,
        weight_decay=0.0, max_length=args.context_length + args.thought_tokens + args.after + 4, seed=args.seed,
        save_every=args.steps, report_to=["none"], lora_rank=args.lora_rank if lora else None,
        lora_alpha=args.lora_alpha, lora_save_merged=lora,
    )  # fmt: skip
    model = prepare_model(model, cfg)  # LoRA: adapters on the frozen model (and final/merged written)
    if args.train.startswith("delimiters"):
        train_delimiters_only(model, fmt, freeze_rest=not lora)
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
        **counts,
        "sampled_tokens": sampled,
        "trained_tokens": trained,
        "flops": FORWARD * size.params * sampled + TRAIN * size.params * trained,
        "warm_wall_s": round(time.time() - t1, 1),
        "summary": {k: v for k, v in summary.items() if isinstance(v, (int, float, str))},
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "wall_s": round(time.time() - t0, 1),
    }
    print("| | closed (task / text) | thought tokens (task / text) | think acc (score / last number / own close) "
          "| no-think acc | held-out NTP loss | empty thought (nats) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in ("before", "after"):
        r = payload[name]
        print(f"| {name} | {r['closed_fraction']:.2f} / {r['closed_fraction_text']:.2f} | {r['thought_tokens']:.1f} / "
              f"{r['thought_tokens_text']:.1f} | {r['think_accuracy']:.3f} / "
              f"{r['think_accuracy_last_number']:.3f} / {r['think_accuracy_own_close']:.3f} | "
              f"{r.get('no_think_accuracy_last_number', float('nan')):.3f} | {r['heldout_ntp_loss']:.4f} | "
              f"{r['empty_thought_gain']:+.3f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return payload


if __name__ == "__main__":
    main()

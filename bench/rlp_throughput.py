"""RLP throughput, side by side: ponder's engine vs a per-position loop vs TRL's GRPOTrainer.

All three do the same work on copies of the same model: ``docs x positions`` positions per step,
each with a ``--prefix``-token prefix (positions sit at the end of ``--prefix + 1``-token
documents), G thoughts of at most ``--thought`` tokens, the information-gain reward
``log p(x_t | x_<t, c) - log p_EMA(x_t | x_<t)``, one clipped policy-gradient update and an EMA
update per step.

(a) ``ponder``: ``RLPTrainer.train_step`` (shared-prefix KV-cache sampling, one baseline pass per
    document, one tree-shaped forward per step for reward and loss).
(b) ``loop``: per position, ``model.generate`` with ``num_return_sequences=G`` (prefills every
    copy), a reward pass over the G sequences, an EMA pass over the prefix and a separate
    gradient pass: what the public RLP prototypes do.
(c) ``trl``: TRL's ``GRPOTrainer`` with an information-gain reward function and an EMA callback.

Prints positions/s, thought tokens/s, the ratios a/b and a/c and the achieved model FLOP/s of (a)
as a fraction of a dense fp32 matmul peak measured in the same run::

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/rlp_throughput.py --quick
    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/rlp_throughput.py --model smollm2-135m --docs 1 --positions 2 --steps 1
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


# ---------------------------------------------------------------- setup


def build_model(name: str):
    """(model, tokenizer) in fp32 eval mode. ``tiny``: a fresh tiny arch with room for the long prefix."""
    if name == "tiny":
        from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model

        tok = build_char_tokenizer()
        tok.model_max_length = 2048
        return build_tiny_model(tok, TinyArch(max_positions=2048), seed=0).float(), tok
    from ponder.lm.load import load_model

    lm = load_model(name, device="cpu", dtype=torch.float32)
    return lm.model, lm.tokenizer


def make_docs(tok, num_docs: int, prefix: int) -> list[str]:
    """``num_docs`` texts of ``prefix + 1`` tokens: windows of this repository's README and design notes."""
    text = "\n\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "src/ponder").rglob("*.py"))])
    ids = tok(text, add_special_tokens=False)["input_ids"]
    special = 1 if tok("a")["input_ids"][0] == tok.bos_token_id else 0
    out = []
    for i in range(num_docs):
        window = ids[i * 997 : i * 997 + prefix + 1 - special]
        out.append(tok.decode(window))
    return out


def matmul_peak(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Dense fp32 matmul FLOP/s on this machine with ``threads`` threads (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def matmul_params(model) -> int:
    """Weights that multiply activations (every Linear, the LM head included)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def attn_flops(model, query_contexts: float) -> float:
    """Forward FLOPs of causal attention scores and mixing for queries with the given summed context length."""
    cfg = model.config
    return 4 * cfg.num_hidden_layers * cfg.hidden_size * query_contexts


# ---------------------------------------------------------------- (a) ponder


def fixed_positions(per_doc: int, k: int = 1):
    """choose_positions replacement: the last ``per_doc`` positions of each document (prefix ~= doc length - 1)."""

    def choose(docs, _per_doc, generator, weights=None):
        return [(d, len(doc.ids) - k - j) for d, doc in enumerate(docs) for j in reversed(range(per_doc))]

    return choose


def run_ponder(model, tok, texts, args):
    import ponder.rl.rollout as rollout
    from ponder.rl.rlp import RLPConfig, RLPTrainer

    cfg = RLPConfig(
        steps=10**6,
        docs_per_step=args.docs,
        positions_per_doc=args.positions,
        group_size=args.group,
        context_length=args.prefix + 64,
        max_thought_tokens=args.thought,
        temperature=1.0,
        lr=1e-6,
        generation_backend="transformers",
    )
    real = rollout.choose_positions
    rollout.choose_positions = fixed_positions(args.positions)
    flops = {"value": 0.0}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = RLPTrainer(model, tok, None, cfg, tmp)
            stream = iter([(t, None) for t in texts] * (args.steps + args.warmup))
            times, positions, thoughts = [], 0, 0
            for step in range(args.steps + args.warmup):
                before = dict(trainer.counters)
                t0 = time.perf_counter()
                trainer.train_step(stream)
                dt = time.perf_counter() - t0
                if step >= args.warmup:
                    delta = {k: trainer.counters[k] - before[k] for k in before}
                    times.append(dt)
                    positions += delta["positions"]
                    thoughts += delta["thought_tokens"]
                    flops["value"] += ponder_step_flops(model, delta, args)
    finally:
        rollout.choose_positions = real
    return {
        "seconds": sum(times),
        "positions": positions,
        "thought_tokens": thoughts,
        "flops": flops["value"],
        "layout": trainer.layout,
    }


def ponder_step_flops(model, delta: dict, args) -> float:
    """Model FLOPs of one engine step from its counters (useful work: causal attention, no padding)."""
    n = matmul_params(model)
    doc, pos, thought, branch = (
        delta["document_tokens"],
        delta["positions"],
        delta["thought_tokens"],
        delta["rollout_tokens"],  # the branches <think> c </think> x_t
    )
    p, g = args.prefix, args.group
    base = 2 * n * doc + attn_flops(model, doc * doc / 2 / max(1, args.docs))  # one pass per document
    prefill = 2 * n * pos * (p + 1) + attn_flops(model, pos * (p + 1) ** 2 / 2)
    mean_len = thought / max(1, pos * g)
    decode = 2 * n * (thought + pos * g) + attn_flops(model, (thought + pos * g) * (p + 1 + mean_len / 2))
    tree = args.docs * p + branch  # the tree forward: each document's prefix once, then the branches
    train = 3 * (2 * n * tree + attn_flops(model, args.docs * p * p / 2 + branch * (p + mean_len / 2)))
    return base + prefill + decode + train


# ---------------------------------------------------------------- (b) per-position loop


def run_loop(model, tok, texts, args):
    """One sampling call and separate scoring passes per position; one optimizer step per step."""
    from ponder.lm.score import pad_ids, token_logprobs
    from ponder.lm.thoughts import think_token_ids
    from ponder.rl.advantages import group_advantages
    from ponder.rl.ema import EMATeacher
    from ponder.rl.losses import clipped_surrogate

    open_id, close_id = think_token_ids(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    ema = EMATeacher.from_model(model, 0.999)
    docs = [tok(t)["input_ids"] for t in texts]
    times, positions, thoughts = [], 0, 0
    for step in range(args.steps + args.warmup):
        t0 = time.perf_counter()
        count = 0
        opt.zero_grad()
        num_pos = len(docs) * args.positions
        for ids in docs:
            for j in reversed(range(args.positions)):
                t = len(ids) - 1 - j
                prefix, target = ids[:t], ids[t : t + 1]
                model.eval()
                with torch.no_grad():
                    out = model.generate(
                        torch.tensor([prefix + [open_id]]),
                        do_sample=True,
                        temperature=1.0,
                        top_k=0,
                        max_new_tokens=args.thought,
                        num_return_sequences=args.group,
                        eos_token_id=close_id,
                        pad_token_id=pad,
                    )
                cont = out[:, len(prefix) + 1 :].tolist()
                cs = [c[: c.index(close_id)] if close_id in c else [x for x in c if x != pad] for c in cont]
                count += sum(len(c) for c in cs)
                seqs = [prefix + [open_id] + c + [close_id] + target for c in cs]
                x, m = pad_ids(seqs, pad)
                with torch.no_grad():  # reward pass: log p(x_t | x_<t, c)
                    lp = token_logprobs(model, x, m)
                    ends = m.sum(-1) - 1
                    policy_t = lp[torch.arange(len(seqs)), ends]
                    base = token_logprobs(ema.model, *pad_ids([prefix + target], pad))[0, len(prefix)]
                adv = group_advantages((policy_t - base)[None], correction="rlp").flatten()
                model.train()
                logp = token_logprobs(model, x, m)  # gradient pass
                mask = torch.zeros_like(m, dtype=torch.bool)
                for r, c in enumerate(cs):
                    mask[r, len(prefix) + 1 : len(prefix) + 1 + len(c)] = True
                loss, _ = clipped_surrogate(logp, logp.detach(), adv, mask, reduce="rlp")
                (loss / num_pos).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model)
        dt = time.perf_counter() - t0
        if step >= args.warmup:
            times.append(dt)
            positions += num_pos
            thoughts += count
    return {"seconds": sum(times), "positions": positions, "thought_tokens": thoughts}


# ---------------------------------------------------------------- (c) TRL GRPOTrainer


def run_trl(model, tok, texts, args):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from ponder.lm.score import pad_ids, token_logprobs
    from ponder.lm.thoughts import THINK_OPEN, think_token_ids
    from ponder.rl.ema import EMATeacher

    open_id, close_id = think_token_ids(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    # A GGUF checkpoint is de-quantized to fp32 on load but keeps the loader's "quantized" flag, which the
    # Trainer refuses to fine-tune; the weights are plain fp32 tensors.
    model.is_quantized, model.hf_quantizer = False, None
    model.generation_config.eos_token_id = close_id  # a completion is a thought: it ends at </think>
    model.generation_config.pad_token_id = pad
    ema = EMATeacher.from_model(model, 0.999)
    rows = []
    for text in texts:
        ids = tok(text)["input_ids"]
        for j in reversed(range(args.positions)):
            t = len(ids) - 1 - j
            rows.append(
                {
                    "prompt": tok.decode(ids[:t], skip_special_tokens=True) + THINK_OPEN,
                    "prefix_ids": ids[:t],
                    "target_id": ids[t],
                }
            )
    per_step = len(rows)
    counted = {"thought_tokens": 0}

    def info_gain(prompts, completions, completion_ids, prefix_ids, target_id, **_):
        cs = [[x for x in c if x not in (close_id, pad)] for c in completion_ids]
        counted["thought_tokens"] += sum(len(c) for c in cs)
        seqs = [list(p) + [open_id] + c + [close_id, y] for p, c, y in zip(prefix_ids, cs, target_id)]
        with torch.no_grad():
            x, m = pad_ids(seqs, pad)
            lp = token_logprobs(model, x, m)[torch.arange(len(seqs)), m.sum(-1) - 1]
            bx, bm = pad_ids([list(p) + [y] for p, y in zip(prefix_ids, target_id)], pad)
            base = token_logprobs(ema.model, bx, bm)[torch.arange(len(seqs)), bm.sum(-1) - 1]
        return (lp - base).tolist()

    class EMACallback(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], None

        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            ema.update(model)
            self.times.append(time.perf_counter() - self.t0)

    steps = args.steps + args.warmup
    data = Dataset.from_list(rows * steps)
    cb = EMACallback()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GRPOConfig(
            output_dir=tmp,
            per_device_train_batch_size=per_step * args.group,
            num_generations=args.group,
            max_completion_length=args.thought,
            temperature=1.0,
            top_k=0,
            learning_rate=1e-6,
            beta=0.0,
            max_steps=steps,
            logging_steps=10**6,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            bf16=False,
            fp16=False,
            shuffle_dataset=False,
            dataloader_num_workers=0,
            disable_dropout=True,
            remove_unused_columns=False,
            seed=0,
        )
        trainer = GRPOTrainer(
            model=model, reward_funcs=[info_gain], args=cfg, train_dataset=data, processing_class=tok, callbacks=[cb]
        )
        before = counted["thought_tokens"]
        trainer.train()
    times = cb.times[args.warmup :]
    per_step_tokens = (counted["thought_tokens"] - before) / max(1, len(cb.times))
    return {"seconds": sum(times), "positions": per_step * len(times), "thought_tokens": per_step_tokens * len(times)}


# ---------------------------------------------------------------- main


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="tiny (a fresh tiny arch with 2048 positions) or smollm2-135m")
    ap.add_argument("--prefix", type=int, default=512, help="prefix tokens before each position")
    ap.add_argument("--group", type=int, default=8, help="thoughts per position (G)")
    ap.add_argument("--thought", type=int, default=64, help="thought budget in tokens")
    ap.add_argument("--docs", type=int, default=4, help="documents per step")
    ap.add_argument("--positions", type=int, default=4, help="positions per document (they share its prefix)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per implementation")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")), help="torch threads")
    ap.add_argument("--only", default="ponder,loop,trl", help="comma list of implementations to run")
    ap.add_argument("--quick", action="store_true", help="tiny model, 1 doc x 2 positions, 1 timed step, no warmup")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.model, args.docs, args.positions, args.steps, args.warmup = "tiny", 1, 2, 1, 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import logging

    logging.disable(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    peak = matmul_peak(args.threads)
    base_model, tok = build_model(args.model)
    base_model.eval()
    texts = make_docs(tok, args.docs, args.prefix)
    runners = {"ponder": run_ponder, "loop": run_loop, "trl": run_trl}
    results = {}
    for name in args.only.split(","):
        model = copy.deepcopy(base_model)
        t0 = time.perf_counter()
        try:
            results[name] = runners[name](model, tok, texts, args)
        except Exception as e:  # noqa: BLE001 - report the others' figures rather than lose them
            print(f"  {name}: FAILED: {type(e).__name__}: {e}", flush=True)
            continue
        results[name]["wall_s"] = time.perf_counter() - t0
        print(
            f"  {name}: {results[name]['seconds']:.2f} s timed, {results[name]['positions']} positions, "
            f"{results[name]['thought_tokens']:.0f} thought tokens ({results[name]['wall_s']:.1f} s total)",
            flush=True,
        )
    rows = []
    for name, r in results.items():
        rows.append(
            {
                "impl": name,
                "seconds": r["seconds"],
                "positions": r["positions"],
                "thought_tokens": r["thought_tokens"],
                "positions_per_s": r["positions"] / r["seconds"],
                "thought_tokens_per_s": r["thought_tokens"] / r["seconds"],
            }
        )
    by = {r["impl"]: r for r in rows}

    def ratio(other):
        return (
            by["ponder"]["positions_per_s"] / by[other]["positions_per_s"]  # noqa: E731
            if "ponder" in by and other in by
            else None
        )

    frac = None
    if "ponder" in results:
        achieved = results["ponder"]["flops"] / results["ponder"]["seconds"]
        frac = achieved / peak
    out = {
        "model": args.model,
        "device": "cpu",
        "threads": args.threads,
        "work": {
            "prefix": args.prefix,
            "group": args.group,
            "thought": args.thought,
            "docs": args.docs,
            "positions_per_doc": args.positions,
            "steps": args.steps,
            "warmup": args.warmup,
        },
        "layout": results.get("ponder", {}).get("layout"),
        "matmul_peak_flops": peak,
        "rows": rows,
        "ratio_vs_loop": ratio("loop"),
        "ratio_vs_trl": ratio("trl"),
        "matmul_peak_fraction": frac,
    }
    print(
        f"\nmodel {args.model}, CPU, {args.threads} thread(s); prefix {args.prefix}, G={args.group}, thought "
        f"<= {args.thought}, {args.docs} docs x {args.positions} positions per step, {args.steps} timed steps"
    )
    print("| impl | s | positions/s | thought tokens/s | ponder / impl |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        rel = by["ponder"]["positions_per_s"] / r["positions_per_s"] if "ponder" in by else float("nan")
        print(
            f"| {r['impl']} | {r['seconds']:.2f} | {r['positions_per_s']:.3f} | {r['thought_tokens_per_s']:.1f} | "
            f"{rel:.2f}x |"
        )
    if frac is not None:
        print(
            f"\nponder: {results['ponder']['flops'] / results['ponder']['seconds'] / 1e9:.2f} GFLOP/s of model "
            f"work = {frac:.1%} of the measured fp32 matmul peak ({peak / 1e9:.1f} GFLOP/s)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()

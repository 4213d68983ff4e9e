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

Two more measurements (``--only ...,train,sft``; :mod:`throughput_probes`):

(d) ``train``: the trainer's forward + backward + optimizer step alone on the same shared-prefix
    batch: trainer tokens/s (prefix and thought tokens through forward and backward, as prime-rl
    counts them) and MFU.
(e) ``sft``: plain next-token training on the same documents: the RLP / SFT documents-per-second ratio.

Prints positions/s, thought tokens/s, the ratios a/b and a/c, and the model FLOP/s of (a), (d) and
(e) as fractions of a dense matmul peak measured in the same run, in the run's dtype, on its device;
peak GPU memory per implementation on CUDA. ``--model``: tiny, smollm2-135m, a random-init shape
(``smollm2-135m-shape``, ``qwen3-0.6b-shape``, ``NAME:LAYERS``) or a model directory::

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/rlp_throughput.py --quick
    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/rlp_throughput.py --model smollm2-135m --docs 1 --positions 2 --steps 1
    PYTHONPATH=src python bench/rlp_throughput.py --device cuda --dtype bf16 --model qwen3-0.6b-shape --only ponder,train,sft
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from throughput_probes import (  # noqa: E402 - after the path set-up above
    DTYPES,
    attn_flops,
    matmul_params,
    matmul_peak,
    peak_memory,
    reset_peak_memory,
    run_sft,
    sync,
    train_pass,
)

# ---------------------------------------------------------------- setup


def build_model(name: str, device: str = "cpu", attn: str = "sdpa"):
    """(model, tokenizer), fp32 weights in eval mode on ``device``. ``tiny``: a fresh tiny arch with room for the long prefix."""
    if name == "tiny":
        from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model

        tok = build_char_tokenizer()
        tok.model_max_length = 2048
        model = build_tiny_model(tok, TinyArch(max_positions=2048), seed=0).float().to(device)
    else:
        from ponder.models.lookup import load_model

        lm = load_model(name, device=device, dtype=torch.float32)
        model, tok = lm.model, lm.tokenizer
    if attn != model.config._attn_implementation:
        model.set_attn_implementation(attn)
    return model, tok


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


# ---------------------------------------------------------------- (a) ponder


def fixed_positions(per_doc: int, k: int = 1):
    """choose_positions replacement: the last ``per_doc`` positions of each document (prefix ~= doc length - 1)."""

    def choose(docs, _per_doc, generator, weights=None):
        return [(d, len(doc.ids) - k - j) for d, doc in enumerate(docs) for j in reversed(range(per_doc))]

    return choose


def run_ponder(model, tok, texts, args):
    from types import SimpleNamespace

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
        autocast_bf16=args.dtype == "bf16",
        report_to=[],
    )
    real = rollout.choose_positions
    rollout.choose_positions = fixed_positions(args.positions)
    flops = {"value": 0.0}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = SimpleNamespace(stream=lambda: iter([(t, None) for t in texts] * (args.steps + args.warmup)))
            trainer = RLPTrainer(model, tok, source, cfg, tmp)
            counters = trainer.recipe.counters
            times, positions, thoughts = [], 0, 0
            for step in range(args.steps + args.warmup):
                before = dict(counters)
                sync(args.device)
                t0 = time.perf_counter()
                trainer.train_step()
                sync(args.device)
                dt = time.perf_counter() - t0
                if step >= args.warmup:
                    delta = {k: counters[k] - before.get(k, 0) for k in counters}
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
        "layout": trainer.recipe.rollout.batch.layout,
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
    from ponder.lm.delimiters import think_token_ids
    from ponder.lm.logprobs import token_logprobs
    from ponder.lm.padding import pad_ids
    from ponder.rl.advantages import group_advantages
    from ponder.rl.ema import EMATeacher
    from ponder.train.losses import clipped_surrogate

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

    from ponder.lm.delimiters import THINK_OPEN, think_token_ids
    from ponder.lm.logprobs import token_logprobs
    from ponder.lm.padding import pad_ids
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


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="tiny, smollm2-135m, a random-init shape (NAME[:LAYERS]) or a dir")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (loop and trl run on cpu only)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="bf16: autocast over fp32 weights")
    ap.add_argument("--attn", default="sdpa", help="attention implementation (flash: RLP falls back to padded rows)")
    ap.add_argument("--prefix", type=int, default=512, help="prefix tokens before each position")
    ap.add_argument("--group", type=int, default=8, help="thoughts per position (G)")
    ap.add_argument("--thought", type=int, default=64, help="thought budget in tokens")
    ap.add_argument("--docs", type=int, default=4, help="documents per step")
    ap.add_argument("--positions", type=int, default=4, help="positions per document (they share its prefix)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per implementation")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")), help="torch threads")
    ap.add_argument("--only", default="ponder,loop,trl", help="comma list of: ponder, loop, trl, train, sft")
    ap.add_argument("--quick", action="store_true", help="tiny model, 1 doc x 2 positions, 1 timed step, no warmup")
    ap.add_argument("--peak-n", type=int, help="matmul size of the peak probe (default: 8192 on a GPU, 2048 on a CPU)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.model, args.docs, args.positions, args.steps, args.warmup = "tiny", 1, 2, 1, 0
    if args.device != "cpu" and {"loop", "trl"} & set(args.only.split(",")):
        ap.error("loop and trl run on the CPU only: use --only ponder,train,sft with --device cuda")
    return args


def step_row(name: str, r: dict) -> dict:
    """A timed RLP implementation's throughput (positions and thought tokens per second)."""
    return {
        "impl": name,
        "seconds": r["seconds"],
        "positions": r["positions"],
        "thought_tokens": r["thought_tokens"],
        "positions_per_s": r["positions"] / r["seconds"],
        "thought_tokens_per_s": r["thought_tokens"] / r["seconds"],
        "peak_memory_bytes": r.get("peak_memory_bytes"),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import logging

    logging.disable(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    peak = matmul_peak(args.device, DTYPES[args.dtype], args.peak_n)
    base_model, tok = build_model(args.model, args.device, args.attn)
    base_model.eval()
    texts = make_docs(tok, args.docs, args.prefix)
    doc_ids = [tok(t)["input_ids"] for t in texts]
    runners = {
        "ponder": run_ponder,
        "loop": run_loop,
        "trl": run_trl,
        "train": lambda m, t, x, a: train_pass(m, t, doc_ids, a, peak),
        "sft": lambda m, t, x, a: run_sft(m, t, x, a, peak),
    }
    results = {}
    for name in args.only.split(","):
        model = copy.deepcopy(base_model)
        reset_peak_memory(args.device)
        t0 = time.perf_counter()
        try:
            results[name] = runners[name](model, tok, texts, args)
        except Exception as e:  # noqa: BLE001 - report the others' figures rather than lose them
            print(f"  {name}: FAILED: {type(e).__name__}: {e}", flush=True)
            results[name] = {"failed": f"{type(e).__name__}: {e}"}
            continue
        finally:
            del model
        results[name]["wall_s"] = time.perf_counter() - t0
        results[name].setdefault("peak_memory_bytes", peak_memory(args.device))
        print(f"  {name}: done in {results[name]['wall_s']:.1f} s", flush=True)
    ok = {k: v for k, v in results.items() if "failed" not in v}
    rows = [step_row(name, r) for name, r in ok.items() if name in ("ponder", "loop", "trl")]
    by = {r["impl"]: r for r in rows}

    def ratio(other):
        return (
            by["ponder"]["positions_per_s"] / by[other]["positions_per_s"] if "ponder" in by and other in by else None
        )

    frac = ok["ponder"]["flops"] / ok["ponder"]["seconds"] / peak if "ponder" in ok else None
    sft, train = ok.get("sft"), ok.get("train")
    rlp_docs_per_s = args.docs * args.steps / ok["ponder"]["seconds"] if "ponder" in ok else None
    out = {
        "model": args.model,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "dtype": args.dtype,
        "attn": args.attn,
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
        "parameters": sum(p.numel() for p in base_model.parameters()),
        "layout": ok.get("ponder", {}).get("layout"),
        "matmul_peak_flops": peak,
        "rows": rows,
        "ratio_vs_loop": ratio("loop"),
        "ratio_vs_trl": ratio("trl"),
        "matmul_peak_fraction": frac,
        "train_pass": train,
        "sft": sft,
        "rlp_docs_per_s": rlp_docs_per_s,
        "rlp_vs_sft_docs_per_s": rlp_docs_per_s / sft["docs_per_s"] if sft and rlp_docs_per_s else None,
        "failed": {k: v["failed"] for k, v in results.items() if "failed" in v},
    }
    print_report(out, args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


def print_report(out: dict, args) -> None:
    gib = 2**30
    print(
        f"\nmodel {args.model} ({out['parameters'] / 1e6:.1f}M), {out['device']}, {args.dtype}, {args.threads} thread(s); "
        f"prefix {args.prefix}, G={args.group}, thought <= {args.thought}, {args.docs} docs x {args.positions} "
        f"positions per step, {args.steps} timed steps; matmul peak {out['matmul_peak_flops'] / 1e12:.2f} TFLOP/s"
    )
    by = {r["impl"]: r for r in out["rows"]}
    print("| impl | s | positions/s | thought tokens/s | ponder / impl |\n| --- | --- | --- | --- | --- |")
    for r in out["rows"]:
        rel = by["ponder"]["positions_per_s"] / r["positions_per_s"] if "ponder" in by else float("nan")
        print(
            f"| {r['impl']} | {r['seconds']:.2f} | {r['positions_per_s']:.3f} | {r['thought_tokens_per_s']:.1f} | "
            f"{rel:.2f}x |"
        )
    if out["matmul_peak_fraction"] is not None:
        print(f"\nponder full step (sampling included): {out['matmul_peak_fraction']:.1%} of the matmul peak")
    for name in ("train_pass", "sft"):
        r = out[name]
        if r:
            mem = f", peak memory {r['peak_memory_bytes'] / gib:.2f} GiB" if r["peak_memory_bytes"] else ""
            print(
                f"{name}: {r['tokens_per_s']:.0f} tokens/s, {r['docs_per_s']:.2f} docs/s, "
                f"MFU {r['mfu']:.1%} of the measured peak{mem}"
            )
    if out["rlp_vs_sft_docs_per_s"] is not None:
        print(f"RLP / SFT documents per second: {out['rlp_vs_sft_docs_per_s']:.3f}x (the paper reports 0.44x)")
    for name, err in out["failed"].items():
        print(f"FAILED {name}: {err}")


if __name__ == "__main__":
    main()

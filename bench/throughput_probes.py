"""Measurements shared by the throughput benches: the matmul peak, model FLOPs, the RLP trainer pass, SFT.

* :func:`matmul_peak`: dense matmul FLOP/s of this device in a dtype, measured now (the MFU denominator).
* :func:`train_pass`: the RLP trainer's forward and backward (and optimizer step) alone, on the
  shared-prefix batch ``docs x positions x G`` thoughts of ``--thought`` tokens, timed without
  sampling. Its tokens are counted the way prime-rl counts trainer tokens for its published figures
  (every token that goes through the forward and backward: here each prefix once plus every
  ``<think> c </think> x_t`` branch), so ``tokens_per_s`` compares with theirs.
* :func:`run_sft`: plain next-token training on the same documents, same batch, same precision.

Model FLOPs count useful work only: ``2 x (weights of every Linear) x tokens`` for the forward (the
LM head only where logits are taken), ``4 x layers x heads x head_dim`` per attended (query, key)
pair (causal, the 4D tree mask's pairs exactly), and twice the forward for the backward.
"""

from __future__ import annotations

import contextlib
import math
import time

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device="cpu", dtype: torch.dtype = torch.float32, n: int | None = None, rounds: int = 5) -> float:
    """Best dense ``n x n @ n x n`` FLOP/s over ``rounds`` (each the mean of 10 products on a GPU, 1 on a CPU)."""
    dev = torch.device(device)
    n = n or (8192 if dev.type == "cuda" else 2048)
    inner = 10 if dev.type == "cuda" else 1
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    best = math.inf
    for _ in range(rounds):
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync(dev)
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2 * n**3 / best


def matmul_params(model) -> int:
    """Weights that multiply activations (every Linear, the LM head included)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def lm_head_params(model) -> int:
    return model.get_output_embeddings().weight.numel()


def attn_flops(model, pairs: float) -> float:
    """Forward FLOPs of attention scores and mixing over ``pairs`` attended (query, key) pairs."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 4 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * pairs


def causal_pairs(lengths) -> float:
    return float(sum(n * (n + 1) / 2 for n in lengths))


def autocast(device, dtype: torch.dtype):
    """bf16 autocast over fp32 weights (what ``--autocast-bf16`` does in the trainer); nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def peak_memory(device) -> int | None:
    return int(torch.cuda.max_memory_allocated()) if torch.device(device).type == "cuda" else None


def reset_peak_memory(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def timed_steps(step, device, steps: int, warmup: int) -> float:
    """Seconds of ``steps`` calls of ``step`` after ``warmup`` untimed ones (device synchronised)."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return time.perf_counter() - t0


def _summary(seconds: float, tokens: int, flops: float, peak: float, steps: int, docs: int, device) -> dict:
    return {
        "seconds": seconds,
        "steps": steps,
        "tokens_per_step": tokens,
        "tokens_per_s": tokens * steps / seconds,
        "docs_per_s": docs * steps / seconds,
        "model_flops_per_step": flops,
        "model_flops_per_s": flops * steps / seconds,
        "mfu": flops * steps / seconds / peak,
        "peak_memory_bytes": peak_memory(device),
    }


def train_pass(model, tok, doc_ids: list[list[int]], args, peak: float) -> dict:
    """Time the RLP trainer's forward + backward + AdamW step on a shared-prefix batch (no sampling).

    Thoughts are ``--thought`` tokens drawn from the documents' own tokens and left unclosed: what a
    random-initialised model samples (it never closes a thought), so the batch has the budgeted size.
    """
    from ponder.lm.delimiters import think_token_ids
    from ponder.lm.padding import pad_id_of
    from ponder.lm.thinking import Thoughts
    from ponder.rl.batches import resolve_layout, rlp_padded_batch, rlp_tree_batch
    from ponder.train.losses import clipped_surrogate

    device, dtype = args.device, DTYPES[args.dtype]
    open_id, close_id = think_token_ids(tok)
    pad = pad_id_of(tok)
    positions = [(d, len(ids) - 1 - j) for d, ids in enumerate(doc_ids) for j in reversed(range(args.positions))]
    num = len(positions) * args.group
    gen = torch.Generator().manual_seed(0)
    pool = torch.tensor(sorted({t for ids in doc_ids for t in ids[1:]}))
    thoughts = Thoughts(
        [doc_ids[d][:t] for d, t in positions],
        args.group,
        [pool[torch.randint(len(pool), (args.thought,), generator=gen)].tolist() for _ in range(num)],
        [torch.zeros(args.thought) for _ in range(num)],
        torch.zeros(num, dtype=torch.bool),
    )
    layout = resolve_layout(model)
    if layout == "tree":
        batch = rlp_tree_batch(doc_ids, positions, 1, thoughts, open_id, close_id, pad, device=device)
        prefix_lengths = batch.prefix_mask.sum(1).tolist()
        pairs = causal_pairs(prefix_lengths) + float(batch.allowed[batch.real_tokens].sum())
        head_tokens = int((batch.loss_mask | batch.target_mask).sum())  # only scored tokens reach the head
    else:
        prefixes = [doc_ids[d][:t] for d, t in positions]
        targets = [doc_ids[d][t : t + 1] for d, t in positions]
        batch = rlp_padded_batch(prefixes, targets, thoughts, open_id, close_id, pad, device=device)
        lengths = batch.attention_mask.sum(1).tolist()
        pairs, head_tokens = causal_pairs(lengths), int((batch.loss_mask | batch.target_mask).sum())
    tokens = batch.num_tokens
    body = matmul_params(model) - lm_head_params(model)
    flops = 3 * (2 * body * tokens + 2 * lm_head_params(model) * head_tokens + attn_flops(model, pairs))
    advantages = torch.randn(num, generator=gen).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step():
        with autocast(device, dtype):
            logp = batch.scores(model, 1 / 0.7)[0]
        loss, _ = clipped_surrogate(logp, logp.detach(), advantages, batch.loss_mask, reduce="rlp")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    reset_peak_memory(device)
    seconds = timed_steps(step, device, args.steps, max(1, args.warmup))
    out = _summary(seconds, tokens, flops, peak, args.steps, len(doc_ids), device)
    out.update({"layout": layout, "thoughts": num, "thought_tokens_per_step": num * args.thought})
    return out


def run_sft(model, tok, texts: list[str], args, peak: float) -> dict:
    """Time next-token training (forward with labels, backward, AdamW step) on the same documents."""
    import itertools

    from ponder.train.next_token import collate_windows, document_token_windows

    device, dtype = args.device, DTYPES[args.dtype]
    rows = list(itertools.islice(document_token_windows(tok, iter(texts), args.prefix + 2), len(texts)))
    ids, mask, labels = collate_windows(rows, tok.pad_token_id, device)
    tokens = int(mask.sum())
    flops = 3 * (2 * matmul_params(model) * tokens + attn_flops(model, causal_pairs(mask.sum(1).tolist())))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step():
        with autocast(device, dtype):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    reset_peak_memory(device)
    seconds = timed_steps(step, device, args.steps, max(1, args.warmup))
    return _summary(seconds, tokens, flops, peak, args.steps, len(texts), device)

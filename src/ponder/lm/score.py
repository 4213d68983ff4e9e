"""Teacher-forced scoring: per-token log-probs of given sequences under a causal LM.

Everything is computed in fp32 whatever the model's dtype: the logits are upcast one batch
chunk at a time and only the chosen token's log-prob (``logit - logsumexp``) is kept, so the
full fp32 ``[B, T, V]`` log-softmax never exists at once.

Shapes: ``B`` batch, ``T`` sequence length, ``V`` vocabulary.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

#: Cap on the fp32 logits upcast at once (elements); about 1 GiB.
_CHUNK_ELEMENTS = 1 << 28

TokenSeqs = Sequence[str] | Sequence[Sequence[int]]


# ---------------------------------------------------------------- shared helpers


def model_device(model) -> torch.device:
    """Where the model's inputs go (the input embeddings' device; right for device maps too)."""
    return model.get_input_embeddings().weight.device


def pad_id_of(tokenizer) -> int:
    """Id used to fill padding: pad, else eos, else 0 (padding is always masked out)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def supports_logits_to_keep(model) -> bool:
    """Whether ``model.forward`` takes ``logits_to_keep`` (computes logits for the last k positions only)."""
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def pad_ids(seqs: Sequence[Sequence[int]], pad_id: int, device=None, side: str = "right") -> tuple[Tensor, Tensor]:
    """Pad id lists to ``(input_ids [B, L], attention_mask [B, L])`` (mask is int64 0/1), on ``side``."""
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if len(seq):
            cols = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
            ids[row, cols] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, cols] = 1
    return ids.to(device), mask.to(device)


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[Tensor, Tensor]:
    """Left-pad id lists (see :func:`pad_ids`).

    Left padding puts every sequence's last token in the last column, which is what both
    decoding (next-token logits at ``[:, -1]``) and continuation scoring (``logits_to_keep``)
    want.
    """
    return pad_ids(seqs, pad_id, device, side="left")


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """``[B, T]`` positions counting only attended tokens (0 on and before the first one).

    Right for left, right or no padding; padded positions get a harmless clamped value.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def tokenize(tokenizer, items: TokenSeqs, add_special_tokens: bool) -> list[list[int]]:
    """Texts -> id lists (``add_special_tokens`` as given); id sequences are passed through."""
    items = list(items)
    if not items:
        return []
    if isinstance(items[0], str):
        return tokenizer(items, add_special_tokens=add_special_tokens)["input_ids"]
    return [[int(t) for t in seq] for seq in items]


def tokenize_pairs(tokenizer, contexts: TokenSeqs, continuations: TokenSeqs, add_special_tokens: bool = True):
    """``(context_ids, continuation_ids)``: contexts with special tokens, continuations without; validated."""
    ctx_ids = tokenize(tokenizer, contexts, add_special_tokens)
    cont_ids = tokenize(tokenizer, continuations, False)
    if len(ctx_ids) != len(cont_ids):
        raise ValueError(f"{len(ctx_ids)} contexts but {len(cont_ids)} continuations")
    if any(len(c) == 0 for c in ctx_ids):
        raise ValueError("every context needs at least one token (nothing conditions the first continuation token)")
    return ctx_ids, cont_ids


# ---------------------------------------------------------------- log-probs


def logprobs_from_logits(
    logits: Tensor, targets: Tensor, return_entropy: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Log-prob of ``targets [...]`` under ``logits [..., V]`` (fp32), optionally with entropy [...] (nats).

    Upcasts at most ``_CHUNK_ELEMENTS`` logits at a time (batch rows, or time steps when one
    row is larger), slicing views so a non-contiguous ``logits[:, :-1]`` is never copied
    whole. Differentiable.
    """
    if logits.dim() < 2:
        raise ValueError("logits must be [..., V]")
    lead = logits.shape[:-1]
    vocab = logits.shape[-1]
    if logits.numel() == 0:
        empty = logits.new_zeros(lead, dtype=torch.float32)
        return (empty, empty.clone()) if return_entropy else empty
    x = logits.unsqueeze(1) if logits.dim() == 2 else logits.reshape(lead[0], -1, vocab)  # [B, T, V], views
    y = targets.reshape(x.shape[:2])
    width = x.shape[1]
    rows = max(1, _CHUNK_ELEMENTS // max(width * vocab, 1))
    cols = width if width * vocab <= _CHUNK_ELEMENTS else max(1, _CHUNK_ELEMENTS // vocab)
    logp_rows, ent_rows = [], []
    for b in range(0, x.shape[0], rows):
        logp_cols, ent_cols = [], []
        for t in range(0, width, cols):
            chunk = x[b : b + rows, t : t + cols].float()
            lse = torch.logsumexp(chunk, dim=-1)
            logp_cols.append(chunk.gather(-1, y[b : b + rows, t : t + cols, None]).squeeze(-1) - lse)
            if return_entropy:  # H = logsumexp - E_p[logit]
                ent_cols.append(lse - (torch.softmax(chunk, dim=-1) * chunk).sum(-1))
        logp_rows.append(torch.cat(logp_cols, dim=1))
        if return_entropy:
            ent_rows.append(torch.cat(ent_cols, dim=1))
    logp = torch.cat(logp_rows).reshape(lead)
    return (logp, torch.cat(ent_rows).reshape(lead)) if return_entropy else logp


def token_logprobs(
    model,
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor | None = None,
    return_entropy: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Teacher-forced ``logprobs [B, T]``: ``logprobs[:, t] = log p(input_ids[:, t] | input_ids[:, <t])``.

    fp32. Zero where there is nothing to score: column 0, padding, and the first attended
    token of a left-padded row (it has no context). ``position_ids`` default to counting
    attended tokens, so left- and right-padded batches both score correctly.

    With ``return_entropy`` also returns ``entropy [B, T]``: the entropy (nats) of the
    distribution that predicted token ``t`` (same alignment and zeros as ``logprobs``).

    Not wrapped in ``no_grad``: gradients flow to the model (used inside training losses).
    """
    attention_mask = attention_mask.to(input_ids.device)
    if position_ids is None:
        position_ids = position_ids_from_mask(attention_mask)
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).logits  # [B, T, V]
    out = logprobs_from_logits(logits[:, :-1], input_ids[:, 1:], return_entropy)
    # A token is scored when it and its predecessor are both attended.
    scored = (attention_mask[:, 1:] != 0) & (attention_mask[:, :-1] != 0)  # [B, T-1]
    zero_col = logits.new_zeros((input_ids.shape[0], 1), dtype=torch.float32)
    if return_entropy:
        logp, ent = out
        return (
            torch.cat([zero_col, logp * scored], dim=1),
            torch.cat([zero_col, ent * scored], dim=1),
        )
    return torch.cat([zero_col, out * scored], dim=1)


# ---------------------------------------------------------------- pairs


@dataclass
class PairScores:
    """Scores of N (context, continuation) pairs; all tensors on CPU, fp32.

    ``logprobs[i]``: ``[len(continuation_i)]`` per-token log-probs; ``sum`` ``[N]``;
    ``num_tokens`` ``[N]``; ``mean`` ``[N]`` (0 for an empty continuation).
    """

    logprobs: list[Tensor]
    sum: Tensor
    num_tokens: Tensor

    @property
    def mean(self) -> Tensor:
        return self.sum / self.num_tokens.clamp(min=1)

    def __len__(self) -> int:
        return len(self.logprobs)


def score_pairs(
    model,
    tokenizer,
    contexts: TokenSeqs,
    continuations: TokenSeqs,
    batch_size: int | None = None,
    add_special_tokens: bool = True,
) -> PairScores:
    """Log-probs of each continuation given its context, teacher-forced, without gradients.

    Contexts are tokenized with special tokens (BOS added when the tokenizer adds one),
    continuations without, and the id lists are concatenated rather than tokenizing the
    joined text: no BPE merge can straddle the boundary, and a continuation's tokens are the
    same whatever the context, so its scores are comparable across contexts (e.g. with and
    without a thought). Id sequences are used as given.

    Pairs are sorted by length and batched ``batch_size`` at a time (default: all at once).
    Each batch is one left-padded forward with ``logits_to_keep`` = longest continuation + 1,
    so logits are only computed where continuation tokens are predicted (context positions
    cost no ``[.., V]`` memory). Uses ``no_grad`` rather than ``inference_mode`` so results can
    later enter autograd graphs (e.g. as rewards) without errors.
    """
    ctx_ids, cont_ids = tokenize_pairs(tokenizer, contexts, continuations, add_special_tokens)
    num = len(ctx_ids)
    device = model_device(model)
    pad_id = pad_id_of(tokenizer)
    keep_kw = supports_logits_to_keep(model)
    logprobs: list[Tensor] = [torch.zeros(0)] * num
    sums = torch.zeros(num)
    order = sorted(range(num), key=lambda i: len(ctx_ids[i]) + len(cont_ids[i]))
    step = batch_size or max(num, 1)
    with torch.no_grad():
        for start in range(0, num, step):
            idx = order[start : start + step]
            cont_lens = [len(cont_ids[i]) for i in idx]
            longest = max(cont_lens)
            if longest == 0:
                continue
            ids, mask = left_pad([ctx_ids[i] + cont_ids[i] for i in idx], pad_id, device)
            kwargs = {"logits_to_keep": longest + 1} if keep_kw else {}
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False, **kwargs
            ).logits
            # Logits at columns -longest-1 .. -2 predict the last `longest` tokens.
            lp = logprobs_from_logits(logits[:, -longest - 1 : -1], ids[:, -longest:])  # [b, longest]
            lens = torch.tensor(cont_lens, device=device)
            in_cont = torch.arange(longest, device=device) >= (longest - lens)[:, None]
            lp = (lp * in_cont).cpu()
            sums[idx] = lp.sum(-1)
            for row, i in enumerate(idx):
                logprobs[i] = lp[row, longest - cont_lens[row] :]
    num_tokens = torch.tensor([len(c) for c in cont_ids], dtype=torch.long)
    return PairScores(logprobs=logprobs, sum=sums, num_tokens=num_tokens)

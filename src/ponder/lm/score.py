"""Teacher-forced scoring of (context, continuation) pairs under a causal LM, without gradients.

Everything is fp32 whatever the model's dtype, computed through :class:`ponder.lm.logprobs.TokenScorer`:
only the positions predicting continuation tokens reach the output layer.

Shapes: ``B`` batch, ``T`` sequence length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ponder.lm import hf_compat
from ponder.lm.logprobs import TokenScorer, logprobs_from_logits
from ponder.lm.padding import (
    TokenSeqs,
    left_pad,
    model_device,
    pad_id_of,
    pad_ids,
    position_ids_from_mask,
    tokenize,
    tokenize_pairs,
)

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
    scorer = TokenScorer(model)
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
            states, _ = scorer.forward(ids, mask, position_ids_from_mask(mask))
            lens = torch.tensor(cont_lens, device=device)
            in_cont = torch.arange(longest, device=device) >= (longest - lens)[:, None]  # [b, longest]
            # Columns -longest-1 .. -2 predict the last `longest` tokens; only continuation tokens reach the head.
            lp = scorer.score(states[:, -longest - 1 : -1], ids[:, -longest:], in_cont)
            lp = (lp * in_cont).cpu()
            sums[idx] = lp.sum(-1)
            for row, i in enumerate(idx):
                logprobs[i] = lp[row, longest - cont_lens[row] :]
    num_tokens = torch.tensor([len(c) for c in cont_ids], dtype=torch.long)
    return PairScores(logprobs=logprobs, sum=sums, num_tokens=num_tokens)


# ---------------------------------------------------------------- options after one context


def score_options(
    model,
    tokenizer,
    contexts: TokenSeqs,
    options: list[list[str]],
    batch_size: int | None = None,
) -> list[Tensor]:
    """``[len(options[i])]`` fp32 summed log-prob of each option after context ``i``, the context read once.

    Same quantity as :func:`score_pairs` on every (context, option) pair (contexts with special
    tokens, options tokenized alone without, ids concatenated), but each context is run once: its
    KV cache is repeated to its options' rows and only the options' tokens are forwarded. With
    multiple-choice prompts of a few hundred tokens and options of a few, that is about
    ``options`` times fewer tokens. ``batch_size`` bounds contexts per forward.
    """
    ctx_ids = tokenize(tokenizer, contexts, True)
    opt_ids = [tokenize(tokenizer, opts, False) if opts else [] for opts in options]
    if any(len(c) == 0 for c in ctx_ids) or any(len(o) == 0 for opts in opt_ids for o in opts):
        raise ValueError("every context and every option needs at least one token")
    device = model_device(model)
    pad_id = pad_id_of(tokenizer)
    keep = {"logits_to_keep": 1} if hf_compat.supports_logits_to_keep(model) else {}
    out: list[Tensor] = []
    step = batch_size or max(len(ctx_ids), 1)
    with torch.no_grad():
        for a in range(0, len(ctx_ids), step):
            chunk, opts = ctx_ids[a : a + step], opt_ids[a : a + step]
            ids, mask = left_pad(chunk, pad_id, device)
            positions = position_ids_from_mask(mask)
            first = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **keep)
            cache = hf_compat.output_cache(first)
            rows = torch.tensor([i for i, o in enumerate(opts) for _ in o], dtype=torch.long, device=device)
            flat = [o for group in opts for o in group]
            if not flat:
                out += [torch.zeros(0) for _ in opts]
                continue
            hf_compat.select_rows(cache, rows)
            cont, cont_mask = pad_ids(flat, pad_id, device, side="right")  # [R, L]
            attn = torch.cat([mask[rows], cont_mask], dim=1)
            pos = positions[rows, -1:] + 1 + torch.arange(cont.shape[1], device=device)
            logits = model(
                input_ids=cont,
                attention_mask=attn,
                position_ids=pos,
                use_cache=False,
                **hf_compat.cache_kwargs(model, cache),
            ).logits  # [R, L, V]: position t predicts option token t + 1
            # Token 0 of each option is predicted by the context's last position; token t > 0 by option position t - 1.
            lp0 = logprobs_from_logits(first.logits[:, -1][rows], cont[:, 0])  # [R]
            rest = logprobs_from_logits(logits[:, :-1], cont[:, 1:]) if cont.shape[1] > 1 else cont[:, 1:].float()
            sums = (lp0 + (rest * cont_mask[:, 1:]).sum(-1)).cpu()
            i = 0
            for group in opts:
                out.append(sums[i : i + len(group)])
                i += len(group)
    return out

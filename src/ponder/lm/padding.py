"""Token-id batches: padding, position ids, tokenization of texts or ids, where a model's inputs go.

Shapes: ``B`` batch, ``L`` padded length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

TokenSeqs = Sequence[str] | Sequence[Sequence[int]]


def model_device(model) -> torch.device:
    """Where the model's inputs go (the input embeddings' device; right for device maps too)."""
    return model.get_input_embeddings().weight.device


def pad_id_of(tokenizer) -> int:
    """Id used to fill padding: pad, else eos, else 0 (padding is always masked out)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


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


def used_width(used: Tensor) -> int:
    """One past the last column where ``used [B, L]`` is non-zero in any row (at least 1): trailing padding cut there."""
    cols = (used != 0).any(0).nonzero()
    return max(1, int(cols.max()) + 1) if cols.numel() else 1


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

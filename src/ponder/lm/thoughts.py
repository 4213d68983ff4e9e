"""Think delimiters: register them, wrap, strip and ban thoughts.

A thought is the text between ``<think>`` and ``</think>``. Models whose tokenizer lacks the
delimiters get them as added special tokens; their new embedding rows start at the mean of
the existing rows (a neutral point the model already knows how to read) rather than at
random, which keeps the first forward passes after the resize close to the original model.
"""

from __future__ import annotations

import re

import torch

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

_THOUGHT_RE = re.compile(re.escape(THINK_OPEN) + r".*?(?:" + re.escape(THINK_CLOSE) + r"|$)", re.S)


def wrap_thought(thought: str) -> str:
    """``"abc"`` -> ``"<think>abc</think>"``."""
    return f"{THINK_OPEN}{thought}{THINK_CLOSE}"


def strip_thoughts(text: str) -> str:
    """Remove every thought (closed or left open at the end) from ``text``."""
    return _THOUGHT_RE.sub("", text)


def split_thought(text: str) -> tuple[str | None, str, bool]:
    """Split a completion into ``(thought, answer_text, closed)``.

    ``thought`` is the content of the first thought (None when the completion has none),
    ``answer_text`` is everything outside thoughts, ``closed`` tells whether the first
    thought was closed. Text before ``<think>`` counts as answer text.
    """
    start = text.find(THINK_OPEN)
    if start < 0:
        return None, text, True
    body_start = start + len(THINK_OPEN)
    end = text.find(THINK_CLOSE, body_start)
    if end < 0:
        return text[body_start:], text[:start], False
    return text[body_start:end], text[:start] + strip_thoughts(text[end + len(THINK_CLOSE) :]), True


def think_token_ids(tokenizer) -> tuple[int, int]:
    """Ids of ``<think>`` and ``</think>``; raises if the tokenizer lacks them."""
    ids = []
    for tok in (THINK_OPEN, THINK_CLOSE):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if tid is None or tid == tokenizer.unk_token_id:
            raise ValueError(
                f"the tokenizer has no {tok!r} token; call ponder.lm.thoughts.ensure_think_tokens(model, tokenizer) first"
            )
        ids.append(int(tid))
    return ids[0], ids[1]


def has_think_tokens(tokenizer) -> bool:
    try:
        think_token_ids(tokenizer)
        return True
    except ValueError:
        return False


def ensure_think_tokens(model, tokenizer) -> int:
    """Register the delimiters as special tokens when missing; return how many were added.

    Resizes the model's embeddings (and an untied output layer) and initialises the new rows
    to the mean of the old ones.
    """
    missing = [
        t for t in (THINK_OPEN, THINK_CLOSE) if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)
    ]
    if not missing:
        return 0
    tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    old_rows = model.get_input_embeddings().weight.shape[0]
    needed = len(tokenizer)
    if needed > old_rows:
        model.resize_token_embeddings(needed, mean_resizing=False)
        with torch.no_grad():
            emb = model.get_input_embeddings().weight
            emb[old_rows:] = emb[:old_rows].mean(dim=0, keepdim=True)
            out = model.get_output_embeddings()
            if out is not None and out.weight.data_ptr() != emb.data_ptr():
                out.weight[old_rows:] = out.weight[:old_rows].mean(dim=0, keepdim=True)
                if getattr(out, "bias", None) is not None:
                    out.bias[old_rows:] = out.bias[:old_rows].mean()
    return len(missing)


def thought_ids_of(completion_ids, open_id: int, close_id: int) -> list[int] | None:
    """The first thought's ids in ``[<think> thought </think>] answer`` ids (to the end when unclosed; None: no thought)."""
    ids = list(completion_ids)
    if open_id not in ids:
        return None
    start = ids.index(open_id) + 1
    return ids[start : ids.index(close_id, start)] if close_id in ids[start:] else ids[start:]


def think_ban_ids(tokenizer) -> list[int]:
    """Token ids to ban in no-think mode (both delimiters)."""
    return list(think_token_ids(tokenizer))

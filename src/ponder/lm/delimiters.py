"""Think delimiters: register them, wrap, strip and ban thoughts.

A thought is the text between ``<think>`` and ``</think>``. Models whose tokenizer lacks the
delimiters get them as added special tokens. Their new embedding rows (input and, when untied,
output) start at the mean embedding of a phrase's tokens when one is named (``"Let me think"`` for
the opener: the model reads the new token roughly as it reads the phrase), else at the mean of
the existing rows (a neutral point), never at random, which keeps the first forward passes after
the resize close to the original model.
The same registration serves any other delimiter pair (:func:`ensure_special_tokens`,
:func:`special_token_ids`; e.g. the lookahead spans of :mod:`ponder.data.trelawney`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

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


def special_token_ids(tokenizer, tokens: Sequence[str], how_to_add: str) -> list[int]:
    """Ids of the single tokens ``tokens``; raises ValueError naming ``how_to_add`` if one is missing."""
    ids = []
    for tok in tokens:
        tid = tokenizer.convert_tokens_to_ids(tok)
        if tid is None or tid == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {tok!r} token; call {how_to_add} first")
        ids.append(int(tid))
    return ids


def think_token_ids(tokenizer) -> tuple[int, int]:
    """Ids of ``<think>`` and ``</think>``; raises if the tokenizer lacks them."""
    open_id, close_id = special_token_ids(
        tokenizer, (THINK_OPEN, THINK_CLOSE), "ponder.lm.delimiters.ensure_think_tokens(model, tokenizer)"
    )
    return open_id, close_id


def has_think_tokens(tokenizer) -> bool:
    try:
        think_token_ids(tokenizer)
        return True
    except ValueError:
        return False


def phrase_ids(tokenizer, phrase: str) -> list[int]:
    """The ordinary tokens of ``phrase`` (no BOS); raises ValueError on a phrase with none."""
    ids = tokenizer(phrase, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"the phrase {phrase!r} has no tokens; name a non-empty text")
    return list(ids)


@torch.no_grad()
def init_rows(model, rows: Sequence[int], sources: Sequence[Sequence[int] | None], old_rows: int) -> None:
    """Set embedding row ``rows[i]`` to the mean of rows ``sources[i]`` (None: of the first ``old_rows`` rows).

    Input embeddings and an untied output layer (its bias too) alike: a new token both reads and
    is predicted like the tokens it stands for.
    """
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tables = [emb]
    if out is not None and out.weight.data_ptr() != emb.data_ptr():
        tables.append(out.weight)
    for row, src in zip(rows, sources):
        index = torch.arange(old_rows) if src is None else torch.tensor(list(src))
        for table in tables:
            table[row] = table[index.to(table.device)].mean(dim=0)
        if len(tables) > 1 and getattr(out, "bias", None) is not None:
            out.bias[row] = out.bias[index.to(out.bias.device)].mean()


def ensure_special_tokens(
    model, tokenizer, tokens: Sequence[str], init_phrases: Sequence[str | None] | None = None
) -> int:
    """Register ``tokens`` as special tokens where missing; return how many were added.

    Resizes the model's embeddings (and an untied output layer) and initialises each new row to
    the mean embedding of its phrase in ``init_phrases`` (None, or no phrases: the mean of the
    old rows). Tokens already present keep their rows (a trained checkpoint is never re-initialised).
    """
    phrases = list(init_phrases) if init_phrases is not None else [None] * len(tokens)
    if len(phrases) != len(tokens):
        raise ValueError(f"{len(phrases)} init phrases for {len(tokens)} tokens")
    missing = [
        (t, ph)
        for t, ph in zip(tokens, phrases)
        if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)
    ]
    if not missing:
        return 0
    sources = [None if ph is None else phrase_ids(tokenizer, ph) for _, ph in missing]
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [t for t, _ in missing]}, replace_extra_special_tokens=False
    )
    old_rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old_rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    rows = [int(tokenizer.convert_tokens_to_ids(t)) for t, _ in missing]
    init_rows(model, rows, sources, old_rows)
    return len(missing)


def ensure_think_tokens(model, tokenizer, open_phrase: str | None = None, close_phrase: str | None = None) -> int:
    """Register ``<think>`` / ``</think>`` when missing, initialised from the phrases (see :func:`ensure_special_tokens`)."""
    return ensure_special_tokens(model, tokenizer, (THINK_OPEN, THINK_CLOSE), (open_phrase, close_phrase))


def structure_token_ids(tokenizer, keep: Sequence[int] = ()) -> list[int]:
    """Every special or added special token id of ``tokenizer`` but ``keep``: chat-template structure
    (``<|im_start|>``, ``<|im_end|>``, role headers that are tokens), EOS, BOS, PAD and the like.

    What a thought must never contain: a model that writes ``<|im_start|>`` inside a thought has
    left it for a new chat turn.
    """
    ids = {int(i) for i in tokenizer.all_special_ids}
    ids |= {int(i) for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items() if tok.special}
    return sorted(ids - {int(k) for k in keep})


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

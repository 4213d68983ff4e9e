"""Where RLP thinks: document windows, the positions drawn in them, and per-item random generators.

A *position* is a token ``x_t`` of a document window with its prefix ``x_<t``. Positions are
drawn per document from its own generator (keyed by seed, step and the document's global index),
so a data-parallel run's ranks draw exactly what one process would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

ANSWER, OTHER = "answer", "other"


@dataclass
class Doc:
    """A tokenized document window. ``answer_start``: first token of the answer span, if the source marks one."""

    ids: list[int]
    answer_start: int | None = None

    def position_class(self, t: int) -> str:
        return ANSWER if self.answer_start is not None and t >= self.answer_start else OTHER


def tokenize_docs(tokenizer, items: Iterable[tuple[str, int | None]], context_length: int) -> list[Doc]:
    """``(text, answer_char_start)`` pairs -> :class:`Doc` windows of at most ``context_length`` tokens.

    A longer document is cut into consecutive windows (each its own document). The answer span
    is located with the fast tokenizer's offsets, so it is right for any tokenizer.
    """
    docs = []
    for text, answer_char in items:
        enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=answer_char is not None)
        ids = enc["input_ids"]
        answer_tok = None
        if answer_char is not None:
            offsets = enc["offset_mapping"]
            answer_tok = next((i for i, (s, e) in enumerate(offsets) if e > s and s >= answer_char), None)
        for start in range(0, len(ids), context_length):
            window = ids[start : start + context_length]
            ans = None if answer_tok is None else max(0, answer_tok - start)
            if answer_tok is not None and answer_tok >= start + len(window):
                ans = None
            docs.append(Doc(window, ans))
    return docs


def eligible_range(doc_len: int) -> range:
    """Positions ``t`` with a non-empty prefix: ``1 <= t < doc_len``.

    Position 0 is never used: nothing conditions it (with a BOS token, position 1 is the
    document's first real token and its prefix is just BOS). A reward over the next k tokens
    takes the ``x_t .. x_{t+k-1}`` that exist: fewer near the end of the document, so the
    answer at the end of a short document stays eligible for any k.
    """
    return range(1, max(1, doc_len))


def choose_positions(
    docs: Sequence[Doc],
    per_doc: int,
    generator: torch.Generator | Sequence[torch.Generator],
    weights: Sequence[Tensor] | None = None,
) -> list[tuple[int, int]]:
    """Up to ``per_doc`` distinct positions ``(doc_index, t)`` per document.

    ``weights[d]`` (``[len(doc)]``, non-negative) draws positions in proportion to it (e.g. the
    EMA baseline's loss or entropy); otherwise uniformly. Documents with no eligible position
    are skipped (the caller counts them). ``generator``: one for all documents, or one per
    document (then a document's positions do not depend on the others).
    """
    out = []
    per_doc_gen = not isinstance(generator, torch.Generator)
    for d, doc in enumerate(docs):
        gen = generator[d] if per_doc_gen else generator
        span = eligible_range(len(doc.ids))
        if len(span) == 0:
            continue
        m = min(per_doc, len(span))
        if weights is None:
            pick = torch.randperm(len(span), generator=gen, device=gen.device)[:m].cpu()
        else:
            w = weights[d][span.start : span.stop].double().clamp(min=0) + 1e-8
            pick = torch.multinomial(w.to(gen.device), m, replacement=False, generator=gen).cpu()
        out += [(d, span.start + int(i)) for i in sorted(pick.tolist())]
    return out


def keyed_generators(seed: int, keys: Sequence[int], device=None) -> list[torch.Generator]:
    """One generator per key, seeded from ``(seed, key)``: randomness that follows an item, not its batch."""
    return [
        torch.Generator(device=device).manual_seed((seed * 1_000_003 + int(k) * 7919 + 17) % (2**63 - 1)) for k in keys
    ]

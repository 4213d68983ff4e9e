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

from ponder.data.windows import window_stream

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

    A longer document is cut into consecutive windows (each its own document), tokenized in bounded
    chunks (:func:`~ponder.data.windows.window_stream`). The answer span is located with the fast
    tokenizer's offsets, so it is right for any tokenizer.
    """
    return [Doc(ids, ans) for ids, ans in window_stream(tokenizer, items, context_length)]


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

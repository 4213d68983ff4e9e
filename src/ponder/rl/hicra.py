"""HICRA's planning tokens: which sampled tokens belong to a strategic phrase (arXiv 2509.03646).

HICRA amplifies credit on planning tokens, ``A' = A + alpha |A|``
(:func:`ponder.rl.advantages.hicra_advantages`). Planning tokens are the tokens of strategic
phrases ("let me check", "carry the one"); the phrases are given as a lexicon (``--planning-lexicon``).
A phrase is found in the decoded text of a completion (case-insensitive, on word boundaries) and
every token whose characters overlap an occurrence is marked; the ids themselves are never
re-tokenized. Each token's characters are its own decoding, so the offsets are exact for any
tokenizer whose tokens decode independently (byte-level BPE pieces of ASCII text, SentencePiece,
the built-in character tokenizer).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ponder.lm.tokens import decode_with_offsets


def phrase_pattern(phrases: Sequence[str]) -> re.Pattern | None:
    """One case-insensitive regex matching any phrase on word boundaries (longest first); None for no phrases."""
    cleaned = sorted({" ".join(p.split()) for p in phrases if p.strip()}, key=len, reverse=True)
    if not cleaned:
        return None
    body = "|".join(r"\s+".join(re.escape(w) for w in p.split()) for p in cleaned)
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)


def planning_token_mask(tokenizer, ids: Sequence[int], pattern: re.Pattern | None) -> list[bool]:
    """``[len(ids)]``: True for tokens overlapping an occurrence of a strategic phrase in their decoded text."""
    if pattern is None or not ids:
        return [False] * len(ids)
    text, offsets = decode_with_offsets(tokenizer, ids)
    mask = [False] * len(ids)
    for m in pattern.finditer(text):
        for i, (start, end) in enumerate(offsets):
            if start < m.end() and end > m.start():
                mask[i] = True
    return mask

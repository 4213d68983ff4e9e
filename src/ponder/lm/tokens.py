"""Where sampled ids sit in their text: each token's characters, without re-tokenizing anything."""

from __future__ import annotations

from collections.abc import Sequence


def decode_with_offsets(tokenizer, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """``(text, offsets)``: the ids decoded token by token, and each token's ``(start, end)`` characters in ``text``.

    ``text`` is the concatenation of the tokens' own decodings, so the offsets are exact for it; it
    equals the sequence's decoding for tokenizers whose tokens decode independently (byte-level
    BPE pieces of ASCII text, SentencePiece, the built-in character tokenizer).
    """
    pieces = [tokenizer.decode([int(t)], skip_special_tokens=False, clean_up_tokenization_spaces=False) for t in ids]
    offsets, pos = [], 0
    for piece in pieces:
        offsets.append((pos, pos + len(piece)))
        pos += len(piece)
    return "".join(pieces), offsets


def tokens_within(offsets: Sequence[tuple[int, int]], end_char: int) -> int:
    """How many leading tokens end at or before character ``end_char`` (a token prefix that stays inside it)."""
    n = 0
    for _, end in offsets:
        if end > end_char:
            break
        n += 1
    return n

"""Token windows of documents of any length, in memory bounded by the window, not the document.

Training reads text as windows of at most ``window`` tokens: a short document is one window, a
long one several consecutive windows. A step then draws a fixed number of *windows*
(``--docs-per-step``, ``--batch-size``) however long the documents are, and a document is never
tokenized whole: text longer than :data:`CHUNK_CHARS` characters is tokenized in chunks cut just
before a whitespace run, so a 10 MB single-line corpus costs a few chunks of memory, not
gigabytes of token objects.

A document of at most :data:`CHUNK_CHARS` characters is tokenized in one call, exactly as
before windows existed. Chunked tokens equal whole-document tokens for character-level and
byte-level BPE tokenizers (their pre-tokenizers split before whitespace too); a tokenizer that
merges across whitespace may differ at the few chunk boundaries of a long document.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

#: Characters tokenized per call for a long document (a few MB of token objects at most).
CHUNK_CHARS = 1 << 16

Window = tuple[list[int], "int | None"]


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens ``tokenizer`` adds before and after a text (e.g. ``([bos], [])``)."""
    with_specials = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    for i in range(len(with_specials) - len(plain) + 1):
        if with_specials[i : i + len(plain)] == plain:
            return with_specials[:i], with_specials[i + len(plain) :]
    return [], []


def _chunk_end(text: str, start: int, limit: int) -> int:
    """End of the chunk from ``start``: at most ``limit`` characters, cut before a whitespace run when one
    lies in the chunk's second half (so no word is split), else exactly at the limit."""
    end = start + limit
    if end >= len(text):
        return len(text)
    lo = start + limit // 2
    i = max(text.rfind(c, lo, end + 1) for c in " \n\t\r")
    while i > lo and text[i - 1].isspace():
        i -= 1
    return i if i > lo else end


def _answer_index(enc, answer_char: int | None, base: int) -> int | None:
    """Index of the first token of ``enc`` starting at or after character ``answer_char`` (offsets + ``base``)."""
    if answer_char is None:
        return None
    return next((i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > s and s + base >= answer_char), None)


def _pieces(tokenizer, text: str, answer_char: int | None, chunk_chars: int) -> Iterator[tuple[list[int], int | None]]:
    """The document's token ids (special tokens included) in consecutive pieces, each with the index of
    the answer's first token when it falls in that piece."""
    offsets = answer_char is not None
    # verbose=False: a document longer than the model's context is expected here (it is cut into windows),
    # so transformers' "Token indices sequence length is longer than ..." warning is noise.
    if len(text) <= chunk_chars:
        enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=offsets, verbose=False)
        yield list(enc["input_ids"]), _answer_index(enc, answer_char, 0)
        return
    prefix, suffix = special_affixes(tokenizer)
    yield prefix, None
    start = 0
    while start < len(text):
        end = _chunk_end(text, start, chunk_chars)
        enc = tokenizer(text[start:end], add_special_tokens=False, return_offsets_mapping=offsets, verbose=False)
        yield list(enc["input_ids"]), _answer_index(enc, answer_char, start)
        start = end
    yield suffix, None


def document_windows(
    tokenizer,
    text: str,
    window: int,
    answer_char: int | None = None,
    eos_id: int | None = None,
    chunk_chars: int = CHUNK_CHARS,
) -> Iterator[Window]:
    """Consecutive windows ``(ids, answer_start)`` of at most ``window`` tokens of one document.

    ``ids``: the tokenizer's special tokens included, ``eos_id`` appended at the end of the
    document when given. ``answer_start``: where the answer (from character ``answer_char``)
    starts in the window: 0 for a window wholly inside the answer, None for one before it or
    when there is no answer mark.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1 token, got {window}")
    pieces = _pieces(tokenizer, text, answer_char, chunk_chars)
    if eos_id is not None:
        pieces = _with_tail(pieces, [eos_id])
    buf: list[int] = []
    emitted = 0  # tokens of the document before buf[0]
    answer_tok: int | None = None  # index of the answer's first token in the document

    def cut(ids: list[int]) -> Window:
        ans = None if answer_tok is None or answer_tok >= emitted + len(ids) else max(0, answer_tok - emitted)
        return ids, ans

    for ids, ans in pieces:
        if ans is not None and answer_tok is None:
            answer_tok = emitted + len(buf) + ans
        buf.extend(ids)
        while len(buf) >= window:
            out, buf = buf[:window], buf[window:]
            yield cut(out)
            emitted += window
    if buf:
        yield cut(buf)


def id_windows(ids: Sequence[int], window: int, eos_id: int | None = None) -> Iterator[list[int]]:
    """Consecutive windows of at most ``window`` tokens of a document given as token ids (special tokens in
    place, e.g. built by a token-level transform), ``eos_id`` appended at its end when given: what
    :func:`document_windows` yields for a text, without the answer mark."""
    if window < 1:
        raise ValueError(f"window must be >= 1 token, got {window}")
    ids = [*ids, eos_id] if eos_id is not None else list(ids)
    for start in range(0, len(ids), window):
        yield ids[start : start + window]


def _with_tail(pieces: Iterator[tuple[list[int], int | None]], tail: list[int]):
    yield from pieces
    yield tail, None


def window_stream(
    tokenizer,
    documents: Iterable[tuple[str, int | None]],
    window: int,
    eos_id: int | None = None,
    chunk_chars: int = CHUNK_CHARS,
) -> Iterator[Window]:
    """The windows of every ``(text, answer_char)`` document in turn (see :func:`document_windows`)."""
    for text, answer_char in documents:
        yield from document_windows(tokenizer, text, window, answer_char, eos_id, chunk_chars)

"""Documents with short thoughts inserted: what a format warm start trains on (issue 27).

A model that has never read ``<think> ... </think>`` learns the format from its own text: at a
position ``t`` of a document (or after a task prompt) a short thought the model itself sampled is
inserted and closed, and next-token training then teaches it to close a thought and to read on
after ``</think>`` as if the thought had not interrupted the text. The thoughts are the model's own,
so the warm start teaches the format, not new content (no label is used). An answered warm start
(:func:`first_verified`) keeps only the model's own answers that a train-split label marks correct.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def insert_thought(ids: Sequence[int], at: int, thought: Sequence[int], open_id: int, close_id: int) -> list[int]:
    """``ids[:at] + [open_id] + thought + [close_id] + ids[at:]``: a closed thought before token ``at`` (``1 <= at <= len``)."""
    if not 1 <= at <= len(ids):
        raise ValueError(f"a thought goes after a non-empty prefix: need 1 <= at <= {len(ids)}, got {at}")
    return [*ids[:at], open_id, *thought, close_id, *ids[at:]]


def answered_thought(
    prompt: Sequence[int], thought: Sequence[int], answer: Sequence[int], open_id: int, close_id: int
) -> list[int]:
    """``prompt <think> thought </think> answer``: a task prompt, a closed thought and the answer that followed it."""
    return insert_thought([*prompt, *answer], len(prompt), thought, open_id, close_id)


def natural_end_ids(tokenizer) -> frozenset[int]:
    """Ids of the tokens that end a line or a sentence: their text holds a newline or ends in ``.``, ``!`` or ``?``.

    Where the model's own thoughts stop naturally: a warm start closes a sampled thought at its
    first such token (:func:`cut_at_natural_end`) instead of after a fixed number of tokens.
    """
    special = set(getattr(tokenizer, "all_special_ids", ()))
    ends = set()
    for i in range(len(tokenizer)):
        if i in special:
            continue
        text = tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if "\n" in text or text.rstrip(" ").endswith((".", "!", "?")):
            ends.add(i)
    return frozenset(ends)


def cut_at_natural_end(thought: Sequence[int], end_ids: frozenset[int], min_tokens: int = 1) -> list[int] | None:
    """``thought`` up to and including its first token in ``end_ids`` at or after token ``min_tokens`` (1-based).

    None when no such token: the thought has no natural end within what was sampled.
    """
    for i in range(max(min_tokens, 1) - 1, len(thought)):
        if thought[i] in end_ids:
            return list(thought[: i + 1])
    return None


def first_verified(candidates: Sequence[Sequence[str]], verify: Callable[[int, str], bool]) -> list[int | None]:
    """For each row ``r``, the index of its first candidate ``c`` with ``verify(r, c)``; None when none passes.

    The filter of a STaR-style warm start: ``candidates[r]`` are answers the model itself sampled for
    train-split problem ``r`` (tried in order, e.g. greedy first), ``verify`` the task's check against
    that problem's train label. Test labels never enter it.
    """
    out: list[int | None] = []
    for r, row in enumerate(candidates):
        out.append(next((i for i, c in enumerate(row) if verify(r, c)), None))
    return out


def thought_in_target(context: str, target: str, open_text: str) -> tuple[str, str]:
    """Move a thought from an example's context into its target: split at the context's last ``open_text``.

    ``("... <think>th", "</think>answer")`` becomes ``("... <think>", "th</think>answer")``, so next-token
    training puts loss on the thought's own tokens too and the model learns where its thought stops (a
    warm start with only ``</think>`` and the answer in the loss leaves the thought's length untrained).
    """
    at = context.rfind(open_text)
    if at < 0:
        raise ValueError(f"the example's context holds no {open_text!r}: no thought to move into the target")
    cut = at + len(open_text)
    return context[:cut], context[cut:] + target

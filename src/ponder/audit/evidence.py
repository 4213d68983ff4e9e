"""When an audit figure may carry an interpretation: enough traces, and an accuracy that is not all zero.

A diagnostic reports its figures whatever they are; a *reading* of them (an accuracy peak as the
overthinking threshold, a fall in information gain as post-hoc rationalization) needs evidence.
:func:`interpretation_withheld` says why a reading is not given, or None when it may be.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Fewest traces (or problems, for greedy curves) any interpretation in the audit report rests on:
#: with fewer, one trace moves an accuracy by more than 5 points.
MIN_TRACES_FOR_INTERPRETATION = 20


def interpretation_withheld(
    traces: int, accuracies: Iterable[float | None] | None = None, unit: str = "traces"
) -> str | None:
    """Why no interpretation is drawn from ``traces`` traces (``unit``) with these ``accuracies`` (None: it may be).

    Withheld when fewer than :data:`MIN_TRACES_FOR_INTERPRETATION` traces were measured, or when every
    given is 0 (or missing): a model that never answers right gives no signal to read.
    """
    if traces < MIN_TRACES_FOR_INTERPRETATION:
        return f"too few {unit} ({traces} < {MIN_TRACES_FOR_INTERPRETATION})"
    if accuracies is not None and not any(a for a in accuracies if a is not None and a == a):
        return "every accuracy is 0"
    return None

"""The elite set of roots: admission with a noise margin, patience, retirement and reinstatement."""

from __future__ import annotations

from ponder.plan.elite import Elite
from ponder.plan.state import Chain

A, B, C, D = (Chain(instructions=(s,)) for s in "abcd")


def test_admission_needs_a_gain_over_the_parent_beyond_the_margin():
    elite = Elite(margin=0.02)
    assert elite.admit(A, 0.2)  # a start always joins
    assert not elite.admit(B, 0.21, parent_value=0.2)  # a near-tie: noise
    assert elite.admit(C, 0.25, parent_value=0.2)
    assert elite.root() == C and elite.value(C) == 0.25 and elite.value(B) is None


def test_patience_retires_a_root_and_restarts_from_the_next_best():
    elite = Elite(patience=2, margin=0.02)
    elite.admit(A, 0.2)
    elite.admit(B, 0.3, parent_value=0.2)  # the plateau incumbent
    for child in (C, D):
        assert not elite.report(B, 0.3, child, 0.305)  # ties on the plateau: failures of B
    assert elite.root() == A and elite.restarts == 1
    assert elite.report(A, 0.2, C, 0.25)  # a real gain from A is admitted
    assert elite.root() == C


def test_all_retired_reinstates_every_root_and_size_keeps_the_best():
    elite = Elite(size=2, patience=1)
    elite.admit(A, 0.1)
    elite.admit(B, 0.5, parent_value=0.1)
    elite.admit(C, 0.3, parent_value=0.1)  # A (the worst) drops out of a size-2 elite
    assert elite.value(A) is None and len(elite.entries) == 2
    elite.fail(B)
    elite.fail(C)
    assert elite.root() == B and elite.resets == 1
    assert Elite().root() is None

"""Bit-reproducible base training: weight fingerprints, the thread pin, and the same model under 1 and 2 threads."""

import pytest
import torch

from ponder.models.tiny_base import BaseJob, run_base
from ponder.train.next_token import NextTokenConfig
from ponder.train.reproducible import fixed_threads, max_abs_difference, weights_fingerprint


def test_fingerprint_names_the_exact_weights():
    state = {"b": torch.tensor([1.0, 2.0]), "a": torch.zeros(2, 3)}
    same = {"a": torch.zeros(2, 3), "b": torch.tensor([1.0, 2.0])}
    assert weights_fingerprint(state) == weights_fingerprint(same)  # key order does not matter
    nudged = {**same, "b": torch.tensor([1.0, torch.nextafter(torch.tensor(2.0), torch.tensor(3.0)).item()])}
    assert weights_fingerprint(nudged) != weights_fingerprint(state)  # one ulp is another model
    assert weights_fingerprint({**same, "a": torch.zeros(3, 2)}) != weights_fingerprint(state)  # shape counts
    assert weights_fingerprint({**same, "a": torch.zeros(2, 3, dtype=torch.float64)}) != weights_fingerprint(state)
    assert max_abs_difference(state, {**same, "b": torch.tensor([1.0, 2.5])}) == 0.5
    with pytest.raises(ValueError):
        max_abs_difference(state, {"a": torch.zeros(2, 3)})


def test_fixed_threads_restores_the_callers_count():
    before = torch.get_num_threads()
    with fixed_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_base_training_is_the_same_model_whatever_the_callers_thread_count(tmp_path):
    """A few steps of the real recipe (full tiny architecture, short windows): the job pins one thread,
    so a caller running 1 or 4 threads trains bit-identical weights. Unpinned, 4 threads train another
    model (fingerprint b7920e30... with 1 or 2 threads, 3fb92c9f... with 4 on the project's CPU)."""
    job = BaseJob(
        task="add2",
        eval_n=1,
        train=NextTokenConfig(steps=3, batch_size=16, warmup_steps=1, save_every=10, max_length=64, report_to=[]),
    )
    before = torch.get_num_threads()
    prints = {}
    try:
        for threads in (1, 4):
            torch.set_num_threads(threads)
            prints[threads] = run_base(job, tmp_path / f"t{threads}", progress=False)["weights_fingerprint"]
            assert torch.get_num_threads() == threads  # the pin is given back
    finally:
        torch.set_num_threads(before)
    assert prints[1] == prints[4]

"""Bit-reproducible training on CPU: a fixed intra-op thread count and a fingerprint of the weights.

On CPU, torch splits a reduction (a matmul's inner sum, a LayerNorm's mean) across its intra-op
threads, and floating-point addition is not associative: the same training run with 1 and with 2
threads ends with different weights, and the difference grows step by step (measured in
``bench/base_repro.py``). :func:`fixed_threads` pins the thread count for the duration of a block
(and restores it), so a model trained inside it is the same model whatever ``OMP_NUM_THREADS`` the
caller set; :func:`weights_fingerprint` names that model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch

#: Intra-op threads of every tiny-base training run: the fingerprints in ``bench/RESULTS.md`` hold under it.
TRAINING_THREADS = 1


@contextmanager
def fixed_threads(n: int = TRAINING_THREADS) -> Iterator[None]:
    """Run the block with ``n`` intra-op torch threads, restoring the caller's count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def weights_fingerprint(state: Mapping[str, torch.Tensor] | torch.nn.Module, length: int = 16) -> str:
    """sha256 (first ``length`` hex digits) of every tensor's name, dtype, shape and bytes, in name order.

    Equal fingerprints mean bit-identical weights; tied weights count under each name.
    """
    tensors = state.state_dict() if isinstance(state, torch.nn.Module) else state
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:length]


def max_abs_difference(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Largest absolute difference between same-named tensors of two state dicts (same keys required)."""
    if set(a) != set(b):
        raise ValueError(f"state dicts differ in keys: {sorted(set(a) ^ set(b))[:5]}")
    return max((float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].numel()), default=0.0)

"""Trainer state without pickle: its structure as JSON, its tensors as safetensors.

Optimizer and scheduler state dicts, RNG states and counters are nested dicts, lists and tuples of
numbers, strings and tensors. :func:`encode_state` moves every tensor into a flat dict (written with
safetensors) and tags what JSON cannot say by itself (tuples, dicts with non-string keys such as an
optimizer's parameter ids), so :func:`read_state` gives back the same structure by parsing JSON and
safetensors only: a state file can never run code when it is loaded.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import torch

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"


def encode_state(obj, tensors: dict[str, torch.Tensor]):
    """A JSON-able copy of ``obj`` with every tensor moved into ``tensors`` (named ``t<i>``).

    Tuples and dicts with non-string keys (an optimizer's per-parameter state) are tagged so that
    :func:`decode_state` gives back the same types. Anything but tensors, numbers, strings, None,
    lists, tuples and dicts is refused: the state must stay loadable without a pickle.
    """
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().contiguous()
        return {"__tensor__": name}
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_state(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [encode_state(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode_state(v, tensors) for k, v in obj.items()}
        return {"__items__": [[encode_state(k, tensors), encode_state(v, tensors)] for k, v in obj.items()]}
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} without pickling it; convert it to tensors or lists")


def decode_state(obj, tensors: dict[str, torch.Tensor]):
    """Inverse of :func:`encode_state`."""
    if isinstance(obj, list):
        return [decode_state(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__tuple__" in obj:
        return tuple(decode_state(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {decode_state(k, tensors): decode_state(v, tensors) for k, v in obj["__items__"]}
    return {k: decode_state(v, tensors) for k, v in obj.items()}


def write_state(folder: Path, state: dict) -> None:
    """``state`` as ``trainer_state.json`` + ``trainer_state.safetensors`` in ``folder``."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    encoded = encode_state(state, tensors)
    save_file(tensors, str(Path(folder) / STATE_TENSORS))
    (Path(folder) / STATE_JSON).write_text(json.dumps(encoded))


def read_state(folder: Path) -> dict:
    """The state :func:`write_state` wrote in ``folder``."""
    from safetensors.torch import load_file

    tensors = load_file(str(Path(folder) / STATE_TENSORS))
    return decode_state(json.loads((Path(folder) / STATE_JSON).read_text(encoding="utf-8")), tensors)


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) RNG states as tensors and plain values (no pickle needed)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)},
        "numpy_gauss": [int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    has_gauss, cached = state["numpy_gauss"]
    np.random.set_state(
        (np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"], has_gauss, cached)
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


#: Parts of a trainer state that are not counters: optimizer and scheduler state, RNG states.
_NOT_COUNTERS = frozenset({"optimizer", "scheduler", "rng", "generator"})


def _walk(obj, path: str):
    """``(dotted path, leaf)`` of every tensor and scalar in a decoded state."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, obj


def nonfinite_entries(state) -> list[str]:
    """Paths of the floats and floating tensors of ``state`` holding inf or NaN (e.g. ``optimizer.param_groups[0].lr``)."""
    bad = []
    for path, leaf in _walk(state, ""):
        if isinstance(leaf, torch.Tensor):
            if leaf.is_floating_point() and not bool(torch.isfinite(leaf).all()):
                bad.append(path)
        elif isinstance(leaf, float) and not math.isfinite(leaf):
            bad.append(path)
    return bad


def negative_counters(state: dict) -> list[str]:
    """Paths of the counters of ``state`` (every number outside the optimizer, scheduler and RNG states) that are
    negative, or neither numbers, flags, names nor unset."""
    bad = []
    for key, value in state.items():
        if key in _NOT_COUNTERS:
            continue
        for path, leaf in _walk(value, key):
            if isinstance(leaf, bool) or leaf is None or isinstance(leaf, str):
                continue  # flags, unset values and names
            if not isinstance(leaf, (int, float)) or leaf < 0:
                bad.append(path)
    return bad

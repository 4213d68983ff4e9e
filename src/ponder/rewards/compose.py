"""Combining rewards, the name -> function registry, and the TRL adapter."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from ponder.rewards.core import format_batch, length_reward, majority_vote, verifiable

#: name -> batch reward ``fn(prompts, completions, group_ids, **columns) -> FloatTensor [N]``.
#: ``ponder.rewards.likelihood`` adds the model-based rewards on import (``import ponder.rewards`` does).
REWARDS: dict[str, Callable[..., Tensor]] = {
    "verifiable": verifiable,
    "majority_vote": majority_vote,
    "format": format_batch,
    "length": length_reward,
}


def parse_reward_spec(spec: str) -> dict[str, float]:
    """``"verifiable=1,format=0.1"`` -> ``{"verifiable": 1.0, "format": 0.1}`` (a bare name weighs 1).

    Raises ``ValueError`` naming the known rewards for an unknown name or a bad weight. Rewards
    registered later (the model-based ones) are known once :mod:`ponder.rewards` is imported.
    """
    weights: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, w = part.partition("=")
        name = name.strip()
        if name not in REWARDS:
            raise ValueError(f"unknown reward {name!r}; known rewards: {', '.join(sorted(REWARDS))}")
        try:
            weights[name] = float(w) if w.strip() else 1.0
        except ValueError:
            raise ValueError(f"reward weight {w!r} of {name!r} is not a number") from None
    if not weights:
        raise ValueError(
            "the reward spec names no reward (e.g. --reward verifiable or --reward 'verifiable=1,format=0.1')"
        )
    return weights


def combine(rewards: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """``sum_k weights[k] * rewards[k]`` ``[N]`` (fp32).

    Every weight name must be a key of ``rewards`` (``KeyError`` otherwise: a typo must not
    silently drop a term); rewards without a weight are ignored (e.g. logged diagnostics). All
    weighted rewards must have the same shape. NaNs are not handled here: they propagate, and
    masking or replacing them is the caller's job.
    """
    if not weights:
        raise ValueError("combine needs at least one weight")
    unknown = sorted(set(weights) - set(rewards))
    if unknown:
        raise KeyError(f"weights name unknown rewards {unknown}; have {sorted(rewards)}")
    terms = [float(w) * torch.as_tensor(rewards[k]).float() for k, w in weights.items()]
    shape = terms[0].shape
    if any(t.shape != shape for t in terms):
        raise ValueError(f"reward shapes differ: { {k: tuple(torch.as_tensor(rewards[k]).shape) for k in weights} }")
    return torch.stack(terms).sum(0)


def prompt_group_id(prompt) -> int:
    """Stable non-negative int64 id of a prompt (text or chat messages): equal prompts, equal ids, on every rank."""
    key = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str)
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 1


def _completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        return str(completion[-1].get("content", ""))  # conversational: the last (assistant) message
    raise TypeError(f"cannot read a completion of type {type(completion).__name__}")


def trl_reward(fn: Callable[..., Tensor] | str, columns: Mapping[str, str] | None = None, **bound) -> Callable:
    """TRL-style reward ``f(prompts, completions, **kwargs) -> list[float]`` from a batch reward.

    ``fn`` is a batch reward or a :data:`REWARDS` name; ``bound`` fixes keyword arguments (task,
    model, tokenizer, weights...). TRL passes dataset columns as kwargs; ``columns`` renames them
    (``{"reference_answers": "answer"}`` feeds the ``answer`` column as ``reference_answers``).
    TRL gives no group ids: completions with identical prompts form a group, with a stable hash of
    the prompt as id, so groups also match across ranks when a group method gathers them.
    Conversational completions are reduced to their last message's content; prompts pass as given.
    """
    func = REWARDS[fn] if isinstance(fn, str) else fn
    renames = dict(columns or {})

    def reward(prompts, completions, **kwargs) -> list[float]:
        for arg, col in renames.items():
            if col in kwargs:
                kwargs[arg] = kwargs.pop(col)
        texts = [_completion_text(c) for c in completions]
        group_ids = torch.tensor([prompt_group_id(p) for p in prompts], dtype=torch.long)
        out = func(list(prompts), texts, group_ids, **{**kwargs, **bound})
        return [float(x) for x in torch.as_tensor(out).reshape(-1)]

    reward.__name__ = getattr(func, "__name__", "reward")  # TRL logs rewards by __name__
    return reward


def from_trl_reward(fn: Callable[..., Sequence[float]]) -> Callable[..., Tensor]:
    """Batch reward from a TRL-style reward ``fn(prompts, completions, **kwargs) -> list[float]``.

    The inverse of :func:`trl_reward`. The batch reward passes its columns to ``fn`` as keyword
    arguments, as TRL passes dataset columns: in ``ponder grpo`` these are ``group_ids``, ``task``,
    ``model``, ``tokenizer``, ``prompt_ids``, ``completion_ids`` and, when the reward mix reads labels,
    ``reference_answers`` and ``problems``. ``fn`` must return one number per completion; anything else
    (a ``None``, a wrong count) is a ``ValueError`` naming the reward.

    Returns:
        ``reward(prompts, completions, group_ids=None, **columns) -> FloatTensor [N]``.
    """
    name = getattr(fn, "__name__", "reward")

    def reward(prompts, completions, group_ids=None, **columns) -> Tensor:
        values = list(fn(list(prompts), list(completions), group_ids=group_ids, **columns))
        if len(values) != len(completions) or any(v is None for v in values):
            raise ValueError(f"reward {name!r} must return one number per completion ({len(completions)})")
        return torch.tensor([float(v) for v in values], dtype=torch.float32)

    reward.__name__ = name
    return reward


_REGISTERED: set[str] = set()  # names added by register_reward (replaceable; ponder's own are not)


def register_reward(name: str, fn: Callable, trl_signature: bool = True) -> None:
    """Make ``fn`` usable by ``name`` in a reward mix (``--reward 'verifiable=1,NAME=0.2'``, ``GRPOJob(reward=...)``).

    Args:
        name: the name the mix uses; a built-in reward's name is refused (``ValueError``), a name
            registered before is replaced.
        fn: a TRL-style reward ``fn(prompts, completions, **kwargs) -> list[float]`` (wrapped with
            :func:`from_trl_reward`), or, with ``trl_signature=False``, a batch reward
            ``fn(prompts, completions, group_ids, **columns) -> FloatTensor [N]``.
        trl_signature: whether ``fn`` has TRL's signature.
    """
    if name in REWARDS and name not in _REGISTERED:
        raise ValueError(f"{name!r} is a built-in reward; register yours under another name")
    REWARDS[name] = from_trl_reward(fn) if trl_signature else fn
    _REGISTERED.add(name)

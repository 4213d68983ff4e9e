"""Verifier-free and verifiable rewards that need no model: task score, TTRL majority vote, format, length.

Every batch reward has the signature ``fn(prompts, completions, group_ids, **columns) -> FloatTensor [N]``
(CPU, fp32): ``N`` completions, ``group_ids [N]`` (list or LongTensor) marking which completions were
sampled for the same prompt (a GRPO group of size ``G``). Extra keyword columns are ignored, so one
column dict can feed several rewards. Completions look like ``<think>...</think>ANSWER`` or ``ANSWER``.

Distributed training: a group's ``G`` completions may be spread over several processes. Group
methods (:func:`majority_vote`, :func:`majority_stats`) therefore vote over
:func:`gather_answers_for_vote`, which all-gathers ``(answer, group_id)`` from every rank when
``torch.distributed`` is initialised (identity otherwise). Group ids must then be global (equal
ids on different ranks mean the same group), every rank must call the reward (it is a collective),
and the ``G >= 2`` check applies to the gathered groups. Each rank still gets rewards for its own
completions only.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor

from ponder.data.task import Problem, Task, majority_answer, normalize_answer
from ponder.lm.delimiters import THINK_CLOSE, THINK_OPEN, split_thought, think_token_ids, thought_ids_of

GroupIds = Sequence[int] | Tensor


def _ids(group_ids: GroupIds, n: int) -> list[int]:
    ids = group_ids.tolist() if isinstance(group_ids, Tensor) else [int(g) for g in group_ids]
    if len(ids) != n:
        raise ValueError(f"{len(ids)} group ids for {n} completions")
    return ids


def _check_group_sizes(group_ids: Sequence[int]) -> None:
    if any(c < 2 for c in Counter(group_ids).values()):
        raise ValueError("group methods need G >= 2")


def _all_gather(payload: tuple) -> list[tuple]:
    """Every rank's ``payload`` in rank order (``[payload]`` when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [payload]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, payload)
    return out


def gather_answers_for_vote(
    local_answers: Sequence[str | None], local_group_ids: GroupIds
) -> tuple[list[str | None], list[int]]:
    """All ranks' ``(answers, group_ids)`` concatenated in rank order; the inputs unchanged when not distributed.

    Uses ``torch.distributed.all_gather_object`` when ``torch.distributed.is_initialized()``; a
    collective, so every rank must call it. Rank order makes "earliest seen" tie-breaking of the
    vote identical on all ranks.
    """
    ids = _ids(local_group_ids, len(local_answers))
    parts = _all_gather((list(local_answers), ids))
    return [a for ans, _ in parts for a in ans], [g for _, gs in parts for g in gs]


# ---------------------------------------------------------------- verifiable


def verifiable(
    prompts: Sequence[str],
    completions: Sequence[str],
    group_ids: GroupIds = None,
    *,
    problems: Sequence[Problem | str],
    task: Task,
    **_,
) -> Tensor:
    """``task.score(problem, completion)`` per completion ``[N]``.

    ``problems[i]`` is a :class:`Problem` or a bare reference answer string (a dataset column, as
    TRL passes it), wrapped as ``Problem(prompt=prompts[i], answer=...)``.
    """
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems for {len(completions)} completions")
    probs = [p if isinstance(p, Problem) else Problem(prompt=q, answer=str(p)) for q, p in zip(prompts, problems)]
    return torch.tensor([float(task.score(p, c)) for p, c in zip(probs, completions)], dtype=torch.float32)


# ---------------------------------------------------------------- TTRL majority vote


def _group_majorities(answers: Sequence[str | None], ids: Sequence[int]) -> dict[int, str | None]:
    by_group: dict[int, list[str | None]] = defaultdict(list)
    for a, g in zip(answers, ids):
        by_group[g].append(a)
    return {g: majority_answer(ans) for g, ans in by_group.items()}


def _vote_reward(answer: str | None, label: str | None, no_answer_reward: float) -> float:
    if answer is None:
        return no_answer_reward
    return float(label is not None and normalize_answer(answer) == label)


def majority_vote(
    prompts: Sequence[str],
    completions: Sequence[str],
    group_ids: GroupIds,
    *,
    task: Task,
    no_answer_reward: float = 0.0,
    **_,
) -> Tensor:
    """TTRL reward ``[N]``: 1 when a completion's answer equals its group's majority answer, else 0.

    Answers are ``task.extract_answer`` normalised with :func:`normalize_answer`; the majority is
    :func:`ponder.data.task.majority_answer` (ties go to the earliest seen). Completions without an
    extractable answer get ``no_answer_reward`` and never vote. The vote runs over the whole group
    across processes (:func:`gather_answers_for_vote`). Raises ``ValueError`` when a group has one
    member (a lone sample always agrees with itself: no signal).
    """
    answers = [task.extract_answer(c) for c in completions]
    ids = _ids(group_ids, len(completions))
    all_answers, all_ids = gather_answers_for_vote(answers, ids)
    _check_group_sizes(all_ids)
    labels = _group_majorities(all_answers, all_ids)
    return torch.tensor(
        [_vote_reward(a, labels[g], no_answer_reward) for a, g in zip(answers, ids)], dtype=torch.float32
    )


def majority_stats(
    prompts: Sequence[str],
    completions: Sequence[str],
    group_ids: GroupIds,
    *,
    task: Task,
    reference_answers: Sequence[str] | None = None,
    no_answer_reward: float = 0.0,
    **_,
) -> dict:
    """Diagnostics of the TTRL pseudo-labels, over all processes' completions.

    * ``majority_ratio``: per group, (completions whose answer is the majority) / G (no-answer
      completions count in G), averaged over groups; 0 for a group with no answer at all.
    * ``no_answer_fraction``: share of completions without an extractable answer.
    * with ``reference_answers`` (one per completion, constant within a group):
      ``label_accuracy``: share of groups whose majority equals the normalised reference;
      ``reward_accuracy``: share of completions whose vote reward equals the reward the true label
      would give (1 if answer == reference, ``no_answer_reward`` if no answer, else 0).
    """
    answers = [task.extract_answer(c) for c in completions]
    ids = _ids(group_ids, len(completions))
    refs = list(reference_answers) if reference_answers is not None else [None] * len(ids)
    if len(refs) != len(ids):
        raise ValueError(f"{len(refs)} reference answers for {len(ids)} completions")
    parts = _all_gather((answers, ids, refs))
    answers, ids, refs = ([x for p in parts for x in p[k]] for k in range(3))
    _check_group_sizes(ids)
    if not ids:
        return {"num_groups": 0}
    labels = _group_majorities(answers, ids)
    hits: dict[int, list[float]] = defaultdict(list)
    for a, g in zip(answers, ids):
        hits[g].append(float(a is not None and labels[g] is not None and normalize_answer(a) == labels[g]))
    stats = {
        "num_groups": len(labels),
        "majority_ratio": sum(sum(h) / len(h) for h in hits.values()) / len(hits),
        "no_answer_fraction": sum(a is None for a in answers) / len(answers),
    }
    if reference_answers is not None:
        ref_of = {g: normalize_answer(r) for g, r in zip(ids, refs)}
        stats["label_accuracy"] = sum(labels[g] == ref_of[g] for g in labels) / len(labels)
        agree = [
            _vote_reward(a, labels[g], no_answer_reward) == _vote_reward(a, ref_of[g], no_answer_reward)
            for a, g in zip(answers, ids)
        ]
        stats["reward_accuracy"] = sum(agree) / len(agree)
    return stats


# ---------------------------------------------------------------- format and length


def format_ok(completion: str, require_think: bool = True) -> bool:
    """Exactly one closed thought (nothing but whitespace before ``<think>``) followed by a non-empty answer.

    With ``require_think=False`` a completion without any delimiter and with non-empty text also passes.
    """
    n_open, n_close = completion.count(THINK_OPEN), completion.count(THINK_CLOSE)
    if n_open == 0 and n_close == 0:
        return not require_think and bool(completion.strip())
    if n_open != 1 or n_close != 1:
        return False
    start, end = completion.find(THINK_OPEN), completion.find(THINK_CLOSE)
    return start < end and not completion[:start].strip() and bool(completion[end + len(THINK_CLOSE) :].strip())


def format_reward(completions: Sequence[str], require_think: bool = True, **_) -> Tensor:
    """``[N]`` 1.0 where :func:`format_ok`, else 0.0 (unclosed, repeated or empty-answer thoughts get 0)."""
    return torch.tensor([float(format_ok(c, require_think)) for c in completions], dtype=torch.float32)


def thought_token_counts(completions: Sequence[str], tokenizer=None) -> Tensor:
    """``[N]`` tokens of each completion's first thought (unclosed ones included; 0 with no thought).

    Counts ``tokenizer`` tokens (no special tokens added), or characters when ``tokenizer`` is None.
    """
    thoughts = [split_thought(c)[0] or "" for c in completions]
    if tokenizer is None:
        return torch.tensor([len(t) for t in thoughts], dtype=torch.long)
    return torch.tensor([len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in thoughts], dtype=torch.long)


def length_penalty(lengths: Sequence[int] | Tensor, target: int, scale: float = 1.0) -> Tensor:
    """Overlength shaping ``[N]``: ``-scale * max(0, len - target) / target``.

    0 up to ``target`` tokens, then linear in the relative excess (-scale at twice the target).
    Never positive, so it cannot pay for short thoughts; add it to a task reward via :func:`combine`.
    """
    if target <= 0:
        raise ValueError("target must be positive")
    x = torch.as_tensor(lengths, dtype=torch.float32)
    return -scale * (x - target).clamp(min=0) / target


def length_reward(
    prompts: Sequence[str],
    completions: Sequence[str],
    group_ids: GroupIds = None,
    *,
    target: int,
    scale: float = 1.0,
    tokenizer=None,
    completion_ids: Sequence[Sequence[int]] | None = None,
    **_,
) -> Tensor:
    """Batch form of :func:`length_penalty` over thought token counts.

    Counted on ``completion_ids`` (the sampled ids: tokens between ``<think>`` and ``</think>``) when
    given, else on the texts (:func:`thought_token_counts`).
    """
    if completion_ids is not None and tokenizer is not None:
        open_id, close_id = think_token_ids(tokenizer)
        lengths = [len(thought_ids_of(c, open_id, close_id) or []) for c in completion_ids]
        return length_penalty(lengths, target, scale)
    return length_penalty(thought_token_counts(completions, tokenizer), target, scale)


def format_batch(
    prompts: Sequence[str], completions: Sequence[str], group_ids: GroupIds = None, *, require_think: bool = True, **_
) -> Tensor:
    """Batch-signature form of :func:`format_reward` (for the registry)."""
    return format_reward(completions, require_think)

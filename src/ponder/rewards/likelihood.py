"""Model-based verifier-free rewards: answer likelihood (RLPR/VeriFree), self-certainty (INTUITOR), margin (RLSF).

All run without gradients (``torch.no_grad``; results are plain CPU fp32 tensors that may enter
autograd graphs as constants) and upcast logits to fp32. Prompts are tokenized with special
tokens, completions without, and the id lists are concatenated (as :func:`ponder.lm.score.score_pairs`
does), so a completion's tokens are the same whatever the prompt. Only the positions predicting
completion tokens get logits (``logits_to_keep`` when the model supports it).

Shapes: ``N`` completions, ``L`` completion tokens, ``V`` vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from ponder.lm.delimiters import split_thought, think_token_ids, thought_ids_of, wrap_thought
from ponder.lm.hf_compat import supports_logits_to_keep
from ponder.lm.padding import left_pad, model_device, pad_id_of, position_ids_from_mask, tokenize_pairs
from ponder.lm.score import score_pairs
from ponder.rewards.compose import REWARDS

# ---------------------------------------------------------------- pure functions


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(values.dtype)
    return (values * m).sum(-1) / m.sum(-1).clamp(min=1)


def self_certainty_from_logprobs(logprobs: Tensor, mask: Tensor) -> Tensor:
    """INTUITOR self-certainty ``[N]``: mean over masked positions of ``KL(U || p) = -log V - (1/V) sum_v log p_v``.

    ``logprobs [N, L, V]`` (normalised log-probs), ``mask [N, L]`` (1 = completion token). 0 for a
    uniform ``p``; grows without bound as ``p`` concentrates (mass ``eps`` left on other tokens
    gives about ``-(V-1)/V log eps``), which is what rewards confident predictions. Rows with an
    empty mask get 0. (``KL(p || U) = log V - H(p)``, bounded by ``log V``, is a different quantity.)
    """
    lp = logprobs.float()
    kl = -math.log(lp.shape[-1]) - lp.mean(-1)  # [N, L]
    return _masked_mean(kl, mask)


def margin_confidence_from_logprobs(logprobs: Tensor, mask: Tensor) -> Tensor:
    """RLSF-style confidence ``[N]``: mean over masked positions of ``p_top1 - p_top2`` (in [0, 1]).

    ``logprobs [N, L, V]`` (V >= 2), ``mask [N, L]``. The margin between the two most likely
    tokens is 1 for a deterministic prediction and 0 when the top two tie; unlike the chosen
    token's probability it does not depend on which token was sampled, and unlike entropy it
    ignores the tail. Rows with an empty mask get 0.
    """
    top = logprobs.float().exp().topk(2, dim=-1).values  # [N, L, 2]
    return _masked_mean(top[..., 0] - top[..., 1], mask)


# ---------------------------------------------------------------- model wrappers


def _pairs(tokenizer, prompts, completions, prompt_ids, completion_ids) -> tuple[list[list[int]], list[list[int]]]:
    """``(context ids, continuation ids)``: the sampled ids when given (token-native), else tokenized texts."""
    if (prompt_ids is None) != (completion_ids is None):
        raise ValueError("pass both prompt_ids and completion_ids, or neither")
    if prompt_ids is None:
        return tokenize_pairs(tokenizer, prompts, completions)
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompt id lists but {len(completion_ids)} completion id lists")
    return [list(p) for p in prompt_ids], [list(c) for c in completion_ids]


def _completion_stat(
    model,
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str],
    stat: Callable[[Tensor, Tensor], Tensor],
    span: Callable[[list[int]], list[bool]] | None = None,
    batch_size: int | None = None,
    prompt_ids: Sequence[Sequence[int]] | None = None,
    completion_ids: Sequence[Sequence[int]] | None = None,
) -> Tensor:
    """``stat(logprobs [b, l, V], mask [b, l])`` over the completion tokens of each prompt+completion.

    ``prompt_ids``/``completion_ids`` (the ids as sampled, as a trainer passes them) are scored
    as given; without them the texts are tokenized (prompt with special tokens, completion
    without). ``span(completion_ids) -> [bool]`` narrows the mask to part of the completion.
    """
    ctx, cont = _pairs(tokenizer, prompts, completions, prompt_ids, completion_ids)
    out = torch.zeros(len(ctx))
    device, pad_id, keep_kw = model_device(model), pad_id_of(tokenizer), supports_logits_to_keep(model)
    order = sorted(range(len(ctx)), key=lambda i: len(ctx[i]) + len(cont[i]))
    step = batch_size or max(len(ctx), 1)
    with torch.no_grad():
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            longest = max(len(cont[i]) for i in idx)
            if longest == 0:
                continue
            ids, attn = left_pad([ctx[i] + cont[i] for i in idx], pad_id, device)
            kwargs = {"logits_to_keep": longest + 1} if keep_kw else {}
            logits = model(
                input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn), use_cache=False, **kwargs
            ).logits
            logprobs = torch.log_softmax(logits[:, -longest - 1 : -1].float(), dim=-1)  # predicts the last `longest`
            mask = torch.zeros(len(idx), longest, dtype=torch.bool)
            for row, i in enumerate(idx):
                keep = span(cont[i]) if span is not None else [True] * len(cont[i])
                if keep:
                    mask[row, longest - len(cont[i]) :] = torch.tensor(keep, dtype=torch.bool)
            out[idx] = stat(logprobs, mask.to(device)).cpu()
    return out


def self_certainty(
    logits_or_model,
    tokenizer=None,
    prompts: Sequence[str] | None = None,
    completions: Sequence[str] | None = None,
    mask: Tensor | None = None,
    batch_size: int | None = None,
    prompt_ids: Sequence[Sequence[int]] | None = None,
    completion_ids: Sequence[Sequence[int]] | None = None,
) -> Tensor:
    """INTUITOR self-certainty ``[N]`` (:func:`self_certainty_from_logprobs`), no gradients.

    Either ``logits [N, L, V]`` (``mask [N, L]``, default all ones) or a causal LM with
    ``tokenizer``, ``prompts`` and ``completions``: one forward on prompt+completion, averaged over
    every completion token (thought and answer alike, as in INTUITOR). ``prompt_ids``/``completion_ids``:
    the sampled ids, scored as given.
    """
    if isinstance(logits_or_model, Tensor):
        with torch.no_grad():
            logprobs = torch.log_softmax(logits_or_model.float(), dim=-1)
            m = torch.ones(logprobs.shape[:-1]) if mask is None else mask
            return self_certainty_from_logprobs(logprobs, m.to(logprobs.device))
    if tokenizer is None or prompts is None or completions is None:
        raise ValueError("a model needs tokenizer, prompts and completions")
    return _completion_stat(
        logits_or_model,
        tokenizer,
        prompts,
        completions,
        self_certainty_from_logprobs,
        batch_size=batch_size,
        prompt_ids=prompt_ids,
        completion_ids=completion_ids,
    )


def answer_span(completion_ids: Sequence[int], open_id: int, close_id: int) -> list[bool]:
    """Mask of the answer tokens: those after the first ``</think>``; all tokens when there is no
    thought at all; none when a thought is left open."""
    ids = list(completion_ids)
    if close_id in ids:
        cut = ids.index(close_id) + 1
        return [False] * cut + [True] * (len(ids) - cut)
    return [open_id not in ids] * len(ids)


def answer_confidence(
    model,
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int | None = None,
    prompt_ids: Sequence[Sequence[int]] | None = None,
    completion_ids: Sequence[Sequence[int]] | None = None,
) -> Tensor:
    """RLSF-style answer confidence ``[N]``: :func:`margin_confidence_from_logprobs` over the answer span.

    The span is located by token ids (:func:`answer_span`, needs the think tokens in the
    vocabulary); completions without answer tokens get 0.
    """
    open_id, close_id = think_token_ids(tokenizer)
    return _completion_stat(
        model,
        tokenizer,
        prompts,
        completions,
        margin_confidence_from_logprobs,
        span=lambda ids: answer_span(ids, open_id, close_id),
        batch_size=batch_size,
        prompt_ids=prompt_ids,
        completion_ids=completion_ids,
    )


def answer_likelihood(
    model,
    tokenizer,
    prompts: Sequence[str],
    thoughts: Sequence[str | None],
    reference_answers: Sequence[str],
    reduce: Literal["mean", "sum"] = "mean",
    baseline: bool = True,
    batch_size: int | None = None,
    prompt_ids: Sequence[Sequence[int]] | None = None,
    thought_ids: Sequence[Sequence[int] | None] | None = None,
) -> Tensor:
    """Answer log-likelihood gain of a thought ``[N]`` (RLPR / VeriFree family).

    ``log p(answer | prompt <think>thought</think>) - log p(answer | prompt)`` with per-token
    log-probs reduced by ``reduce`` (mean: per-token, length-neutral; sum: sequence log-prob).
    The baseline is the no-think context ``prompt + answer`` with no delimiters (exactly how
    no-think mode answers), so the reward is the thought's information gain about the reference
    answer rather than what the prompt alone already implies; ``baseline=False`` returns the raw
    with-thought term. A None thought is scored as an empty one. Baselines are computed once per
    distinct (prompt, answer) pair. With ``prompt_ids`` and ``thought_ids`` (the sampled ids) the
    contexts are those ids, not re-tokenized text; the reference answers are tokenized once.
    """
    if not len(prompts) == len(thoughts) == len(reference_answers):
        raise ValueError("prompts, thoughts and reference_answers must have the same length")
    if reduce not in ("mean", "sum"):
        raise ValueError(f"unknown reduce {reduce!r}; expected 'mean' or 'sum'")
    answers = [str(a) for a in reference_answers]
    if prompt_ids is not None:
        open_id, close_id = think_token_ids(tokenizer)
        contexts = [[*p, open_id, *(t or []), close_id] for p, t in zip(prompt_ids, thought_ids)]
        bases = [tuple(p) for p in prompt_ids]
    else:
        contexts = [p + wrap_thought(t or "") for p, t in zip(prompts, thoughts)]
        bases = list(prompts)
    with_thought = score_pairs(model, tokenizer, contexts, answers, batch_size=batch_size)
    gain = getattr(with_thought, reduce).clone()
    if baseline:
        pairs = list(dict.fromkeys(zip(bases, answers)))
        ctx = [list(p) if isinstance(p, tuple) else p for p, _ in pairs]
        base = score_pairs(model, tokenizer, ctx, [a for _, a in pairs], batch_size=batch_size)
        value = dict(zip(pairs, getattr(base, reduce).tolist()))
        gain -= torch.tensor([value[pa] for pa in zip(bases, answers)])
    return gain


# ---------------------------------------------------------------- batch-signature forms (registry)


def answer_likelihood_reward(
    prompts,
    completions,
    group_ids=None,
    *,
    model,
    tokenizer,
    reference_answers,
    reduce: Literal["mean", "sum"] = "mean",
    baseline: bool = True,
    batch_size: int | None = None,
    prompt_ids=None,
    completion_ids=None,
    **_,
) -> Tensor:
    """:func:`answer_likelihood` with each completion's first thought (unclosed thoughts are scored as if closed).

    With ``prompt_ids``/``completion_ids`` (token-native, as ponder's trainers and TRL pass them) the
    thought is read from the ids as sampled.
    """
    thoughts = [split_thought(c)[0] for c in completions]
    thought_ids = None
    if completion_ids is not None:
        open_id, close_id = think_token_ids(tokenizer)
        thought_ids = [thought_ids_of(c, open_id, close_id) for c in completion_ids]
    return answer_likelihood(
        model, tokenizer, prompts, thoughts, reference_answers, reduce, baseline, batch_size, prompt_ids, thought_ids
    )


def self_certainty_reward(
    prompts,
    completions,
    group_ids=None,
    *,
    model,
    tokenizer,
    batch_size: int | None = None,
    prompt_ids=None,
    completion_ids=None,
    **_,
) -> Tensor:
    return self_certainty(
        model,
        tokenizer,
        prompts,
        completions,
        batch_size=batch_size,
        prompt_ids=prompt_ids,
        completion_ids=completion_ids,
    )


def answer_confidence_reward(
    prompts,
    completions,
    group_ids=None,
    *,
    model,
    tokenizer,
    batch_size: int | None = None,
    prompt_ids=None,
    completion_ids=None,
    **_,
) -> Tensor:
    return answer_confidence(
        model,
        tokenizer,
        prompts,
        completions,
        batch_size=batch_size,
        prompt_ids=prompt_ids,
        completion_ids=completion_ids,
    )


def _register() -> None:
    REWARDS.update(
        {
            "answer_likelihood": answer_likelihood_reward,
            "self_certainty": self_certainty_reward,
            "answer_confidence": answer_confidence_reward,
        }
    )


_register()

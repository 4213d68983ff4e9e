"""RLP rollouts: positions in documents, G thoughts per position, and the tensors that score them.

A *position* is a token ``x_t`` of a document with its prefix ``x_<t``. A rollout samples G
thoughts ``c`` after ``x_<t <think>`` and lays out one sequence per thought::

    x_<t  <think>  c_1 .. c_L  </think>  x_t .. x_{t+k-1}
          ^ open   ^ loss mask (+ the model's own </think>)   ^ target mask

so a single teacher-forced forward gives both the thought tokens' log-probs (the policy
loss) and ``log p(x_t | x_<t, c)`` (the reward's first term). The no-think baseline is one
teacher-forced pass per document, which gives ``log p(x_t | x_<t)`` at every position at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import Tensor

from ponder.lm.score import pad_id_of, token_logprobs
from ponder.lm.thoughts import think_token_ids

ANSWER, OTHER = "answer", "other"


@dataclass
class Doc:
    """A tokenized document window. ``answer_start``: first token of the answer span, if the source marks one."""

    ids: list[int]
    answer_start: int | None = None

    def position_class(self, t: int) -> str:
        return ANSWER if self.answer_start is not None and t >= self.answer_start else OTHER


def tokenize_docs(tokenizer, items: Iterable[tuple[str, int | None]], context_length: int) -> list[Doc]:
    """``(text, answer_char_start)`` pairs -> :class:`Doc` windows of at most ``context_length`` tokens.

    A longer document is cut into consecutive windows (each its own document). The answer span
    is located with the fast tokenizer's offsets, so it is right for any tokenizer.
    """
    docs = []
    for text, answer_char in items:
        enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=answer_char is not None)
        ids = enc["input_ids"]
        answer_tok = None
        if answer_char is not None:
            offsets = enc["offset_mapping"]
            answer_tok = next((i for i, (s, e) in enumerate(offsets) if e > s and s >= answer_char), None)
        for start in range(0, len(ids), context_length):
            window = ids[start:start + context_length]
            ans = None if answer_tok is None else max(0, answer_tok - start)
            if answer_tok is not None and answer_tok >= start + len(window):
                ans = None
            docs.append(Doc(window, ans))
    return docs


def eligible_range(doc_len: int) -> range:
    """Positions ``t`` with a non-empty prefix: ``1 <= t < doc_len``.

    Position 0 is never used: nothing conditions it (with a BOS token, position 1 is the
    document's first real token and its prefix is just BOS). A reward over the next k tokens
    takes the ``x_t .. x_{t+k-1}`` that exist: fewer near the end of the document, so the
    answer at the end of a short document stays eligible for any k.
    """
    return range(1, max(1, doc_len))


def choose_positions(
    docs: Sequence[Doc],
    per_doc: int,
    generator: torch.Generator,
    weights: Sequence[Tensor] | None = None,
) -> list[tuple[int, int]]:
    """Up to ``per_doc`` distinct positions ``(doc_index, t)`` per document.

    ``weights[d]`` (``[len(doc)]``, non-negative) draws positions in proportion to it (e.g. the
    EMA baseline's loss or entropy); otherwise uniformly. Documents with no eligible position
    are skipped (the caller counts them).
    """
    out = []
    for d, doc in enumerate(docs):
        span = eligible_range(len(doc.ids))
        if len(span) == 0:
            continue
        m = min(per_doc, len(span))
        if weights is None:
            pick = torch.randperm(len(span), generator=generator)[:m]
        else:
            w = weights[d][span.start:span.stop].double().clamp(min=0) + 1e-8
            pick = torch.multinomial(w, m, replacement=False, generator=generator)
        out += [(d, span.start + int(i)) for i in sorted(pick.tolist())]
    return out


@dataclass
class Thoughts:
    """``N = B * G`` sampled thoughts (rows ``b*G .. b*G+G-1`` belong to position ``b``).

    ``ids``: thought token ids without delimiters; ``closed [N]``: the model closed the thought
    itself (False: cut at the budget and closed for it).
    """

    ids: list[list[int]]
    closed: Tensor

    @property
    def lengths(self) -> Tensor:
        return torch.tensor([len(t) for t in self.ids], dtype=torch.float32)


def sample_thoughts(
    model, tokenizer, prefixes: Sequence[Sequence[int]], group_size: int, max_tokens: int,
    temperature: float = 0.7, top_p: float = 1.0, generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> Thoughts:
    """G thoughts after each ``prefix + <think>``: at least one token, at most ``max_tokens``, no EOS inside."""
    from ponder.lm.sample import _eos_ids, sample

    if max_tokens < 1:
        raise ValueError("the thought budget must be at least 1 token (got %d)" % max_tokens)
    open_id, close_id = think_token_ids(tokenizer)
    was_training = model.training
    model.eval()
    s = sample(model, tokenizer, [list(p) + [open_id] for p in prefixes], n=group_size, max_new_tokens=max_tokens,
               temperature=temperature, top_p=top_p, generator=generator, batch_size=batch_size,
               stop_token_ids=[close_id], ban_token_ids=[open_id, *_eos_ids(model, tokenizer)], min_new_tokens=1)
    model.train(was_training)
    ids, closed = [], []
    for row, row_mask in zip(s.tokens.tolist(), s.mask.tolist()):
        kept = [t for t, m in zip(row, row_mask) if m]
        is_closed = bool(kept) and kept[-1] == close_id
        ids.append(kept[:-1] if is_closed else kept)
        closed.append(is_closed)
    return Thoughts(ids, torch.tensor(closed))


@dataclass
class PolicyBatch:
    """Right-padded sequences ``prefix <think> c </think> targets``, one per thought.

    ``input_ids``/``attention_mask`` ``[N, T]``; ``loss_mask [N, T]`` marks the policy's own
    actions: the thought tokens and, when the model produced it, the closing delimiter (the
    decision to stop thinking); a delimiter added at the budget is not an action and is not
    in the mask. ``target_mask [N, T]`` marks the ``k`` scored tokens.
    """

    input_ids: Tensor
    attention_mask: Tensor
    loss_mask: Tensor
    target_mask: Tensor


def build_policy_batch(
    prefixes: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], thoughts: Thoughts,
    group_size: int, open_id: int, close_id: int, pad_id: int, device=None,
) -> PolicyBatch:
    """Lay out the ``B * G`` scoring sequences (see :class:`PolicyBatch`)."""
    rows, loss_spans, target_spans = [], [], []
    for n, (thought, closed) in enumerate(zip(thoughts.ids, thoughts.closed.tolist())):
        b = n // group_size
        prefix, target = list(prefixes[b]), list(targets[b])
        seq = prefix + [open_id] + list(thought) + [close_id] + target
        start = len(prefix) + 1
        loss_spans.append((start, start + len(thought) + (1 if closed else 0)))
        target_spans.append((len(seq) - len(target), len(seq)))
        rows.append(seq)
    from ponder.lm.score import pad_ids

    input_ids, attention = pad_ids(rows, pad_id)
    loss_mask = torch.zeros(input_ids.shape, dtype=torch.bool)
    target_mask = torch.zeros(input_ids.shape, dtype=torch.bool)
    for i, ((a, b), (c, d)) in enumerate(zip(loss_spans, target_spans)):
        loss_mask[i, a:b] = True
        target_mask[i, c:d] = True
    return PolicyBatch(*(x.to(device) for x in (input_ids, attention, loss_mask, target_mask)))


def doc_logprobs(model, docs: Sequence[Sequence[int]], pad_id: int, return_entropy: bool = False):
    """No-think baseline: one teacher-forced pass per document.

    Returns a list of ``[len(doc)]`` log-probs (``[t]`` = log p(x_t | x_<t), 0 at t = 0), and with
    ``return_entropy`` a matching list of predictive entropies (nats).
    """
    from ponder.lm.score import model_device, pad_ids

    ids, mask = pad_ids(docs, pad_id, model_device(model))
    with torch.no_grad():
        out = token_logprobs(model, ids, mask, return_entropy=return_entropy)
    logp, ent = out if return_entropy else (out, None)
    rows = [logp[i, : len(d)].float().cpu() for i, d in enumerate(docs)]
    if return_entropy:
        return rows, [ent[i, : len(d)].float().cpu() for i, d in enumerate(docs)]
    return rows


@torch.no_grad()
def think_probs(model, docs: Sequence[Sequence[int]], pad_id: int, open_id: int) -> list[Tensor]:
    """``[len(doc)]`` per document: ``[t] = p(<think> | x_<t)``, the model's own wish to think before x_t (0 at t = 0)."""
    from ponder.lm.score import model_device, pad_ids, position_ids_from_mask

    ids, mask = pad_ids(docs, pad_id, model_device(model))
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False).logits
    p_open = logits[:, :-1].float().log_softmax(-1)[..., open_id].exp().cpu()  # [B, T-1], predicts position t = 1..
    return [torch.cat([torch.zeros(1), p_open[i, : len(d) - 1]]) for i, d in enumerate(docs)]


def target_logprob_sums(logp: Tensor, target_mask: Tensor) -> Tensor:
    """``[N]`` sum of the target tokens' log-probs (``logp [N, T]`` from :func:`token_logprobs`)."""
    return (logp * target_mask).sum(-1)


@dataclass
class Rollout:
    """Everything one RLP step needs about its positions and thoughts (no gradients)."""

    positions: list[tuple[int, int]]  # (doc index, t), B of them
    classes: list[str]  # B position classes
    prefixes: list[list[int]]
    targets: list[list[int]]
    thoughts: Thoughts
    baseline_logp: Tensor  # [B] log p_baseline(x_t..x_{t+k-1} | x_<t), no thought
    batch: PolicyBatch


def make_rollout(
    policy, baseline, tokenizer, docs: Sequence[Doc], per_doc: int, group_size: int, k: int,
    max_thought_tokens: int, temperature: float, top_p: float, generator: torch.Generator,
    position_weighting: str = "uniform", batch_size: int | None = None,
) -> Rollout | None:
    """Choose positions, run the baseline's one pass per document, sample G thoughts per position.

    ``position_weighting``: ``uniform``, ``ema_loss`` (draw t in proportion to the baseline's
    -log p(x_t | x_<t)), ``ema_entropy`` (its predictive entropy) or ``think_prob`` (the
    baseline's p(<think> | x_<t): think where the model itself would open a thought). Returns
    None when no document has an eligible position.
    """
    from ponder.lm.score import model_device

    pad_id = pad_id_of(tokenizer)
    open_id, close_id = think_token_ids(tokenizer)
    base_logp, base_ent = doc_logprobs(baseline, [d.ids for d in docs], pad_id, return_entropy=True)
    weights = None
    if position_weighting == "ema_loss":
        weights = [-lp for lp in base_logp]
    elif position_weighting == "ema_entropy":
        weights = base_ent
    elif position_weighting == "think_prob":
        weights = think_probs(baseline, [d.ids for d in docs], pad_id, open_id)
    elif position_weighting != "uniform":
        raise ValueError(f"unknown position weighting {position_weighting!r} (uniform, ema_loss, ema_entropy, think_prob)")
    positions = choose_positions(docs, per_doc, generator, weights)
    if not positions:
        return None
    prefixes = [docs[d].ids[:t] for d, t in positions]
    targets = [docs[d].ids[t:t + k] for d, t in positions]
    baseline_logp = torch.stack([base_logp[d][t:t + k].sum() for d, t in positions])
    thoughts = sample_thoughts(policy, tokenizer, prefixes, group_size, max_thought_tokens, temperature, top_p,
                               generator, batch_size)
    batch = build_policy_batch(prefixes, targets, thoughts, group_size, open_id, close_id, pad_id,
                               device=model_device(policy))
    classes = [docs[d].position_class(t) for d, t in positions]
    return Rollout(positions, classes, prefixes, targets, thoughts, baseline_logp, batch)

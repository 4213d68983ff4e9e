"""RLP rollouts: positions in documents, G thoughts per position, and the tensors that score them.

A *position* is a token ``x_t`` of a document with its prefix ``x_<t``. A rollout samples G
thoughts ``c`` after ``x_<t <think>`` and lays out one sequence per thought::

    x_<t  <think>  c_1 .. c_L  </think>  x_t .. x_{t+k-1}
          ^ open   ^ loss mask (+ the model's own </think>)   ^ target mask

so a single teacher-forced forward gives both the thought tokens' log-probs (the policy
loss) and ``log p(x_t | x_<t, c)`` (the reward's first term). The no-think baseline is one
teacher-forced pass per document, which gives ``log p(x_t | x_<t)`` at every position at once.

Two layouts of that forward give the same log-probs and gradients:

* :class:`TreeBatch` (default): one row per *document*. The document's prefix is computed once
  and every branch ``<think> c </think> x_t..`` of every position of that document attends to
  it up to its own ``t`` (a 4D attention mask, position ids continuing from ``t``). The prefix
  is neither duplicated G times nor once per position.
* :class:`PolicyBatch` (fallback for attention kernels that take no 4D mask, e.g. flash
  attention): one padded row per thought.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ponder.lm.score import pad_id_of, token_logprobs
from ponder.lm.thoughts import think_token_ids

ANSWER, OTHER = "answer", "other"
LOG = logging.getLogger(__name__)


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
            window = ids[start : start + context_length]
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
    generator: torch.Generator | Sequence[torch.Generator],
    weights: Sequence[Tensor] | None = None,
) -> list[tuple[int, int]]:
    """Up to ``per_doc`` distinct positions ``(doc_index, t)`` per document.

    ``weights[d]`` (``[len(doc)]``, non-negative) draws positions in proportion to it (e.g. the
    EMA baseline's loss or entropy); otherwise uniformly. Documents with no eligible position
    are skipped (the caller counts them). ``generator``: one for all documents, or one per
    document (then a document's positions do not depend on the others).
    """
    out = []
    per_doc_gen = not isinstance(generator, torch.Generator)
    for d, doc in enumerate(docs):
        gen = generator[d] if per_doc_gen else generator
        span = eligible_range(len(doc.ids))
        if len(span) == 0:
            continue
        m = min(per_doc, len(span))
        if weights is None:
            pick = torch.randperm(len(span), generator=gen, device=gen.device)[:m].cpu()
        else:
            w = weights[d][span.start : span.stop].double().clamp(min=0) + 1e-8
            pick = torch.multinomial(w.to(gen.device), m, replacement=False, generator=gen).cpu()
        out += [(d, span.start + int(i)) for i in sorted(pick.tolist())]
    return out


@dataclass
class Thoughts:
    """``N = B * G`` sampled thoughts (rows ``b*G .. b*G+G-1`` belong to position ``b``).

    ``ids``: thought token ids without delimiters; ``closed [N]``: the model closed the thought
    itself (False: cut at the budget and closed for it). ``logprobs``: per thought, the fp32
    behaviour log-prob of each sampled token (its own ``</think>`` last when ``closed``), or None.
    """

    ids: list[list[int]]
    closed: Tensor
    logprobs: list[Tensor] | None = None

    @property
    def lengths(self) -> Tensor:
        return torch.tensor([len(t) for t in self.ids], dtype=torch.float32)


def sample_thoughts(
    model,
    tokenizer,
    prefixes: Sequence[Sequence[int]],
    group_size: int,
    max_tokens: int,
    temperature: float = 0.7,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    prompt_generators: Sequence[torch.Generator] | None = None,
) -> Thoughts:
    """G thoughts after each ``prefix + <think>``: at least one token, at most ``max_tokens``, no EOS inside.

    ``prompt_generators``: one per prefix (see :func:`ponder.lm.sample.sample`).
    """
    from ponder.lm.sample import _eos_ids, sample

    if max_tokens < 1:
        raise ValueError(f"the thought budget must be at least 1 token (got {max_tokens})")
    open_id, close_id = think_token_ids(tokenizer)
    was_training = model.training
    model.eval()
    s = sample(
        model,
        tokenizer,
        [list(p) + [open_id] for p in prefixes],
        n=group_size,
        max_new_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        generator=generator,
        batch_size=batch_size,
        stop_token_ids=[close_id],
        ban_token_ids=[open_id, *_eos_ids(model, tokenizer)],
        min_new_tokens=1,
        prompt_generators=prompt_generators,
    )
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

    layout = "padded"

    def logprobs(self, model, return_entropy: bool = False):
        """``[N, T]`` log-probs (and entropies) of every token of every thought's row; see :func:`token_logprobs`."""
        return token_logprobs(model, self.input_ids, self.attention_mask, return_entropy=return_entropy)

    @property
    def num_tokens(self) -> int:
        """Tokens the forward computes (padding excluded)."""
        return int(self.attention_mask.sum())


def build_policy_batch(
    prefixes: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    thoughts: Thoughts,
    group_size: int,
    open_id: int,
    close_id: int,
    pad_id: int,
    device=None,
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


@dataclass
class TreeBatch:
    """Shared-prefix layout: each document's prefix is computed once and ``N = B * G`` branches attend to it.

    The forward has two stages in one differentiable graph. (1) The ``D`` documents' prefixes
    ``x_<t_max`` (``t_max``: a document's last position) run once, leaving their keys and values
    in a KV cache. (2) The branches ``<think> c </think> x_t .. x_{t+k-1}``, one row per thought,
    run against that cache with a 4D mask: branch token ``j`` attends to its document's ``x_<t``
    and to its own branch up to ``j``, with position id ``t + j``. Gradients flow into the prefix
    through the cache, so the result equals one padded sequence per thought, while the prefix is
    computed neither G times nor once per position.

    ``prefix_ids``/``prefix_mask`` ``[D, P]`` (right-padded); ``branch_ids``/``branch_positions``
    ``[N, L]``; ``allowed [N, L, P + L]`` bool (query, key over prefix then branch columns);
    ``row [N]``: each thought's document. ``loss_mask``/``target_mask`` ``[N, L]`` are in branch
    coordinates (column 0 is ``<think>``), exactly :class:`PolicyBatch`'s rows with the prefix cut
    off, so the losses need not know the layout.
    """

    prefix_ids: Tensor
    prefix_mask: Tensor
    branch_ids: Tensor
    branch_positions: Tensor
    allowed: Tensor
    row: Tensor
    loss_mask: Tensor
    target_mask: Tensor
    num_tokens: int = 0  # tokens the forward computes (padding excluded)

    layout = "tree"

    def attention_bias(self, dtype: torch.dtype) -> Tensor:
        """``[N, 1, L, P + L]`` additive mask (0 attend, dtype min elsewhere): what eager and sdpa take as-is."""
        bias = torch.zeros(self.allowed.shape, dtype=dtype, device=self.allowed.device)
        return bias.masked_fill_(~self.allowed, torch.finfo(dtype).min)[:, None]

    @property
    def real_tokens(self) -> Tensor:
        """``[N, L]`` bool: branch tokens that are not padding (they see their branch's first token)."""
        return self.allowed[:, :, self.prefix_ids.shape[1]]

    def logprobs(self, model, return_entropy: bool = False):
        """``[N, L]`` log-probs (and entropies) of each branch token given its prefix and the branch before it.

        Column 0 (``<think>``, no action) and padding are 0. Differentiable, prefix included.
        """
        from ponder.lm.score import logprobs_from_logits, position_ids_from_mask, supports_logits_to_keep

        keep = {"logits_to_keep": 1} if supports_logits_to_keep(model) else {}
        cache = model(
            input_ids=self.prefix_ids,
            attention_mask=self.prefix_mask,
            position_ids=position_ids_from_mask(self.prefix_mask),
            use_cache=True,
            **keep,
        ).past_key_values
        _expand_cache_rows(cache, self.row)  # each thought's row of its document's keys/values (differentiable)
        dtype = next(model.parameters()).dtype
        logits = model(
            input_ids=self.branch_ids,
            attention_mask=self.attention_bias(dtype),
            position_ids=self.branch_positions,
            past_key_values=cache,
            use_cache=True,
        ).logits
        out = logprobs_from_logits(logits[:, :-1], self.branch_ids[:, 1:], return_entropy)  # [N, L-1]
        scored = self.real_tokens[:, 1:]  # a branch is contiguous: a real token's predecessor is real
        zero = logits.new_zeros((self.branch_ids.shape[0], 1), dtype=torch.float32)
        if return_entropy:
            return tuple(torch.cat([zero, x * scored], dim=1) for x in out)
        return torch.cat([zero, out * scored], dim=1)


def _expand_cache_rows(cache, row: Tensor) -> None:
    """Repeat the cache's document rows for their thoughts: row ``i`` of the result is document ``row[i]``.

    Thoughts come grouped by document, so each document's keys are broadcast (``expand``) to its
    run of rows: the backward is a sum over that run, far faster on CPU than the scatter-add
    that ``index_select`` (``reorder_cache``) needs.
    """
    layers = getattr(cache, "layers", None)
    runs = torch.unique_consecutive(row, return_counts=True)
    if layers is None or len(runs[0]) != len(torch.unique(row)) or not all(hasattr(x, "keys") for x in layers):
        cache.reorder_cache(row)
        return
    docs, counts = runs[0].tolist(), runs[1].tolist()

    def expand(x: Tensor) -> Tensor:
        return torch.cat([x[d : d + 1].expand(c, *x.shape[1:]) for d, c in zip(docs, counts)])

    for layer in layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys, layer.values = expand(layer.keys), expand(layer.values)


def build_tree_batch(
    doc_ids: Sequence[Sequence[int]],
    positions: Sequence[tuple[int, int]],
    k: int,
    thoughts: Thoughts,
    group_size: int,
    open_id: int,
    close_id: int,
    pad_id: int,
    device=None,
) -> TreeBatch:
    """Lay out the ``B * G`` branches over their documents' shared prefixes (see :class:`TreeBatch`).

    ``positions[b] = (doc index, t)``; thoughts ``b*G .. b*G+G-1`` belong to position ``b``.
    Only documents with a position get a prefix row.
    """
    from ponder.lm.score import pad_ids

    docs_used = sorted({d for d, _ in positions})
    row_of = {d: r for r, d in enumerate(docs_used)}
    t_max = {d: max(t for dd, t in positions if dd == d) for d in docs_used}
    prefix_ids, prefix_mask = pad_ids([list(doc_ids[d][: t_max[d]]) for d in docs_used], pad_id)
    width = prefix_ids.shape[1]
    branches, starts, rows, loss_spans, target_spans = [], [], [], [], []
    for n, (thought, closed) in enumerate(zip(thoughts.ids, thoughts.closed.tolist())):
        d, t = positions[n // group_size]
        target = list(doc_ids[d][t : t + k])
        branches.append([open_id, *thought, close_id, *target])
        starts.append(t)
        rows.append(row_of[d])
        loss_spans.append((1, 1 + len(thought) + (1 if closed else 0)))
        target_spans.append((len(branches[-1]) - len(target), len(branches[-1])))
    branch_ids, branch_mask = pad_ids(branches, pad_id)
    length = branch_ids.shape[1]
    t = torch.tensor(starts)
    branch_positions = t[:, None] + torch.arange(length)
    real = branch_mask.bool()
    causal = torch.ones((length, length), dtype=torch.bool).tril()
    allowed = torch.cat(
        [
            (torch.arange(width)[None, None, :] < t[:, None, None]) & real[:, :, None],  # x_<t, real tokens only
            causal[None] & real[:, None, :] & real[:, :, None],  # own branch, causal
        ],
        dim=2,
    )
    pads = ~real
    allowed[:, :, width:] |= torch.diag_embed(pads)  # padding attends to itself (no fully masked row)
    loss_mask = torch.zeros((len(branches), length), dtype=torch.bool)
    target_mask = torch.zeros((len(branches), length), dtype=torch.bool)
    for i, ((a, b), (c, e)) in enumerate(zip(loss_spans, target_spans)):
        loss_mask[i, a:b] = True
        target_mask[i, c:e] = True
    tensors = (
        prefix_ids,
        prefix_mask,
        branch_ids,
        branch_positions,
        allowed,
        torch.tensor(rows),
        loss_mask,
        target_mask,
    )
    return TreeBatch(*(x.to(device) for x in tensors), num_tokens=int(prefix_mask.sum()) + int(branch_mask.sum()))


def tree_mask_supported(model) -> bool:
    """Whether the model's attention takes a custom 4D additive mask as-is (eager, sdpa); not flash/flex."""
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return impl in (None, "eager", "sdpa")


@dataclass
class BaselinePass:
    """What one teacher-forced pass of the no-think baseline gives, per document (``[len(doc)]`` each, 0 at t = 0).

    ``logp[t] = log p(x_t | x_<t)``; ``entropy[t]``: the predictive entropy there (nats);
    ``think_prob[t] = p(<think> | x_<t)``, the model's own wish to think before ``x_t`` (when asked for).
    """

    logp: list[Tensor]
    entropy: list[Tensor]
    think_prob: list[Tensor] | None = None


@torch.no_grad()
def doc_logprobs(model, docs: Sequence[Sequence[int]], pad_id: int, think_id: int | None = None) -> BaselinePass:
    """No-think baseline: one teacher-forced pass per document gives every position's figures at once."""
    from ponder.lm.score import logprobs_from_logits, model_device, pad_ids, position_ids_from_mask

    ids, mask = pad_ids(docs, pad_id, model_device(model))  # right padding: row i's first len(doc) columns are real
    logits = model(
        input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False
    ).logits
    logits = logits[:, :-1]  # [B, T-1, V]: column t - 1 predicts position t
    logp, ent = logprobs_from_logits(logits, ids[:, 1:], return_entropy=True)
    think = None
    if think_id is not None:  # the same logits, read at the <think> column
        think = logprobs_from_logits(logits, torch.full_like(ids[:, 1:], think_id)).exp()

    def rows(x: Tensor) -> list[Tensor]:
        x = x.float().cpu()
        return [torch.cat([torch.zeros(1), x[i, : len(d) - 1]]) for i, d in enumerate(docs)]

    return BaselinePass(rows(logp), rows(ent), None if think is None else rows(think))


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
    batch: TreeBatch | PolicyBatch


def resolve_layout(model, layout: str = "auto") -> str:
    """``tree`` when the model's attention takes a 4D mask, else ``padded`` (logged); explicit choices are checked."""
    if layout not in ("auto", "tree", "padded"):
        raise ValueError(f"unknown batch layout {layout!r} (auto, tree, padded)")
    if layout == "padded":
        return layout
    if tree_mask_supported(model):
        return "tree"
    impl = model.config._attn_implementation
    if layout == "tree":
        raise ValueError(f"attention implementation {impl!r} takes no 4D mask: use layout 'padded' or 'auto'")
    LOG.warning(
        "attention implementation %r takes no 4D mask: RLP uses the padded batch (prefix once per thought)", impl
    )
    return "padded"


def keyed_generators(seed: int, keys: Sequence[int], device=None) -> list[torch.Generator]:
    """One generator per key, seeded from ``(seed, key)``: randomness that follows an item, not its batch."""
    return [
        torch.Generator(device=device).manual_seed((seed * 1_000_003 + int(k) * 7919 + 17) % (2**63 - 1)) for k in keys
    ]


def make_rollout(
    policy,
    baseline,
    tokenizer,
    docs: Sequence[Doc],
    per_doc: int,
    group_size: int,
    k: int,
    max_thought_tokens: int,
    temperature: float,
    top_p: float,
    generator: torch.Generator | Sequence[torch.Generator],
    position_weighting: str = "uniform",
    batch_size: int | None = None,
    layout: str = "auto",
    backend=None,
) -> Rollout | None:
    """Choose positions, run the baseline's one pass per document, sample G thoughts per position.

    ``position_weighting``: ``uniform``, ``ema_loss`` (draw t in proportion to the baseline's
    -log p(x_t | x_<t)), ``ema_entropy`` (its predictive entropy) or ``think_prob`` (the
    baseline's p(<think> | x_<t): think where the model itself would open a thought). ``generator``: one for the
    whole batch, or one per document (a document's positions and thoughts then depend only on
    its own generator: data-parallel ranks reproduce a single process). ``layout``: ``auto``
    (tree when the attention takes a 4D mask), ``tree`` or ``padded``. ``backend``: a
    :class:`ponder.rl.generation.GenerationBackend` that samples the thoughts (default: ponder's
    sampler on ``policy``). Returns None when no document has an eligible position.
    """
    from ponder.lm.score import model_device

    pad_id = pad_id_of(tokenizer)
    open_id, close_id = think_token_ids(tokenizer)
    layout = resolve_layout(policy, layout)
    if position_weighting not in ("uniform", "ema_loss", "ema_entropy", "think_prob"):
        raise ValueError(
            f"unknown position weighting {position_weighting!r} (uniform, ema_loss, ema_entropy, think_prob)"
        )
    base = doc_logprobs(
        baseline, [d.ids for d in docs], pad_id, open_id if position_weighting == "think_prob" else None
    )
    weights = {
        "uniform": None,
        "ema_loss": [-lp for lp in base.logp],
        "ema_entropy": base.entropy,
        "think_prob": base.think_prob,
    }[position_weighting]
    positions = choose_positions(docs, per_doc, generator, weights)
    if not positions:
        return None
    prefixes = [docs[d].ids[:t] for d, t in positions]
    targets = [docs[d].ids[t : t + k] for d, t in positions]
    baseline_logp = torch.stack([base.logp[d][t : t + k].sum() for d, t in positions])
    per_prompt, sampler = None, generator
    if not isinstance(generator, torch.Generator):  # each position's thoughts get a generator seeded by its document's
        sampler = None
        per_prompt = [
            torch.Generator(device=generator[d].device).manual_seed(
                int(torch.randint(2**62, (1,), generator=generator[d], device=generator[d].device))
            )
            for d, _ in positions
        ]
    if backend is not None:
        thoughts = backend.generate(prefixes, group_size, max_thought_tokens, temperature, top_p, per_prompt)
    else:
        thoughts = sample_thoughts(
            policy,
            tokenizer,
            prefixes,
            group_size,
            max_thought_tokens,
            temperature,
            top_p,
            sampler,
            batch_size,
            prompt_generators=per_prompt,
        )
    if layout == "tree":
        batch = build_tree_batch(
            [d.ids for d in docs],
            positions,
            k,
            thoughts,
            group_size,
            open_id,
            close_id,
            pad_id,
            device=model_device(policy),
        )
    else:
        batch = build_policy_batch(
            prefixes, targets, thoughts, group_size, open_id, close_id, pad_id, device=model_device(policy)
        )
    classes = [docs[d].position_class(t) for d, t in positions]
    return Rollout(positions, classes, prefixes, targets, thoughts, baseline_logp, batch)

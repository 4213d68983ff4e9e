"""Training batches: the sampled sequences laid out for one differentiable forward.

A batch holds ``N`` sequences and, in the same ``[N, L]`` coordinates, ``loss_mask`` (the
policy's own sampled actions: thought tokens, the model's own ``</think>``, answer tokens),
``target_mask`` (tokens scored for a reward but not trained, e.g. RLP's next-token window) and
``behaviour_logp`` (the sampler's log-prob of each action). :meth:`scores` gives the trainer's
log-probs and entropies where either mask is set, the actions at the policy temperature and the
targets at temperature 1 (a text likelihood), without ever computing the batch's full logits
(:class:`ponder.lm.logprobs.TokenScorer`).

Both layouts satisfy one contract, :class:`~ponder.train.batch.TrainBatch`, which is what the engine
(:class:`~ponder.train.engine.StepBatch`) and the micro-batching (:mod:`ponder.train.micro`) read; a
layout is a choice of how the forward runs, never of what the loss sees. Two layouts, the same numbers:

* :class:`PaddedBatch`: one right-padded row per sequence (GRPO completions; RLP's fallback for
  attention kernels that take no 4D mask, e.g. flash attention);
* :class:`TreeBatch` (RLP's default): each document's prefix is computed once and every branch
  ``<think> c </think> x_t ..`` of every position of that document attends to it up to its own
  ``t`` (a 4D mask, position ids continuing from ``t``); the prefix is neither duplicated G times
  nor once per position, and gradients flow into it through the cache.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ponder.lm import hf_compat
from ponder.lm.logprobs import TokenScorer, token_logprobs
from ponder.lm.padding import pad_ids, position_ids_from_mask, used_width
from ponder.lm.thinking import Thoughts

LOG = logging.getLogger(__name__)


@dataclass
class PaddedBatch:
    """``N`` right-padded rows. ``input_ids``/``attention_mask``/``loss_mask``/``target_mask``/``behaviour_logp`` ``[N, T]``."""

    input_ids: Tensor
    attention_mask: Tensor
    loss_mask: Tensor
    target_mask: Tensor
    behaviour_logp: Tensor

    layout = "padded"

    def scores(self, model, inv_temperature: float = 1.0) -> tuple[Tensor, Tensor]:
        """``(logp, entropy) [N, T]``: actions at ``inv_temperature``, targets at 1; 0 elsewhere. Differentiable."""
        inv = torch.where(self.loss_mask, inv_temperature, 1.0) if inv_temperature != 1.0 else 1.0
        return token_logprobs(
            model,
            self.input_ids,
            self.attention_mask,
            return_entropy=True,
            score_mask=self.loss_mask | self.target_mask,
            inv_temperature=inv,
        )

    @property
    def num_tokens(self) -> int:
        """Tokens the forward computes (padding excluded)."""
        return int(self.attention_mask.sum())

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def sequence(self, row: int) -> list[int]:
        return self.input_ids[row][self.attention_mask[row] != 0].tolist()

    def select(self, rows: Tensor) -> PaddedBatch:
        """Rows ``rows`` as a batch of their own, trailing all-padding columns cut (a micro-batch; same numbers)."""
        rows = rows.to(self.input_ids.device)
        width = used_width(self.attention_mask[rows] != 0)
        tensors = (self.input_ids, self.attention_mask, self.loss_mask, self.target_mask, self.behaviour_logp)
        return PaddedBatch(*(x[rows, :width] for x in tensors))


def padded_batch(
    sequences: Sequence[Sequence[int]],
    loss_masks: Sequence[Sequence[bool]],
    behaviour: Sequence[Tensor],
    pad_id: int,
    target_spans: Sequence[tuple[int, int]] | None = None,
    device=None,
) -> PaddedBatch:
    """Right-pad ``sequences``; ``loss_masks[i]``/``behaviour[i]`` have ``len(sequences[i])`` entries each."""
    ids, attention = pad_ids(sequences, pad_id)
    loss = torch.zeros(ids.shape, dtype=torch.bool)
    target = torch.zeros(ids.shape, dtype=torch.bool)
    logp = torch.zeros(ids.shape, dtype=torch.float32)
    for i, (m, b) in enumerate(zip(loss_masks, behaviour)):
        if len(m) != len(sequences[i]) or len(b) != len(sequences[i]):
            raise ValueError(f"row {i}: {len(sequences[i])} tokens but {len(m)} mask and {len(b)} log-prob entries")
        loss[i, : len(m)] = torch.tensor(list(m), dtype=torch.bool)
        logp[i, : len(b)] = torch.as_tensor(b, dtype=torch.float32)
        if target_spans is not None:
            target[i, target_spans[i][0] : target_spans[i][1]] = True
    return PaddedBatch(*(x.to(device) for x in (ids, attention, loss, target, logp)))


def _thought_row(thoughts: Thoughts, n: int, start: int, length: int) -> tuple[list[bool], Tensor]:
    """Loss mask and behaviour log-probs over a row of ``length`` tokens whose thought body starts at ``start``."""
    body, shut = len(thoughts.ids[n]), bool(thoughts.closed[n])
    mask = [False] * length
    for j in range(start, start + body + int(shut)):
        mask[j] = True
    logp = torch.zeros(length)
    logp[start : start + body + int(shut)] = thoughts.logprobs[n].float()
    return mask, logp


def rlp_padded_batch(
    prefixes: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    thoughts: Thoughts,
    open_id: int,
    close_id: int,
    pad_id: int,
    device=None,
) -> PaddedBatch:
    """RLP's ``B * G`` rows ``prefix <think> c </think> x_t..x_{t+k-1}``; thought ``n`` belongs to position ``n // G``.

    The loss mask marks the thought tokens and, when the model produced it, ``</think>`` (the
    decision to stop thinking); a delimiter added at the budget is not an action.
    """
    seqs, masks, logps, spans = [], [], [], []
    for n, thought in enumerate(thoughts.ids):
        b = n // thoughts.n
        prefix, target = list(prefixes[b]), list(targets[b])
        seq = prefix + [open_id, *thought, close_id] + target
        mask, logp = _thought_row(thoughts, n, len(prefix) + 1, len(seq))
        seqs.append(seq)
        masks.append(mask)
        logps.append(logp)
        spans.append((len(seq) - len(target), len(seq)))
    return padded_batch(seqs, masks, logps, pad_id, spans, device)


@dataclass
class TreeBatch:
    """Shared-prefix layout (module docstring); every ``[N, L]`` tensor is in branch coordinates (column 0 is ``<think>``).

    ``prefix_ids``/``prefix_mask`` ``[D, P]`` (right-padded prefixes ``x_<t_max`` of the ``D``
    documents); ``branch_ids``/``branch_positions`` ``[N, L]``; ``allowed [N, L, P + L]`` bool
    (query, key over prefix then branch columns); ``row [N]``: each thought's document.
    """

    prefix_ids: Tensor
    prefix_mask: Tensor
    branch_ids: Tensor
    branch_positions: Tensor
    allowed: Tensor
    row: Tensor
    loss_mask: Tensor
    target_mask: Tensor
    behaviour_logp: Tensor
    num_tokens: int = 0  # tokens the forward computes (padding excluded)

    layout = "tree"

    def __len__(self) -> int:
        return self.branch_ids.shape[0]

    def sequence(self, row: int) -> list[int]:
        """The document's prefix up to the branch's position, then the branch (its real tokens)."""
        start = int(self.branch_positions[row, 0])
        prefix = self.prefix_ids[self.row[row], :start].tolist()
        return prefix + self.branch_ids[row][self.real_tokens[row]].tolist()

    def select(self, rows: Tensor) -> TreeBatch:
        """Branches ``rows`` over the prefixes they use only, padding columns cut (a micro-batch; same numbers)."""
        rows = rows.to(self.row.device)
        docs, row = torch.unique(self.row[rows], sorted=True, return_inverse=True)
        width = self.prefix_ids.shape[1]
        prefix = used_width(self.prefix_mask[docs] != 0)
        length = used_width(self.real_tokens[rows])
        allowed = self.allowed[rows, :length]
        allowed = torch.cat([allowed[:, :, :prefix], allowed[:, :, width : width + length]], dim=2)
        branch = (self.branch_ids, self.branch_positions)
        per_token = (self.loss_mask, self.target_mask, self.behaviour_logp)
        return TreeBatch(
            self.prefix_ids[docs, :prefix],
            self.prefix_mask[docs, :prefix],
            *(x[rows, :length] for x in branch),
            allowed,
            row,
            *(x[rows, :length] for x in per_token),
            num_tokens=int(self.prefix_mask[docs].sum()) + int(self.real_tokens[rows].sum()),
        )

    def attention_bias(self, dtype: torch.dtype) -> Tensor:
        """``[N, 1, L, P + L]`` additive mask (0 attend, dtype min elsewhere): what eager and sdpa take as-is."""
        bias = torch.zeros(self.allowed.shape, dtype=dtype, device=self.allowed.device)
        return bias.masked_fill_(~self.allowed, torch.finfo(dtype).min)[:, None]

    @property
    def real_tokens(self) -> Tensor:
        """``[N, L]`` bool: branch tokens that are not padding (they see their branch's first token)."""
        return self.allowed[:, :, self.prefix_ids.shape[1]]

    def scores(self, model, inv_temperature: float = 1.0) -> tuple[Tensor, Tensor]:
        """``(logp, entropy) [N, L]`` of each masked branch token given its prefix and the branch before it.

        Actions at ``inv_temperature``, targets at 1, 0 elsewhere (column 0 included). Differentiable, prefix included.
        """
        scorer = TokenScorer(model)
        cache = scorer.prefill(self.prefix_ids, self.prefix_mask, position_ids_from_mask(self.prefix_mask))
        hf_compat.expand_cache_rows(cache, self.row)  # each thought's row of its document's keys/values
        states, _ = scorer.forward(
            self.branch_ids,
            self.attention_bias(activation_dtype(model)),
            self.branch_positions,
            cache=cache,
            use_cache=True,
        )
        # A branch is contiguous: a real token's predecessor is real. Column j - 1 predicts token j.
        mask = (self.loss_mask | self.target_mask)[:, 1:] & self.real_tokens[:, 1:]
        inv = torch.where(self.loss_mask[:, 1:], inv_temperature, 1.0) if inv_temperature != 1.0 else 1.0
        logp, ent = scorer.score(states[:, :-1], self.branch_ids[:, 1:], mask, inv, return_entropy=True)
        zero = logp.new_zeros((logp.shape[0], 1))
        return torch.cat([zero, logp], dim=1), torch.cat([zero, ent], dim=1)


def rlp_tree_batch(
    doc_ids: Sequence[Sequence[int]],
    positions: Sequence[tuple[int, int]],
    k: int,
    thoughts: Thoughts,
    open_id: int,
    close_id: int,
    pad_id: int,
    device=None,
) -> TreeBatch:
    """Lay out RLP's ``B * G`` branches over their documents' shared prefixes (see :class:`TreeBatch`).

    ``positions[b] = (doc index, t)``; thoughts ``b*G .. b*G+G-1`` belong to position ``b``. Only
    documents with a position get a prefix row.
    """
    docs_used = sorted({d for d, _ in positions})
    row_of = {d: r for r, d in enumerate(docs_used)}
    t_max = {d: max(t for dd, t in positions if dd == d) for d in docs_used}
    prefix_ids, prefix_mask = pad_ids([list(doc_ids[d][: t_max[d]]) for d in docs_used], pad_id)
    width = prefix_ids.shape[1]
    branches, starts, rows, spans, masks, logps = [], [], [], [], [], []
    for n, thought in enumerate(thoughts.ids):
        d, t = positions[n // thoughts.n]
        target = list(doc_ids[d][t : t + k])
        branch = [open_id, *thought, close_id, *target]
        mask, logp = _thought_row(thoughts, n, 1, len(branch))
        branches.append(branch)
        starts.append(t)
        rows.append(row_of[d])
        spans.append((len(branch) - len(target), len(branch)))
        masks.append(mask)
        logps.append(logp)
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
    allowed[:, :, width:] |= torch.diag_embed(~real)  # padding attends to itself (no fully masked row)
    loss_mask = torch.zeros((len(branches), length), dtype=torch.bool)
    target_mask = torch.zeros((len(branches), length), dtype=torch.bool)
    behaviour = torch.zeros((len(branches), length))
    for i, ((c, e), m, lp) in enumerate(zip(spans, masks, logps)):
        loss_mask[i, : len(m)] = torch.tensor(m)
        target_mask[i, c:e] = True
        behaviour[i, : len(lp)] = lp
    tensors = (
        prefix_ids,
        prefix_mask,
        branch_ids,
        branch_positions,
        allowed,
        torch.tensor(rows),
        loss_mask,
        target_mask,
        behaviour,
    )
    return TreeBatch(*(x.to(device) for x in tensors), num_tokens=int(prefix_mask.sum()) + int(branch_mask.sum()))


def activation_dtype(model) -> torch.dtype:
    """The dtype of the model's activations: autocast's when it is on for the model's device, else the weights'."""
    param = next(model.parameters())
    if torch.is_autocast_enabled(param.device.type):
        return torch.get_autocast_dtype(param.device.type)
    return param.dtype


def resolve_layout(model, layout: str = "auto") -> str:
    """``tree`` when the model's attention takes a 4D mask, else ``padded``; explicit choices are checked."""
    if layout not in ("auto", "tree", "padded"):
        raise ValueError(f"unknown batch layout {layout!r} (auto, tree, padded)")
    if layout == "padded":
        return "padded"
    if layout == "auto" and not hf_compat.takes_4d_mask(model):
        impl = hf_compat.attention_implementation(model)
        LOG.warning(
            "attention implementation %r takes no 4D mask: RLP uses the padded batch (prefix once per thought)", impl
        )
        return "padded"
    if not hf_compat.takes_4d_mask(model):
        impl = hf_compat.attention_implementation(model)
        raise ValueError(f"attention implementation {impl!r} takes no 4D mask: use layout 'padded' or 'auto'")
    return "tree"


def target_logprob_sums(logp: Tensor, target_mask: Tensor) -> Tensor:
    """``[N]`` sum of the target tokens' log-probs (``logp [N, T]`` from a batch's :meth:`scores`)."""
    return (logp * target_mask).sum(-1)

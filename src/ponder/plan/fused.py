"""One LM call per input: the greedy answer and the reference's log-likelihood from one prefill.

A planning evaluation needs two things per input: the model's greedy answer after the context, and
the log-likelihood of the reference answer after the same context. Asked separately they are two
calls (a sampler run and a teacher-forced scoring run, each reading the whole context). Here they
are one: a single forward reads ``context + reference`` (the contexts left-padded so that every
context ends at column ``P``, the references right-padded after them); the logits over the
reference give its log-likelihood, the logits at column ``P - 1`` give the first answer token, and
the KV cache, cropped back to the ``P`` context columns, serves the rest of the greedy answer. That
is what an LM API call with the reference echoed for its log-probs returns (one request: the
context read once, the reference read once, the answer written), so it is counted as one call.

Shapes: ``B`` contexts, ``P`` longest context, ``R`` longest reference, ``V`` vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ponder.lm import hf_compat
from ponder.lm.decode import _Batch, _Decoder
from ponder.lm.padding import left_pad, position_ids_from_mask


@dataclass
class AnswersAndScores:
    """``answer_ids[b]`` (as sampled, the ending token included), ``answer_logprobs[b]``, ``finished [B]``;
    ``ref_logprobs[b]`` ``[len(reference b)]`` fp32 log-probs of the reference after context ``b``, ``ref_sum [B]``,
    ``ref_tokens [B]``."""

    answer_ids: list[list[int]]
    answer_logprobs: list[Tensor]
    finished: Tensor
    ref_logprobs: list[Tensor]
    ref_sum: Tensor
    ref_tokens: Tensor


class _FusedDecoder(_Decoder):
    """The sampler's decoder whose prefill also reads the references (greedy, one row per context)."""

    def __init__(self, *args, references: list[list[int]], **kwargs):
        super().__init__(*args, **kwargs)
        self.references = references
        self.ref_logprobs: Tensor | None = None  # [B, R], 0 past each reference

    def _prefill(self, prompts: list[list[int]]) -> _Batch:
        ids_p, attn_p = left_pad(prompts, self.pad_id, self.device)  # [B, P]: every context ends at column P
        num, width = ids_p.shape
        longest = max((len(r) for r in self.references), default=0)
        ref = torch.full((num, longest), self.pad_id, dtype=torch.long, device=self.device)
        ref_mask = torch.zeros((num, longest), dtype=attn_p.dtype, device=self.device)
        for b, r in enumerate(self.references):
            ref[b, : len(r)] = torch.tensor(r, dtype=torch.long, device=self.device)
            ref_mask[b, : len(r)] = 1
        ids, attn = torch.cat([ids_p, ref], 1), torch.cat([attn_p, ref_mask], 1)  # [B, P + R]
        positions = position_ids_from_mask(attn)
        keep = {"logits_to_keep": longest + 1} if self.keep_last else {}
        out = self.model(input_ids=ids, attention_mask=attn, position_ids=positions, use_cache=True, **keep)
        logits = out.logits[:, -(longest + 1) :].float()  # column 0 is the context's last position
        logp = logits[:, :longest].log_softmax(-1).gather(-1, ref[..., None]).squeeze(-1)  # [B, R]
        self.ref_logprobs = logp * ref_mask
        cache = hf_compat.output_cache(out)
        if longest:
            cache.crop(-longest)  # the references leave the cache: the answer continues the context alone
        hf_compat.preallocate(cache, self.max_new)
        rows = torch.arange(num, device=self.device)
        live = torch.ones(num, dtype=torch.bool, device=self.device)
        return _Batch(cache, None, logits[:, 0], attn_p, positions[:, width - 1] + 1, rows, live)


def answer_and_score(
    model,
    tokenizer,
    rules,
    contexts: Sequence[Sequence[int]],
    references: Sequence[Sequence[int]],
    max_new_tokens: int,
) -> AnswersAndScores:
    """Greedy answers after ``contexts`` (ids as the model reads them) under decode ``rules``, and the
    log-probs of ``references`` (ids, no special tokens) after the same contexts, from one prefill.

    Same answers as :func:`ponder.lm.decode.sample` at temperature 0 on ``contexts`` and the same
    log-probs as :func:`ponder.lm.score.score_pairs` on ``(contexts, references)``, up to float
    rounding (tested on the tiny model); one forward over the contexts instead of two.
    """
    contexts = [list(c) for c in contexts]
    references = [list(r) for r in references]
    if len(contexts) != len(references):
        raise ValueError(f"{len(contexts)} contexts but {len(references)} references")
    if any(not c for c in contexts):
        raise ValueError("every context needs at least one token")
    was_training = model.training
    model.eval()
    try:
        decoder = _FusedDecoder(model, tokenizer, rules, 1, max_new_tokens, 0.0, 1.0, None, None, references=references)
        with torch.no_grad():
            if max_new_tokens > 0:
                tokens, mask, logp, finished = decoder.run(contexts, None)
            else:  # no answer: only the prefill, for the references
                decoder._prefill(contexts)
                tokens = torch.zeros((len(contexts), 0), dtype=torch.long)
                mask, logp = torch.zeros_like(tokens, dtype=torch.bool), torch.zeros(tokens.shape)
                finished = torch.zeros(len(contexts), dtype=torch.bool)
    finally:
        model.train(was_training)
    ref_lp = decoder.ref_logprobs.cpu()
    lens = [len(r) for r in references]
    return AnswersAndScores(
        [tokens[b][mask[b]].tolist() for b in range(len(contexts))],
        [logp[b][mask[b]].cpu() for b in range(len(contexts))],
        finished.cpu(),
        [ref_lp[b, :n] for b, n in enumerate(lens)],
        ref_lp.sum(-1),
        torch.tensor(lens, dtype=torch.long),
    )

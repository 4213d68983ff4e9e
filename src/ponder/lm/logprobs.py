"""Token log-probs and entropies without the whole batch's logits.

Losses and rewards need, at a few positions of a batch (thought tokens, a reward window, a
completion), the log-prob of the token that follows and the entropy of the distribution there.
:class:`TokenScorer` runs the model's decoder to its final hidden states, gathers the rows of the
scored positions only, and sends them through the output layer in chunks of tokens, each chunk
under activation checkpointing: at most one chunk's ``[tokens, vocabulary]`` logits exists at a
time, in the forward and in the backward (which recomputes them). At a vocabulary of 151,936 the
logits of 16 thoughts of 1,024 tokens would be 10 GB in fp32; here they are one chunk.

Models whose forward is not known to be exactly ``unembed(decoder(x))`` (see
:data:`ponder.lm.hf_compat.HIDDEN_PATH_MODEL_TYPES`) fall back to the model's own logits, still
gathered at the scored positions before the fp32 log-softmax.

Temperature: the policy of a sampler at temperature ``T`` is ``softmax(logits / T)``; scoring
takes a per-position inverse temperature so one forward can give the policy's log-probs of
thought tokens (at ``1/T``) and the text likelihood of a reward window (at 1).

Shapes: ``B`` rows, ``T`` positions, ``D`` hidden size, ``V`` vocabulary, ``K`` scored positions.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ponder.lm import hf_compat
from ponder.lm.padding import position_ids_from_mask

#: Cap on the fp32 logits computed at once (elements): 2**24 is 64 MiB; a chunk's backward holds about 7 such
#: tensors. 2**26 left 0.435 of the unchunked peak at vocabulary 151,936, 2**24 0.184 (bench/memory.py).
CHUNK_ELEMENTS = 1 << 24


def logprobs_from_logits(
    logits: Tensor, targets: Tensor, inv_temperature: float | Tensor = 1.0, return_entropy: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Log-prob of ``targets [...]`` under ``softmax(logits * inv_temperature)`` (fp32), optionally with entropy.

    ``logits [..., V]``; ``inv_temperature`` a float or ``[...]``. Upcasts at most
    :data:`CHUNK_ELEMENTS` logits at a time, slicing views along the flattened leading dims, so a
    non-contiguous ``logits[:, :-1]`` is never copied whole. Differentiable.
    """
    if logits.dim() < 2:
        raise ValueError("logits must be [..., V]")
    lead, vocab = logits.shape[:-1], logits.shape[-1]
    flat = logits.reshape(-1, vocab) if logits.dim() == 2 or logits.is_contiguous() else None
    if flat is None:  # keep views: chunk over the first dim, then over the second
        rows = [logits[i] for i in range(logits.shape[0])]
        tgt = [targets[i] for i in range(logits.shape[0])]
        inv = [inv_temperature[i] if isinstance(inv_temperature, Tensor) else inv_temperature for i in range(len(rows))]
        parts = [logprobs_from_logits(r, t, s, return_entropy) for r, t, s in zip(rows, tgt, inv)]
        if return_entropy:
            return torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts])
        return torch.stack(parts)
    y = targets.reshape(-1)
    scale = inv_temperature.reshape(-1) if isinstance(inv_temperature, Tensor) else None
    step = max(1, CHUNK_ELEMENTS // max(vocab, 1))
    logp, ent = [], []
    for a in range(0, flat.shape[0], step):
        s = scale[a : a + step] if scale is not None else inv_temperature
        lp, h = _chunk_logprobs(flat[a : a + step].float(), y[a : a + step], s, return_entropy)
        logp.append(lp)
        ent.append(h)
    logp_t = torch.cat(logp).reshape(lead) if logp else flat.new_zeros(lead, dtype=torch.float32)
    if return_entropy:
        return logp_t, (torch.cat(ent).reshape(lead) if ent else logp_t.clone())
    return logp_t


def _chunk_logprobs(logits: Tensor, targets: Tensor, inv_temperature, return_entropy: bool):
    """``logits [K, V]`` fp32 -> ``(logp [K], entropy [K] or None)`` at the given inverse temperature."""
    if isinstance(inv_temperature, Tensor):
        logits = logits * inv_temperature.to(logits.dtype)[:, None]
    elif inv_temperature != 1.0:
        logits = logits * inv_temperature
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets[:, None]).squeeze(-1) - lse
    if not return_entropy:
        return logp, None
    return logp, lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)  # H = logsumexp - E_p[logit]


class TokenScorer:
    """Forward to hidden states, then log-probs (and entropies) at chosen positions only.

    ``forward`` returns per-position *states*: final hidden states ``[B, T, D]`` where the model's
    logits are known to be ``unembed(hidden)`` post-processed, else the logits ``[B, T, V]``;
    ``score`` turns the states at masked positions into log-probs. Everything differentiable.
    """

    def __init__(self, model):
        self.model = model
        self.parts = hf_compat.decoder_and_unembed(model)

    @property
    def hidden_path(self) -> bool:
        return self.parts is not None

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, cache=None, use_cache=False):
        """``(states [B, T, D or V], cache)``: one forward of the decoder (or the whole model)."""
        target = self.parts[0] if self.parts is not None else self.model
        extra = hf_compat.cache_kwargs(target, cache) if cache is not None else {}
        out = target(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=use_cache, **extra
        )
        states = out.last_hidden_state if self.parts is not None else out.logits
        return states, (hf_compat.output_cache(out) if use_cache else None)

    def prefill(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor):
        """The KV cache of a prefix, computing as little output as possible (no logits on the hidden path)."""
        if self.parts is not None:
            return self.forward(input_ids, attention_mask, position_ids, use_cache=True)[1]
        keep = {"logits_to_keep": 1} if hf_compat.supports_logits_to_keep(self.model) else {}
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True, **keep
        )
        return hf_compat.output_cache(out)

    def score(
        self,
        states: Tensor,
        targets: Tensor,
        mask: Tensor,
        inv_temperature: float | Tensor = 1.0,
        return_entropy: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``logp [B, T]`` (fp32): ``states[:, t]`` predicts ``targets[:, t]``; 0 where ``mask`` is False.

        ``inv_temperature``: a float or ``[B, T]``. Only the ``K = mask.sum()`` masked rows reach
        the output layer, in checkpointed chunks of at most :data:`CHUNK_ELEMENTS` logits.
        """
        mask = mask.bool()
        rows = states[mask]  # [K, D or V]
        y = targets[mask]
        inv = inv_temperature[mask].float() if isinstance(inv_temperature, Tensor) else inv_temperature
        if self.parts is None:
            vals = logprobs_from_logits(rows, y, inv, return_entropy)
        else:
            vals = self._head_logprobs(rows, y, inv, return_entropy)
        logp_k, ent_k = vals if return_entropy else (vals, None)
        logp = states.new_zeros(mask.shape, dtype=torch.float32)
        logp[mask] = logp_k
        if not return_entropy:
            return logp
        ent = states.new_zeros(mask.shape, dtype=torch.float32)
        ent[mask] = ent_k
        return logp, ent

    def _head_logprobs(self, hidden: Tensor, targets: Tensor, inv, return_entropy: bool):
        """``hidden [K, D]`` through the output layer in checkpointed chunks -> ``logp [K]`` (and entropy)."""
        _, unembed = self.parts
        model = self.model
        step = max(1, CHUNK_ELEMENTS // max(unembed.out_features, 1))

        def chunk(h: Tensor, y: Tensor, s):
            logits = hf_compat.finish_logits(model, unembed(h)).float()
            lp, ent = _chunk_logprobs(logits, y, s, return_entropy)
            return (lp, ent) if return_entropy else lp

        logp, ent = [], []
        for a in range(0, hidden.shape[0], step):
            s = inv[a : a + step] if isinstance(inv, Tensor) else inv
            h, y = hidden[a : a + step], targets[a : a + step]
            out = checkpoint(chunk, h, y, s, use_reentrant=False) if torch.is_grad_enabled() else chunk(h, y, s)
            if return_entropy:
                logp.append(out[0])
                ent.append(out[1])
            else:
                logp.append(out)
        empty = hidden.new_zeros((0,), dtype=torch.float32)
        logp_t = torch.cat(logp) if logp else empty
        if return_entropy:
            return logp_t, (torch.cat(ent) if ent else empty)
        return logp_t


def token_logprobs(
    model,
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor | None = None,
    return_entropy: bool = False,
    score_mask: Tensor | None = None,
    inv_temperature: float | Tensor = 1.0,
) -> Tensor | tuple[Tensor, Tensor]:
    """Teacher-forced ``logprobs [B, T]``: ``logprobs[:, t] = log p(input_ids[:, t] | input_ids[:, <t])``.

    fp32. Zero where there is nothing to score: column 0, padding, the first attended token of a
    left-padded row, and wherever ``score_mask [B, T]`` (optional) is False. ``inv_temperature``:
    a float or ``[B, T]`` (aligned like the result). With ``return_entropy`` also the entropy
    (nats) of the distribution that predicted token ``t``. Not under ``no_grad``: gradients flow.
    """
    attention_mask = attention_mask.to(input_ids.device)
    if position_ids is None:
        position_ids = position_ids_from_mask(attention_mask)
    scorer = TokenScorer(model)
    states, _ = scorer.forward(input_ids, attention_mask, position_ids)
    # A token is scored when it and its predecessor are both attended; column t - 1 predicts t.
    scored = (attention_mask[:, 1:] != 0) & (attention_mask[:, :-1] != 0)
    if score_mask is not None:
        scored = scored & score_mask[:, 1:].bool()
    inv = inv_temperature[:, 1:] if isinstance(inv_temperature, Tensor) else inv_temperature
    out = scorer.score(states[:, :-1], input_ids[:, 1:], scored, inv, return_entropy)
    zero = torch.zeros((input_ids.shape[0], 1), dtype=torch.float32, device=input_ids.device)
    if return_entropy:
        return torch.cat([zero, out[0]], dim=1), torch.cat([zero, out[1]], dim=1)
    return torch.cat([zero, out], dim=1)

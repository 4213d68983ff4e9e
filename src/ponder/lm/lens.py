"""Per-layer hidden states and the logit lens.

The logit lens reads an intermediate residual stream ``h_l`` as if it were the last one:
``log_softmax(unembed(final_norm(h_l)))``. Layer indices follow ``output_hidden_states``:
0 is the embeddings, ``L = num_layers`` the last layer. In transformers 5.x the last entry of
``hidden_states`` is already final-normed (it is ``last_hidden_state``) while the others are
raw decoder-layer outputs, so applying the norm to it again would be wrong; the final layer's
lens therefore uses the model's own output logits, which also covers any post-processing
(scaling, soft-capping) exactly. Intermediate layers get the same post-processing via
:func:`_finish_logits`.

Shapes: ``B`` batch, ``T`` sequence, ``D`` hidden size, ``V`` vocabulary, ``L`` layers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn

from ponder.lm.hf_compat import supports_logits_to_keep
from ponder.lm.padding import position_ids_from_mask


class LensUnsupported(ValueError):
    """The model's final norm or unembedding cannot be located."""


_BASES = ("model", "transformer", "gpt_neox", "model.decoder")
_NORMS = ("norm", "ln_f", "final_layer_norm", "final_layernorm")


def _get_path(obj, path: str):
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def lens_parts(model) -> tuple[nn.Module, nn.Module]:
    """``(final_norm, unembed)`` of a Llama/Qwen/Mistral/Gemma, GPT-2 or GPT-NeoX-style causal LM."""
    unembed = model.get_output_embeddings()
    if not isinstance(unembed, nn.Module):
        raise LensUnsupported(f"{type(model).__name__} has no output embeddings (get_output_embeddings() is None)")
    bases = [model.get_decoder()] if hasattr(model, "get_decoder") else []
    bases += [_get_path(model, b) for b in _BASES]
    for base in bases:
        if base is None:
            continue
        for name in _NORMS:
            norm = getattr(base, name, None)
            if isinstance(norm, nn.Module):
                return norm, unembed
    raise LensUnsupported(
        f"cannot find the final norm of {type(model).__name__}: looked for {', '.join(_NORMS)} "
        f"on its decoder and on model.{{{', '.join(_BASES)}}}"
    )


def _finish_logits(model, logits: Tensor) -> Tensor:
    """Apply the output post-processing some architectures do after the unembedding."""
    config = model.config
    if getattr(config, "logit_scale", None) is not None and isinstance(config.logit_scale, (int, float)):  # Cohere
        logits = logits * config.logit_scale
    if getattr(config, "logits_scaling", None):  # Granite
        logits = logits / config.logits_scaling
    cap = getattr(config, "final_logit_softcapping", None)  # Gemma 2/3
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def lens_logits(model, hidden: Tensor, parts: tuple[nn.Module, nn.Module] | None = None) -> Tensor:
    """Logit lens of a pre-norm residual stream ``hidden [B, T, D]`` -> logits ``[B, T, V]`` (model dtype)."""
    norm, unembed = parts or lens_parts(model)
    hidden = hidden.to(unembed.weight.device)
    return _finish_logits(model, unembed(norm(hidden)))


def hidden_states(model, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
    """``num_layers + 1`` hidden states ``[B, T, D]``, embeddings first, last one final-normed (see module doc)."""
    keep = {"logits_to_keep": 1} if supports_logits_to_keep(model) else {}
    return tuple(_forward_with_states(model, input_ids, attention_mask, **keep)[0])


def _forward_with_states(model, input_ids: Tensor, attention_mask: Tensor, **extra):
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        output_hidden_states=True,
        use_cache=False,
        **extra,
    )
    return out.hidden_states, out.logits


def layer_logprobs(
    model, input_ids: Tensor, attention_mask: Tensor, layers: Iterable[int] | None = None
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(layer_index, logprobs [B, T, V] fp32)`` of the logit lens, one layer at a time.

    ``layers`` defaults to all ``0..L``; negative indices count from the end. The final
    layer's log-probs are the model's own output log-probs. No gradients.
    """
    parts = lens_parts(model)
    with torch.no_grad():
        states, logits = _forward_with_states(model, input_ids, attention_mask)
        last = len(states) - 1
        for index in range(len(states)) if layers is None else layers:
            index = index % len(states)
            layer_logits = logits if index == last else lens_logits(model, states[index], parts)
            yield index, layer_logits.float().log_softmax(dim=-1)


def jsd(logp: Tensor, logq: Tensor, base: float = 2.0) -> Tensor:
    """Jensen-Shannon divergence over the last dim of two log-prob tensors ``[..., V]`` -> ``[...]``.

    ``JSD = (KL(P||M) + KL(Q||M)) / 2`` with ``M = (P + Q) / 2``, in log base ``base``: with the
    default base 2 the value lies in ``[0, 1]`` (1 = disjoint supports). Zero-probability
    entries contribute 0.
    """
    logp, logq = logp.float(), logq.float()
    logm = torch.logaddexp(logp, logq) - math.log(2.0)
    p, q = logp.exp(), logq.exp()
    terms = torch.where(p > 0, p * (logp - logm), 0.0) + torch.where(q > 0, q * (logq - logm), 0.0)
    return (0.5 * terms.sum(-1) / math.log(base)).clamp(min=0.0)


def lens_jsd(
    model, input_ids: Tensor, attention_mask: Tensor, base: float = 2.0, layers: Iterable[int] | None = None
) -> Tensor:
    """``[len(layers), B, T]`` JSD between each layer's lens distribution and the final layer's.

    Rows follow ``layers`` (default all ``0..L``, so row ``i`` is hidden state ``i`` and the
    last row is 0). Base 2 by default, so values are in ``[0, 1]``; 0 at padded positions.
    Computed one layer at a time: besides the final distribution, one ``[B, T, V]`` lives at once.
    """
    valid = attention_mask.to(input_ids.device) != 0
    parts = lens_parts(model)
    rows = []
    with torch.no_grad():
        states, logits = _forward_with_states(model, input_ids, attention_mask)
        final = logits.float().log_softmax(dim=-1)
        del logits
        last = len(states) - 1
        for index in range(len(states)) if layers is None else layers:
            index = index % len(states)
            if index == last:
                rows.append(torch.zeros(valid.shape, dtype=torch.float32, device=final.device))
            else:
                logp = lens_logits(model, states[index], parts).float().log_softmax(dim=-1)
                rows.append(jsd(logp, final, base) * valid.to(final.device))
                del logp
    return torch.stack(rows)

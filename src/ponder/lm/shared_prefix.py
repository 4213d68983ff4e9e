"""Shared-prefix ("cascade") decode attention: the n samples of a prompt read its prefix keys once.

With the prefix's KV cache copied to each of the ``n`` rows, every decode step reads ``n``
copies of it: on a CPU that memory traffic is most of a decode step for a 512-token prefix.
Here the prefix keys/values stay ``[P, Hkv, Tp, D]`` (one per prompt) and only the generated
tokens live per row. Each step the rows' queries are laid out on a ``[P, n]`` grid, attend to their
prompt's prefix with one batched matmul per prompt, and to their own generated suffix; one
softmax over both gives exact attention (the same numbers as one concatenated key sequence).

Used by :func:`ponder.lm.decode.sample` for plain causal self-attention models (no sliding
window, no logit soft-capping); others decode with the copied cache.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from ponder.lm import hf_compat

NAME = "ponder_shared_prefix"
_STATE: SharedPrefix | None = None


class SharedPrefix:
    """Prefix keys/values per layer and where each live decode row sits on the ``[P, n]`` grid.

    ``prefix[layer] = (keys, values)`` ``[P, Hkv, Tp, D]``; ``valid [P, Tp]`` bool (left padding off);
    ``prompt``/``slot`` ``[B]``: the prompt and sample index of each live row.
    """

    def __init__(self, prefix: list[tuple[Tensor, Tensor]], valid: Tensor, n: int):
        self.prefix, self.valid, self.n = prefix, valid, n
        num_prompts = valid.shape[0]
        device = valid.device
        self.prompt = torch.arange(num_prompts, device=device).repeat_interleave(n)
        self.slot = torch.arange(n, device=device).repeat(num_prompts)
        self.bias = torch.zeros(valid.shape, dtype=prefix[0][0].dtype, device=device).masked_fill_(
            ~valid, float("-inf")
        )

    def select(self, keep: Tensor) -> None:
        """Keep only the live rows ``keep`` (the decode batch was compacted)."""
        self.prompt, self.slot = self.prompt[keep], self.slot[keep]

    def _to_grid(self, x: Tensor) -> Tensor:
        """``[B, ...]`` rows -> ``[P, n, ...]`` grid (zeros where a row is gone)."""
        grid = x.new_zeros((self.valid.shape[0], self.n, *x.shape[1:]))
        grid[self.prompt, self.slot] = x
        return grid


def supported(model) -> bool:
    """Plain causal self-attention with an ordinary dynamic cache (no sliding window, no soft-capping)."""
    cfg = getattr(model, "config", None)
    if cfg is None or hf_compat.attention_implementation(model) not in ("sdpa", "eager", None):
        return False
    if getattr(cfg, "sliding_window", None) or getattr(cfg, "attn_logit_softcapping", None):
        return False
    if getattr(cfg, "layer_types", None) and any(t != "full_attention" for t in cfg.layer_types):
        return False
    return getattr(cfg, "model_type", "") in ("llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "granite")


def attention(module, query: Tensor, key: Tensor, value: Tensor, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """One decode step: ``query [B, H, 1, D]``, ``key/value [B, Hkv, j, D]`` (this row's generated tokens).

    Returns ``([B, 1, H, D], None)`` like transformers' attention functions.
    """
    st = _STATE
    kp, vp = st.prefix[module.layer_idx]  # [P, Hkv, Tp, D]
    num_rows, heads, q_len, dim = query.shape
    kv_heads, groups = kp.shape[1], heads // kp.shape[1]
    scale = dim**-0.5 if scaling is None else scaling
    num_prompts, tp = kp.shape[0], kp.shape[2]
    q = query[:, :, 0]  # [B, H, D]
    # Prefix: [P, Hkv, n*groups, D] @ [P, Hkv, D, Tp], each prompt's keys read once.
    grid = st._to_grid(q).view(num_prompts, st.n, kv_heads, groups, dim).permute(0, 2, 1, 3, 4)
    s_pre = grid.reshape(num_prompts, kv_heads, st.n * groups, dim) @ kp.transpose(-1, -2) * scale
    s_pre = (s_pre + st.bias[:, None, None, :]).view(num_prompts, kv_heads, st.n, groups, tp)
    s_pre = s_pre.permute(0, 2, 1, 3, 4)[st.prompt, st.slot].reshape(num_rows, heads, tp)  # [B, H, Tp]
    # Suffix: each row's own generated tokens.
    ks = key.repeat_interleave(groups, dim=1) if groups > 1 else key
    vs = value.repeat_interleave(groups, dim=1) if groups > 1 else value
    s_suf = (q[:, :, None] @ ks.transpose(-1, -2))[:, :, 0] * scale  # [B, H, j]
    probs = torch.cat([s_pre, s_suf], dim=-1).float().softmax(-1).to(q.dtype)
    p_pre, p_suf = probs[..., :tp], probs[..., tp:]
    g = st._to_grid(p_pre).view(num_prompts, st.n, kv_heads, groups, tp).permute(0, 2, 1, 3, 4)
    o_pre = g.reshape(num_prompts, kv_heads, st.n * groups, tp) @ vp  # [P, Hkv, n*groups, D]
    o_pre = o_pre.view(num_prompts, kv_heads, st.n, groups, dim).permute(0, 2, 1, 3, 4)[st.prompt, st.slot]
    out = o_pre.reshape(num_rows, heads, dim) + (p_suf[:, :, None] @ vs)[:, :, 0]
    return out[:, None], None


@contextlib.contextmanager
def active(model, state: SharedPrefix):
    """Route ``model``'s attention through :func:`attention` with ``state`` while decoding."""
    global _STATE
    _STATE = state
    try:
        with hf_compat.attention_function(model, NAME, attention):
            yield
    finally:
        _STATE = None

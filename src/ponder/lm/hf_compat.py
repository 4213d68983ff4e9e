"""Every use of a transformers internal, in one place.

ponder drives Hugging Face models through their public forward, plus a few internals that have
no public equivalent: the KV cache's per-layer tensors (shared-prefix decoding, the tree forward),
a ``DynamicLayer`` subclass with preallocated room (decoding without quadratic copying), a custom
attention function registered through ``AttentionInterface`` and selected by writing
``config._attn_implementation`` (shared-prefix decode attention), and the name of the forward's
cache argument (``past_key_values`` until 5.x renamed it ``cache``). ``tests/test_hf_compat.py``
checks each assumption against the installed transformers and fails loudly, naming it, when a
release changes one. The versions tested are bounded in ``pyproject.toml``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.cache_utils import DynamicLayer

#: Attention implementations that take a custom additive 4D mask as given (the tree forward needs it).
MASK_4D_IMPLEMENTATIONS = (None, "eager", "sdpa")


# ---------------------------------------------------------------- the model under an adapter wrapper


def transformers_model(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (the same modules, adapters active), else ``model`` itself.

    A ``PeftModel``'s forward passes every argument through to this model, but its signature hides
    the model's (the cache argument's name, ``logits_to_keep``): whatever reads the signature, or
    reaches the decoder and the output layer, reads them here.
    """
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


# ---------------------------------------------------------------- the forward's cache argument


@functools.cache
def _cache_kwarg_of(forward_cls: type) -> str:
    params = inspect.signature(forward_cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(model: nn.Module, cache) -> dict:
    """``{name: cache}`` for ``model``'s forward: ``cache`` on transformers >= 5.2x, else ``past_key_values``."""
    return {_cache_kwarg_of(type(transformers_model(model))): cache}


def output_cache(out):
    """The KV cache a forward returned (``out.cache`` or, on older releases, ``out.past_key_values``)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


@functools.cache
def _takes_logits_to_keep(forward_cls: type) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(forward_cls.forward).parameters
    except (TypeError, ValueError):
        return False


def supports_logits_to_keep(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes ``logits_to_keep`` (logits for the last k positions only)."""
    return _takes_logits_to_keep(type(transformers_model(model)))


# ---------------------------------------------------------------- attention implementation


def attention_implementation(model: nn.Module) -> str | None:
    """The attention kernel the model's config selects (``eager``, ``sdpa``, ``flash_attention_2``, ...)."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


def takes_4d_mask(model: nn.Module) -> bool:
    """Whether the model's attention takes a custom 4D additive mask as-is (eager, sdpa; not flash/flex)."""
    return attention_implementation(model) in MASK_4D_IMPLEMENTATIONS


@contextlib.contextmanager
def attention_function(model: nn.Module, name: str, fn: Callable) -> Iterator[None]:
    """Route ``model``'s attention through ``fn`` (registered as ``name``) inside the block."""
    AttentionInterface.register(name, fn)
    cfg = model.config
    before = cfg._attn_implementation
    cfg._attn_implementation = name
    try:
        yield
    finally:
        cfg._attn_implementation = before


# ---------------------------------------------------------------- KV cache layers


def cache_layers(cache) -> list:
    """The per-layer entries of a transformers ``Cache`` (empty for an unknown cache type)."""
    return list(getattr(cache, "layers", None) or [])


def layer_keys_values(layer) -> tuple[Tensor, Tensor]:
    """``(keys, values)`` ``[B, Hkv, T, D]`` of one cache layer."""
    return layer.keys, layer.values


def is_plain_dynamic(layer) -> bool:
    """An ordinary, initialised, non-empty dynamic layer (not sliding, not quantized)."""
    return type(layer) is DynamicLayer and layer.is_initialized and layer.keys.numel() > 0


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` over a buffer with spare capacity; ``keys``/``values`` are views of its filled part.

    transformers' ``DynamicLayer`` concatenates the whole cache at every decode step (quadratic
    copying: most of a CPU decode step for a 512-token prefix); this one writes in place.
    """

    def __init__(self, keys: Tensor, values: Tensor, extra: int):
        super().__init__()
        b, h, n, d = keys.shape
        self._k = keys.new_empty((b, h, n + extra, d))
        self._v = values.new_empty((b, h, n + extra, values.shape[-1]))
        self._k[:, :, :n], self._v[:, :, :n] = keys, values
        self._len = n
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self._views()

    def _views(self) -> None:
        self.keys, self.values = self._k[:, :, : self._len], self._v[:, :, : self._len]

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.shape[-2]
        if self._len + n > self._k.shape[-2]:  # out of room: grow (never on the sampler's path)
            grow = max(n, self._k.shape[-2])
            self._k = torch.cat([self._k, self._k.new_empty((*self._k.shape[:2], grow, self._k.shape[-1]))], -2)
            self._v = torch.cat([self._v, self._v.new_empty((*self._v.shape[:2], grow, self._v.shape[-1]))], -2)
        self._k[:, :, self._len : self._len + n] = key_states
        self._v[:, :, self._len : self._len + n] = value_states
        self._len += n
        self._views()
        return self.keys, self.values

    def reorder_cache(self, beam_idx) -> None:
        self._k = self._k.index_select(0, beam_idx.to(self._k.device))
        self._v = self._v.index_select(0, beam_idx.to(self._v.device))
        self._views()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        self._len -= abs(tokens_to_remove)
        self._views()

    def batch_select_indices(self, indices) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self._views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._k, self._v = self._k.repeat_interleave(repeats, 0), self._v.repeat_interleave(repeats, 0)
        self._views()


def preallocate(cache, extra: int) -> None:
    """Give each plain dynamic layer room for ``extra`` more tokens, written in place (others unchanged)."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        return
    for i, layer in enumerate(layers):
        if is_plain_dynamic(layer):
            layers[i] = PreallocatedLayer(layer.keys, layer.values, extra)


def empty_generated_cache(cache, num_rows: int, extra: int) -> list[tuple[Tensor, Tensor]]:
    """Replace every layer by an empty preallocated one of ``num_rows`` rows; return the old ``(keys, values)``."""
    layers = cache.layers
    prefix = [layer_keys_values(layer) for layer in layers]
    for i, (k, v) in enumerate(prefix):
        layers[i] = PreallocatedLayer(
            k.new_empty((num_rows, k.shape[1], 0, k.shape[-1])),
            v.new_empty((num_rows, v.shape[1], 0, v.shape[-1])),
            extra,
        )
    return prefix


def select_rows(cache, rows: Tensor) -> None:
    """Keep (or repeat) the cache rows ``rows`` (``Cache.reorder_cache``)."""
    cache.reorder_cache(rows)


def expand_cache_rows(cache, row: Tensor) -> None:
    """Row ``i`` of the cache becomes document ``row[i]``'s keys/values, differentiably.

    When the rows come in runs (thoughts grouped by document), each document's keys are broadcast
    to its run (``expand``): the backward is then a sum over the run, far faster on CPU than the
    scatter-add that ``index_select`` needs.
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


# ---------------------------------------------------------------- output layer


def finish_logits(model: nn.Module, logits: Tensor) -> Tensor:
    """The post-processing some architectures apply after the unembedding (Cohere, Granite, Gemma 2/3)."""
    config = model.config
    if isinstance(getattr(config, "logit_scale", None), (int, float)):  # Cohere
        logits = logits * config.logit_scale
    if getattr(config, "logits_scaling", None):  # Granite
        logits = logits / config.logits_scaling
    cap = getattr(config, "final_logit_softcapping", None)  # Gemma 2/3
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


#: Model types whose causal-LM forward is exactly ``finish_logits(unembed(decoder(...).last_hidden_state))``,
#: checked against the model's own logits in tests/test_hf_compat.py.
HIDDEN_PATH_MODEL_TYPES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "granite", "gemma", "gemma2", "phi3", "smollm3"}
)


def decoder_and_unembed(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """``(decoder, unembedding)`` for computing logits from hidden states, or None when not known to be exact."""
    model = transformers_model(model)
    if getattr(getattr(model, "config", None), "model_type", None) not in HIDDEN_PATH_MODEL_TYPES:
        return None
    get_decoder = getattr(model, "get_decoder", None)
    unembed = model.get_output_embeddings()
    decoder = get_decoder() if callable(get_decoder) else None
    if not isinstance(decoder, nn.Module) or not isinstance(unembed, nn.Linear) or decoder is model:
        return None
    return decoder, unembed


# ---------------------------------------------------------------- activation checkpointing


def enable_activation_checkpointing(model: nn.Module) -> bool:
    """Checkpoint every decoder layer (non-reentrant, so it nests with other checkpoints); False when unsupported.

    Transformers 5 renamed ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable``. Its layers
    drop the KV cache while checkpointing (a recompute would write it twice), so a forward that reads a cache
    built by an earlier call (the shared-prefix tree) cannot run under it.
    """
    model = transformers_model(model)
    if not getattr(model, "supports_gradient_checkpointing", False):
        return False
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return True


def activation_checkpointing_enabled(model: nn.Module) -> bool:
    model = transformers_model(model)
    flag = getattr(type(model), "is_activation_checkpointing", None)
    if flag is not None:
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))

"""Batched sampling of ``n`` continuations per prompt with a shared-prefix KV cache.

Each distinct prompt is prefilled once (left-padded batch), then its KV cache rows are
repeated ``n`` times and all ``P * n`` rows decode together. Rows that finish are dropped
from the batch (cache rows included) once a quarter of the batch is done, so long stragglers
do not pay for finished rows. Our own loop rather than ``model.generate`` because ``generate``
would prefill every one of the ``n`` copies of a prompt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ponder.lm import shared_prefix
from ponder.lm.score import (
    left_pad,
    model_device,
    pad_id_of,
    position_ids_from_mask,
    supports_logits_to_keep,
    tokenize,
)

#: Compact the decoding batch once the live rows are at most this fraction of it.
_COMPACT_AT = 0.75


def _preallocate(cache, extra: int) -> None:
    """Give each plain dynamic KV layer room for ``extra`` more tokens, written in place.

    transformers' ``DynamicLayer`` concatenates the whole cache at every decode step (quadratic
    copying: most of a CPU decode step for a 512-token prefix). Other layer kinds (sliding
    windows, quantized) are left as they are.
    """
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if layers is None:
        return
    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys.numel():
            layers[i] = _PreallocatedLayer(layer.keys, layer.values, extra)


def _preallocated_layer_class():
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        """A ``DynamicLayer`` over a buffer with spare capacity; ``keys``/``values`` are views of its filled part."""

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
                self._k = torch.cat([self._k, self._k.new_empty(self._k.shape[:2] + (grow, self._k.shape[-1]))], -2)
                self._v = torch.cat([self._v, self._v.new_empty(self._v.shape[:2] + (grow, self._v.shape[-1]))], -2)
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

    return PreallocatedLayer


def _PreallocatedLayer(keys: Tensor, values: Tensor, extra: int):  # noqa: N802 - builds the lazily defined class
    global _LAYER_CLASS
    if _LAYER_CLASS is None:
        _LAYER_CLASS = _preallocated_layer_class()
    return _LAYER_CLASS(keys, values, extra)


_LAYER_CLASS = None


@dataclass
class Samples:
    """``M = P * n`` sampled continuations, grouped by prompt (rows ``i*n .. i*n+n-1`` are prompt ``i``).

    Tensors live on the model's device. ``T`` is the longest continuation.

    - ``prompt_index`` ``[M]`` long: which prompt each row continues.
    - ``tokens`` ``[M, T]`` long: generated ids, right-padded with the pad id.
    - ``mask`` ``[M, T]`` bool: kept tokens (a final EOS is kept and masked in).
    - ``logprobs`` ``[M, T]`` fp32: log-prob of each sampled token under the model's own,
      unmodified distribution (temperature 1, before top-p and banning): the policy
      log-prob that RL needs, whatever decoding settings drew the token. 0 where masked.
    - ``texts``: decoded continuations; pad/bos/eos removed, other special tokens such as the
      think delimiters kept, cut right after the first stop string.
    - ``finished`` ``[M]`` bool: ended by EOS or a stop string (False: ran out of tokens).
    - ``prompt_ids``: the ``P`` prompts' token ids as fed to the model.
    """

    prompt_index: Tensor
    tokens: Tensor
    mask: Tensor
    logprobs: Tensor
    texts: list[str]
    finished: Tensor
    n: int
    prompt_ids: list[list[int]] = field(default_factory=list)

    @property
    def num_tokens(self) -> Tensor:
        """``[M]`` kept tokens per row."""
        return self.mask.sum(-1)

    @property
    def num_prompts(self) -> int:
        return len(self.texts) // self.n if self.n else 0

    def group(self, i: int) -> slice:
        """Row slice of prompt ``i``'s ``n`` samples: ``samples.tokens[samples.group(i)]``."""
        return slice(i * self.n, (i + 1) * self.n)

    def __len__(self) -> int:
        return len(self.texts)


def _eos_ids(model, tokenizer) -> list[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen is not None:
        ids.update(int(t) for t in ([gen] if isinstance(gen, int) else gen))
    return sorted(ids)


def _top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of top tokens whose probability reaches ``top_p``; others -> -inf."""
    sorted_logits, sorted_idx = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    drop = mass_before >= top_p
    drop[:, 0] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, sorted_idx, sorted_logits)


def _pick(
    logits: Tensor,
    temperature: float,
    top_p: float,
    ban: Tensor | None,
    generator: torch.Generator | None,
    uniform: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Next tokens ``[B]`` and their model log-probs ``[B]`` (fp32, temperature 1) from ``logits [B, V]``.

    ``uniform [B, V]`` (values in (0, 1)) draws by Gumbel-max instead of ``multinomial``: the same
    distribution, but each row's draw depends only on its own noise, not on the batch around it.
    """
    logits = logits.float()
    model_logp = logits.log_softmax(dim=-1)
    if ban is not None:
        logits = logits.index_fill(-1, ban, float("-inf"))
    if temperature == 0:
        tokens = logits.argmax(dim=-1)
    else:
        if temperature != 1:
            logits = logits / temperature
        if top_p < 1:
            logits = _top_p_filter(logits, top_p)
        if uniform is not None:
            gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1 - 1e-7)))
            tokens = (logits + gumbel).argmax(dim=-1)
            return tokens, model_logp.gather(-1, tokens[:, None]).squeeze(-1)
        probs = logits.softmax(dim=-1)
        if generator is not None and generator.device != probs.device:
            tokens = torch.multinomial(probs.to(generator.device), 1, generator=generator).to(probs.device)
        else:
            tokens = torch.multinomial(probs, 1, generator=generator)
        tokens = tokens.squeeze(-1)
    return tokens, model_logp.gather(-1, tokens[:, None]).squeeze(-1)


class _StopWatcher:
    """Incremental stop-string detection: decodes only a short tail window per live row per step."""

    def __init__(self, tokenizer, stops: Sequence[str], drop_ids: set[int], num_rows: int):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.drop_ids = drop_ids
        self.history: list[list[int]] = [[] for _ in range(num_rows)]
        # A char is at most 4 UTF-8 bytes (byte-level tokens); +2 so the window starts before the
        # stop string (decoders may strip a leading space from the first token).
        self.window = 4 * max((len(s) for s in self.stops), default=0) + 2

    def __bool__(self) -> bool:
        return bool(self.stops)

    def step(self, rows: list[int], tokens: list[int], live: list[bool]) -> list[bool]:
        """Record ``tokens`` for the live ``rows``; return, per row, whether a stop string just appeared."""
        check = []
        for j, (row, tok, alive) in enumerate(zip(rows, tokens, live)):
            if alive and tok not in self.drop_ids:
                self.history[row].append(tok)
                check.append(j)
        hit = [False] * len(rows)
        if check:
            tails = [self.history[rows[j]][-self.window :] for j in check]
            texts = self.tokenizer.batch_decode(tails, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            for j, text in zip(check, texts):
                hit[j] = any(s in text for s in self.stops)
        return hit


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    ends = [i + len(s) for s in stops if s and (i := text.find(s)) >= 0]
    return (text[: min(ends)], True) if ends else (text, False)


def _decode_chunk(
    model,
    prompts: list[list[int]],
    n: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    ban: Tensor | None,
    eos: Tensor,
    pad_id: int,
    watcher: _StopWatcher | None,
    generator: torch.Generator | None,
    keep_last: dict,
    min_new_tokens: int = 0,
    early_ban: Tensor | None = None,
    prompt_generators: Sequence[torch.Generator] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Decode ``n`` rows per prompt; returns ``tokens, mask, logprobs [P*n, max_new_tokens]`` and ``finished [P*n]``.

    ``prompt_generators`` (one per prompt): each prompt's rows draw their noise from its own
    generator every step, so a prompt's samples do not depend on which prompts share its batch.
    """
    device = model_device(model)
    num_rows = len(prompts) * n
    ids, attn = left_pad(prompts, pad_id, device)
    positions = position_ids_from_mask(attn)
    out = model(input_ids=ids, attention_mask=attn, position_ids=positions, use_cache=True, **keep_last)
    cache, logits = out.past_key_values, out.logits[:, -1]  # logits: [P, V]
    del out
    next_pos = positions[:, -1] + 1  # [P]
    shared = None
    if n > 1 and shared_prefix.supported(model):
        # The prefix stays one copy per prompt; the cache holds only the generated tokens.
        prefix = [(layer.keys, layer.values) for layer in cache.layers]
        shared = shared_prefix.SharedPrefix(prefix, attn.bool(), n)
        for i, (k, v) in enumerate(prefix):
            cache.layers[i] = _PreallocatedLayer(
                k.new_empty((num_rows, *k.shape[1:2], 0, k.shape[-1])),
                v.new_empty((num_rows, *v.shape[1:2], 0, v.shape[-1])),
                max_new_tokens,
            )
    else:
        _preallocate(cache, max_new_tokens)
    if n > 1:
        expand = torch.arange(len(prompts), device=device).repeat_interleave(n)
        if shared is None:
            cache.reorder_cache(expand)
        logits, attn, next_pos = logits[expand], attn[expand], next_pos[expand]
    with shared_prefix.active(model, shared) if shared is not None else contextlib.nullcontext():
        return _decode_steps(
            model,
            cache,
            shared,
            logits,
            attn,
            next_pos,
            num_rows,
            max_new_tokens,
            temperature,
            top_p,
            ban,
            eos,
            pad_id,
            watcher,
            generator,
            keep_last,
            min_new_tokens,
            early_ban,
            prompt_generators,
            n,
        )


def _decode_steps(
    model,
    cache,
    shared,
    logits,
    attn,
    next_pos,
    num_rows,
    max_new_tokens,
    temperature,
    top_p,
    ban,
    eos,
    pad_id,
    watcher,
    generator,
    keep_last,
    min_new_tokens,
    early_ban,
    prompt_generators,
    n,
):
    """The decode loop of :func:`_decode_chunk` (``shared``: the shared-prefix attention state, or None)."""
    device = logits.device

    tokens_out = torch.full((num_rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    mask_out = torch.zeros((num_rows, max_new_tokens), dtype=torch.bool, device=device)
    logp_out = torch.zeros((num_rows, max_new_tokens), dtype=torch.float32, device=device)
    finished = torch.zeros(num_rows, dtype=torch.bool, device=device)
    rows = torch.arange(num_rows, device=device)  # output row of each batch row
    live = torch.ones(num_rows, dtype=torch.bool, device=device)
    rows_list = list(range(num_rows)) if watcher else None

    for step in range(max_new_tokens):
        uniform = None
        if prompt_generators is not None and temperature > 0:
            vocab = logits.shape[-1]
            uniform = torch.cat([torch.rand((n, vocab), generator=g, device=device) for g in prompt_generators])[rows]
        tokens, logp = _pick(
            logits, temperature, top_p, early_ban if step < min_new_tokens else ban, generator, uniform
        )
        tokens = torch.where(live, tokens, pad_id)
        tokens_out[rows, step] = tokens
        logp_out[rows, step] = torch.where(live, logp, 0.0)
        mask_out[rows, step] = live
        done = live & torch.isin(tokens, eos)
        if watcher:
            hits = watcher.step(rows_list, tokens.tolist(), live.tolist())
            done |= torch.tensor(hits, device=device)
        finished[rows] |= done
        live = live & ~done
        num_live = int(live.sum())  # the one host sync per step
        if num_live == 0 or step == max_new_tokens - 1:
            break
        if num_live <= _COMPACT_AT * live.numel():
            keep = live.nonzero().squeeze(-1)
            cache.reorder_cache(keep)
            if shared is not None:
                shared.select(keep)
            rows, tokens, attn, next_pos, live = rows[keep], tokens[keep], attn[keep], next_pos[keep], live[keep]
            if watcher:
                rows_list = rows.tolist()
        attn = torch.cat([attn, attn.new_ones((attn.shape[0], 1))], dim=1)
        logits = model(
            input_ids=tokens[:, None],
            attention_mask=None if shared is not None else attn,
            position_ids=next_pos[:, None],
            past_key_values=cache,
            use_cache=True,
            **keep_last,
        ).logits[:, -1]
        next_pos = next_pos + 1
    return tokens_out, mask_out, logp_out, finished


def sample(
    model,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    n: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    stop: Sequence[str] = (),
    ban_token_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    add_special_tokens: bool = True,
    progress: bool = False,
    stop_token_ids: Sequence[int] = (),
    min_new_tokens: int = 0,
    prompt_generators: Sequence[torch.Generator] | None = None,
) -> Samples:
    """Sample ``n`` continuations of each prompt (texts, or token ids used as given).

    ``temperature`` 0 is greedy; ``top_p`` < 1 is nucleus sampling; ``ban_token_ids`` never
    appear (their logits are -inf; e.g. ``think_ban_ids`` for no-think mode). A row ends at
    EOS (the tokenizer's or any of ``model.generation_config.eos_token_id``, kept as the last
    token) or when its text contains a stop string (the completing token is the last kept
    one; the text is cut right after the stop string). ``batch_size`` bounds how many
    prompts are decoded together (default: all); ``generator`` makes sampling reproducible
    (it should live on the model's device; one elsewhere works, more slowly).
    ``stop_token_ids`` end a row like EOS but stay in the text (e.g. ``</think>``: cheaper than
    a stop string). For the first ``min_new_tokens`` steps EOS and ``stop_token_ids`` are
    banned (e.g. a thought of at least one token). ``prompt_generators`` (one per prompt, on the
    model's device) replace ``generator``: a prompt's samples then depend only on its generator,
    whatever the batching (used to make data-parallel runs match single-process ones). Runs under
    ``no_grad`` (not ``inference_mode``: outputs may feed training graphs later).
    """
    if n < 1 or max_new_tokens < 0:
        raise ValueError("need n >= 1 and max_new_tokens >= 0")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError("need temperature >= 0 and 0 < top_p <= 1")
    prompt_ids = tokenize(tokenizer, prompts, add_special_tokens)
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("every prompt needs at least one token")
    if prompt_generators is not None and len(prompt_generators) != len(prompt_ids):
        raise ValueError(f"{len(prompt_generators)} prompt generators for {len(prompt_ids)} prompts")
    device = model_device(model)
    pad_id = pad_id_of(tokenizer)
    eos_list = _eos_ids(model, tokenizer)
    eos = torch.tensor(sorted(set(eos_list) | {int(t) for t in stop_token_ids}), dtype=torch.long, device=device)
    ban_set = {int(t) for t in ban_token_ids}
    ban = torch.tensor(sorted(ban_set), dtype=torch.long, device=device) if ban_set else None
    early_ban = (
        torch.tensor(sorted(ban_set | set(eos.tolist())), dtype=torch.long, device=device)
        if min_new_tokens > 0
        else None
    )
    drop_ids = {int(t) for t in (tokenizer.pad_token_id, tokenizer.bos_token_id) if t is not None} | set(eos_list)
    keep_last = {"logits_to_keep": 1} if supports_logits_to_keep(model) else {}

    num_prompts = len(prompt_ids)
    num_rows = num_prompts * n
    tokens = torch.full((num_rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((num_rows, max_new_tokens), dtype=torch.bool, device=device)
    logprobs = torch.zeros((num_rows, max_new_tokens), dtype=torch.float32, device=device)
    finished = torch.zeros(num_rows, dtype=torch.bool, device=device)

    if num_prompts and max_new_tokens:
        # Chunks of similar-length prompts waste less compute on left padding.
        step = batch_size or num_prompts
        order = (
            sorted(range(num_prompts), key=lambda i: len(prompt_ids[i]))
            if step < num_prompts
            else list(range(num_prompts))
        )
        bar = _progress_bar(num_prompts) if progress else None
        try:
            with torch.no_grad():
                for start in range(0, num_prompts, step):
                    chunk = order[start : start + step]
                    watcher = _StopWatcher(tokenizer, stop, drop_ids, len(chunk) * n) if any(stop) else None
                    out = _decode_chunk(
                        model,
                        [prompt_ids[i] for i in chunk],
                        n,
                        max_new_tokens,
                        temperature,
                        top_p,
                        ban,
                        eos,
                        pad_id,
                        watcher,
                        generator,
                        keep_last,
                        min_new_tokens,
                        early_ban,
                        None if prompt_generators is None else [prompt_generators[i] for i in chunk],
                    )
                    dest = (torch.tensor(chunk, device=device)[:, None] * n + torch.arange(n, device=device)).reshape(
                        -1
                    )
                    tokens[dest], mask[dest], logprobs[dest], finished[dest] = out
                    if bar is not None:
                        bar[0].advance(bar[1], len(chunk))
        finally:
            if bar is not None:
                bar[0].stop()

    width = int(mask.sum(-1).max()) if num_rows and max_new_tokens else 0
    tokens, mask, logprobs = tokens[:, :width], mask[:, :width], logprobs[:, :width]
    kept = [
        [t for t, m in zip(row, row_mask) if m and t not in drop_ids]
        for row, row_mask in zip(tokens.tolist(), mask.tolist())
    ]
    texts = tokenizer.batch_decode(kept, skip_special_tokens=False, clean_up_tokenization_spaces=False) if kept else []
    stops = [s for s in stop if s]
    if stops:
        cut_rows = []
        for i, text in enumerate(texts):
            texts[i], was_cut = _cut_at_stop(text, stops)
            if was_cut:
                cut_rows.append(i)
        finished[cut_rows] = True
    prompt_index = torch.arange(num_prompts, device=device).repeat_interleave(n)
    return Samples(prompt_index, tokens, mask, logprobs, texts, finished, n, prompt_ids)


def _progress_bar(total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True)
    task = bar.add_task("sampling", total=total)
    bar.start()
    return bar, task

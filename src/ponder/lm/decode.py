"""The decode loop: ``n`` sampled continuations of each prompt, token ids and behaviour log-probs.

Every job samples through this loop (via :mod:`ponder.lm.thinking`, which states the thought
rules). Each distinct prompt is prefilled once (left-padded batch); its ``n`` rows then decode
together, reading the prompt's keys once (shared-prefix attention, :mod:`ponder.lm.shared_prefix`)
where the architecture allows, else from a copied cache. Rows that finish leave the batch once a
quarter of it is done, so long stragglers do not pay for finished rows. Our own loop rather than
``model.generate`` because ``generate`` would prefill every copy of a prompt and returns no
per-token log-probs of the distribution it sampled from.

Behaviour log-probs: the log-prob of each sampled token under the policy the trainer scores,
``log_softmax(logits / T)`` at the sampling temperature ``T`` (or at temperature 1 when
``logprob_temperature=1``), before bans and top-p: those are sampling constraints, not part of the
policy. With ``top_p = 1`` and no banned token carrying mass, it is exactly the distribution the
token was drawn from. Greedy decoding (``T = 0``) reports log-probs at temperature 1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor

from ponder.lm import hf_compat, shared_prefix
from ponder.lm.padding import left_pad, model_device, pad_id_of, position_ids_from_mask, tokenize

#: Compact the decoding batch once the live rows are at most this fraction of it.
_COMPACT_AT = 0.75


@dataclass(frozen=True)
class DecodeRules:
    """How a continuation ends and what it may contain.

    ``end_ids`` end a row and stay as its last token (EOS, ``</think>``...); ``ban_ids`` never
    appear; for the first ``min_new_tokens`` steps ``end_ids`` are banned too; a row also ends when
    its text contains one of ``stop_strings`` (the completing token is its last one). With
    ``stops_after_text`` a stop string inside the leading whitespace does not count: an answer
    that a chat model starts with a newline goes on to its first visible line.
    """

    end_ids: tuple[int, ...] = ()
    ban_ids: tuple[int, ...] = ()
    min_new_tokens: int = 0
    stop_strings: tuple[str, ...] = ()
    stops_after_text: bool = False


@dataclass
class Samples:
    """``M = P * n`` sampled continuations, grouped by prompt (rows ``i*n .. i*n+n-1`` are prompt ``i``).

    - ``prompt_ids``: the ``P`` prompts' token ids as fed to the model.
    - ``tokens`` ``[M, T]`` long, right-padded; ``mask`` ``[M, T]`` bool marks sampled tokens (an
      ending id is kept and masked in).
    - ``logprobs`` ``[M, T]`` fp32: behaviour log-prob of each sampled token (module docstring); 0
      where masked.
    - ``finished`` ``[M]`` bool: ended by an end id or a stop string (False: ran out of tokens).
    """

    prompt_ids: list[list[int]]
    n: int
    tokens: Tensor
    mask: Tensor
    logprobs: Tensor
    finished: Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def prompt_index(self) -> Tensor:
        """``[M]``: which prompt each row continues."""
        return torch.arange(len(self.prompt_ids)).repeat_interleave(self.n)

    def ids(self, row: int) -> list[int]:
        """Sampled ids of ``row``, as sampled (ending id included)."""
        return self.tokens[row][self.mask[row]].tolist()

    def row_logprobs(self, row: int) -> Tensor:
        """``[len(ids(row))]`` behaviour log-probs of ``row`` (CPU fp32)."""
        return self.logprobs[row][self.mask[row]].cpu()

    @property
    def num_tokens(self) -> Tensor:
        """``[M]`` sampled tokens per row."""
        return self.mask.sum(-1)

    def group(self, i: int) -> slice:
        """Row slice of prompt ``i``'s ``n`` samples: ``samples.tokens[samples.group(i)]``."""
        return slice(i * self.n, (i + 1) * self.n)

    def texts(self, tokenizer, stops: Sequence[str] = (), skip_ids: Sequence[int] | None = None) -> list[str]:
        """Decoded continuations, each cut right after its first stop string.

        Special tokens such as the think delimiters are kept; ``skip_ids`` (default: pad, BOS and
        EOS) are dropped.
        """
        if skip_ids is None:
            skip_ids = [
                t for t in (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) if t is not None
            ]
        skip = {int(t) for t in skip_ids}
        kept = [[t for t in self.ids(r) if t not in skip] for r in range(len(self))]
        texts = tokenizer.batch_decode(kept, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return [cut_at_stop(t, stops)[0] for t in texts]


@dataclass
class _Batch:
    """The live decode batch of one chunk of prompts."""

    cache: object
    shared: shared_prefix.SharedPrefix | None
    logits: Tensor  # [B, V] next-token logits of each live row
    attn: Tensor  # [B, S] attention over cache columns (unused with shared prefixes)
    next_pos: Tensor  # [B] position id of the next token
    rows: Tensor  # [B] output row of each live row
    live: Tensor = field(default=None)  # [B] bool


def eos_ids(model, tokenizer) -> list[int]:
    """Every id that ends a text: the tokenizer's EOS and the model's generation-config EOS ids."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen is not None:
        ids.update(int(t) for t in ([gen] if isinstance(gen, int) else gen))
    return sorted(ids)


def cut_at_stop(text: str, stops: Sequence[str], after_text: bool = False) -> tuple[str, bool]:
    """``text`` cut right after the earliest stop string, and whether one was found.

    ``after_text``: only a stop string that starts after the leading whitespace counts.
    """
    start = len(text) - len(text.lstrip()) if after_text else 0
    ends = [i + len(s) for s in stops if s and (i := text.find(s, start)) >= 0]
    return (text[: min(ends)], True) if ends else (text, False)


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of top tokens whose probability reaches ``top_p``; others -> -inf."""
    sorted_logits, sorted_idx = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    drop = probs.cumsum(dim=-1) - probs >= top_p
    drop[:, 0] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, sorted_idx, sorted_logits)


def pick(
    logits: Tensor,
    temperature: float,
    top_p: float,
    ban: Tensor | None,
    generator: torch.Generator | None,
    uniform: Tensor | None = None,
    logprob_temperature: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Next tokens ``[B]`` and their behaviour log-probs ``[B]`` (fp32) from ``logits [B, V]``.

    Log-probs are of ``softmax(logits / t)`` with ``t = logprob_temperature`` (default: the sampling
    temperature, 1 when greedy), before bans and top-p. ``uniform [B, V]`` (values in (0, 1)) draws
    by Gumbel-max: the same distribution as ``multinomial``, but each row's draw depends only on its
    own noise, not on the batch around it.
    """
    logits = logits.float()
    t = logprob_temperature if logprob_temperature is not None else (temperature or 1.0)
    policy_logp = (logits / t if t != 1.0 else logits).log_softmax(dim=-1)
    if ban is not None:
        logits = logits.index_fill(-1, ban, float("-inf"))
    if temperature == 0:
        tokens = logits.argmax(dim=-1)
    else:
        if temperature != 1:
            logits = logits / temperature
        if top_p < 1:
            logits = top_p_filter(logits, top_p)
        if uniform is not None:
            gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1 - 1e-7)))
            tokens = (logits + gumbel).argmax(dim=-1)
        else:
            probs = logits.softmax(dim=-1)
            if generator is not None and generator.device != probs.device:
                tokens = torch.multinomial(probs.to(generator.device), 1, generator=generator).to(probs.device)
            else:
                tokens = torch.multinomial(probs, 1, generator=generator)
            tokens = tokens.squeeze(-1)
    return tokens, policy_logp.gather(-1, tokens[:, None]).squeeze(-1)


class _StopWatcher:
    """Incremental stop-string detection: decodes only a short tail window per live row per step."""

    def __init__(self, tokenizer, stops: Sequence[str], drop_ids: set[int], num_rows: int, after_text: bool = False):
        self.tokenizer, self.drop_ids, self.after_text = tokenizer, drop_ids, after_text
        self.stops = [s for s in stops if s]
        self.history: list[list[int]] = [[] for _ in range(num_rows)]
        # A char is at most 4 UTF-8 bytes (byte-level tokens); +2 so the window starts before the
        # stop string (decoders may strip a leading space from the first token).
        self.window = 4 * max((len(s) for s in self.stops), default=0) + 2

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
                if self.after_text and len(self.history[rows[j]]) <= self.window:
                    text = text.lstrip()  # the tail is the whole continuation: skip its leading whitespace
                hit[j] = any(s in text for s in self.stops)
        return hit


def stop_length(
    tokenizer, ids: Sequence[int], stops: Sequence[str], drop_ids: set[int], after_text: bool = False
) -> int | None:
    """Tokens of ``ids`` up to the one that completes a stop string (None: no stop string in them).

    The sampler's own test (:class:`_StopWatcher`), run on ids another engine sampled without it
    (e.g. vLLM without a detokenizer): cutting there gives the continuation this sampler would have ended.
    """
    if not any(stops):
        return None
    watcher = _StopWatcher(tokenizer, stops, drop_ids, 1, after_text)
    for i, tok in enumerate(ids):
        if watcher.step([0], [int(tok)], [True])[0]:
            return i + 1
    return None


class _Decoder:
    """Decodes one chunk of prompts; see :func:`sample`."""

    def __init__(
        self,
        model,
        tokenizer,
        rules: DecodeRules,
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        generator,
        logprob_temperature: float | None,
    ):
        self.model, self.n, self.max_new = model, n, max_new_tokens
        self.temperature, self.top_p, self.generator = temperature, top_p, generator
        self.logprob_temperature = logprob_temperature
        self.device = model_device(model)
        self.pad_id = pad_id_of(tokenizer)
        eos = eos_ids(model, tokenizer)
        self.end = self._ids(set(eos) | set(rules.end_ids))
        self.ban = self._ids(set(rules.ban_ids)) if rules.ban_ids else None
        self.early_ban = self._ids(set(rules.ban_ids) | set(self.end.tolist())) if rules.min_new_tokens else None
        self.min_new = rules.min_new_tokens
        self.drop_ids = {int(t) for t in (tokenizer.pad_token_id, tokenizer.bos_token_id) if t is not None} | set(eos)
        self.stops = tuple(s for s in rules.stop_strings if s)
        self.stops_after_text = rules.stops_after_text
        self.tokenizer = tokenizer
        self.keep_last = {"logits_to_keep": 1} if hf_compat.supports_logits_to_keep(model) else {}

    def _ids(self, ids: set[int]) -> Tensor:
        return torch.tensor(sorted(ids), dtype=torch.long, device=self.device)

    def _prefill(self, prompts: list[list[int]]) -> _Batch:
        n, num_rows = self.n, len(prompts) * self.n
        ids, attn = left_pad(prompts, self.pad_id, self.device)
        positions = position_ids_from_mask(attn)
        out = self.model(input_ids=ids, attention_mask=attn, position_ids=positions, use_cache=True, **self.keep_last)
        cache, logits = hf_compat.output_cache(out), out.logits[:, -1]  # logits: [P, V]
        next_pos = positions[:, -1] + 1
        shared = None
        if n > 1 and shared_prefix.supported(self.model):
            # The prefix stays one copy per prompt; the cache holds only the generated tokens.
            prefix = hf_compat.empty_generated_cache(cache, num_rows, self.max_new)
            shared = shared_prefix.SharedPrefix(prefix, attn.bool(), n)
        else:
            hf_compat.preallocate(cache, self.max_new)
        if n > 1:
            expand = torch.arange(len(prompts), device=self.device).repeat_interleave(n)
            if shared is None:
                hf_compat.select_rows(cache, expand)
            logits, attn, next_pos = logits[expand], attn[expand], next_pos[expand]
        rows = torch.arange(num_rows, device=self.device)
        return _Batch(
            cache, shared, logits, attn, next_pos, rows, torch.ones(num_rows, dtype=torch.bool, device=self.device)
        )

    def run(self, prompts: list[list[int]], prompt_generators) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``tokens, mask, logprobs [P*n, max_new]`` and ``finished [P*n]`` for one chunk of prompts."""
        b = self._prefill(prompts)
        ctx = shared_prefix.active(self.model, b.shared) if b.shared is not None else contextlib.nullcontext()
        with ctx:
            return self._steps(b, prompt_generators)

    def _steps(self, b: _Batch, prompt_generators) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        num_rows, device, n = b.rows.numel(), self.device, self.n
        tokens_out = torch.full((num_rows, self.max_new), self.pad_id, dtype=torch.long, device=device)
        mask_out = torch.zeros((num_rows, self.max_new), dtype=torch.bool, device=device)
        logp_out = torch.zeros((num_rows, self.max_new), dtype=torch.float32, device=device)
        finished = torch.zeros(num_rows, dtype=torch.bool, device=device)
        watcher = (
            _StopWatcher(self.tokenizer, self.stops, self.drop_ids, num_rows, self.stops_after_text)
            if self.stops
            else None
        )
        rows_list = b.rows.tolist() if watcher else None
        for step in range(self.max_new):
            uniform = None
            if prompt_generators is not None and self.temperature > 0:
                vocab = b.logits.shape[-1]
                uniform = torch.cat([torch.rand((n, vocab), generator=g, device=device) for g in prompt_generators])[
                    b.rows
                ]
            ban = self.early_ban if step < self.min_new else self.ban
            tokens, logp = pick(
                b.logits, self.temperature, self.top_p, ban, self.generator, uniform, self.logprob_temperature
            )
            tokens = torch.where(b.live, tokens, self.pad_id)
            tokens_out[b.rows, step] = tokens
            logp_out[b.rows, step] = torch.where(b.live, logp, 0.0)
            mask_out[b.rows, step] = b.live
            done = b.live & torch.isin(tokens, self.end)
            if watcher:
                done |= torch.tensor(watcher.step(rows_list, tokens.tolist(), b.live.tolist()), device=device)
            finished[b.rows] |= done
            b.live = b.live & ~done
            num_live = int(b.live.sum())  # the one host sync per step
            if num_live == 0 or step == self.max_new - 1:
                break
            if num_live <= _COMPACT_AT * b.live.numel():
                keep = b.live.nonzero().squeeze(-1)
                hf_compat.select_rows(b.cache, keep)
                if b.shared is not None:
                    b.shared.select(keep)
                b.rows, tokens, b.attn, b.next_pos, b.live = (
                    b.rows[keep],
                    tokens[keep],
                    b.attn[keep],
                    b.next_pos[keep],
                    b.live[keep],
                )
                if watcher:
                    rows_list = b.rows.tolist()
            b.attn = torch.cat([b.attn, b.attn.new_ones((b.attn.shape[0], 1))], dim=1)
            b.logits = self.model(
                input_ids=tokens[:, None],
                attention_mask=None if b.shared is not None else b.attn,
                position_ids=b.next_pos[:, None],
                use_cache=True,
                **hf_compat.cache_kwargs(self.model, b.cache),
                **self.keep_last,
            ).logits[:, -1]
            b.next_pos = b.next_pos + 1
        return tokens_out, mask_out, logp_out, finished


def sample(
    model,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    n: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    rules: DecodeRules = DecodeRules(),
    generator: torch.Generator | None = None,
    prompt_generators: Sequence[torch.Generator] | None = None,
    batch_size: int | None = None,
    add_special_tokens: bool = True,
    logprob_temperature: float | None = None,
    progress: bool = False,
) -> Samples:
    """Sample ``n`` continuations of each prompt (texts, tokenized with ``add_special_tokens``, or ids as given).

    ``temperature`` 0 is greedy; ``top_p`` < 1 is nucleus sampling; ``rules`` say how a row ends
    (always also at EOS, kept as its last token) and which ids are banned. ``batch_size`` bounds
    how many prompts decode together (default: all); ``generator`` makes sampling reproducible;
    ``prompt_generators`` (one per prompt, on the model's device) replace it so that a prompt's
    samples depend only on its own generator, whatever the batching (data-parallel runs then match
    single-process ones). ``logprob_temperature``: see the module docstring. Runs under
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
    decoder = _Decoder(model, tokenizer, rules, n, max_new_tokens, temperature, top_p, generator, logprob_temperature)
    device, num_prompts = decoder.device, len(prompt_ids)
    num_rows = num_prompts * n
    tokens = torch.full((num_rows, max_new_tokens), decoder.pad_id, dtype=torch.long, device=device)
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
        with _progress(progress, num_prompts) as advance, torch.no_grad():
            for start in range(0, num_prompts, step):
                chunk = order[start : start + step]
                gens = None if prompt_generators is None else [prompt_generators[i] for i in chunk]
                out = decoder.run([prompt_ids[i] for i in chunk], gens)
                dest = (torch.tensor(chunk, device=device)[:, None] * n + torch.arange(n, device=device)).reshape(-1)
                tokens[dest], mask[dest], logprobs[dest], finished[dest] = out
                advance(len(chunk))
    width = int(mask.sum(-1).max()) if num_rows and max_new_tokens else 0
    return Samples(prompt_ids, n, tokens[:, :width], mask[:, :width], logprobs[:, :width], finished)


@contextlib.contextmanager
def _progress(enabled: bool, total: int):
    """``advance(k)`` of a transient rich bar (a no-op when disabled)."""
    if not enabled:
        yield lambda k: None
        return
    bar = Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True)
    task = bar.add_task("sampling", total=total)
    with bar:
        yield lambda k: bar.advance(task, k)

"""The one sampler of thoughts and answers, and the one statement of how a thought opens, closes and ends.

Every job that samples (eval, GRPO, TTRL, RLP, the audit's diagnostics, the planning environment)
goes through :func:`sample_thoughts`, :func:`think_then_answer` or :func:`force_thoughts`, under the
rules of a :class:`ThoughtFormat`. The sampling settings travel as one :class:`Sampling` (built once
from a job's config; :func:`draw_thoughts` and :func:`complete` take it, the keyword functions build it):

* a thought opens with ``<think>``, which the sampler writes after the prompt (it is not sampled);
* inside a thought, EOS, a second ``<think>`` and every other special token of the tokenizer (the
  chat template's structure: ``<|im_start|>``, ``<|im_end|>``...) are banned: a thought ends only
  when the model samples ``</think>`` (an action, kept, with its log-prob) or at the thought budget, where the
  sampler closes it (not an action; counted as ``closed = False``);
* a thought has at least ``min_thought_tokens`` tokens (1): ``</think>`` is banned before that;
* an answer follows ``</think>`` (or, in no-think mode, the prompt) with both delimiters banned,
  and ends at EOS (kept), at a stop string (the completing token is its last) or at its budget.

Prompts of tasks go through the tokenizer's chat template when ``chat`` is on (auto: when the
tokenizer has one), optionally with a system instruction describing the format; document
prefixes (RLP) never do. The delimiters are ``<think>``/``</think>``: the tokens of models that
think natively (Qwen3, DeepSeek-R1 distills), added as new tokens to any other tokenizer, their
embeddings initialised from the phrases of :class:`ThinkSettings` (``bench/thought_format_smollm2.py``
measured the choice on SmolLM2-135M).

Everything returned is token ids and behaviour log-probs (:mod:`ponder.lm.decode`); text is
decoded only on request, to parse answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from ponder.lm.decode import DecodeRules, Samples, cut_at_stop, eos_ids, sample
from ponder.lm.delimiters import THINK_CLOSE, THINK_OPEN, structure_token_ids, think_token_ids

#: Where an answer ends by default: tasks answer on one line.
ANSWER_STOPS = ("\n",)
#: The texts whose mean embeddings start new ``<think>`` / ``</think>`` rows (measured on SmolLM2-135M:
#: ``bench/thought_format_smollm2.py``, issue 27 in bench/RESULTS.md).
OPEN_PHRASE = "Let me think."
CLOSE_PHRASE = "So the answer is"


class ThinkSettings(BaseModel):
    """User settings of the thought format (every job that samples task prompts has them)."""

    model_config = ConfigDict(extra="forbid")
    chat_template: Literal["auto", "on", "off"] = Field(
        "auto", description="task prompts through the tokenizer's chat template: auto (when it has one), on, off"
    )
    think_instruction: str | None = Field(
        None, description="system message for chat prompts that explains the <think>...</think> format"
    )
    min_thought_tokens: int = Field(1, ge=0, description="a thought has at least this many tokens")
    think_open_phrase: str | None = Field(
        OPEN_PHRASE,
        min_length=1,
        description="a tokenizer without <think> gets it as a new token whose embedding starts at this text's "
        "mean token embedding (None: the vocabulary's mean)",
    )
    think_close_phrase: str | None = Field(CLOSE_PHRASE, min_length=1, description="likewise for </think>")

    @classmethod
    def of(cls, settings: BaseModel) -> ThinkSettings:
        """The thought-format fields of a job's settings (any model that inherits them)."""
        return cls(**settings.model_dump(include=set(cls.model_fields)))


@dataclass(frozen=True)
class ThoughtFormat:
    """The delimiters' ids, the ids that end a text, and the rules of :mod:`ponder.lm.thinking`."""

    open_id: int
    close_id: int
    eos_ids: tuple[int, ...]
    min_thought_tokens: int = 1
    chat: bool = False
    instruction: str | None = None
    structure_ids: tuple[int, ...] = ()  # the tokenizer's other special tokens, banned inside a thought

    @classmethod
    def of(cls, model, tokenizer, settings: ThinkSettings | None = None) -> ThoughtFormat:
        """The format of ``model`` + ``tokenizer`` (delimiters must be registered: see ``ensure_think_tokens``)."""
        settings = settings or ThinkSettings()
        open_id, close_id = think_token_ids(tokenizer)
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if settings.chat_template == "on" and not has_template:
            raise ValueError("chat_template is 'on' but the tokenizer has no chat template; use 'auto' or 'off'")
        chat = settings.chat_template == "on" or (settings.chat_template == "auto" and has_template)
        return cls(
            open_id,
            close_id,
            tuple(eos_ids(model, tokenizer)),
            settings.min_thought_tokens,
            chat,
            settings.think_instruction,
            tuple(structure_token_ids(tokenizer, keep=(open_id, close_id))),
        )

    # ------------------------------------------------------------ the rules
    def thought_rules(self) -> DecodeRules:
        """Ends at the model's own ``</think>``; EOS, ``<think>`` and the structure tokens banned; ``</think>`` banned before the minimum."""
        ban = (self.open_id, *self.eos_ids, *(t for t in self.structure_ids if t not in self.eos_ids))
        return DecodeRules(end_ids=(self.close_id,), ban_ids=ban, min_new_tokens=self.min_thought_tokens)

    def answer_rules(self, stops: Sequence[str] = ()) -> DecodeRules:
        """Ends at EOS or a stop string after the answer's first visible character; no delimiter inside."""
        return DecodeRules(ban_ids=(self.open_id, self.close_id), stop_strings=tuple(stops), stops_after_text=True)

    # ------------------------------------------------------------ prompts
    def prompt_ids(
        self, tokenizer, prompts: Sequence[str], answer_prefixes: Sequence[str] | None = None
    ) -> list[list[int]]:
        """Task prompts as the model reads them before ``<think>`` (or before a no-think answer).

        ``answer_prefixes[i]`` (optional): the scaffold that ends ``prompts[i]`` and cues the answer
        (BIG-bench's ``"\nA: "``). Without a chat template the prompt is read whole; with one the
        template goes around the rest (the user turn) and the scaffold, leading whitespace dropped,
        opens the assistant turn (lm-evaluation-harness's ``gen_prefix``), so the model answers
        after it instead of echoing it.
        """
        if not self.chat:
            return tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        prefixes = list(answer_prefixes) if answer_prefixes is not None else [""] * len(prompts)
        out = []
        for text, prefix in zip(prompts, prefixes):
            if prefix and text.endswith(prefix):
                text = text[: len(text) - len(prefix)].strip()
            else:
                prefix = ""
            messages = [{"role": "system", "content": self.instruction}] if self.instruction else []
            messages.append({"role": "user", "content": text})
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
            if ids and ids[-1] == self.open_id:  # a template that opens the thought itself (Qwen3)
                ids = ids[:-1]
            scaffold = prefix.lstrip()
            tail = tokenizer(scaffold, add_special_tokens=False)["input_ids"] if scaffold else []
            out.append(list(ids) + list(tail))
        return out


@dataclass
class Thoughts:
    """``N = P * n`` sampled thoughts (rows ``i*n .. i*n+n-1`` follow prompt ``i``).

    ``ids[r]``: the thought's tokens without delimiters; ``closed [N]``: the model sampled
    ``</think>`` itself (False: cut at the budget and closed for it); ``logprobs[r]``
    ``[len(ids[r]) + closed[r]]`` fp32: behaviour log-prob of each sampled token, the model's own
    ``</think>`` last (NaN for tokens written by :func:`force_thoughts`, which were not sampled).
    """

    prompt_ids: list[list[int]]
    n: int
    ids: list[list[int]]
    logprobs: list[Tensor]
    closed: Tensor

    @property
    def lengths(self) -> Tensor:
        """``[N]`` thought tokens (delimiters excluded), fp32."""
        return torch.tensor([len(t) for t in self.ids], dtype=torch.float32)

    def prompt_of(self, row: int) -> list[int]:
        """The prompt ids of thought ``row`` (rows are grouped ``n`` per prompt)."""
        return self.prompt_ids[row // self.n]


@dataclass
class Completions:
    """``N = P * n`` completions: ``prompt [<think> thought </think>] answer``; rows grouped by prompt.

    ``thoughts`` is None in no-think mode. ``answer_ids[r]`` as sampled (an ending EOS or the
    stop-string token included); ``answer_logprobs[r]`` their behaviour log-probs;
    ``answer_finished [N]``: ended by EOS or a stop string.
    """

    prompt_ids: list[list[int]]
    n: int
    thoughts: Thoughts | None
    answer_ids: list[list[int]]
    answer_logprobs: list[Tensor]
    answer_finished: Tensor
    open_id: int
    close_id: int

    def __len__(self) -> int:
        return len(self.answer_ids)

    @property
    def prompt_index(self) -> Tensor:
        return torch.arange(len(self.prompt_ids)).repeat_interleave(self.n)

    @property
    def closed(self) -> Tensor:
        """``[N]`` the model closed its thought itself (all True in no-think mode)."""
        return self.thoughts.closed if self.thoughts is not None else torch.ones(len(self), dtype=torch.bool)

    @property
    def thought_tokens(self) -> Tensor:
        return self.thoughts.lengths if self.thoughts is not None else torch.zeros(len(self))

    @property
    def answer_tokens(self) -> Tensor:
        return torch.tensor([len(a) for a in self.answer_ids], dtype=torch.float32)

    def completion_ids(self, row: int) -> list[int]:
        """The ids the model read and wrote after the prompt: ``[<think> thought </think>] answer``."""
        if self.thoughts is None:
            return list(self.answer_ids[row])
        return [self.open_id, *self.thoughts.ids[row], self.close_id, *self.answer_ids[row]]

    def action_mask(self, row: int) -> list[bool]:
        """Over :meth:`completion_ids`: the sampled tokens (thought, the model's own ``</think>``, answer)."""
        if self.thoughts is None:
            return [True] * len(self.answer_ids[row])
        body = len(self.thoughts.ids[row])
        return [False] + [True] * body + [bool(self.thoughts.closed[row])] + [True] * len(self.answer_ids[row])

    def behaviour_logprobs(self, row: int) -> Tensor:
        """Over :meth:`completion_ids`: each action's behaviour log-prob, 0 elsewhere (fp32, CPU)."""
        if self.thoughts is None:
            return self.answer_logprobs[row].clone()
        out = torch.zeros(len(self.completion_ids(row)))
        mask = torch.tensor(self.action_mask(row))
        out[mask] = torch.cat([self.thoughts.logprobs[row], self.answer_logprobs[row]])
        return out

    def texts(self, tokenizer, stops: Sequence[str] = ANSWER_STOPS) -> list[str]:
        """``<think>thought</think>answer`` per row (the answer without its stop string), for parsing answers."""
        skip = {t for t in (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) if t is not None}
        answers = tokenizer.batch_decode(
            [[t for t in a if t not in skip] for a in self.answer_ids],
            skip_special_tokens=False,
            clean_up_tokenization_spaces=False,
        )
        answers = [drop_stop(cut_at_stop(a, stops, after_text=True)[0], stops) for a in answers]
        if self.thoughts is None:
            return answers
        thoughts = tokenizer.batch_decode(
            self.thoughts.ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        return [f"{THINK_OPEN}{t}{THINK_CLOSE}{a}" for t, a in zip(thoughts, answers)]


def drop_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` without the stop string it ends with (an answer should not carry it)."""
    ended = next((s for s in stops if s and text.endswith(s)), "")
    return text[: len(text) - len(ended)]


def _row_generators(prompt_generators: Sequence[torch.Generator] | None, n: int) -> list[torch.Generator] | None:
    """One generator per row, each seeded from its prompt's generator: answers follow their thought, not the batch."""
    if prompt_generators is None:
        return None
    out = []
    for g in prompt_generators:
        for _ in range(n):
            seed = int(torch.randint(2**62, (1,), generator=g, device=g.device))
            out.append(torch.Generator(device=g.device).manual_seed(seed))
    return out


def _split_thoughts(s: Samples, close_id: int, prompt_ids, n) -> Thoughts:
    ids, logps, closed = [], [], []
    for row in range(len(s)):
        toks, lp = s.ids(row), s.row_logprobs(row)
        shut = bool(toks) and toks[-1] == close_id
        ids.append(toks[:-1] if shut else toks)
        logps.append(lp)
        closed.append(shut)
    return Thoughts(prompt_ids, n, ids, logps, torch.tensor(closed, dtype=torch.bool))


@dataclass(frozen=True)
class Sampling:
    """Every setting of a draw of thoughts and answers, in one object built once from a job's config.

    ``temperature`` (0: greedy) and ``top_p`` apply to thoughts and answers alike;
    ``max_thought_tokens`` / ``max_answer_tokens``: the budgets; ``think``: a thought before the
    answer (False: no-think mode); ``stops``: strings that end an answer; ``batch_size``: prompts
    per decode batch (None: all); ``logprob_temperature``: the behaviour log-probs' temperature
    (None: the sampling temperature; :mod:`ponder.lm.decode`). What a thought or an answer may
    contain (the bans) is the :class:`ThoughtFormat`'s; the randomness is the caller's generators.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    max_thought_tokens: int = 128
    max_answer_tokens: int = 16
    think: bool = True
    stops: tuple[str, ...] = ANSWER_STOPS
    batch_size: int | None = None
    logprob_temperature: float | None = None

    def __post_init__(self):
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")
        if self.max_thought_tokens < 0 or self.max_answer_tokens < 0:
            raise ValueError("token budgets cannot be negative")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1 (or None), got {self.batch_size}")
        object.__setattr__(self, "stops", tuple(self.stops))


def sample_thoughts(
    model,
    tokenizer,
    fmt: ThoughtFormat,
    prompt_ids: Sequence[Sequence[int]],
    n: int,
    max_tokens: int,
    temperature: float = 0.7,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    prompt_generators: Sequence[torch.Generator] | None = None,
    batch_size: int | None = None,
    logprob_temperature: float | None = None,
) -> Thoughts:
    """``n`` thoughts after each ``prompt <think>``, under ``fmt``'s thought rules, at most ``max_tokens`` tokens.

    ``prompt_ids``: what precedes ``<think>`` (a task prompt from :meth:`ThoughtFormat.prompt_ids`,
    or a document prefix). ``prompt_generators`` (one per prompt): reproducible whatever the batching.
    The keyword form of :func:`draw_thoughts`.
    """
    sampling = Sampling(temperature, top_p, max_tokens, batch_size=batch_size, logprob_temperature=logprob_temperature)
    return draw_thoughts(model, tokenizer, fmt, prompt_ids, n, sampling, generator, prompt_generators)


def draw_thoughts(
    model,
    tokenizer,
    fmt: ThoughtFormat,
    prompt_ids: Sequence[Sequence[int]],
    n: int,
    sampling: Sampling,
    generator: torch.Generator | None = None,
    prompt_generators: Sequence[torch.Generator] | None = None,
) -> Thoughts:
    """``n`` thoughts after each ``prompt <think>`` drawn with ``sampling`` (at most ``max_thought_tokens`` each)."""
    if sampling.max_thought_tokens < max(1, fmt.min_thought_tokens):
        raise ValueError(
            f"the thought budget ({sampling.max_thought_tokens}) must be at least {max(1, fmt.min_thought_tokens)} token(s)"
        )
    prompts = [list(p) for p in prompt_ids]
    return _thoughts(model, tokenizer, fmt, prompts, [[] for _ in prompts], n, sampling, generator, prompt_generators)


def continue_thoughts(
    model,
    tokenizer,
    fmt: ThoughtFormat,
    prompt_ids: Sequence[Sequence[int]],
    so_far: Sequence[Sequence[int]],
    n: int,
    max_tokens: int,
    temperature: float = 0.7,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    prompt_generators: Sequence[torch.Generator] | None = None,
    batch_size: int | None = None,
    logprob_temperature: float | None = None,
) -> Thoughts:
    """``n`` continuations of each open thought ``prompt <think> so_far``: at most ``max_tokens`` more tokens.

    The returned ids are the continuations only (``so_far`` excluded); the minimum thought length
    counts ``so_far``.
    """
    sampling = Sampling(temperature, top_p, max_tokens, batch_size=batch_size, logprob_temperature=logprob_temperature)
    return _thoughts(model, tokenizer, fmt, prompt_ids, so_far, n, sampling, generator, prompt_generators)


def _thoughts(
    model, tokenizer, fmt, prompt_ids, so_far, n, sampling: Sampling, generator, prompt_generators
) -> Thoughts:
    """The thought phase: ``n`` continuations of each ``prompt <think> so_far`` (see :func:`continue_thoughts`)."""
    prompts = [list(p) for p in prompt_ids]
    shortest = min((len(x) for x in so_far), default=0)
    rules = fmt.thought_rules()
    rules = DecodeRules(rules.end_ids, rules.ban_ids, max(0, fmt.min_thought_tokens - shortest), rules.stop_strings)
    was_training = model.training
    model.eval()
    try:
        s = sample(
            model,
            tokenizer,
            [p + [fmt.open_id, *x] for p, x in zip(prompts, so_far)],
            n=n,
            max_new_tokens=sampling.max_thought_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            rules=rules,
            generator=generator,
            prompt_generators=prompt_generators,
            batch_size=sampling.batch_size,
            logprob_temperature=sampling.logprob_temperature,
        )
    finally:
        model.train(was_training)
    return _split_thoughts(s, fmt.close_id, prompts, n)


def sample_answers(
    model,
    tokenizer,
    fmt: ThoughtFormat,
    context_ids: Sequence[Sequence[int]],
    max_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stops: Sequence[str] = ANSWER_STOPS,
    generator=None,
    row_generators: Sequence[torch.Generator] | None = None,
    batch_size: int | None = None,
    logprob_temperature: float | None = None,
) -> Samples:
    """One answer after each context (``prompt <think> thought </think>``, or a prompt in no-think mode)."""
    sampling = Sampling(
        temperature, top_p, max_answer_tokens=max_tokens, stops=tuple(stops), logprob_temperature=logprob_temperature
    )
    return _answers(model, tokenizer, fmt, context_ids, sampling, generator, row_generators, batch_size)


def _answers(
    model, tokenizer, fmt, context_ids, sampling: Sampling, generator, row_generators, rows_per_batch
) -> Samples:
    """The answer phase: one answer of at most ``max_answer_tokens`` after each context, ``rows_per_batch`` at a time."""
    was_training = model.training
    model.eval()
    try:
        return sample(
            model,
            tokenizer,
            [list(c) for c in context_ids],
            n=1,
            max_new_tokens=sampling.max_answer_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            rules=fmt.answer_rules(sampling.stops),
            generator=generator,
            prompt_generators=row_generators,
            batch_size=rows_per_batch,
            logprob_temperature=sampling.logprob_temperature,
        )
    finally:
        model.train(was_training)


def think_then_answer(
    model,
    tokenizer,
    fmt: ThoughtFormat,
    prompt_ids: Sequence[Sequence[int]],
    n: int = 1,
    think: bool = True,
    max_thought_tokens: int = 128,
    max_answer_tokens: int = 16,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stops: Sequence[str] = ANSWER_STOPS,
    generator: torch.Generator | None = None,
    prompt_generators: Sequence[torch.Generator] | None = None,
    batch_size: int | None = None,
    logprob_temperature: float | None = None,
    thoughts: Thoughts | None = None,
) -> Completions:
    """``n`` completions per prompt: a thought (think mode), closed at the budget if needed, then an answer.

    The keyword form of :func:`complete` (see there).
    """
    sampling = Sampling(
        temperature, top_p, max_thought_tokens, max_answer_tokens, think, tuple(stops), batch_size, logprob_temperature
    )
    return complete(model, tokenizer, fmt, prompt_ids, n, sampling, generator, prompt_generators, thoughts)


def complete(
    model,
    tokenizer,
    fmt: ThoughtFormat,
    prompt_ids: Sequence[Sequence[int]],
    n: int,
    sampling: Sampling,
    generator: torch.Generator | None = None,
    prompt_generators: Sequence[torch.Generator] | None = None,
    thoughts: Thoughts | None = None,
) -> Completions:
    """``n`` completions per prompt drawn with ``sampling``: a thought (think mode), closed at the budget if needed, then an answer.

    Both phases run from token ids: the answer's context is exactly the ids the thought phase
    produced. ``thoughts`` (optional) supplies the thought phase (e.g. from :func:`force_thoughts`).
    ``sampling.batch_size`` bounds prompts per decode batch (answers: ``batch_size * n`` rows).
    ``prompt_generators`` (one per prompt): each row's answer is drawn from a generator seeded by its
    prompt's, so a completion depends only on its prompt's generator.
    """
    prompts = [list(p) for p in prompt_ids]
    rows_per_batch = None if sampling.batch_size is None else sampling.batch_size * n
    if not sampling.think:
        contexts = [p for p in prompts for _ in range(n)]
        thought = None
    else:
        thought = thoughts or draw_thoughts(model, tokenizer, fmt, prompts, n, sampling, generator, prompt_generators)
        contexts = [
            thought.prompt_of(r) + [fmt.open_id, *thought.ids[r], fmt.close_id] for r in range(len(thought.ids))
        ]
    row_generators = _row_generators(prompt_generators, n)
    s = _answers(model, tokenizer, fmt, contexts, sampling, generator, row_generators, rows_per_batch)
    return Completions(
        prompts,
        n,
        thought,
        [s.ids(r) for r in range(len(s))],
        [s.row_logprobs(r) for r in range(len(s))],
        s.finished.cpu(),
        fmt.open_id,
        fmt.close_id,
    )


def force_thoughts(
    model,
    tokenizer,
    fmt: ThoughtFormat,
    prompt_ids: Sequence[Sequence[int]],
    budget: int,
    force_ids: Sequence[int],
    max_forcings: int = 4,
    temperature: float = 0.0,
    generator=None,
    batch_size: int | None = None,
) -> tuple[Thoughts, list[int]]:
    """Budget forcing: thoughts where an early ``</think>`` is replaced by ``force_ids`` ("Wait") and thinking goes on.

    At most ``max_forcings`` replacements; each thought has at most ``budget`` tokens (else it is
    cut and closed there). Returns ``(thoughts, forcings per prompt)``; forced tokens have log-prob NaN.
    """
    prompts = [list(p) for p in prompt_ids]
    body: list[list[int]] = [[] for _ in prompts]
    logps: list[list[float]] = [[] for _ in prompts]
    forcings, closed = [0] * len(prompts), [False] * len(prompts)
    active = list(range(len(prompts)))
    for round_ in range(max_forcings + 1):
        active = [i for i in active if len(body[i]) < budget]
        if not active:
            break
        room = max(budget - len(body[i]) for i in active)
        part = continue_thoughts(
            model,
            tokenizer,
            fmt,
            [prompts[i] for i in active],
            [body[i] for i in active],
            1,
            room,
            temperature,
            generator=generator,
            batch_size=batch_size,
        )
        still = []
        for row, i in enumerate(active):
            left = budget - len(body[i])
            ids = part.ids[row][:left]
            body[i] += ids
            logps[i] += part.logprobs[row][: len(ids)].tolist()
            if not (bool(part.closed[row]) and len(part.ids[row]) <= left):
                continue  # ran into the budget: cut and closed there
            if round_ < max_forcings and len(body[i]) < budget:
                forced = list(force_ids)[: budget - len(body[i])]
                body[i] += forced
                logps[i] += [float("nan")] * len(forced)
                forcings[i] += 1
                still.append(i)
            else:
                closed[i] = True
                logps[i].append(float(part.logprobs[row][-1]))
        active = still
    return Thoughts(
        prompts, 1, body, [torch.tensor(x) for x in logps], torch.tensor(closed, dtype=torch.bool)
    ), forcings

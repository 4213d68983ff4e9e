"""Think-then-answer generation on top of :func:`ponder.lm.sample.sample`.

Think mode runs in two phases so that the thought budget is exact and visible:

1. from ``prompt + <think>`` sample the thought until ``</think>`` or ``max_thought_tokens``;
   a thought that never closes is cut at the budget and closed (counted in ``closed``);
2. from ``prompt <think> thought </think>`` sample the answer until a stop string or
   ``max_answer_tokens``.

No-think mode samples the answer directly from the prompt with both delimiters banned.
Phase 2 continues from token ids, not re-tokenized text, so the model sees exactly the
tokens it produced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ponder.lm.thoughts import think_ban_ids, think_token_ids


@dataclass
class Completions:
    """``M = len(prompts) * n`` completions, grouped by prompt (rows ``i*n .. i*n+n-1``).

    ``thoughts`` is None in no-think mode. ``thought_tokens [M]`` counts thought tokens
    (delimiters excluded); ``closed [M]`` tells whether the model closed its thought itself.
    """

    prompt_index: torch.Tensor
    answers: list[str]
    thoughts: list[str] | None
    thought_tokens: torch.Tensor
    answer_tokens: torch.Tensor
    closed: torch.Tensor

    @property
    def texts(self) -> list[str]:
        """Full completions as a task scorer sees them."""
        if self.thoughts is None:
            return list(self.answers)
        return [f"<think>{t}</think>{a}" for t, a in zip(self.thoughts, self.answers)]


def drop_stop(texts: Sequence[str], stops: Sequence[str]) -> list[str]:
    """Remove the stop string that ended each text (sampling keeps it; an answer should not)."""
    out = []
    for text in texts:
        ended = next((s for s in stops if s and text.endswith(s)), "")
        out.append(text[: len(text) - len(ended)])
    return out


def _prompt_ids(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    return [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    think: bool = True,
    n: int = 1,
    max_thought_tokens: int = 128,
    max_answer_tokens: int = 16,
    temperature: float = 0.0,
    top_p: float = 1.0,
    answer_stop: Sequence[str] = ("\n",),
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> Completions:
    """Sample ``n`` completions per prompt in think or no-think mode (see module docstring)."""
    from ponder.lm.sample import sample

    common = dict(temperature=temperature, top_p=top_p, generator=generator, batch_size=batch_size, progress=progress)
    if not think:
        s = sample(
            model,
            tokenizer,
            list(prompts),
            n=n,
            max_new_tokens=max_answer_tokens,
            stop=answer_stop,
            ban_token_ids=think_ban_ids(tokenizer),
            **common,
        )
        answer_tokens = s.mask.sum(1)
        zeros = torch.zeros_like(answer_tokens)
        return Completions(
            s.prompt_index, drop_stop(s.texts, answer_stop), None, zeros, answer_tokens, torch.ones_like(s.finished)
        )
    open_id, close_id = think_token_ids(tokenizer)
    base_ids = [ids + [open_id] for ids in _prompt_ids(tokenizer, prompts)]
    thought = sample(
        model,
        tokenizer,
        base_ids,
        n=n,
        max_new_tokens=max_thought_tokens,
        stop_token_ids=[close_id],
        ban_token_ids=[open_id],
        **common,
    )
    answer_prompts, thoughts, thought_tokens, closed = [], [], [], []
    for row in range(thought.tokens.shape[0]):
        ids = thought.tokens[row][thought.mask[row]].tolist()
        is_closed = close_id in ids
        body = ids[: ids.index(close_id)] if is_closed else [t for t in ids if t != tokenizer.eos_token_id]
        closed.append(is_closed)
        thought_tokens.append(len(body))
        thoughts.append(tokenizer.decode(body, skip_special_tokens=False))
        answer_prompts.append(base_ids[int(thought.prompt_index[row])] + body + [close_id])
    answer = sample(
        model,
        tokenizer,
        answer_prompts,
        n=1,
        max_new_tokens=max_answer_tokens,
        stop=answer_stop,
        ban_token_ids=think_ban_ids(tokenizer),
        **common,
    )
    return Completions(
        thought.prompt_index,
        drop_stop(answer.texts, answer_stop),
        thoughts,
        torch.tensor(thought_tokens),
        answer.mask.sum(1),
        torch.tensor(closed),
    )

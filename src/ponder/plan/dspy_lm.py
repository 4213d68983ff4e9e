"""DSPy's optimizers on ponder's model, in process: an LM client over the one sampler, and a plain adapter.

Optional extra ``dspy`` (``pip install 'ponder[dspy]'``). Two pieces:

* :class:`PonderLM`, a ``dspy.BaseLM``: DSPy's chat messages go through the tokenizer's chat
  template (or, for a tokenizer without one, the contents joined by newlines) to token ids (a
  call with ``raw=True``, the plain adapter's task prompts when the planning environment renders
  chains as plain text, sends the user message's text itself, as the environment does), and
  the answer is sampled by :func:`ponder.lm.thinking.think_then_answer` in no-think mode (no
  server, no text prompt handed to anything else). Every prompt is a counted call in a
  :class:`~ponder.plan.env.Counters`, the same counter a planner's environment keeps: ``calls``
  (one per sample), ``tokens`` (read and written) and ``generated_tokens``. A repeated greedy
  request is a free cache hit (``cache_hits``), as a repeated chain is for the planners; DSPy's own
  disk cache is not used (it would serve calls across runs without counting them).
* :class:`PlainAdapter`, a ``dspy.ChatAdapter`` that lays out the task's one-input, one-output
  signature as ponder renders a chain (instruction lines, then one line per demonstration
  ``question + answer``, then the question; the answer is the first line the model writes), so
  DSPy's programs and ponder's chains reach the model in the same form; every other signature
  (the optimizers' own proposal programs) keeps DSPy's chat format. A small model seldom writes
  DSPy's ``[[ ## field ## ]]`` markers: for a signature with one output field, a completion
  without its marker is read as that field's text (up to any other field's marker, stripped), instead of failing the proposal (and
  instead of DSPy's JSON fallback, which would re-ask the same model for more calls).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import dspy
import torch

from ponder.lm.thinking import ThoughtFormat, think_then_answer
from ponder.plan.env import Counters

#: DSPy's chat-format field marker, ``[[ ## name ## ]]``.
_FIELD_MARKER = re.compile(r"\[\[ ## \w+ ## \]\]")
#: Field names of the task signature the plain adapter lays out: ``question -> answer``.
QUESTION, ANSWER = "question", "answer"


@dataclass
class _Message:
    content: str
    role: str = "assistant"


@dataclass
class _Choice:
    message: _Message
    finish_reason: str = "stop"
    index: int = 0


@dataclass
class _Response:
    """The OpenAI-shaped response ``BaseLM.forward`` returns (``choices``, ``usage``, ``model``)."""

    choices: list[_Choice]
    usage: dict
    model: str
    cache_hit: bool = False
    _hidden_params: dict = field(default_factory=dict)


def message_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of chat ``messages`` as the model reads them before answering.

    Through the tokenizer's chat template with the generation prompt; for a tokenizer without one,
    the messages' contents joined by newlines (tokenized with special tokens).
    """
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        return list(ids)
    text = "\n".join(str(m.get("content") or "") for m in messages)
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def _text_of(content) -> str:
    """A message's content as text (DSPy may send a list of typed parts)."""
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content or "")


class PonderLM(dspy.BaseLM):
    """``dspy.BaseLM`` over ponder's sampler; counts every call in ``counters`` (see the module docstring).

    ``lm``: a loaded ponder model (``.model``, ``.tokenizer``). ``max_tokens`` caps every answer
    (DSPy asks for thousands; a task answer needs a few, a proposal a few dozen). ``seed`` seeds the
    samples DSPy asks for at temperature > 0 (each call draws from its own generator, so a rerun of
    the same optimizer is the same run).
    """

    def __init__(self, lm, counters: Counters | None = None, max_tokens: int = 128, seed: int = 0, name="ponder"):
        super().__init__(model=f"ponder/{name}", model_type="chat", temperature=0.0, max_tokens=max_tokens, cache=False)
        self.lm, self.counters, self.max_new_tokens, self.seed = lm, counters or Counters(), max_tokens, seed
        self.fmt = ThoughtFormat.of(lm.model, lm.tokenizer)
        self._memo: dict[tuple, list[str]] = {}
        self.prompts: list[list[int]] = []  # the ids of every counted call, in order (tests and audits read them)

    def forward(self, prompt=None, messages=None, **kwargs):
        messages = [{"role": m["role"], "content": _text_of(m.get("content"))} for m in messages or []]
        if prompt is not None and not messages:
            messages = [{"role": "user", "content": str(prompt)}]
        n = int(kwargs.get("n") or 1)
        temperature = float(kwargs.get("temperature") or 0.0)
        max_tokens = min(int(kwargs.get("max_tokens") or self.max_new_tokens), self.max_new_tokens)
        stops = tuple(kwargs.get("stop") or ())
        if kwargs.get("raw"):  # the text itself, as PlanEnv sends a chain with chat_template="off"
            ids = self.lm.tokenizer("\n".join(m["content"] for m in messages), add_special_tokens=True)["input_ids"]
        else:
            ids = message_ids(self.lm.tokenizer, messages)
        key = (tuple(ids), max_tokens, stops)
        if temperature == 0.0 and key in self._memo:  # the same greedy request: the same answer, for free
            self.counters.cache_hits += 1
            texts, generated = self._memo[key], 0
        else:
            texts, generated = self._sample(ids, n if temperature > 0 else 1, temperature, max_tokens, stops)
            if temperature == 0.0:
                self._memo[key] = texts
            self.counters.calls += len(texts)
            self.counters.tokens += len(ids) * len(texts) + generated
            self.counters.generated_tokens += generated
            self.prompts += [ids] * len(texts)
        texts = texts * n if len(texts) == 1 else texts
        return _Response(
            [_Choice(_Message(t), index=i) for i, t in enumerate(texts[:n])],
            {"prompt_tokens": len(ids), "completion_tokens": generated, "total_tokens": len(ids) + generated},
            self.model,
        )

    def _sample(self, ids: list[int], n: int, temperature: float, max_tokens: int, stops) -> tuple[list[str], int]:
        """``n`` answers after ``ids`` (greedy at temperature 0); their texts and the tokens generated."""
        tok = self.lm.tokenizer
        gen = None
        if temperature > 0:
            gen = torch.Generator(device=self.lm.model.device).manual_seed(self.seed * 1_000_003 + self.counters.calls)
        with torch.no_grad():
            comp = think_then_answer(
                self.lm.model,
                tok,
                self.fmt,
                [ids],
                n=n,
                think=False,
                max_answer_tokens=max_tokens,
                temperature=temperature,
                stops=stops,
                generator=gen,
            )
        return comp.texts(tok, stops), int(comp.answer_tokens.sum())


def _is_task_signature(signature) -> bool:
    return list(signature.input_fields) == [QUESTION] and list(signature.output_fields) == [ANSWER]


class PlainAdapter(dspy.ChatAdapter):
    """The task signature (``question -> answer``) rendered as ponder renders a chain; DSPy's chat format otherwise.

    ``chat_template``: the planning environment's setting; "off" sends task prompts as their text.

    A plain prompt is one user message: the signature's instructions, one line per demonstration
    (``question + answer``, like a mined exemplar), then the question; the answer is the first line of
    the completion (calls end at a newline, as the planning environment's answers do).
    """

    def __init__(self, answer_tokens: int = 12, chat_template: str = "off"):
        super().__init__(use_native_function_calling=False, use_json_adapter_fallback=False)
        self.answer_tokens, self.raw = answer_tokens, chat_template == "off"

    def __call__(self, lm, lm_kwargs, signature, demos, inputs):
        if _is_task_signature(signature):
            lm_kwargs = {**lm_kwargs, "stop": ("\n",), "max_tokens": self.answer_tokens, "raw": self.raw}
        return super().__call__(lm, lm_kwargs, signature, demos, inputs)

    def format(self, signature, demos, inputs):
        if not _is_task_signature(signature):
            return super().format(signature, demos, inputs)
        return [{"role": "user", "content": plain_prompt(signature.instructions, demos, inputs[QUESTION])}]

    def parse(self, signature, completion):
        if not _is_task_signature(signature):
            try:
                return super().parse(signature, completion)
            except dspy.utils.exceptions.AdapterParseError:
                if len(signature.output_fields) != 1:
                    raise
                text = _FIELD_MARKER.split(str(completion))[0].strip()  # what it wrote before any other field's marker
                return {next(iter(signature.output_fields)): text}
        lines = [ln.strip() for ln in str(completion).splitlines() if ln.strip()]
        return {ANSWER: lines[0] if lines else ""}


def plain_prompt(instructions: str, demos: list, question: str) -> str:
    """``instructions`` lines, one ``question + answer`` line per complete demo, then ``question``
    (the text :func:`ponder.plan.state.render_prompt` makes of a chain with those lines, direct format)."""
    lines = [ln for ln in (instructions or "").splitlines() if ln.strip()]
    for d in demos or []:
        q, a = d.get(QUESTION), d.get(ANSWER)
        if q is not None and a not in (None, ""):
            lines.append(f"{q}{a}")
    return "".join(line + "\n" for line in lines) + question

"""The LM as a (partially observable) environment for chain edits.

``PlanEnv.evaluate(chain)`` renders the chain around every input of a fixed training
minibatch, lets the LM answer greedily (think or answer-at-once, per the chain's format),
scores the answers with the task's scorer, and teacher-forces the reference answer after the
prompt (and after the model's own thought) for its log-likelihood. The outcome's ``value``
(what every planner and baseline maximises) is the mean of accuracy and the reference's
per-token geometric-mean probability, or the accuracy alone for a task without references.

Accounting (the same for every method, since all go through this class):

* ``calls``: requests to the LM. An evaluation is one call per input (``fused``, the default): one
  prefill reads the context and the reference answer after it, which gives the reference's
  log-likelihood, and the context's KV cache serves the greedy answer (``ponder.plan.fused``), as
  one API request that returns a completion and the echoed reference's log-probs. In the
  ``think`` format the thought the model writes first belongs to the same call. With
  ``fused=False`` the answer and the reference's log-likelihood are asked separately: two calls
  per input (the counting before issue 28's third session). One call per sample for LM
  proposals (``propose``);
* ``tokens``: tokens those calls read and wrote (fused: the context and the reference read once,
  the thought and the answer written);
* a repeated evaluation of the same chain is served from a cache and is NOT a call (it is
  counted in ``cache_hits``): no method pays for, or profits from, re-asking the same thing;
* ``rejected``: edits refused because they did not apply, or the prompt would be empty or
  longer than ``max_prompt_tokens``;
* held-out measurements (``measure``) are counted apart (``heldout_calls``): they draw the
  curves and are not part of any method's budget.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from ponder.errors import PonderError
from ponder.lm.decode import DecodeRules, sample
from ponder.lm.delimiters import has_think_tokens, think_ban_ids
from ponder.lm.thinking import (
    ANSWER_STOPS,
    Completions,
    ThinkSettings,
    ThoughtFormat,
    Thoughts,
    continue_thoughts,
    think_then_answer,
)
from ponder.plan.edits import Edit, EditRejected, apply_edit
from ponder.plan.fused import answer_and_score
from ponder.plan.state import Chain, distinct, render_parts, render_prompt

#: Nats per token at which the log-likelihood term of :attr:`Outcome.value` reaches 0.
LOGLIK_SCALE = 10.0


class PlanInputError(PonderError, ValueError):
    """Bad input to planning (a task that can be neither scored nor compared with a reference)."""


@dataclass(frozen=True)
class Outcome:
    """Result of a chain on a set of inputs. ``ref_prob``/``loglik`` are None without references."""

    accuracy: float
    ref_prob: float | None
    loglik: float | None
    n: int

    @property
    def value(self) -> float:
        """``(accuracy + clip(1 + loglik / LOGLIK_SCALE, 0, 1)) / 2``; the accuracy alone without references.

        The log-likelihood term is linear in nats, so a chain that moves the reference from
        ``e^-9`` to ``e^-2`` per token counts as progress even while no answer is right yet.
        """
        if self.loglik is None:
            return self.accuracy
        return 0.5 * (self.accuracy + min(1.0, max(0.0, 1.0 + self.loglik / LOGLIK_SCALE)))

    def to_json(self) -> dict:
        return {**asdict(self), "value": self.value}


@dataclass(frozen=True)
class InputScores:
    """Per-problem results of a chain: ``correct[i]`` (the task's score), ``loglik[i]`` (the reference's mean
    log-likelihood per token; None without references), the calls and tokens (read and written) they took,
    and the tokens the model generated."""

    correct: list[float]
    loglik: list[float] | None
    calls: int
    tokens: int
    generated: int = 0


@dataclass
class Counters:
    calls: int = 0
    tokens: int = 0
    generated_tokens: int = 0
    evaluations: int = 0
    cache_hits: int = 0
    rejected: int = 0
    proposal_calls: int = 0
    heldout_calls: int = 0
    heldout_tokens: int = 0


def training_inputs(task, n_train: int, seed: int) -> list:
    """The distinct training problems a :class:`PlanEnv` of ``task``, ``n_train`` and ``seed`` evaluates chains on
    (what a payload vocabulary must leave out: :func:`ponder.plan.edits.mining_pool`)."""
    return distinct(task.problems(n_train, seed=seed, split="train"))


@dataclass
class PlanEnv:
    """Environment over ``lm`` and ``task``: see the module docstring.

    ``n_train`` inputs form the fixed minibatch every evaluation averages over; ``n_heldout``
    test-split inputs are used by :meth:`measure` only. Both are distinct problems: a task whose split
    holds fewer (``add1``'s test split has 10) gives all it has, never one twice (a repeat costs calls
    and weighs that problem double in the accuracy).
    """

    lm: object
    task: object
    n_train: int = 8
    n_heldout: int = 32
    seed: int = 0
    max_prompt_tokens: int = 384
    max_thought_tokens: int = 64
    max_answer_tokens: int = 12
    #: The prompt format and thought rules. A chain is a text prompt (instruction and exemplar lines, the input,
    #: a completion to continue), so by default (None) it reaches the model as that text, not wrapped in the
    #: tokenizer's chat template: framed as a user turn, SmolLM2-Instruct answers every chain in prose ("The
    #: answer is 6.") and no chain scores (bench/RESULTS.md, issue 28). chat_template "auto"/"on": through the
    #: template, as the other jobs' task prompts.
    think_settings: ThinkSettings | None = None
    #: One call per input (the answer and the reference's log-likelihood from one prefill); False: two calls.
    fused: bool = True
    counters: Counters = field(default_factory=Counters)

    @property
    def chat_template(self) -> str:
        """How chains reach the model: "off" (as text, the default), "auto" or "on" (the chat template)."""
        return self.think_settings.chat_template

    def __post_init__(self):
        self.think_settings = self.think_settings or ThinkSettings(chat_template="off")
        self.train = training_inputs(self.task, self.n_train, self.seed)
        self.heldout = distinct(self.task.problems(self.n_heldout, seed=self.seed, split="test"))
        if not self.train:
            raise PlanInputError(f"task {self.task.name!r} gave no training problems to plan on.")
        self.has_reference = all(p.answer not in (None, "") for p in self.train + self.heldout)
        if not self.has_reference and not callable(getattr(self.task, "score", None)):
            raise PlanInputError(
                f"task {getattr(self.task, 'name', self.task)!r} has neither reference answers nor a scorer, so a "
                "chain's outcome cannot be measured; give the problems answers or the task a score() method."
            )
        self._cache: dict[tuple[str, str], Outcome] = {}
        self._accepted: dict[str, bool] = {}
        self._longest_input = max(len(self._tokens(p.prompt)) for p in self.train + self.heldout)

    # ---------------------------------------------------------------- edits
    def _tokens(self, text: str) -> list[int]:
        return self.lm.tokenizer(text, add_special_tokens=True)["input_ids"]

    def accept(self, chain: Chain) -> bool:
        """Whether ``chain`` gives non-empty prompts within ``max_prompt_tokens`` for every input."""
        key = chain.key()
        if key not in self._accepted:
            probe = render_prompt(chain, "")
            ok = bool(probe.strip()) or all(p.prompt.strip() for p in self.train + self.heldout)
            self._accepted[key] = ok and len(self._tokens(probe)) + self._longest_input <= self.max_prompt_tokens
        return self._accepted[key]

    def try_edit(self, chain: Chain, edit: Edit) -> Chain | None:
        """``chain`` after ``edit``, or None (counted in ``rejected``) when the edit is refused."""
        try:
            new = apply_edit(chain, edit)
        except EditRejected:
            self.counters.rejected += 1
            return None
        if not self.accept(new):
            self.counters.rejected += 1
            return None
        return new

    # ---------------------------------------------------------------- outcomes
    def evaluate(self, chain: Chain) -> Outcome:
        """Outcome of ``chain`` on the training minibatch (counted; a repeat is a free cache hit)."""
        return self._outcome(chain, "train")

    def measure(self, chain: Chain) -> Outcome:
        """Outcome on the held-out inputs (counted apart from the budget)."""
        return self._outcome(chain, "test")

    def seen(self, chain: Chain) -> bool:
        return (chain.key(), "train") in self._cache

    def _outcome(self, chain: Chain, split: str) -> Outcome:
        if not self.accept(chain):
            raise PlanInputError("the chain gives an empty prompt or one longer than max_prompt_tokens; shorten it.")
        key = (chain.key(), split)
        if key in self._cache:
            if split == "train":
                self.counters.cache_hits += 1
            return self._cache[key]
        out, calls, tokens, generated = self._run(chain, self.train if split == "train" else self.heldout)
        if split == "train":
            self.counters.calls += calls
            self.counters.tokens += tokens
            self.counters.generated_tokens += generated
            self.counters.evaluations += 1
        else:
            self.counters.heldout_calls += calls
            self.counters.heldout_tokens += tokens
        self._cache[key] = out
        return out

    def _run(self, chain: Chain, problems) -> tuple[Outcome, int, int, int]:
        """Outcome of ``chain`` on ``problems`` (means of :meth:`per_input`), its calls, tokens and generated tokens."""
        s = self.per_input(chain, problems)
        acc = sum(s.correct) / len(problems)
        if s.loglik is None:
            return Outcome(acc, None, None, len(problems)), s.calls, s.tokens, s.generated
        loglik = sum(s.loglik) / len(s.loglik)
        ref_prob = sum(math.exp(v) for v in s.loglik) / len(s.loglik)
        return Outcome(acc, ref_prob, loglik, len(problems)), s.calls, s.tokens, s.generated

    def per_input(self, chain: Chain, problems) -> InputScores:
        """Greedy answers and the reference's log-likelihood after the ids the model read (one prefill when ``fused``);
        one score per problem (uncounted and uncached: :meth:`evaluate` and :meth:`measure` count what they use)."""
        lm, tok = self.lm, self.lm.tokenizer
        think = chain.answer_format == "think"
        if think and not has_think_tokens(tok):
            raise PlanInputError(
                "the 'think' answer format needs a model with <think> tokens (load it with ponder.load_model)."
            )
        fmt = ThoughtFormat.of(lm.model, tok, self.think_settings)
        parts = [render_parts(chain, p.prompt) for p in problems]
        prompt_ids = fmt.prompt_ids(tok, [prefix for prefix, _ in parts])
        generated = 0  # tokens the model wrote: its own thought after the chain's steps, then the answers
        thoughts = None
        with torch.no_grad():
            if think:  # the chain's steps open the thought; the model goes on thinking, closes and answers
                steps = [tok(s, add_special_tokens=False)["input_ids"] if s else [] for _, s in parts]
                cont = continue_thoughts(lm.model, tok, fmt, prompt_ids, steps, 1, self.max_thought_tokens, 0.0)
                generated += sum(len(ids) for ids in cont.ids)
                thoughts = Thoughts(prompt_ids, 1, [a + b for a, b in zip(steps, cont.ids)], cont.logprobs, cont.closed)
            if self.fused and self.has_reference:
                contexts = [
                    thoughts.prompt_of(r) + [fmt.open_id, *thoughts.ids[r], fmt.close_id] if think else prompt_ids[r]
                    for r in range(len(problems))
                ]
                refs = [tok(p.answer, add_special_tokens=False)["input_ids"] for p in problems]
                both = answer_and_score(
                    lm.model, tok, fmt.answer_rules(ANSWER_STOPS), contexts, refs, self.max_answer_tokens
                )
                comp = Completions(
                    [list(p) for p in prompt_ids],
                    1,
                    thoughts,
                    both.answer_ids,
                    both.answer_logprobs,
                    both.finished,
                    fmt.open_id,
                    fmt.close_id,
                )
            else:
                comp = think_then_answer(
                    lm.model,
                    tok,
                    fmt,
                    prompt_ids,
                    think=think,
                    max_answer_tokens=self.max_answer_tokens,
                    thoughts=thoughts,
                )
        completions = comp.texts(tok)
        contexts = [
            prompt_ids[r] + comp.completion_ids(r)[: len(comp.completion_ids(r)) - len(comp.answer_ids[r])]
            for r in range(len(comp))
        ]
        generated += int(comp.answer_tokens.sum())
        tokens = sum(len(c) for c in contexts) + int(comp.answer_tokens.sum())
        correct = [float(self.task.score(p, c)) for p, c in zip(problems, completions)]
        if not self.has_reference:
            return InputScores(correct, None, len(problems), tokens, generated)
        if self.fused:
            per_token = (both.ref_sum / both.ref_tokens.clamp(min=1)).tolist()
            tokens += int(both.ref_tokens.sum())
            return InputScores(correct, per_token, len(problems), tokens, generated)
        scores = lm.score(contexts, [p.answer for p in problems])
        per_token = (scores.sum / scores.num_tokens.clamp(min=1)).tolist()
        tokens += sum(len(c) for c in contexts) + int(scores.num_tokens.sum())
        return InputScores(correct, per_token, 2 * len(problems), tokens, generated)

    # ---------------------------------------------------------------- proposals
    def propose(
        self,
        prompts: list[str],
        n: int = 1,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        seed: int = 0,
        stop: tuple[str, ...] = ("\n",),
    ) -> list[str]:
        """LM-sampled texts (``n`` per prompt), counted as calls: payloads for rewrites and mutations."""
        if not prompts:
            return []
        gen = torch.Generator(device=self.lm.device).manual_seed(seed)
        tok = self.lm.tokenizer
        rules = DecodeRules(ban_ids=tuple(think_ban_ids(tok)) if has_think_tokens(tok) else (), stop_strings=stop)
        s = sample(
            self.lm.model,
            tok,
            prompts,
            n=n,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            rules=rules,
            generator=gen,
        )
        self.counters.calls += len(prompts) * n
        self.counters.proposal_calls += len(prompts) * n
        self.counters.tokens += sum(len(p) for p in s.prompt_ids) * n + int(s.mask.sum())
        self.counters.generated_tokens += int(s.mask.sum())
        texts = s.texts(tok, stop, skip_ids=[t for t in (tok.eos_token_id, tok.pad_token_id) if t is not None])
        return [" ".join(t.split()) for t in texts]

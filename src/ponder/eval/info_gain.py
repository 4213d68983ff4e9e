"""Information gain of a model's own thoughts on held-out text (an evaluation, not training).

Two measures, both estimated with ``G`` thoughts ``c ~ M(. | x_<t <think>)`` sampled from the
model ``M`` being measured and scored teacher-forced by ``M``:

* :func:`information_gain` (by position class, the model against itself)::

      IG_self(t) = E_c[ log p_M(x_t | x_<t, c) ] - log p_M(x_t | x_<t)

  how much thinking helps this model, at answer positions and elsewhere;
* :func:`heldout_information_gain` (against a fixed base model, RLP's objective on unseen text)::

      IG_base(t) = E_c[ log p_M(x_t | x_<t, c) ] - log p_base(x_t | x_<t)

  comparable across models trained from the same base (base, CPT and RLP: for ``M = base`` it
  is the base's own gain), plus ``M``'s held-out next-token loss without thinking.

Sampling happens in one place, :func:`ponder.rl.rollout.make_rollout` (positions, the baseline
pass and the thoughts, through the one sampler), so both measures follow the trainer's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ponder.lm.padding import model_device, pad_id_of
from ponder.lm.thinking import Sampling, ThoughtFormat
from ponder.rl.batches import target_logprob_sums
from ponder.rl.generation import TransformersBackend
from ponder.rl.positions import ANSWER, OTHER, Doc, keyed_generators
from ponder.rl.rollout import baseline_pass, doc_logprobs, make_rollout


def _thought_logprobs(model, baseline, tokenizer, docs, per_doc, group_size, max_thought_tokens, temperature, gens):
    """``(rollout, with_thought [B, G])``: G thoughts of ``model`` per position and ``log p_model(x_t | x_<t, c)``.

    ``gens``: one generator per document. ``rollout.baseline_logp [B]`` is ``baseline``'s
    ``log p(x_t | x_<t)``; None when no document has a position.
    """
    fmt = ThoughtFormat.of(model, tokenizer)
    backend = TransformersBackend(model, tokenizer, fmt)
    sampling = Sampling(temperature, max_thought_tokens=max_thought_tokens)
    base = baseline_pass(baseline, tokenizer, fmt, docs)
    rollout = make_rollout(model, base, tokenizer, fmt, docs, per_doc, group_size, 1, sampling, gens, backend)
    if rollout is None:
        return None, None
    b = rollout.batch
    with_thought = target_logprob_sums(b.scores(model)[0], b.target_mask).float().cpu()
    return rollout, with_thought.view(len(rollout.positions), group_size)


def _eval_mode(*models):
    states = [m.training for m in models]
    for m in models:
        m.eval()
    return lambda: [m.train(s) for m, s in zip(models, states)]


@torch.no_grad()
def information_gain(
    model,
    tokenizer,
    docs: list[Doc],
    group_size: int = 4,
    max_thought_tokens: int = 64,
    temperature: float = 0.7,
    seed: int = 0,
    batch_size: int = 64,
) -> dict:
    """Mean ``IG_self`` over all positions of each class (answer / other) and overall, plus counts."""
    device = next(model.parameters()).device
    restore = _eval_mode(model)
    per_class: dict[str, list[float]] = {ANSWER: [], OTHER: []}
    for start in range(0, len(docs), batch_size):
        chunk = docs[start : start + batch_size]
        gens = keyed_generators(seed, range(start, start + len(chunk)), device)
        # Every eligible position of every document (per_doc large), k = 1.
        rollout, with_thought = _thought_logprobs(
            model, model, tokenizer, chunk, 10**6, group_size, max_thought_tokens, temperature, gens
        )
        if rollout is None:
            continue
        gain = with_thought.mean(1) - rollout.baseline_logp
        for g, cls in zip(gain.tolist(), rollout.classes):
            per_class[cls].append(g)
    restore()

    def mean(xs):
        return sum(xs) / len(xs) if xs else float("nan")

    return {
        "answer": mean(per_class[ANSWER]),
        "other": mean(per_class[OTHER]),
        "all": mean(per_class[ANSWER] + per_class[OTHER]),
        "n_answer": len(per_class[ANSWER]),
        "n_other": len(per_class[OTHER]),
    }


@dataclass
class HeldoutGain:
    """Per-position figures of :func:`heldout_information_gain` (``B`` positions, ``G`` thoughts each).

    ``positions``: ``(document index, t)``; ``with_thought [B, G]``: ``log p_M(x_t | x_<t, c_i)``;
    ``base_logp [B]``: ``log p_base(x_t | x_<t)``; ``no_think_logp [B]``: ``log p_M(x_t | x_<t)``;
    ``thoughts``: the ``B * G`` thoughts' token ids; ``closed [B * G]``: the model closed the thought.
    ``ntp_nll`` / ``ntp_tokens``: ``M``'s summed negative log-likelihood over every predicted token
    (``t >= 1``) of the held-out documents, without thinking, and their count.
    """

    positions: list[tuple[int, int]]
    with_thought: Tensor
    base_logp: Tensor
    no_think_logp: Tensor
    thoughts: list[list[int]]
    closed: Tensor
    ntp_nll: float
    ntp_tokens: int

    @property
    def gains(self) -> Tensor:
        """``[B]`` ``IG_base`` per position: the G thoughts' mean log-prob minus the base's."""
        return self.with_thought.mean(1) - self.base_logp

    def summary(self) -> dict:
        """Means over positions (and the standard error of ``info_gain``), thought length, closed share, loss."""
        gains, n = self.gains, len(self.positions)
        lengths = [len(t) for t in self.thoughts]
        return {
            "info_gain": float(gains.mean()) if n else math.nan,
            "info_gain_stderr": float(gains.std() / math.sqrt(n)) if n > 1 else math.nan,
            "self_info_gain": float((self.with_thought.mean(1) - self.no_think_logp).mean()) if n else math.nan,
            "ntp_loss": self.ntp_nll / self.ntp_tokens if self.ntp_tokens else math.nan,
            "thought_tokens_mean": sum(lengths) / len(lengths) if lengths else math.nan,
            "closed_fraction": float(self.closed.float().mean()) if lengths else math.nan,
            "positions": n,
            "ntp_tokens": self.ntp_tokens,
        }


@torch.no_grad()
def heldout_information_gain(
    model,
    base,
    tokenizer,
    docs: Sequence[Doc],
    positions_per_doc: int = 4,
    group_size: int = 4,
    max_thought_tokens: int = 64,
    temperature: float = 0.7,
    seed: int = 0,
    batch_size: int = 8,
) -> HeldoutGain:
    """``IG_base`` of ``model`` against ``base`` over held-out ``docs``, and ``model``'s next-token loss.

    Positions: ``positions_per_doc`` distinct ``t`` drawn uniformly from each document's eligible
    range (``1 <= t < len``) by a generator keyed on ``(seed, document index)``, so every model
    measured with the same seed is scored at the same positions (and its thoughts drawn from the
    same random stream), whatever ``batch_size``. ``batch_size``: documents per rollout (memory:
    ``batch_size * positions_per_doc * group_size`` scored sequences). Pass ``base`` as ``model``
    to measure the base itself.
    """
    pad = pad_id_of(tokenizer)
    device = model_device(model)
    restore = _eval_mode(model, base)
    positions, with_thought, base_logp, no_think, thoughts, closed = [], [], [], [], [], []
    nll, tokens = 0.0, 0
    for start in range(0, len(docs), batch_size):
        chunk = list(docs[start : start + batch_size])
        own = doc_logprobs(model, [d.ids for d in chunk], pad).logp  # [len(doc)] each, 0 at t = 0
        nll -= sum(float(lp.sum()) for lp in own)
        tokens += sum(len(d.ids) - 1 for d in chunk if d.ids)
        gens = keyed_generators(seed, range(start, start + len(chunk)), device)
        rollout, scored = _thought_logprobs(
            model, base, tokenizer, chunk, positions_per_doc, group_size, max_thought_tokens, temperature, gens
        )
        if rollout is None:
            continue
        positions += [(start + d, t) for d, t in rollout.positions]
        with_thought.append(scored)
        base_logp.append(rollout.baseline_logp.float().cpu())
        no_think.append(torch.stack([own[d][t] for d, t in rollout.positions]))
        thoughts += rollout.thoughts.ids
        closed.append(rollout.thoughts.closed.cpu())
    restore()

    def cat(xs: list[Tensor], *shape: int) -> Tensor:
        return torch.cat(xs) if xs else torch.zeros(shape)

    return HeldoutGain(
        positions,
        cat(with_thought, 0, group_size),
        cat(base_logp, 0),
        cat(no_think, 0),
        thoughts,
        cat(closed, 0).bool(),
        nll,
        tokens,
    )

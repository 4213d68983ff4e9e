"""Deep-thinking ratio (DTR) and Think@n (Chen et al., arXiv 2602.13517).

For each generated token ``y_t`` the logit lens (final norm + unembedding, ``ponder.lm.lens``)
gives a distribution ``p_{t,l}`` at every decoder layer ``l = 1..L``. With
``D_{t,l} = JSD(p_{t,L}, p_{t,l})`` (log base 2 by default, so ``D`` lies in ``[0, 1]``):

* settling depth ``c_t = min{l : min_{j<=l} D_{t,j} <= g}`` (always <= L since ``D_{t,L} = 0``);
* ``y_t`` is *deep* when ``c_t >= deep_from(L, rho)``; DTR = deep tokens / tokens.

``deep_from`` follows the paper's "settles only in the deepest (1 - rho) of the layers",
``ceil(rho * L)`` (rule ``"paper"``, default). RESEARCH.md section 3 writes the threshold as
``ceil((1 - rho) * L)``; that rule is available as ``"research"``: with rho = 0.85 it calls
every token deep that settles after the first 15% of the layers (on a 4-layer model, every
token), so it is not the default. Defaults g = 0.5, rho = 0.85.

Think@n: sample n responses, compute each one's DTR on its first ``prefix`` (50) thought
tokens, keep the top half by DTR (higher = more deep thinking = preferred) and majority-vote
over them. The bottom half can be stopped after the prefix, so its cost is only the prefix.
The control ``half_vote_accuracy`` votes over the first ceil(n/2) samples (a random half, the
samples being i.i.d.): what Think@n would score if DTR ranked no better than chance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from ponder.eval.accuracy import majority_answer
from ponder.lm.lens import _finish_logits, hidden_states, jsd, lens_logits, lens_parts
from ponder.lm.padding import model_device, pad_id_of, pad_ids

DepthRule = Literal["paper", "research"]


def settling_depth(divergence: Tensor, g: float = 0.5) -> Tensor:
    """``divergence [L, ...]`` (row ``l-1`` = layer ``l``, last row the final layer) -> ``c [...]`` in ``1..L``."""
    settled = divergence.cummin(dim=0).values <= g
    settled[-1] = True  # D_{t,L} = 0 by definition
    return settled.to(torch.int8).argmax(dim=0) + 1  # first settled layer, 1-based


def deep_from(num_layers: int, rho: float = 0.85, rule: DepthRule = "paper") -> int:
    """Smallest settling depth that counts as deep (see module doc)."""
    frac = rho if rule == "paper" else 1.0 - rho
    return max(1, math.ceil(frac * num_layers - 1e-9))


def deep_tokens(divergence: Tensor, g: float = 0.5, rho: float = 0.85, rule: DepthRule = "paper") -> Tensor:
    """Boolean ``[...]``: which tokens are deep-thinking tokens."""
    return settling_depth(divergence, g) >= deep_from(divergence.shape[0], rho, rule)


def dtr(divergence: Tensor, g: float = 0.5, rho: float = 0.85, rule: DepthRule = "paper") -> float:
    """DTR of one response, ``divergence [L, T]``; NaN for an empty response."""
    if divergence.shape[-1] == 0:
        return float("nan")
    return float(deep_tokens(divergence, g, rho, rule).float().mean())


@torch.no_grad()
def response_divergences(
    model,
    tokenizer,
    contexts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    base: float = 2.0,
    batch_size: int = 8,
) -> list[Tensor]:
    """Per response ``[L, len(response)]``: JSD of layers 1..L against the final layer, per response token.

    The distribution that produced response token ``k`` sits at the position before it. The
    lens (``[N, V]`` per layer) is applied only at those positions, not at the context's.
    Raises :class:`ponder.lm.LensUnsupported` when the model hides its norm or unembedding.
    """

    parts = lens_parts(model)
    out: list[Tensor] = []
    for start in range(0, len(contexts), batch_size):
        ctx, resp = contexts[start : start + batch_size], responses[start : start + batch_size]
        ids, mask = pad_ids([list(c) + list(r) for c, r in zip(ctx, resp)], pad_id_of(tokenizer), model_device(model))
        states = hidden_states(model, ids, mask)  # L + 1 of [B, T, D]; the last is already final-normed
        rows = torch.tensor([b for b, r in enumerate(resp) for _ in range(len(r))], dtype=torch.long)
        cols = torch.tensor([len(c) - 1 + k for c, r in zip(ctx, resp) for k in range(len(r))], dtype=torch.long)

        def at(h, rows=rows, cols=cols):  # [1, N, D]
            return h[rows.to(h.device), cols.to(h.device)][None]

        final = _finish_logits(model, parts[1](at(states[-1]).to(parts[1].weight.device))).float().log_softmax(-1)
        layers = [jsd(lens_logits(model, at(h), parts).float().log_softmax(-1), final, base)[0] for h in states[1:-1]]
        div = torch.stack(layers + [torch.zeros_like(layers[0]) if layers else final.new_zeros(len(rows))]).cpu()
        for part in torch.split(div, [len(r) for r in resp], dim=1):
            out.append(part)
    return out


@dataclass
class DTRResult:
    """DTR per response (and its relation to correctness) plus the per-token settling depths."""

    g: float
    rho: float
    rule: str
    log_base: float
    num_layers: int
    deep_from: int
    per_response: list[float]
    correct: list[bool]
    depth_histogram: list[int]  # count of tokens settling at layer 1..L
    example_depths: list[int] = field(default_factory=list)
    max_tokens: int | None = None  # DTR measured over at most this many first tokens (None: all)
    tokens: list[int] = field(default_factory=list)  # thought tokens measured per response

    @property
    def mean(self) -> float:
        xs = [x for x in self.per_response if x == x]
        return sum(xs) / len(xs) if xs else float("nan")

    def mean_where(self, correct: bool) -> float:
        xs = [x for x, c in zip(self.per_response, self.correct) if c == correct and x == x]
        return sum(xs) / len(xs) if xs else float("nan")

    def to_json(self) -> dict:
        total = sum(self.depth_histogram)
        return {
            "g": self.g,
            "rho": self.rho,
            "depth_rule": self.rule,
            "log_base": self.log_base,
            "num_layers": self.num_layers,
            "deep_from_layer": self.deep_from,
            "max_tokens": self.max_tokens,
            "tokens_measured": sum(self.tokens),
            "longest_measured": max(self.tokens, default=0),
            "mean_dtr": self.mean,
            "mean_dtr_correct": self.mean_where(True),
            "mean_dtr_incorrect": self.mean_where(False),
            "per_token_deep_fraction": (sum(self.depth_histogram[self.deep_from - 1 :]) / total)
            if total
            else float("nan"),
            "per_response": self.per_response,
            "correct": self.correct,
            "settling_depth_histogram": self.depth_histogram,
            "example_settling_depths": self.example_depths,
        }


def dtr_result(
    divergences: list[Tensor],
    correct: list[bool],
    g: float = 0.5,
    rho: float = 0.85,
    rule: DepthRule = "paper",
    base: float = 2.0,
    max_tokens: int | None = None,
) -> DTRResult:
    """Summarise ``[L, T_i]`` divergences of several responses, over their first ``max_tokens`` tokens (None: all)."""
    if max_tokens is not None:
        divergences = [d[:, :max_tokens] for d in divergences]
    num_layers = divergences[0].shape[0]
    hist = torch.zeros(num_layers, dtype=torch.long)
    for d in divergences:
        if d.shape[-1]:
            hist += torch.bincount(settling_depth(d, g) - 1, minlength=num_layers)
    example = next((d for d in divergences if d.shape[-1]), None)
    return DTRResult(
        g=g,
        rho=rho,
        rule=rule,
        log_base=base,
        num_layers=num_layers,
        deep_from=deep_from(num_layers, rho, rule),
        per_response=[dtr(d, g, rho, rule) for d in divergences],
        correct=list(correct),
        depth_histogram=hist.tolist(),
        example_depths=[] if example is None else settling_depth(example, g).tolist(),
        max_tokens=max_tokens,
        tokens=[int(d.shape[-1]) for d in divergences],
    )


def lens_token_cap(dtr_max_tokens: int | None, prefix: int) -> int | None:
    """First thought tokens the logit lens must cover: the DTR's and Think@n's prefix (None: whole thoughts)."""
    return None if dtr_max_tokens is None else max(dtr_max_tokens, prefix)


# ---------------------------------------------------------------- Think@n


def think_at_n_keep(prefix_dtr: Sequence[float]) -> list[int]:
    """Indices of the top half (ceil(n/2)) of samples by prefix DTR, highest first; ties by index."""
    keep = math.ceil(len(prefix_dtr) / 2)
    score = [(-x if x == x else math.inf) for x in prefix_dtr]  # NaN (empty prefix) ranks last
    return sorted(range(len(prefix_dtr)), key=lambda i: (score[i], i))[:keep]


def think_at_n_tokens(lengths: Sequence[int], kept: Sequence[int], prefix: int) -> int:
    """Tokens spent by Think@n: kept samples in full, the rest stopped after ``prefix`` tokens."""
    kept = set(kept)
    return sum(n if i in kept else min(n, prefix) for i, n in enumerate(lengths))


@dataclass
class ThinkAtNResult:
    n: int
    prefix: int
    problems: int
    think_at_n_accuracy: float
    self_consistency_accuracy: float
    mean_sample_accuracy: float
    think_at_n_tokens: int
    self_consistency_tokens: int
    no_answer_samples: int
    half_vote_accuracy: float = float("nan")  # vote over the first ceil(n/2) samples: Think@n without the ranking

    def to_json(self) -> dict:
        return {
            "n": self.n,
            "prefix_tokens": self.prefix,
            "problems": self.problems,
            "think_at_n_accuracy": self.think_at_n_accuracy,
            "self_consistency_accuracy": self.self_consistency_accuracy,
            "half_vote_accuracy": self.half_vote_accuracy,
            "mean_sample_accuracy": self.mean_sample_accuracy,
            "think_at_n_tokens": self.think_at_n_tokens,
            "self_consistency_tokens": self.self_consistency_tokens,
            "token_ratio": self.think_at_n_tokens / max(self.self_consistency_tokens, 1),
            "no_answer_samples": self.no_answer_samples,
        }


def think_at_n_warning(prefix: int, thought_budget: int, token_ratio: float) -> str | None:
    """Why Think@n saved no tokens when it could not (None: nothing to warn about).

    Think@n saves by stopping half the samples after ``prefix`` thought tokens; a prefix as long as the
    thought budget stops none of them, and its token ratio to self-consistency is 1.
    """
    if prefix >= thought_budget:
        return (
            f"the Think@n prefix ({prefix} tokens) is not shorter than the thought budget ({thought_budget}): no "
            f"sample is stopped early (token ratio {token_ratio:.3f}); pass --prefix-tokens below {thought_budget}"
        )
    if token_ratio >= 1.0:
        return (
            f"no sample ran past the Think@n prefix ({prefix} tokens), so none was stopped early "
            f"(token ratio {token_ratio:.3f}); a shorter --prefix-tokens ranks samples earlier"
        )
    return None


def think_at_n(groups: Sequence[dict], prefix: int = 50) -> ThinkAtNResult:
    """Think@n vs self-consistency at the same n.

    Each group (one problem) holds ``answers`` (extracted, None = none), ``prefix_dtr``,
    ``lengths`` (tokens generated per sample) and ``score`` (answer -> 0/1 for this problem).
    """

    tn_acc = sc_acc = half_acc = sample_acc = 0.0
    tn_tok = sc_tok = missing = 0
    n = 0
    for grp in groups:
        answers, score = grp["answers"], grp["score"]
        n = len(answers)
        kept = think_at_n_keep(grp["prefix_dtr"])
        hits = []
        for pick in (kept, range(n), range(len(kept))):
            maj = majority_answer([answers[i] for i in pick])
            hits.append(0.0 if maj is None else score(maj))
        tn_acc, sc_acc, half_acc = tn_acc + hits[0], sc_acc + hits[1], half_acc + hits[2]
        sample_acc += sum(0.0 if a is None else score(a) for a in answers) / max(n, 1)
        missing += sum(a is None for a in answers)
        tn_tok += think_at_n_tokens(grp["lengths"], kept, prefix)
        sc_tok += sum(grp["lengths"])
    m = max(len(groups), 1)
    return ThinkAtNResult(
        n=n,
        prefix=prefix,
        problems=len(groups),
        think_at_n_accuracy=tn_acc / m,
        self_consistency_accuracy=sc_acc / m,
        mean_sample_accuracy=sample_acc / m,
        half_vote_accuracy=half_acc / m,
        think_at_n_tokens=tn_tok,
        self_consistency_tokens=sc_tok,
        no_answer_samples=missing,
    )

"""Teacher-refined training data, kept only where the student's own statistics say it fits.

Selective Reflection-Tuning (Li et al. 2024) observes that a response refined by a stronger
teacher is not always better training data for a given student: a refinement beyond the
student's frontier (or simply a wrong one: teachers sample too) can hurt. The student therefore
decides, example by example, between the original and the refinement, using its own
statistics. Here the statistic is the student's mean per-token loss (NLL, nats) of a response
given its prompt, and two rules decide (pure functions of the loss tables, shapes ``[N]``):

* **loss band** (:func:`loss_band_mask`): keep the refinement where its loss lies within a band
  of the original's, ``lower <= refined - original <= upper`` (or the relative change
  ``refined / original - 1`` with ``relative``): the refinement is not much harder for the
  student than what it replaces;
* **quantile** (:func:`quantile_mask`): keep the refinement where its loss (or its loss gap,
  ``refined - original``) is at most the ``q``-quantile of a reference distribution: by default
  the same statistic over all the refinements (its rank among them), or the student's losses on
  the originals.

:func:`select_responses` then builds the training set: the refinement where kept, the original
elsewhere (the method), or nothing elsewhere (``fallback="drop"``, a diagnostic that separates
"the dropped refinements were bad" from "the originals put back are bad"). :func:`response_losses` measures the table with the student.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from ponder.lm.score import score_pairs

Rule = Literal["all", "none", "loss_band", "quantile"]


class RefineFilter(BaseModel):
    """Which refinements the student keeps (``all``: every one, ``none``: originals only)."""

    model_config = ConfigDict(extra="forbid")
    rule: Rule = Field("loss_band", description="all, none, loss_band or quantile")
    upper: float = Field(0.0, description="loss band: largest allowed refined - original loss (nats/token)")
    lower: float = Field(-math.inf, description="loss band: smallest allowed refined - original loss")
    relative: bool = Field(False, description="loss band on refined / original - 1 instead of the difference")
    q: float = Field(0.75, ge=0, le=1, description="quantile rule: keep refinements at or below this quantile")
    statistic: Literal["refined", "gap"] = Field(
        "refined", description="quantile rule: rank the refined loss, or the gap refined - original"
    )
    reference: Literal["own", "original"] = Field(
        "own",
        description="quantile rule: take the quantile over the ranked statistic itself, or over the original losses (statistic refined only)",
    )

    @model_validator(mode="after")
    def _check(self) -> RefineFilter:
        if self.lower > self.upper:
            raise ValueError(f"empty band: lower {self.lower} > upper {self.upper}")
        if self.statistic == "gap" and self.reference == "original":
            raise ValueError("reference 'original' compares refined losses with original ones; use statistic 'refined'")
        return self


def _check_losses(*tables: Tensor) -> None:
    n = tables[0].shape
    for t in tables:
        if t.dim() != 1 or t.shape != n:
            raise ValueError(
                f"loss tables must be 1-D and of equal length, got shapes {[tuple(x.shape) for x in tables]}"
            )


def loss_band_mask(
    original: Tensor, refined: Tensor, upper: float = 0.0, lower: float = -math.inf, relative: bool = False
) -> Tensor:
    """``keep [N]`` (bool): ``lower <= refined - original <= upper``; with ``relative`` the change is
    ``refined / original - 1`` (an original loss of 0 makes any higher refined loss infinitely worse)."""
    _check_losses(original, refined)
    if lower > upper:
        raise ValueError(f"empty band: lower {lower} > upper {upper}")
    if relative:
        change = torch.where(original > 0, refined / original.clamp(min=1e-12) - 1, torch.sign(refined) * math.inf)
        change = torch.nan_to_num(change, nan=0.0)  # 0 / 0: no change
    else:
        change = refined - original
    return (change >= lower) & (change <= upper)


def quantile_mask(losses: Tensor, q: float, reference: Tensor | None = None) -> Tensor:
    """``keep [N]``: ``losses <= quantile(reference, q)`` (linear interpolation; ``reference`` defaults to
    ``losses`` itself, so about a ``q`` share is kept, ties included)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    ref = losses if reference is None else reference
    _check_losses(losses)
    if ref.numel() == 0:
        raise ValueError("the reference loss table is empty")
    return losses <= torch.quantile(ref.double(), q).to(losses.dtype)


def keep_mask(flt: RefineFilter, original: Tensor, refined: Tensor) -> Tensor:
    """The rule of ``flt`` applied to the student's loss tables ``original [N]`` and ``refined [N]``."""
    _check_losses(original, refined)
    if flt.rule == "all":
        return torch.ones_like(refined, dtype=torch.bool)
    if flt.rule == "none":
        return torch.zeros_like(refined, dtype=torch.bool)
    if flt.rule == "loss_band":
        return loss_band_mask(original, refined, flt.upper, flt.lower, flt.relative)
    stat = refined if flt.statistic == "refined" else refined - original
    return quantile_mask(stat, flt.q, original if flt.reference == "original" else None)


def select_responses(
    originals: Sequence[str], refined: Sequence[str], keep: Tensor, fallback: Literal["original", "drop"] = "original"
) -> list[str | None]:
    """The training responses: ``refined[i]`` where ``keep[i]``, else ``originals[i]`` (or None with ``fallback="drop"``)."""
    if not len(originals) == len(refined) == keep.numel():
        raise ValueError(f"{len(originals)} originals, {len(refined)} refinements and {keep.numel()} decisions")
    if fallback not in ("original", "drop"):
        raise ValueError(f"fallback must be 'original' or 'drop', got {fallback!r}")
    return [r if k else (o if fallback == "original" else None) for o, r, k in zip(originals, refined, keep.tolist())]


def response_losses(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 64) -> Tensor:
    """``[N]`` the model's mean per-token loss (nats) of each response given its prompt, teacher-forced."""
    scores = score_pairs(model, tokenizer, list(prompts), list(responses), batch_size=batch_size)
    return -scores.mean

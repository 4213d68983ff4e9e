"""Update sparsity and rank between two checkpoints (after arXiv 2505.11711).

For parameters ``theta_0`` (base) and ``theta_1`` (trained), an entry is *updated* when
``|theta_1 - theta_0| > tol``; sparsity = share of entries not updated. Measured twice:

* ``bf16``: both tensors rounded to bfloat16 first, as the paper stores them. bf16 keeps
  8 significant bits, so an fp32 update smaller than about ``|w| / 256`` vanishes here;
* ``fp32``: on the tensors as stored (upcast to fp32);
* ``exact``: any change at all in fp32 (no tolerance): with a small learning rate most
  fp32 updates are below ``tol`` yet nonzero, and only this view shows them.

Rank: for each 2-D weight, ``rank(Delta) / min(shape)`` with
``torch.linalg.matrix_rank``'s default tolerance (``sigma_max * max(shape) * eps(fp32)``) on
the fp32 update. Overlap of two runs from the same base: Jaccard index of their updated
sets, next to what two independent random sets of the same densities would give
(``p1 p2 / (p1 + p2 - p1 p2)``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ponder.errors import PonderError

DEFAULT_TOL = 1e-5
PRECISIONS = ("bf16", "fp32", "exact")


class ArchitectureMismatch(PonderError):
    """Two checkpoints whose parameter names or shapes differ."""


def check_same_architecture(
    a: Mapping[str, Tensor], b: Mapping[str, Tensor], names: tuple[str, str] = ("A", "B")
) -> None:
    """Raise :class:`ArchitectureMismatch` naming the tensors that differ."""
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    shapes = sorted(k for k in set(a) & set(b) if tuple(a[k].shape) != tuple(b[k].shape))
    if not (only_a or only_b or shapes):
        return
    bits = []
    if only_a:
        bits.append(
            f"only in {names[0]}: {', '.join(only_a[:5])}" + (f" (+{len(only_a) - 5} more)" if len(only_a) > 5 else "")
        )
    if only_b:
        bits.append(
            f"only in {names[1]}: {', '.join(only_b[:5])}" + (f" (+{len(only_b) - 5} more)" if len(only_b) > 5 else "")
        )
    if shapes:
        bits.append(
            "different shapes: " + ", ".join(f"{k} {tuple(a[k].shape)} vs {tuple(b[k].shape)}" for k in shapes[:5])
        )
    raise ArchitectureMismatch(
        f"update sparsity needs two checkpoints of the same architecture, but {names[0]} and {names[1]} differ "
        f"({'; '.join(bits)}). Compare a model with a checkpoint trained from it (e.g. --compare runs/rlp/final)."
    )


def updated_mask(before: Tensor, after: Tensor, tol: float = DEFAULT_TOL, precision: str = "fp32") -> Tensor:
    """Boolean mask of updated entries at ``precision``: "fp32", "bf16", or "exact" (any change at all, no tolerance)."""
    if precision == "exact":
        return after.float() != before.float()
    if precision == "bf16":
        before, after = before.to(torch.bfloat16), after.to(torch.bfloat16)
    return (after.float() - before.float()).abs() > tol


def update_rank(before: Tensor, after: Tensor) -> tuple[int, int]:
    """``(rank of the fp32 update, min(shape))`` of a 2-D tensor."""
    delta = after.float() - before.float()
    return int(torch.linalg.matrix_rank(delta)), min(delta.shape)


def layer_of(name: str) -> str:
    """Group key: ``layers.N`` / ``h.N`` blocks, else the parameter's own name."""
    m = re.search(r"(?:layers|h|blocks)\.(\d+)\.", name)
    return f"layer {int(m.group(1))}" if m else name


def layer_sort_key(key: str) -> tuple:
    """Order of :func:`layer_of` keys: text with its numbers compared as numbers (layer 2 before layer 10)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key))


def jaccard(a: Tensor, b: Tensor) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else float("nan")


def random_jaccard(p1: float, p2: float) -> float:
    """Expected Jaccard index of two independent random subsets with densities ``p1``, ``p2``."""
    union = p1 + p2 - p1 * p2
    return p1 * p2 / union if union else float("nan")


@dataclass
class SparsityResult:
    tol: float
    total: int
    updated: dict[str, int]  # precision -> updated entries
    per_layer: dict[str, dict] = field(default_factory=dict)
    ranks: dict[str, float] = field(default_factory=dict)  # tensor -> rank / min(shape)
    overlap: dict | None = None

    def sparsity(self, precision: str) -> float:
        return 1.0 - self.updated[precision] / self.total if self.total else float("nan")

    def to_json(self) -> dict:
        ratios = list(self.ranks.values())
        return {
            "tol": self.tol,
            "parameters": self.total,
            "sparsity_bf16": self.sparsity("bf16"),
            "sparsity_fp32": self.sparsity("fp32"),
            "sparsity_fp32_exact": self.sparsity("exact"),
            "per_layer": self.per_layer,
            "rank_ratio": self.ranks,
            "mean_rank_ratio": sum(ratios) / len(ratios) if ratios else float("nan"),
            "rank_tolerance": "torch.linalg.matrix_rank default: sigma_max * max(shape) * eps(fp32)",
            "overlap": self.overlap,
        }


def update_sparsity(
    before: Mapping[str, Tensor],
    after: Mapping[str, Tensor],
    tol: float = DEFAULT_TOL,
    other: Mapping[str, Tensor] | None = None,
    ranks: bool = True,
    names: tuple[str, str] = ("base", "trained"),
) -> SparsityResult:
    """Sparsity (bf16 and fp32), per-layer table, update ranks; Jaccard overlap with ``other`` (a second run)."""
    check_same_architecture(before, after, names)
    if other is not None:
        check_same_architecture(before, other, (names[0], "second run"))
    result = SparsityResult(tol=tol, total=0, updated={p: 0 for p in PRECISIONS})
    inter = union = other_updated = 0
    seen: set[int] = set()
    for name in sorted(before):
        a, b = before[name], after[name]
        if not a.is_floating_point() or a.data_ptr() in seen:  # buffers of ints; tied weights once
            continue
        seen.add(a.data_ptr())
        row = result.per_layer.setdefault(layer_of(name), {"parameters": 0, **{f"updated_{p}": 0 for p in PRECISIONS}})
        row["parameters"] += a.numel()
        result.total += a.numel()
        for precision in PRECISIONS:
            k = int(updated_mask(a, b, tol, precision).sum())
            row[f"updated_{precision}"] += k
            result.updated[precision] += k
        if ranks and a.dim() == 2 and min(a.shape) > 1:
            r, full = update_rank(a, b)
            result.ranks[name] = r / full
        if other is not None:
            m1, m2 = updated_mask(a, b, tol, "bf16"), updated_mask(a, other[name], tol, "bf16")
            inter += int((m1 & m2).sum())
            union += int((m1 | m2).sum())
            other_updated += int(m2.sum())
    result.per_layer = dict(sorted(result.per_layer.items(), key=lambda item: layer_sort_key(item[0])))
    for row in result.per_layer.values():
        for precision in PRECISIONS:
            row[f"sparsity_{precision}"] = 1.0 - row[f"updated_{precision}"] / row["parameters"]
    if other is not None:
        p1, p2 = result.updated["bf16"] / result.total, other_updated / result.total
        result.overlap = {
            "jaccard_bf16": inter / union if union else float("nan"),
            "random_baseline": random_jaccard(p1, p2),
        }
    return result

"""Planning vs execution tokens across checkpoints (after arXiv 2509.03646), and format diversity.

Words: a trace is cut into words by ``\\w+|[^\\w\\s]`` (so ``4+8+0=12`` is ``4 + 8 + 0 = 12``).
Strategic n-grams are word n-grams (n = 3..5) that mark planning. Two sources:

* mined (default): from the traces that reached a right answer, the n-grams in the top 20% by
  document frequency (seen in at least two traces), as the paper does;
* a lexicon: :data:`NATURAL_LANGUAGE_LEXICON` or your own phrases (``--planning-lexicon``).

Planning tokens are the words inside an occurrence of a strategic n-gram; the others are
execution tokens. Per checkpoint:

* semantic entropy of planning (bits): the entropy of the distribution of strategic-n-gram
  *clusters* used across the traces. Clustering is exact match after normalisation
  (lower-case, digits replaced by ``0``, so ``4 + 8 + 0`` and ``7 + 1 + 0`` are one
  strategy); a lexicon given as ``phrase=cluster`` merges phrases explicitly;
* execution entropy (nats): the model's mean next-token entropy over execution tokens,
  teacher-forced on its own traces (the two-phase dynamic: planning entropy rises while
  execution entropy falls);
* format diversity (bits): entropy of the traces' format classes (:func:`format_class`);
  a drop across checkpoints is format collapse.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

_WORD = re.compile(r"\w+|[^\w\s]")

#: Phrases that announce a plan rather than carry it out, for natural-language traces.
NATURAL_LANGUAGE_LEXICON = (
    "let me",
    "let's",
    "first",
    "next",
    "then",
    "wait",
    "alternatively",
    "check",
    "verify",
    "so the",
    "therefore",
    "however",
    "i need to",
    "we need to",
    "the answer is",
    "step",
    "instead",
    "recall",
)


def words(text: str) -> list[tuple[str, int, int]]:
    """``(word, start, end)`` character spans."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def normalize_gram(gram: Sequence[str]) -> str:
    return re.sub(r"\d", "0", " ".join(gram).lower())


def ngrams(ws: Sequence[str], n_range: tuple[int, int] = (3, 5)) -> Iterable[tuple[int, int, str]]:
    """``(start_word, end_word, normalised n-gram)`` for every n in ``n_range`` (inclusive)."""
    for n in range(n_range[0], n_range[1] + 1):
        for i in range(len(ws) - n + 1):
            yield i, i + n, normalize_gram(ws[i : i + n])


def mine_strategic_ngrams(
    successful: Sequence[str], n_range: tuple[int, int] = (3, 5), top_fraction: float = 0.2, min_docs: int = 2
) -> dict[str, str]:
    """Top ``top_fraction`` of n-grams by document frequency (>= ``min_docs`` traces) -> {gram: cluster}."""
    df = Counter()
    for text in successful:
        df.update({g for _, _, g in ngrams([w for w, _, _ in words(text)], n_range)})
    ranked = sorted((g for g, c in df.items() if c >= min_docs), key=lambda g: (-df[g], g))
    keep = ranked[: max(1, math.ceil(top_fraction * len(ranked)))] if ranked else []
    return {g: g for g in keep}


def lexicon_clusters(phrases: Sequence[str]) -> dict[str, str]:
    """``["let me", "wait=check", ...]`` -> {normalised phrase: cluster}."""
    out = {}
    for p in phrases:
        phrase, _, cluster = p.partition("=")
        key = normalize_gram([w for w, _, _ in words(phrase)])
        out[key] = cluster.strip() or key
    return out


def planning_spans(text: str, strategic: Mapping[str, str]) -> tuple[list[bool], list[str], list[tuple[int, int]]]:
    """Per word of ``text``: planning or not; the clusters of the strategic n-grams found; word char spans."""
    ws = words(text)
    tokens = [w for w, _, _ in ws]
    sizes = sorted({len(g.split()) for g in strategic}) or [1]
    planning = [False] * len(ws)
    clusters = []
    for n in sizes:
        for i in range(len(tokens) - n + 1):
            gram = normalize_gram(tokens[i : i + n])
            if gram in strategic:
                clusters.append(strategic[gram])
                for j in range(i, i + n):
                    planning[j] = True
    return planning, clusters, [(s, e) for _, s, e in ws]


def entropy_bits(counts: Mapping[str, int] | Counter) -> float:
    total = sum(counts.values())
    if not total:
        return float("nan")
    return -sum(c / total * math.log2(c / total) for c in counts.values() if c)


def format_class(thought: str | None, answer: str) -> str:
    """Coarse format of a trace: thought present, line- or space-structured, step count bucket, answer shape."""
    if not thought:
        shape = "no-thought"
    else:
        lines = [s for s in thought.splitlines() if s.strip()]
        unit = "lines" if len(lines) > 1 else "words"
        count = len(lines) if unit == "lines" else len(thought.split())
        shape = f"{unit}:{min(count, 8) if count < 8 else '8+'}"
    ans = answer.strip()
    kind = "empty" if not ans else "number" if re.fullmatch(r"-?[\d.,/]+", ans) else "text"
    return f"{shape}|{kind}"


@dataclass
class CheckpointPlanning:
    name: str
    traces: int
    planning_token_share: float
    planning_semantic_entropy_bits: float
    execution_entropy_nats: float
    format_diversity_bits: float
    clusters: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        top = dict(sorted(self.clusters.items(), key=lambda kv: -kv[1])[:10])
        return {
            "name": self.name,
            "traces": self.traces,
            "planning_token_share": self.planning_token_share,
            "planning_semantic_entropy_bits": self.planning_semantic_entropy_bits,
            "execution_entropy_nats": self.execution_entropy_nats,
            "format_diversity_bits": self.format_diversity_bits,
            "top_clusters": top,
            "formats": self.formats,
        }


def checkpoint_planning(
    name: str,
    thoughts: Sequence[str],
    answers: Sequence[str],
    strategic: Mapping[str, str],
    word_entropies: Sequence[Sequence[float]] | None = None,
) -> CheckpointPlanning:
    """Summarise one checkpoint's traces. ``word_entropies[i][j]``: the model's entropy at word j of thought i."""
    clusters: Counter = Counter()
    planning_words = all_words = 0
    exec_ent: list[float] = []
    for i, thought in enumerate(thoughts):
        planning, found, _ = planning_spans(thought, strategic)
        clusters.update(found)
        planning_words += sum(planning)
        all_words += len(planning)
        if word_entropies is not None:
            exec_ent += [e for e, p in zip(word_entropies[i], planning) if not p]
    formats = Counter(format_class(t, a) for t, a in zip(thoughts, answers))
    return CheckpointPlanning(
        name=name,
        traces=len(thoughts),
        planning_token_share=planning_words / all_words if all_words else float("nan"),
        planning_semantic_entropy_bits=entropy_bits(clusters),
        execution_entropy_nats=sum(exec_ent) / len(exec_ent) if exec_ent else float("nan"),
        format_diversity_bits=entropy_bits(formats),
        clusters=dict(clusters),
        formats=dict(formats),
    )


def word_entropies_from_tokens(
    text: str, offsets: Sequence[tuple[int, int]], token_entropy: Sequence[float]
) -> list[float]:
    """Mean token entropy per word of ``text``, from tokens' char ``offsets`` into ``text``."""
    out = []
    for _, s, e in words(text):
        vals = [h for (a, b), h in zip(offsets, token_entropy) if a < e and b > s]
        out.append(sum(vals) / len(vals) if vals else float("nan"))
    return out


@dataclass
class PlanningResult:
    source: str
    strategic_ngrams: int
    checkpoints: list[CheckpointPlanning]

    def to_json(self) -> dict:
        return {
            "strategic_ngram_source": self.source,
            "strategic_ngrams": self.strategic_ngrams,
            "checkpoints": [c.to_json() for c in self.checkpoints],
        }

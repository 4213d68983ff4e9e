"""Search baselines that pay a real LM evaluation for every candidate they consider.

* :func:`random_search`: a random edit of the best chain so far; kept when it scores higher;
* :func:`hill_climb`: evaluate up to ``candidates`` edits of the best chain, move to the best
  one if it improves, else draw a fresh candidate set;
* :func:`evolution`: EvoPrompt/OPRO-style: a population of chains; each child crosses two
  tournament-picked parents line by line and is mutated by the LM (it continues the
  beginning of one of the child's lines; the sample is a counted call); the child replaces
  the worst member when it is better.
"""

from __future__ import annotations

import random

from ponder.plan.edits import Vocabulary, candidate_edits
from ponder.plan.search import Search
from ponder.plan.state import LINE_FIELDS, Chain


def random_search(search: Search, start: Chain, vocab: Vocabulary, seed: int = 0, candidates: int = 48) -> Search:
    rng = random.Random(seed)
    search.evaluate(start)
    while not search.exhausted:
        cands = [
            (e, c)
            for e, c in candidate_edits(search.best, vocab, rng, candidates, search.env.accept)
            if not search.env.seen(c)
        ]
        if not cands:
            break
        edit, chain = rng.choice(cands)
        search.evaluate(chain, edit)
    return search


def hill_climb(search: Search, start: Chain, vocab: Vocabulary, seed: int = 0, candidates: int = 48) -> Search:
    rng = random.Random(seed)
    search.evaluate(start)
    stale = 0
    while not search.exhausted and stale < 5:
        here = search.best
        cands = [
            (e, c)
            for e, c in candidate_edits(here, vocab, rng, candidates, search.env.accept)
            if not search.env.seen(c)
        ]
        for edit, chain in cands:
            if search.exhausted:
                break
            search.evaluate(chain, edit)
        stale = stale + 1 if search.best is here else 0
    return search


def _crossover(a: Chain, b: Chain, rng: random.Random) -> Chain:
    parts = {f: (a if rng.random() < 0.5 else b).lines(f) for f in LINE_FIELDS}
    fmt = (a if rng.random() < 0.5 else b).answer_format
    return Chain(parts["instructions"], parts["exemplars"], parts["steps"], fmt)


def _lm_mutation(search: Search, chain: Chain, vocab: Vocabulary, rng: random.Random, seed: int) -> tuple[Chain, str]:
    """Replace (or add) one line of ``chain`` by the LM's continuation of its first half."""
    fld = rng.choice(LINE_FIELDS)
    lines = list(chain.lines(fld))
    pool = {"instructions": vocab.instructions, "exemplars": vocab.exemplars, "steps": vocab.steps}[fld]
    if lines and rng.random() < 0.7:
        i = rng.randrange(len(lines))
        source = lines[i]
    else:
        i, source = len(lines), rng.choice(pool) if pool else "Answer:"
        lines.append(source)
    head = source[: max(1, len(source) // 2)]
    tail = search.env.propose(
        [head], n=1, max_new_tokens=max(8, len(source) - len(head) + 4), temperature=1.0, seed=seed
    )[0]
    text = " ".join((head + tail).split())
    if not text:
        lines.pop(i)
    else:
        lines[i] = text
    return chain.with_lines(fld, lines), f"evolve: {fld}[{i}] <- LM({head!r})"


def evolution(
    search: Search, start: Chain, vocab: Vocabulary, seed: int = 0, population: int = 6, candidates: int = 48
) -> Search:
    rng = random.Random(seed)
    env = search.env
    pop = [(start, search.evaluate(start).value)]
    for edit, chain in candidate_edits(start, vocab, rng, population - 1, env.accept):
        if search.exhausted:
            break
        pop.append((chain, search.evaluate(chain, edit).value))
    step = 0
    while not search.exhausted:
        step += 1
        a = max(rng.sample(pop, min(2, len(pop))), key=lambda p: p[1])[0]
        b = max(rng.sample(pop, min(2, len(pop))), key=lambda p: p[1])[0]
        child, label = _lm_mutation(search, _crossover(a, b, rng), vocab, rng, seed * 100_003 + step)
        if not env.accept(child) or env.seen(child):
            env.counters.rejected += 1
            if step > 50 * max(1, env.counters.evaluations):
                break
            continue
        value = search.evaluate(child, label).value
        worst = min(range(len(pop)), key=lambda k: pop[k][1])
        if value > pop[worst][1]:
            pop[worst] = (child, value)
    return search


BASELINES = {"random": random_search, "hill": hill_climb, "evolution": evolution}

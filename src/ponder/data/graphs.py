"""Walks in a fixed random graph: a task where the goal decides the first steps.

The graph is part of the task (drawn once from its size): ``nodes`` single-letter nodes, each
with ``degree`` edges to other nodes. A problem names a start node and asks for a shortest walk
to a goal node ``min_hops`` to ``max_hops`` edges away::

    prompt  "c>"     answer  "qkd"     (the walk c -> q -> k -> d; goal "d")

The prompt does not name the goal (``meta["goal"]`` does): a model trained on such text learns
the graph's edges and writes *a* walk, but reaches a given goal only by chance. With the goal
written into a lookahead span after the prompt (:mod:`ponder.data.trelawney`) the walk is
determined, and finding it is planning: the first step must be the neighbour from which the
goal is closest, which depends on the whole graph, not on the current node alone.

The split is by (start, goal) pair, a fifth of the pairs held out, so held-out accuracy with
the goal asks for walks between pairs never trained as (start, goal), though their sub-walks
occur inside training walks.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Literal

from ponder.data.task import GeneratedTask, Problem

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def bfs_distances(edges: dict[str, list[str]], source: str) -> dict[str, int]:
    """Hops from ``source`` to every node it reaches (itself at 0)."""
    dist, queue = {source: 0}, deque([source])
    while queue:
        v = queue.popleft()
        for u in edges[v]:
            if u not in dist:
                dist[u] = dist[v] + 1
                queue.append(u)
    return dist


class GraphPaths(GeneratedTask):
    """``paths`` (20 nodes of out-degree 2) or ``pathsNxD-A-B``: a shortest walk from the start to a goal node.

    ``scoring`` (the problems are the same whichever): ``end``, a valid walk from the start that
    ends at the goal (the task as posed); ``reach``, a valid walk that visits the goal (it may go
    on past it); ``valid``, any valid walk (the control: can the model follow edges at all?).
    """

    held_out_fraction = 0.2

    def __init__(
        self,
        nodes: int = 20,
        degree: int = 2,
        min_hops: int = 2,
        max_hops: int = 4,
        scoring: Literal["end", "reach", "valid"] = "end",
    ):
        if not 2 <= nodes <= len(_LETTERS):
            raise ValueError(f"nodes must be in 2..{len(_LETTERS)}, got {nodes}")
        if not 1 <= degree < nodes:
            raise ValueError(f"degree must be in 1..{nodes - 1}, got {degree}")
        if not 1 <= min_hops <= max_hops:
            raise ValueError("need 1 <= min_hops <= max_hops")
        self.node_names = _LETTERS[:nodes]
        if scoring not in ("end", "reach", "valid"):
            raise ValueError(f"scoring must be end, reach or valid, got {scoring!r}")
        self.degree, self.min_hops, self.max_hops, self.scoring = degree, min_hops, max_hops, scoring
        rng = random.Random(f"graph:{nodes}:{degree}")  # the graph is fixed by its size
        self.edges = {v: sorted(rng.sample([u for u in self.node_names if u != v], degree)) for v in self.node_names}
        self.dist = {v: bfs_distances(self.edges, v) for v in self.node_names}
        self.pairs = [
            (s, g) for s in self.node_names for g, d in sorted(self.dist[s].items()) if min_hops <= d <= max_hops
        ]
        if not self.pairs:
            raise ValueError(f"no node pairs {min_hops}..{max_hops} hops apart in this graph")
        default = (nodes, degree, min_hops, max_hops) == (20, 2, 2, 4)
        self.name = "paths" if default else f"paths{nodes}x{degree}-{min_hops}-{max_hops}"

    def shortest_walk(self, start: str, goal: str, rng: random.Random) -> str:
        """A shortest walk ``start -> ... -> goal`` (nodes after the start), ties broken by ``rng``."""
        walk, v = [], start
        while v != goal:
            v = rng.choice([u for u in self.edges[v] if self.dist[u].get(goal) == self.dist[v][goal] - 1])
            walk.append(v)
        return "".join(walk)

    def make(self, start: str, goal: str, walk: str) -> Problem:
        return Problem(prompt=f"{start}>", answer=walk, meta={"start": start, "goal": goal})

    def sample(self, rng) -> Problem:
        start, goal = rng.choice(self.pairs)
        return self.make(start, goal, self.shortest_walk(start, goal, rng))

    def split_key(self, problem: Problem) -> str:
        return f"{problem.prompt}{problem.meta['goal']}"

    def is_walk(self, start: str, walk: str) -> bool:
        """Whether ``walk`` (nodes after ``start``) follows edges of the graph; the empty walk is not one."""
        nodes = [start, *walk]
        return bool(walk) and all(v in self.edges and u in self.edges[v] for v, u in zip(nodes, nodes[1:]))

    def rescored(self, scoring: Literal["end", "reach", "valid"]) -> GraphPaths:
        """The same task (graph, problems, name) scored another way."""
        return GraphPaths(len(self.node_names), self.degree, self.min_hops, self.max_hops, scoring)

    def score(self, problem: Problem, completion: str) -> float:
        """1 for a valid walk from the start (any length) that ends at / visits the goal, per ``scoring``."""
        answer = self.extract_answer(completion)
        walk = answer.strip() if answer is not None else ""
        if not self.is_walk(problem.meta["start"], walk):
            return 0.0
        if self.scoring == "valid":
            return 1.0
        goal = problem.meta["goal"]
        return float(walk[-1] == goal if self.scoring == "end" else goal in walk)

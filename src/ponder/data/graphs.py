"""Path finding in star graphs: a task where the goal decides the first step.

A star graph has a centre and ``arms`` disjoint paths of ``arm_length`` nodes leaving it; the
prompt lists its directed edges in random order and names the centre, and the answer is the
path from the centre to one leaf, e.g. for ``arms=3, arm_length=2``::

    prompt  "zk bq ew be qd bz|b>"     answer  "qd"     (goal "d")

Nodes are single lower-case letters; an edge ``xy`` goes from ``x`` to ``y``. The answer lists
the nodes after the centre (``"qd"`` for the path b -> q -> d). Which leaf is the problem's
goal (``meta["goal"]``) is not in the prompt: a model that reads only the prompt can find a
valid path but must guess the arm (accuracy ``1 / arms``). With the goal written into the
prompt (see :mod:`ponder.data.trelawney`) the arm is determined, but only by planning
backwards from the goal: the first step is the ancestor of the goal that touches the centre.
This is the star-graph task on which next-token training is known to fail at the first step
(Bachmann & Nagarajan 2024) and TRELAWNEY was evaluated.
"""

from __future__ import annotations

from ponder.data.task import GeneratedTask, Problem

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


class StarGraph(GeneratedTask):
    """``star`` (3 arms of 2 nodes) or ``starAxL`` (A arms of L nodes): the path from the centre to a leaf.

    ``any_leaf`` scores a path to any leaf as right (same problems, same name).
    """

    def __init__(self, arms: int = 3, arm_length: int = 2, any_leaf: bool = False):
        if arms < 2 or arm_length < 1:
            raise ValueError("need arms >= 2 and arm_length >= 1")
        if 1 + arms * arm_length > len(_LETTERS):
            raise ValueError(f"{arms} arms of {arm_length} nodes need more than {len(_LETTERS)} letters")
        self.arms, self.arm_length, self.any_leaf = arms, arm_length, any_leaf
        self.name = "star" if (arms, arm_length) == (3, 2) else f"star{arms}x{arm_length}"

    def make(self, center: str, arms: list[str], goal_arm: int, edge_order: list[int] | None = None) -> Problem:
        """The problem of the graph ``center`` + ``arms`` (each arm its nodes from the centre out) whose
        goal is the leaf of ``arms[goal_arm]``; ``edge_order`` permutes the edge list (default: arm by arm)."""
        edges = [a + b for arm in arms for a, b in zip(center + arm, arm)]
        if edge_order is not None:
            edges = [edges[i] for i in edge_order]
        path = arms[goal_arm]
        return Problem(
            prompt=f"{' '.join(edges)}|{center}>",
            answer=path,
            meta={"center": center, "arms": list(arms), "goal": path[-1]},
        )

    def sample(self, rng) -> Problem:
        nodes = rng.sample(_LETTERS, 1 + self.arms * self.arm_length)
        center, rest = nodes[0], nodes[1:]
        arms = ["".join(rest[i * self.arm_length : (i + 1) * self.arm_length]) for i in range(self.arms)]
        order = list(range(self.arms * self.arm_length))
        rng.shuffle(order)
        return self.make(center, arms, rng.randrange(self.arms), order)

    def score(self, problem: Problem, completion: str) -> float:
        """1 for the path to the goal leaf; with ``any_leaf``, for the path to any leaf (the control
        that tells a model that cannot follow edges from one that does not use the goal)."""
        if not self.any_leaf:
            return super().score(problem, completion)
        answer = self.extract_answer(completion)
        return float(answer is not None and answer.strip() in problem.meta["arms"])

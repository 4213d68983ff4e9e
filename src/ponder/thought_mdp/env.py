"""A thought MDP: a gridworld task family whose policy holds one sub-policy per thought state.

After Hanna & Corrado, *When Can Model-Free Reinforcement Learning be Enough for Thinking?*
(2025): a thought MDP adds to an MDP a thought state ``t`` the policy conditions on and
thought actions that change ``t`` but neither the world nor the reward. A thought action is
then worth taking only when the sub-policy ``pi(. | s, t')`` it leads to is better than the
current one, i.e. thinking is a step of policy improvement over sub-policies the policy
already holds.

The world: a ``size x size`` grid, the agent starting in the centre. Each episode draws a
task ``g`` (one of ``tasks`` goal cells, observed) and starts in thought state 0. Actions
0-3 move north, east, south, west (a wall keeps the agent in place); 4 and 5 are thought
actions moving ``t`` to ``t + 1`` and ``t - 1`` (mod ``tasks``). Reaching the task's goal
gives reward 1 and ends the episode; every thought action costs ``think_cost``; rewards are
discounted by ``gamma`` per step, thought steps included; an episode lasts at most
``horizon`` steps.

States are integers ``s = (g * size*size + cell) * tasks + t``; everything the learners need
is in tables: ``next_state [S, A]``, ``reward [S, A]``, ``done [S, A]`` and the start
distribution ``start [S]``.

Initial policies (:func:`initial_logits`) differ only in their environment-action part:

* ``rich``: sub-policy ``t`` walks a shortest path to goal ``t`` (logit ``skill`` on each
  move that gets closer), so for task ``g`` the right sub-policy exists and is ``g`` thoughts
  away;
* ``single``: every sub-policy is the walker to goal 0 (one skill, copied): thinking changes
  nothing;
* ``poor``: every sub-policy is the uniform random walk.

In every case the thought actions start with the same total probability ``think_prob`` in
every state, so all inits begin with the same thinking rate.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ponder.errors import PonderError

MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))  # north, east, south, west as (row, col) deltas
THINK_NEXT, THINK_PREV = 4, 5
NUM_ACTIONS = 6
THOUGHT_ACTIONS = (THINK_NEXT, THINK_PREV)
Init = Literal["rich", "single", "poor"]


class ThoughtMDPError(PonderError, ValueError):
    """Settings that do not make a thought MDP (e.g. more goals than free cells)."""


@dataclass(frozen=True)
class ThoughtMDP:
    """The tabular thought MDP (see the module docstring); build it with :func:`make_env`."""

    size: int
    tasks: int
    horizon: int
    gamma: float
    think_cost: float
    goals: tuple[int, ...]  # goal cell of each task
    next_state: np.ndarray  # [S, A] int
    reward: np.ndarray  # [S, A] float
    done: np.ndarray  # [S, A] bool: the step ends the episode (goal reached)
    start: np.ndarray  # [S] float: uniform over tasks, centre cell, thought 0

    @property
    def num_states(self) -> int:
        return self.next_state.shape[0]

    @property
    def centre(self) -> int:
        return (self.size // 2) * self.size + self.size // 2

    def index(self, task: int, cell: int, thought: int) -> int:
        return (task * self.size * self.size + cell) * self.tasks + thought

    def decode(self, s: int) -> tuple[int, int, int]:
        """``(task, cell, thought)`` of state ``s``."""
        rest, thought = divmod(s, self.tasks)
        task, cell = divmod(rest, self.size * self.size)
        return task, cell, thought

    def task_of(self, states: np.ndarray) -> np.ndarray:
        """Task of each state (vectorised :meth:`decode`)."""
        return states // (self.size * self.size * self.tasks)

    def distance(self, a: int, b: int) -> int:
        """Manhattan distance between two cells (= shortest path length: the grid has no obstacles)."""
        return abs(a // self.size - b // self.size) + abs(a % self.size - b % self.size)

    def thoughts_needed(self, task: int) -> int:
        """Fewest thought actions from thought 0 to sub-policy ``task`` (moves go both ways round)."""
        return min(task, self.tasks - task)


def _move(size: int, cell: int, action: int) -> int:
    r, c = divmod(cell, size)
    dr, dc = MOVES[action]
    r2, c2 = r + dr, c + dc
    return r2 * size + c2 if 0 <= r2 < size and 0 <= c2 < size else cell


def make_env(
    size: int = 5,
    tasks: int = 4,
    horizon: int = 16,
    gamma: float = 0.95,
    think_cost: float = 0.01,
    seed: int = 0,
    goals: tuple[int, ...] | None = None,
) -> ThoughtMDP:
    """The thought MDP with goal cells drawn by ``seed`` among cells at distance >= 2 from the
    centre, or the given ``goals`` (cell indices, row-major)."""
    if size < 3:
        raise ThoughtMDPError(f"size must be >= 3 (got {size}): the goals sit away from the centre")
    if tasks < 1:
        raise ThoughtMDPError(f"tasks must be >= 1 (got {tasks})")
    if horizon < 1 or not 0 < gamma <= 1:
        raise ThoughtMDPError(f"need horizon >= 1 and 0 < gamma <= 1 (got {horizon}, {gamma})")
    cells = size * size
    centre = (size // 2) * size + size // 2
    far = [
        c for c in range(cells) if abs(c // size - centre // size) + abs(c % size - centre % size) >= min(2, size // 2)
    ]
    if len(far) < tasks:
        raise ThoughtMDPError(f"a {size}x{size} grid has {len(far)} cells away from the centre; need one per task")
    if goals is None:
        goals = tuple(random.Random(f"thought-mdp:{size}:{tasks}:{seed}").sample(far, tasks))
    elif len(goals) != tasks or len(set(goals)) != tasks or not all(0 <= g < cells and g != centre for g in goals):
        raise ThoughtMDPError(f"goals must be {tasks} distinct cells in 0..{cells - 1} other than the centre {centre}")

    num_states = tasks * cells * tasks
    next_state = np.zeros((num_states, NUM_ACTIONS), dtype=np.int64)
    reward = np.zeros((num_states, NUM_ACTIONS))
    done = np.zeros((num_states, NUM_ACTIONS), dtype=bool)
    for g in range(tasks):
        for cell in range(cells):
            for t in range(tasks):
                s = (g * cells + cell) * tasks + t
                for a in range(4):
                    to = _move(size, cell, a)
                    next_state[s, a] = (g * cells + to) * tasks + t
                    if to == goals[g]:
                        reward[s, a], done[s, a] = 1.0, True
                for a, dt in ((THINK_NEXT, 1), (THINK_PREV, -1)):
                    next_state[s, a] = (g * cells + cell) * tasks + (t + dt) % tasks
                    reward[s, a] = -think_cost
    start = np.zeros(num_states)
    for g in range(tasks):
        start[(g * cells + centre) * tasks] = 1.0 / tasks
    return ThoughtMDP(size, tasks, horizon, gamma, think_cost, tuple(goals), next_state, reward, done, start)


def initial_logits(env: ThoughtMDP, init: Init, skill: float = 3.0, think_prob: float = 0.1) -> np.ndarray:
    """Logits ``[S, A]`` of the initial policy (kinds in the module docstring).

    Environment actions: ``skill`` on every move that brings the sub-policy's target closer, 0
    on the others. Thought actions: equal logits set so that they take ``think_prob`` of the
    probability in every state.
    """
    if init not in ("rich", "single", "poor"):
        raise ThoughtMDPError(f"unknown init {init!r}; choose rich, single or poor")
    if not 0 < think_prob < 1:
        raise ThoughtMDPError(f"think_prob must be in (0, 1) (got {think_prob})")
    logits = np.zeros((env.num_states, NUM_ACTIONS))
    if init != "poor":
        targets = env.goals if init == "rich" else (env.goals[0],) * env.tasks
        for s in range(env.num_states):
            _, cell, t = env.decode(s)
            for a in range(4):
                if env.distance(_move(env.size, cell, a), targets[t]) < env.distance(cell, targets[t]):
                    logits[s, a] = skill
    env_mass = np.exp(logits[:, :4]).sum(1)
    # two thought actions sharing think_prob: 2 e^b / (env_mass + 2 e^b) = think_prob
    logits[:, 4:] = np.log(think_prob / (1 - think_prob) * env_mass / 2)[:, None]
    return logits


def softmax(logits: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """Row-wise softmax ``[S, A]``; actions outside ``allowed [A]`` (bool) get probability 0."""
    z = logits if allowed is None else np.where(allowed, logits, -np.inf)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)

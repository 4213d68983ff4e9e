"""Policy gradient on a :class:`~ponder.thought_mdp.env.ThoughtMDP`: exact and sampled.

The policy is a tabular softmax ``pi(a | s) = softmax(theta[s])`` over ``S`` states and ``A``
actions (a stationary policy in a finite-horizon episode). :func:`evaluate_policy` runs the
two dynamic programmes that give everything exactly:

* forward, the probability ``d_h(s)`` that the episode is alive in ``s`` at step ``h``;
* backward, ``Q_h(s, a) = r(s, a) + gamma (1 - done(s, a)) V_{h+1}(s')`` and
  ``V_h(s) = sum_a pi(a|s) Q_h(s, a)``, ``V_H = 0``,

so ``J = sum_s start(s) V_0(s)`` and, for the softmax, the policy gradient theorem reads
``dJ / dtheta[s, a] = sum_h gamma^h d_h(s) pi(a|s) (Q_h(s, a) - V_h(s))``
(:func:`exact_gradient`). :func:`reinforce_gradient` is its model-free estimate from sampled
episodes (REINFORCE with a leave-one-out baseline, unbiased). :func:`train` runs plain
gradient ascent with either and records how much the policy thinks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ponder.thought_mdp.env import NUM_ACTIONS, ThoughtMDP, softmax

Gradient = Literal["exact", "sampled"]


@dataclass
class Evaluation:
    """Exact quantities of one policy.

    ``value``: expected discounted return J. ``success``: probability of reaching the goal
    within the horizon. ``thoughts``: expected thought actions per episode. ``first_thought``:
    probability that the first action is a thought. ``occupancy [H, S]``, ``q [H, S, A]``,
    ``v [H + 1, S]``: the tables of the module docstring.
    """

    value: float
    success: float
    thoughts: float
    first_thought: float
    occupancy: np.ndarray
    q: np.ndarray
    v: np.ndarray

    def summary(self) -> dict:
        return {
            "value": self.value,
            "success": self.success,
            "thoughts": self.thoughts,
            "first_thought": self.first_thought,
        }


def evaluate_policy(env: ThoughtMDP, probs: np.ndarray) -> Evaluation:
    """Exact evaluation of the policy ``probs [S, A]`` (rows sum to 1)."""
    horizon, num_states = env.horizon, env.num_states
    occupancy = np.zeros((horizon, num_states))
    occupancy[0] = env.start
    flat_next = env.next_state.ravel()
    for h in range(horizon - 1):
        flow = occupancy[h][:, None] * probs * ~env.done
        occupancy[h + 1] = np.bincount(flat_next, weights=flow.ravel(), minlength=num_states)
    v = np.zeros((horizon + 1, num_states))
    q = np.zeros((horizon, num_states, NUM_ACTIONS))
    for h in reversed(range(horizon)):
        q[h] = env.reward + env.gamma * np.where(env.done, 0.0, v[h + 1][env.next_state])
        v[h] = (probs * q[h]).sum(1)
    thought_prob = probs[:, 4:].sum(1)
    return Evaluation(
        value=float(env.start @ v[0]),
        success=float((occupancy * (probs * env.done).sum(1)).sum()),
        thoughts=float((occupancy * thought_prob).sum()),
        first_thought=float(env.start @ thought_prob),
        occupancy=occupancy,
        q=q,
        v=v,
    )


def exact_gradient(env: ThoughtMDP, probs: np.ndarray, evaluation: Evaluation | None = None) -> np.ndarray:
    """``dJ / dtheta [S, A]`` of the softmax policy (formula in the module docstring)."""
    ev = evaluation or evaluate_policy(env, probs)
    discount = env.gamma ** np.arange(env.horizon)
    weight = discount[:, None, None] * ev.occupancy[:, :, None] * probs[None] * (ev.q - ev.v[:-1, :, None])
    return weight.sum(0)


@dataclass
class Episodes:
    """``n`` sampled episodes: ``states, actions [n, H]`` int, ``rewards [n, H]``, ``alive [n, H]`` bool
    (step ``h`` was taken; after the goal the rows are padding)."""

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    alive: np.ndarray

    def discounted_returns(self, gamma: float) -> np.ndarray:
        """Return of each episode ``[n]``: ``sum_h gamma^h r_h``."""
        return (self.rewards * gamma ** np.arange(self.rewards.shape[1])).sum(1)

    def thought_counts(self) -> np.ndarray:
        """Thought actions taken in each episode ``[n]``."""
        return ((self.actions >= 4) & self.alive).sum(1)


def sample_episodes(env: ThoughtMDP, probs: np.ndarray, n: int, rng: np.random.Generator) -> Episodes:
    """``n`` episodes of the policy ``probs [S, A]`` (all advanced together)."""
    horizon = env.horizon
    states = np.zeros((n, horizon), dtype=np.int64)
    actions = np.zeros((n, horizon), dtype=np.int64)
    rewards = np.zeros((n, horizon))
    alive = np.zeros((n, horizon), dtype=bool)
    s = rng.choice(env.num_states, size=n, p=env.start)
    live = np.ones(n, dtype=bool)
    cumulative = probs.cumsum(1)
    for h in range(horizon):
        a = (cumulative[s] < rng.random(n)[:, None]).sum(1).clip(max=NUM_ACTIONS - 1)
        states[:, h], actions[:, h], alive[:, h] = s, a, live
        rewards[:, h] = np.where(live, env.reward[s, a], 0.0)
        live = live & ~env.done[s, a]
        s = env.next_state[s, a]
    return Episodes(states, actions, rewards, alive)


def reinforce_gradient(env: ThoughtMDP, probs: np.ndarray, episodes: Episodes) -> np.ndarray:
    """REINFORCE estimate of ``dJ / dtheta [S, A]`` from ``episodes`` of the policy ``probs``.

    ``sum_h grad log pi(a_h | s_h) (G_h - b_h)`` averaged over episodes, where
    ``G_h = sum_{h' >= h} gamma^{h'} r_{h'}`` and ``b_h`` is the mean ``G_h`` of the *other*
    episodes (leave-one-out: independent of this episode's actions, so the estimate stays unbiased).
    """
    n = episodes.states.shape[0]
    if n < 2:
        raise ValueError("the leave-one-out baseline needs at least 2 episodes")
    discounted = episodes.rewards * env.gamma ** np.arange(env.horizon)
    to_go = discounted[:, ::-1].cumsum(1)[:, ::-1]  # G_h [n, H]
    baseline = (to_go.sum(0, keepdims=True) - to_go) / (n - 1)
    weight = np.where(episodes.alive, to_go - baseline, 0.0)
    num_states = env.num_states
    taken = np.bincount(
        (episodes.states * NUM_ACTIONS + episodes.actions).ravel(),
        weights=weight.ravel(),
        minlength=num_states * NUM_ACTIONS,
    )
    per_state = np.bincount(episodes.states.ravel(), weights=weight.ravel(), minlength=num_states)
    return (taken.reshape(num_states, NUM_ACTIONS) - probs * per_state[:, None]) / n


def optimal_value(env: ThoughtMDP, thinking: bool = True) -> float:
    """The best expected return any (time-dependent) policy gets: finite-horizon value iteration."""
    allowed = np.arange(NUM_ACTIONS) < (NUM_ACTIONS if thinking else 4)
    v = np.zeros(env.num_states)
    for _ in range(env.horizon):
        q = env.reward + env.gamma * np.where(env.done, 0.0, v[env.next_state])
        v = np.where(allowed, q, -np.inf).max(1)
    return float(env.start @ v)


@dataclass
class TrainResult:
    """``history``: one row per evaluated iteration (``iteration`` and :meth:`Evaluation.summary`);
    ``logits``: the final parameters ``[S, A]``."""

    history: list[dict]
    logits: np.ndarray


def train(
    env: ThoughtMDP,
    logits: np.ndarray,
    iterations: int,
    lr: float,
    gradient: Gradient = "exact",
    episodes: int = 256,
    thinking: bool = True,
    seed: int = 0,
    eval_every: int = 1,
    on_eval: Callable[[int, np.ndarray], dict] | None = None,
) -> TrainResult:
    """Gradient ascent on J from ``logits [S, A]`` (copied) for ``iterations`` steps of size ``lr``.

    ``gradient``: ``exact`` (:func:`exact_gradient`) or ``sampled`` (:func:`reinforce_gradient`
    on ``episodes`` fresh episodes per step). ``thinking=False`` removes the thought actions (the
    non-thinking agent). Every ``eval_every`` steps (and at the start and end) the exact
    evaluation is recorded, plus whatever ``on_eval(iteration, probs)`` returns.
    """
    if gradient not in ("exact", "sampled"):
        raise ValueError(f"gradient must be exact or sampled, got {gradient!r}")
    allowed = np.arange(NUM_ACTIONS) < (NUM_ACTIONS if thinking else 4)
    theta = logits.copy()
    rng = np.random.default_rng(seed)
    history = []
    for it in range(iterations + 1):
        probs = softmax(theta, allowed)
        ev = evaluate_policy(env, probs)
        if it % eval_every == 0 or it == iterations:
            row = {"iteration": it, **ev.summary()}
            if on_eval is not None:
                row.update(on_eval(it, probs))
            history.append(row)
        if it == iterations:
            break
        if gradient == "exact":
            grad = exact_gradient(env, probs, ev)
        else:
            grad = reinforce_gradient(env, probs, sample_episodes(env, probs, episodes, rng))
        theta += lr * grad
    return TrainResult(history, theta)


def group_by_thoughts(counts: np.ndarray, returns: np.ndarray) -> list[dict]:
    """Episodes grouped by their thought count (``counts [n]``, ``returns [n]``, e.g. from
    :meth:`Episodes.thought_counts` and :meth:`Episodes.discounted_returns`): one row per count
    with ``thoughts``, ``episodes``, ``share`` and ``mean_return``."""
    return [
        {
            "thoughts": int(k),
            "episodes": int((counts == k).sum()),
            "share": float((counts == k).mean()),
            "mean_return": float(returns[counts == k].mean()),
        }
        for k in np.unique(counts)
    ]

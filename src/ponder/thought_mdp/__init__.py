"""Thought MDPs: thinking as choosing among the sub-policies a policy already holds.

env.py (the gridworld task family, its tables and the rich / single / poor initial policies),
learn.py (exact evaluation, the exact and the sampled policy gradient, training). The
experiment and its report are ``ponder thought-mdp`` (:mod:`ponder.jobs.thought_mdp`).
"""

from ponder.thought_mdp.env import ThoughtMDP, initial_logits, make_env, softmax
from ponder.thought_mdp.learn import (
    Evaluation,
    evaluate_policy,
    exact_gradient,
    group_by_thoughts,
    optimal_value,
    reinforce_gradient,
    sample_episodes,
    train,
)

__all__ = [
    "ThoughtMDP",
    "make_env",
    "initial_logits",
    "softmax",
    "Evaluation",
    "evaluate_policy",
    "exact_gradient",
    "reinforce_gradient",
    "sample_episodes",
    "optimal_value",
    "group_by_thoughts",
    "train",
]

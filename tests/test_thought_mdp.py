"""Thought MDP: dynamics and returns against hand computations, the gradients against finite
differences and each other, and a quick learning check that thinking emerges only from a rich policy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ponder.thought_mdp.env import THINK_NEXT, THINK_PREV, ThoughtMDPError, initial_logits, make_env, softmax
from ponder.thought_mdp.learn import (
    evaluate_policy,
    exact_gradient,
    group_by_thoughts,
    optimal_value,
    reinforce_gradient,
    sample_episodes,
    train,
)

N, E, S, W = 0, 1, 2, 3
GAMMA, COST = 0.9, 0.05


def small_env(horizon: int = 6):
    """3x3 grid (centre 4), task 0's goal north of the centre (cell 1), task 1's in the corner (cell 8)."""
    return make_env(size=3, tasks=2, horizon=horizon, gamma=GAMMA, think_cost=COST, goals=(1, 8))


def scripted_probs(env):
    """Task 0: north at once. Task 1: think (+1) at thought 0, then from thought 1 east, south."""
    probs = np.zeros((env.num_states, 6))
    for s in range(env.num_states):
        task, cell, thought = env.decode(s)
        if thought == 0:
            probs[s, N if task == 0 else THINK_NEXT] = 1
        else:
            probs[s, {4: E, 5: S}.get(cell, N)] = 1
    return probs


def test_dynamics_against_the_grid():
    env = small_env()
    s = env.index(task=1, cell=4, thought=0)
    assert env.decode(s) == (1, 4, 0)
    assert env.task_of(np.array([s, env.index(0, 8, 1), env.index(1, 0, 1)])).tolist() == [1, 0, 1]
    assert env.decode(env.next_state[s, N]) == (1, 1, 0)
    assert env.decode(env.next_state[s, E]) == (1, 5, 0)
    corner = env.index(1, 0, 1)
    assert env.next_state[corner, N] == corner and env.next_state[corner, W] == corner  # walls keep the agent
    assert env.decode(env.next_state[s, THINK_NEXT]) == (1, 4, 1)
    assert env.decode(env.next_state[s, THINK_PREV]) == (1, 4, 1)  # two thought states: -1 wraps to 1
    assert env.reward[s, THINK_NEXT] == -COST and not env.done[s, THINK_NEXT]
    # the goal ends the episode only for its own task
    assert env.done[env.index(0, 4, 0), N] and env.reward[env.index(0, 4, 0), N] == 1
    assert not env.done[env.index(1, 4, 0), N] and env.reward[env.index(1, 4, 0), N] == 0
    assert env.done[env.index(1, 5, 1), S]
    assert env.start.sum() == pytest.approx(1) and env.start[env.index(0, 4, 0)] == 0.5
    assert env.thoughts_needed(0) == 0 and env.thoughts_needed(1) == 1


def test_exact_evaluation_of_a_scripted_policy():
    env = small_env()
    ev = evaluate_policy(env, scripted_probs(env))
    # task 0: reward 1 at step 0; task 1: -COST, 0, then 1 at step 2
    assert ev.value == pytest.approx(0.5 * 1 + 0.5 * (-COST + GAMMA**2))
    assert ev.success == pytest.approx(1.0)
    assert ev.thoughts == pytest.approx(0.5)
    assert ev.first_thought == pytest.approx(0.5)
    # a horizon of two steps cuts task 1 short of its goal
    short = small_env(horizon=2)
    ev2 = evaluate_policy(short, scripted_probs(short))
    assert ev2.value == pytest.approx(0.5 - 0.5 * COST) and ev2.success == pytest.approx(0.5)


def test_sampled_returns_match_the_exact_value():
    env = small_env()
    probs = softmax(np.random.default_rng(0).normal(size=(env.num_states, 6)))
    eps = sample_episodes(env, probs, 40_000, np.random.default_rng(1))
    ev = evaluate_policy(env, probs)
    assert eps.discounted_returns(env.gamma).mean() == pytest.approx(ev.value, abs=0.01)
    assert eps.thought_counts().mean() == pytest.approx(ev.thoughts, abs=0.03)
    scripted = sample_episodes(env, scripted_probs(env), 50, np.random.default_rng(2))
    assert set(scripted.thought_counts()) <= {0, 1}


def test_optimal_value_by_hand():
    env = small_env()
    # task 0: one step; task 1: two moves, the reward on the second (discounted once)
    assert optimal_value(env) == pytest.approx(0.5 + 0.5 * GAMMA)
    assert optimal_value(env, thinking=False) == pytest.approx(0.5 + 0.5 * GAMMA)
    assert optimal_value(small_env(horizon=1)) == pytest.approx(0.5)


def test_exact_gradient_matches_finite_differences():
    env = small_env(horizon=4)
    theta = np.random.default_rng(3).normal(size=(env.num_states, 6))
    grad = exact_gradient(env, softmax(theta))
    eps = 1e-6
    for s, a in [(env.index(0, 4, 0), N), (env.index(1, 4, 0), THINK_NEXT), (env.index(1, 5, 1), S), (3, E)]:
        up, down = theta.copy(), theta.copy()
        up[s, a] += eps
        down[s, a] -= eps
        numeric = (evaluate_policy(env, softmax(up)).value - evaluate_policy(env, softmax(down)).value) / (2 * eps)
        assert grad[s, a] == pytest.approx(numeric, abs=1e-7)


def test_reinforce_is_unbiased():
    env = small_env(horizon=4)
    probs = softmax(np.random.default_rng(4).normal(size=(env.num_states, 6)))
    exact = exact_gradient(env, probs)
    estimate = reinforce_gradient(env, probs, sample_episodes(env, probs, 200_000, np.random.default_rng(5)))
    start_states = [env.index(0, 4, 0), env.index(1, 4, 0)]
    np.testing.assert_allclose(estimate[start_states], exact[start_states], atol=0.01)
    assert np.abs(estimate - exact).max() < 0.02


def test_initial_policies():
    env = make_env(size=5, tasks=4, seed=0)
    for init in ("rich", "single", "poor"):
        probs = softmax(initial_logits(env, init, skill=3.0, think_prob=0.1))
        np.testing.assert_allclose(probs[:, 4:].sum(1), 0.1)
    rich = initial_logits(env, "rich", skill=3.0)
    for t in range(env.tasks):  # sub-policy t moves towards goal t
        s = env.index(task=0, cell=env.centre, thought=t)
        best = [a for a in range(4) if rich[s, a] == 3.0]
        assert best
        for a in best:
            to = env.decode(env.next_state[s, a])[1]
            assert env.distance(to, env.goals[t]) == env.distance(env.centre, env.goals[t]) - 1
    single = initial_logits(env, "single")
    assert np.allclose(single[env.index(0, 7, 0)], single[env.index(0, 7, 3)])
    assert np.allclose(initial_logits(env, "poor")[:, :4], 0)


def test_bad_settings_are_errors():
    with pytest.raises(ThoughtMDPError, match="size"):
        make_env(size=2)
    with pytest.raises(ThoughtMDPError, match="goals"):
        make_env(size=3, tasks=2, goals=(4, 8))  # the centre
    with pytest.raises(ThoughtMDPError, match="unknown init"):
        initial_logits(small_env(), "clever")


def test_group_by_thoughts_by_hand():
    rows = group_by_thoughts(np.array([0, 1, 1, 3]), np.array([1.0, 0.5, 0.0, -0.1]))
    assert [(r["thoughts"], r["episodes"], r["share"], r["mean_return"]) for r in rows] == [
        (0, 1, 0.25, 1.0),
        (1, 2, 0.5, 0.25),
        (3, 1, 0.25, pytest.approx(-0.1)),
    ]


def test_thinking_emerges_from_the_rich_policy_only():
    env = make_env(size=5, tasks=4, seed=0)
    firsts = {}
    for init in ("rich", "single", "poor"):
        result = train(env, initial_logits(env, init, think_prob=0.05), iterations=40, lr=10.0, eval_every=40)
        firsts[init] = (result.history[0]["first_thought"], result.history[-1]["first_thought"])
    assert firsts["rich"][1] > 0.3 > firsts["rich"][0]
    assert firsts["single"][1] < firsts["single"][0] and firsts["poor"][1] < firsts["poor"][0]
    sampled = train(env, initial_logits(env, "rich", think_prob=0.05), 40, 10.0, "sampled", episodes=128, seed=1)
    assert sampled.history[-1]["first_thought"] > 0.2
    no_thoughts = train(env, initial_logits(env, "rich"), 5, 10.0, thinking=False)
    assert no_thoughts.history[-1]["thoughts"] == 0


def test_job_writes_report_and_json(tmp_path):
    from ponder.cli import main

    out = tmp_path / "run"
    rc = main(
        ["thought-mdp", "--iterations", "6", "--seeds", "0", "--skills", "0,3", "--probe-episodes", "200"]
        + ["--episodes", "16", "--out", str(out), "--json", str(tmp_path / "r.json"), "--quiet"]
    )
    assert rc == 0
    payload = json.loads((out / "thought_mdp.json").read_text())
    assert {(s["init"], s["thinking"], s["gradient"]) for s in payload["summary"]} >= {("rich", False, "exact")}
    assert len(payload["skill_sweep"]) == 2
    assert [(r["task"], r["thoughts_needed"]) for r in payload["per_task"]] == [(0, 0), (1, 1), (2, 2), (3, 1)]
    assert sum(r["episodes"] for r in payload["thinking_vs_return"]["trained"]) == 200
    assert "<img" in (out / "report.html").read_text() and (out / "report.png").stat().st_size > 0
    assert main(["thought-mdp", "--size", "2", "--out", str(out), "--quiet"]) == 2

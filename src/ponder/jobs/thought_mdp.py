"""``ponder thought-mdp``: does thinking emerge under RL, and when? (a thought MDP, seconds on a CPU)

For each seed (a layout of goal cells) it trains, by policy gradient from each initial policy
of :func:`~ponder.thought_mdp.env.initial_logits`:

* ``rich``, ``single`` and ``poor`` with thought actions, exact and sampled gradients;
* ``rich`` without thought actions (the non-thinking agent with the same skills);
* ``rich`` at each sub-policy strength of ``skills`` (0 is the uniform ``poor`` policy),

and records the probability that the policy thinks before its first move, the thoughts per
episode and the return. It also samples episodes of the rich policy before and after training
and groups them by how many thoughts they took (thinking length vs return). Writes
``OUT/thought_mdp.json``, ``OUT/report.html`` and its figure ``OUT/report.png``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from ponder.config import SETTINGS
from ponder.report.thought_mdp_report import write_thought_mdp_report
from ponder.thought_mdp.env import initial_logits, make_env, softmax
from ponder.thought_mdp.learn import group_by_thoughts, optimal_value, sample_episodes, train
from ponder.train.rundir import open_run, write_json_file

#: (init, thought actions allowed, gradient) of the runs compared in the main table.
CONDITIONS = (
    ("rich", True, "exact"),
    ("rich", True, "sampled"),
    ("rich", False, "exact"),
    ("single", True, "exact"),
    ("single", True, "sampled"),
    ("poor", True, "exact"),
    ("poor", True, "sampled"),
)


class ThoughtMDPJob(BaseModel):
    """Settings of ``ponder thought-mdp``."""

    model_config = SETTINGS
    size: int = Field(5, ge=3, description="grid side (the agent starts in the centre)")
    tasks: int = Field(4, ge=1, description="tasks = goal cells = sub-policies (thought states)")
    horizon: int = Field(16, ge=1, description="steps per episode, thought steps included")
    gamma: float = Field(0.95, gt=0, le=1, description="discount per step, thought steps included")
    think_cost: float = Field(0.01, ge=0, description="reward subtracted per thought action")
    skill: float = Field(3.0, ge=0, description="logit of a sub-policy's moves towards its target")
    think_prob: float = Field(0.05, gt=0, lt=1, description="initial probability of a thought action in every state")
    iterations: int = Field(150, ge=1, description="policy-gradient steps per run")
    lr: float = Field(10.0, gt=0, description="gradient-ascent step size")
    gradient: Literal["both", "exact", "sampled"] = Field(
        "both", description="which policy gradients to run (exact: dynamic programming; sampled: REINFORCE)"
    )
    episodes: int = Field(256, ge=2, description="episodes per sampled-gradient step")
    skills: list[float] = Field([0.0, 0.5, 1.0, 2.0, 3.0, 4.0], description="sub-policy strengths of the sweep")
    probe_episodes: int = Field(4000, ge=1, description="episodes sampled per seed for thinking length vs return")
    seeds: list[int] = Field([0, 1, 2], description="goal layouts (and sampling seeds)")
    eval_every: int = Field(5, ge=1, description="iterations between recorded evaluations")
    out: str = Field("runs/thought-mdp", description="output directory (thought_mdp.json, report.html)")


def _env(job: ThoughtMDPJob, seed: int):
    return make_env(job.size, job.tasks, job.horizon, job.gamma, job.think_cost, seed=seed)


def _first_reaching(history: list[dict], target: float) -> int | None:
    return next((h["iteration"] for h in history if h["value"] >= target), None)


def run_condition(job: ThoughtMDPJob, seed: int, init: str, thinking: bool, gradient: str, skill: float | None = None):
    """One training run: the :class:`~ponder.thought_mdp.learn.TrainResult` and its summary row."""
    env = _env(job, seed)
    logits = initial_logits(env, init, job.skill if skill is None else skill, job.think_prob)
    result = train(env, logits, job.iterations, job.lr, gradient, job.episodes, thinking, seed, job.eval_every)
    hist, best = result.history, optimal_value(env, thinking)
    row = {
        "seed": seed,
        "init": init,
        "thinking": thinking,
        "gradient": gradient,
        "optimal_value": best,
        "value_start": hist[0]["value"],
        "value_end": hist[-1]["value"],
        "first_thought_start": hist[0]["first_thought"],
        "first_thought_peak": max(h["first_thought"] for h in hist),
        "first_thought_end": hist[-1]["first_thought"],
        "thoughts_start": hist[0]["thoughts"],
        "thoughts_end": hist[-1]["thoughts"],
        "iterations_to_90pct": _first_reaching(hist, 0.9 * best),
    }
    return result, row


def _aggregate(rows: list[dict]) -> list[dict]:
    """Mean and per-seed values of each condition's summary over seeds."""
    out = []
    for init, thinking, gradient in dict.fromkeys((r["init"], r["thinking"], r["gradient"]) for r in rows):
        group = [r for r in rows if (r["init"], r["thinking"], r["gradient"]) == (init, thinking, gradient)]
        agg = {"init": init, "thinking": thinking, "gradient": gradient, "seeds": [r["seed"] for r in group]}
        for key in group[0]:
            if key in ("seed", "init", "thinking", "gradient"):
                continue
            values = [r[key] for r in group]
            agg[key] = values
            numeric = [v for v in values if v is not None]
            agg[f"{key}_mean"] = float(np.mean(numeric)) if len(numeric) == len(values) else None
        out.append(agg)
    return out


def run_thought_mdp(job: ThoughtMDPJob, progress=print) -> dict:
    """Run every condition for every seed (see the module docstring); returns the payload."""
    with open_run(job.out, "thought-mdp", job) as out:
        payload = _thought_mdp(job, progress)
        write_json_file(out / "thought_mdp.json", payload)
        payload["report"] = str(write_thought_mdp_report(payload, out / "report.html"))
    return payload


def _thought_mdp(job: ThoughtMDPJob, progress) -> dict:
    gradients = ("exact", "sampled") if job.gradient == "both" else (job.gradient,)
    rows, curves, sweep, per_task = [], [], [], []
    before_counts, before_returns, after_counts, after_returns = [], [], [], []
    for seed in job.seeds:
        env = _env(job, seed)
        for init, thinking, gradient in CONDITIONS:
            if gradient not in gradients:
                continue
            result, row = run_condition(job, seed, init, thinking, gradient)
            rows.append(row)
            curves.append({"seed": seed, "init": init, "thinking": thinking, "gradient": gradient, **_curve(result)})
            progress(
                f"seed {seed} {init:6s} thinking={thinking!s:5s} {gradient:7s} return {row['value_start']:.3f} -> "
                f"{row['value_end']:.3f} (optimum {row['optimal_value']:.3f}); P(think first) "
                f"{row['first_thought_start']:.2f} -> {row['first_thought_end']:.2f}"
            )
            if (init, thinking, gradient) == ("rich", True, gradients[0]):
                rng = np.random.default_rng(seed)
                for logits, counts, returns in (
                    (initial_logits(env, "rich", job.skill, job.think_prob), before_counts, before_returns),
                    (result.logits, after_counts, after_returns),
                ):
                    eps = sample_episodes(env, softmax(logits), job.probe_episodes, rng)
                    counts.append(eps.thought_counts())
                    returns.append(eps.discounted_returns(env.gamma))
                per_task += _per_task(env, seed, counts[-1], returns[-1], env.task_of(eps.states[:, 0]))
        for skill in job.skills:
            _, row = run_condition(job, seed, "rich", True, gradients[0], skill=skill)
            sweep.append({"skill": skill, **row})
    payload = {
        "settings": job.model_dump(),
        "runs": rows,
        "summary": _aggregate(rows),
        "curves": curves,
        "skill_sweep": sweep,
        "per_task": per_task,
        "thinking_vs_return": {
            "initial": group_by_thoughts(np.concatenate(before_counts), np.concatenate(before_returns)),
            "trained": group_by_thoughts(np.concatenate(after_counts), np.concatenate(after_returns)),
        },
    }
    return payload


def _per_task(env, seed: int, counts: np.ndarray, returns: np.ndarray, tasks: np.ndarray) -> list[dict]:
    """What the trained rich policy does per task: thoughts it needs vs takes, and its return."""
    return [
        {
            "seed": seed,
            "task": g,
            "thoughts_needed": env.thoughts_needed(g),
            "distance": env.distance(env.centre, env.goals[g]),
            "thoughts_taken": float(counts[tasks == g].mean()),
            "mean_return": float(returns[tasks == g].mean()),
        }
        for g in range(env.tasks)
    ]


def _curve(result) -> dict:
    return {key: [h[key] for h in result.history] for key in ("iteration", "value", "first_thought", "thoughts")}

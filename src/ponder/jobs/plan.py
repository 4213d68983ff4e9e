"""``ponder plan``: optimise a reasoning chain for a task with a world-model planner or a baseline.

Prints the trajectory (each real evaluation: the edit, the value the world model predicted,
the real outcome), saves the best chain (``best_chain.json``), the whole run
(``plan.json``) and an HTML report with the curves (``report.html``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ponder.config import SETTINGS
from ponder.data.registry import DEMO_TASK, get_task
from ponder.errors import PonderError
from ponder.lm.thinking import ThinkSettings
from ponder.models.lookup import load_model
from ponder.plan.baselines import BASELINES
from ponder.plan.edits import mine_vocabulary, mining_pool
from ponder.plan.encoder import LMFeatures
from ponder.plan.env import PlanEnv, training_inputs
from ponder.plan.planners import PlannerConfig, plan_with_world_model
from ponder.plan.search import Search
from ponder.plan.state import Chain, render_prompt
from ponder.progress import make_progress
from ponder.report.html import Report, line_plot
from ponder.train.checkpoint import atomic_write_text
from ponder.train.rundir import open_run

METHODS = ("mppi", "gradient", "policy", "random", "hill", "evolution")
WORLD_MODEL_METHODS = ("mppi", "gradient", "policy")


class PlannerSettings(BaseModel):
    """Search settings shared by ``ponder plan`` and ``bench/plan_compare.py`` (one source for both)."""

    model_config = SETTINGS
    horizon: int = Field(3, ge=1, description="planning horizon H (edits)")
    candidates: int = Field(48, ge=1, description="candidate edits considered per step")
    warmup: Literal["star", "walks"] = Field(
        "star",
        description="world-model warm-up: single edits of the start chain (star) or random walks of H edits from it",
    )
    warmup_edits: int = Field(6, ge=0, description="real evaluations of the warm-up that trains the world model first")
    commit: int = Field(
        3,
        ge=1,
        description="mppi: edits of its best imagined sequence it may verify in one real evaluation (1: one edit)",
    )
    explore: float = Field(
        1.0,
        ge=0.0,
        description="world-model planners: bonus explore / (1 + n(op)) for edit operations rarely tried (0: off)",
    )
    explore_stalled_only: bool = Field(
        True,
        description="apply the exploration bonus only after `patience` planned edits in a row failed to improve (a stall)",
    )
    cover_ops: bool = Field(True, description="warm-up draws each edit from the edit operations tried least so far")
    value_head: Literal["world_model", "ridge"] = Field(
        "world_model",
        description="mppi: what values a first edit: the world model's latent step and reward head (world_model), or "
        "a ridge regression of the value gain on the edit's features fitted on the verified single edits (ridge)",
    )
    ridge_lam: float = Field(1.0, gt=0.0, description="mppi: the ridge gain head's penalty per feature")
    elite: int = Field(8, ge=1, description="world-model planners: good chains kept as roots to plan from")
    patience: int = Field(
        3,
        ge=1,
        description="world-model planners: failed children after which a root is retired (restart from the next-best)",
    )
    margin: float = Field(
        0.02, ge=0.0, description="world-model planners: gain over its parent a chain needs to join the elite"
    )

    def planner_config(self, seed: int):
        """The :class:`~ponder.plan.planners.PlannerConfig` these settings describe."""

        return PlannerConfig(seed=seed, **{k: getattr(self, k) for k in PlannerSettings.model_fields})


class _PlanRun(BaseModel):
    """What ``ponder plan`` runs on and where it writes (listed before the search settings in ``--help``)."""

    model_config = SETTINGS
    model: str = Field(
        "tiny",
        description="tiny, tiny-lazy, smollm2-135m, a random-init shape (smollm2-135m-shape, qwen3-0.6b-shape[:LAYERS]), a HF model directory or a .gguf file",
    )
    task: str = Field(DEMO_TASK, description="task name (see `ponder tasks`)")
    method: Literal["mppi", "gradient", "policy", "random", "hill", "evolution"] = Field(
        "mppi", description="world-model planner (mppi, gradient, policy) or baseline (random, hill, evolution)"
    )
    mode: Literal["instruction", "prefix"] = Field(
        "instruction", description="start chain: instruction + exemplar lines, or a reasoning prefix inside the thought"
    )
    start: str | None = Field(None, description="JSON file of a start chain (overrides --mode)")
    budget: int = Field(800, ge=1, description="real LM calls the search may spend")
    n_train: int = Field(8, ge=1, description="training inputs every evaluation averages over")
    n_heldout: int = Field(32, ge=1, description="held-out inputs for the accuracy curve")
    lm_proposals: int = Field(
        4, ge=0, description="LM-sampled instruction lines and reasoning steps added to the vocabulary (counted calls)"
    )
    max_prompt_tokens: int = Field(384, ge=8, description="longest prompt (chain + input) accepted")
    max_thought_tokens: int = Field(64, ge=1, description="thought budget in the think format")
    max_answer_tokens: int = Field(12, ge=1, description="answer budget")
    chat_template: Literal["auto", "on", "off"] = Field(
        "off",
        description="chains reach the model as plain text (off) or through the tokenizer's chat template (auto, on)",
    )
    seed: int = Field(0, description="seed of problem draws, candidates and the world model")
    out: str = Field("runs/plan", description="output directory")
    device: str | None = Field(None, description="cpu, cuda, ... (default: cuda when available)")


class PlanJob(PlannerSettings, _PlanRun, ThinkSettings):
    """Settings of ``ponder plan``: the run's fields, then the search settings, then the thought format
    (:class:`~ponder.lm.thinking.ThinkSettings`, as every job that samples)."""


def default_start(vocab, mode: str):
    """A plausible but untuned start chain: a generic instruction and a solved exemplar in the
    direct format (``instruction``), or four mined worked steps as the thought's prefix (``prefix``)."""

    if mode == "prefix":
        return Chain(steps=tuple(vocab.steps[:4]), answer_format="think")
    return Chain(
        instructions=tuple(vocab.instructions[:1]),
        exemplars=tuple(vocab.exemplars[1:2]) or tuple(vocab.exemplars[:1]),
        answer_format="direct",
    )


def build_vocabulary(lm, task, seed: int = 0, lm_proposals: int = 4, *, n_train: int):
    """Mined payloads plus ``lm_proposals`` LM samples each of instruction lines and thought steps.

    ``n_train``: the training inputs the planning environments of this ``seed`` evaluate on
    (:func:`ponder.plan.env.training_inputs`); no exemplar, step or demonstration is mined from them,
    and the LM proposes steps for another training problem. Returns ``(vocab, calls)``: the proposal
    calls are paid once and shared by every method.
    """

    evaluated = [p.prompt for p in training_inputs(task, n_train, seed)]
    vocab = mine_vocabulary(task, seed=seed, exclude=evaluated)
    if lm_proposals <= 0:
        return vocab, 0
    env = PlanEnv(lm, task, n_train=1, n_heldout=1, seed=seed)
    pool = mining_pool(task, seed=seed, exclude=evaluated)
    lines = env.propose([vocab.instructions[0].split()[0] + " "], n=lm_proposals, max_new_tokens=24, seed=seed)
    steps = env.propose(
        [render_prompt(Chain(), p.prompt) for p in pool[:1]],
        n=lm_proposals,
        max_new_tokens=24,
        seed=seed + 1,
        stop=(" ", "</think>"),
    )
    vocab.extend(
        instructions=[vocab.instructions[0].split()[0] + " " + t for t in lines if t],
        steps=[s.replace("</think>", "") for s in steps],
    )
    return vocab, env.counters.calls


def run_method(lm, task, method: str, start, vocab, budget: int, env_kwargs: dict, cfg=None, on_step=None):
    """One search within ``budget`` real calls on a fresh environment; returns ``(search, diagnostics)``."""

    env = PlanEnv(lm, task, **env_kwargs)
    search = Search(env, budget=budget, on_step=on_step)
    cfg = cfg or PlannerConfig(seed=env_kwargs.get("seed", 0))
    if method in BASELINES:
        BASELINES[method](search, start, vocab, seed=cfg.seed, candidates=cfg.candidates)
        return search, {}
    if method not in WORLD_MODEL_METHODS:
        raise ValueError(f"unknown method {method!r}; known: {METHODS}")
    features = LMFeatures(lm, [p.prompt for p in env.train[:2]])
    return search, plan_with_world_model(search, start, vocab, features, method, cfg)


def run_plan(job: PlanJob, progress: bool = True, printer=print) -> dict:
    """One search of ``job.method``; writes ``best_chain.json``, ``plan.json`` and the report under ``out``."""

    with open_run(job.out, "plan", job) as out:
        return _run_plan(job, out, progress, printer)


def _run_plan(job: PlanJob, out: Path, progress: bool, printer) -> dict:

    task = get_task(job.task)
    lm = load_model(job.model, device=job.device, think_settings=job)
    vocab, vocab_calls = build_vocabulary(lm, task, job.seed, job.lm_proposals, n_train=job.n_train)
    if job.start:
        try:
            start = Chain.from_json(json.loads(Path(job.start).read_text()))
        except (OSError, ValueError) as e:
            raise PonderError(
                f"could not read the start chain {job.start}: {e}. Give a JSON file like best_chain.json."
            ) from e
    else:
        start = default_start(vocab, job.mode)
    env_kwargs = dict(
        n_train=job.n_train,
        n_heldout=job.n_heldout,
        seed=job.seed,
        max_prompt_tokens=job.max_prompt_tokens,
        max_thought_tokens=job.max_thought_tokens,
        max_answer_tokens=job.max_answer_tokens,
        think_settings=ThinkSettings.of(job),
    )
    cfg = job.planner_config(job.seed)
    with make_progress(progress) as bar:
        tid = bar.add_task(f"ponder plan {job.method}", total=job.budget)

        def on_step(step):
            bar.update(tid, completed=min(step.calls, job.budget))
            pred = "      -" if step.predicted is None else f"{step.predicted:7.3f}"
            printer(
                f"{step.calls:6d} calls  {step.edit[:60]:60s}  predicted {pred}  real {step.outcome.value:.3f} "
                f"(acc {step.outcome.accuracy:.2f}){'  *best*' if step.improved else ''}"
            )

        search, diag = run_method(lm, task, job.method, start, vocab, job.budget, env_kwargs, cfg, on_step)
    summary = {
        "job": job.model_dump(),
        "vocabulary": vocab.sizes(),
        "vocabulary_calls": vocab_calls,
        "start_chain": start.to_json(),
        "diagnostics": diag,
        **search.summary(),
    }
    atomic_write_text(out / "best_chain.json", json.dumps(search.best.to_json(), indent=2))
    atomic_write_text(out / "plan.json", json.dumps(summary, indent=2, default=str))
    summary["report"] = str(
        write_plan_report({job.method: summary}, out / "report.html", f"ponder plan: {job.model} on {task.name}")
    )
    return summary


def write_plan_report(runs: dict[str, dict], path: Path, title: str) -> Path:
    """HTML report: held-out accuracy and training value against real calls, per method; the best chains."""

    report = Report(title)
    sec = report.section("Curves")
    acc = {
        m: ([p["calls"] for p in r["curve"]], [p["heldout_accuracy"] or 0.0 for p in r["curve"]])
        for m, r in runs.items()
    }
    val = {m: ([p["calls"] for p in r["curve"]], [p["best_value"] for p in r["curve"]]) for m, r in runs.items()}
    sec.figure(line_plot(acc, "held-out accuracy of the best chain so far", "real LM calls", "accuracy"))
    sec.figure(line_plot(val, "training value of the best chain so far", "real LM calls", "value"))
    sec.table(
        ["method", "held-out accuracy", "calls", "evaluations", "cache hits", "rejected"],
        [
            [m, r["best_heldout_accuracy"], r["calls"], r["evaluations"], r["cache_hits"], r["rejected"]]
            for m, r in runs.items()
        ],
    )
    for m, r in runs.items():
        s = report.section(f"{m}: best chain and trajectory")
        s.code(json.dumps(r["best_chain"], indent=2))
        s.table(
            ["calls", "edit", "predicted", "real value", "real accuracy"],
            [
                [
                    t["calls"],
                    t["edit"],
                    "-" if t["predicted"] is None else round(t["predicted"], 3),
                    round(t["real"]["value"], 3),
                    t["real"]["accuracy"],
                ]
                for t in r["trajectory"]
            ],
        )
    return report.write(path)

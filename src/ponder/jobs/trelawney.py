"""``ponder trelawney``: next-token training of the tiny model on documents with lookahead spans.

Trains a fresh tiny model on a task's training problems written ``prompt answer``, a share
of them carrying a lookahead span (:mod:`ponder.data.trelawney`), then measures held-out
accuracy with the goal written into a span after the prompt and, as the control, without it.
``lookahead.share = 0`` is plain next-token training on the same problems in the same order.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from ponder.config import SETTINGS
from ponder.data.graphs import GraphPaths
from ponder.data.registry import get_task
from ponder.data.trelawney import (
    GoalTask,
    LookaheadConfig,
    ensure_lookahead_tokens,
    iter_task_lookahead_documents,
    meta_goal,
)
from ponder.errors import ConfigError
from ponder.eval.accuracy import evaluate
from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model
from ponder.train import distributed
from ponder.train.next_token import NextTokenConfig, train_next_token
from ponder.train.rundir import open_run, write_json_file


class TrelawneyJob(BaseModel):
    """Settings of ``ponder trelawney``."""

    model_config = SETTINGS
    task: str = Field("paths", description="task whose training problems form the corpus; its problems name their goal")
    lookahead: LookaheadConfig = LookaheadConfig()
    out: str = Field("runs/trelawney", description="output directory")
    eval_n: int = Field(
        47, ge=1, description="held-out problems measured with and without the goal (paths holds out 47 pairs)"
    )
    seed: int = Field(0, description="seed of the data stream, the transform, the initialisation and the optimizer")
    arch: TinyArch = TinyArch(hidden_size=128, num_layers=3, num_heads=4, intermediate_size=256, max_positions=64)
    train: NextTokenConfig = NextTokenConfig(
        steps=600, batch_size=64, lr=2e-3, warmup_steps=30, save_every=600, max_length=32
    )


def run_trelawney(
    job: TrelawneyJob, resume: bool = False, progress: bool = True, allow_config_change: bool = False
) -> dict:
    """Train into ``job.out`` (``final`` = the model); the summary adds :func:`evaluate_goal_use`'s accuracies."""
    task = get_task(job.task)
    if not hasattr(task, "iter_problems"):
        raise ConfigError(
            f"task {job.task!r} is not generated; use a synthetic task whose problems name a goal (paths)"
        )
    meta_goal(task.problems(1, seed=job.seed, split="test")[0])  # fails before training if the task has no goals
    rank, _ = distributed.init_from_env()  # under torchrun: rank 0 holds the run directory, every rank trains
    with open_run(job.out, "trelawney", job, resume, allow_config_change, rank) as out:
        return _train_and_measure(job, task, out, resume, progress, rank)


def _train_and_measure(job: TrelawneyJob, task, out: Path, resume: bool, progress: bool, rank: int = 0) -> dict:
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, job.arch, seed=job.seed)
    ensure_lookahead_tokens(model, tokenizer)
    summary = train_next_token(
        model,
        tokenizer,
        documents=lambda: iter_task_lookahead_documents(task, tokenizer, job.lookahead, seed=job.seed),
        cfg=job.train.model_copy(update={"seed": job.seed}),
        run_dir=out,
        resume=resume,
        progress=progress,
        description="ponder trelawney",
    )
    summary.update(evaluate_goal_use(model, tokenizer, task, job.eval_n, job.seed, progress=progress))
    if rank == 0:
        write_json_file(out / "trelawney_summary.json", summary)
    return summary


def evaluate_goal_use(model, tokenizer, task, n: int, seed: int = 0, progress: bool = False) -> dict:
    """Greedy held-out accuracy with the goal in a lookahead span (``goal``) and without (``no_goal``).

    For graph walks also ``*_reach`` (the walk visits the goal, possibly going on past it) and
    ``*_valid`` (the answer is a valid walk, whatever its end: "cannot follow edges" vs "does not
    use the goal").
    """
    scored = {"": task}
    if isinstance(task, GraphPaths):
        scored.update(_reach=task.rescored("reach"), _valid=task.rescored("valid"))
    out = {}
    for suffix, inner in scored.items():
        for key, goal_task in (("goal", GoalTask(inner)), ("no_goal", GoalTask(inner, goal=None))):
            result = evaluate(
                model,
                tokenizer,
                goal_task,
                n=n,
                seed=seed,
                modes=("no_think",),
                max_answer_tokens=16,
                progress=progress,
            )
            out[f"{key}{suffix}"] = result.modes["no_think"].accuracy
    return out

"""``ponder early-experience``: imitation vs early experience, each then a warm start for GRPO.

For each seed: draw ``experts`` expert trajectories (training problems with their worked
scratchpads), branch the base policy at every expert state (``samples_per_state`` own actions,
the environment's observation of each), then train one copy of the base per recipe of
:mod:`ponder.methods.early_experience` with the same steps and examples per step, and run the same
short GRPO from each result. Held-out think accuracy (greedy) is measured for the base, after
each recipe and after its GRPO. Writes ``OUT/early_experience.json``.

The default base, ``tiny-early``, is the built-in tiny model trained by the default base's
recipe for 500 steps instead of 800 (:func:`early_base_job`): it writes scratchpads in the
right form but gets about one held-out sum in four right, so expert data has something to teach.

The states and examples are plain text, tokenized as the tiny models read a prompt (no chat
template); a model with a chat template is still evaluated and GRPO-trained through its template
(``ponder.lm.thinking``), so on such a model the two formats differ.

Under ``torchrun`` / ``accelerate launch`` every training phase is data-parallel (the recipes on the
one next-token engine, GRPO on the RL engine); the experience collection and the evaluations, seeded,
run whole on every rank (the same draws everywhere, so every rank trains on the same stream), and rank
0 writes the run directory.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from pydantic import BaseModel, Field

from ponder.config import SETTINGS
from ponder.data.early_experience import step_environment
from ponder.data.registry import DEMO_TASK, get_task
from ponder.data.task import task_thought_budget
from ponder.errors import ConfigError
from ponder.eval.accuracy import held_out_think_accuracy
from ponder.jobs.grpo import GRPOJob, run_grpo
from ponder.lm.thinking import ThinkSettings
from ponder.methods.early_experience import (
    RECIPES,
    build_examples,
    collect_experience,
    train_recipe,
    world_model_accuracy,
)
from ponder.models.lookup import load_model
from ponder.models.tiny_base import BaseJob, ensure_base
from ponder.train import distributed
from ponder.train.next_token import NextTokenConfig
from ponder.train.rundir import open_run, write_json_file

EARLY_BASE = "tiny-early"


def early_base_job() -> BaseJob:
    """``tiny-early``: the default base's recipe run for 500 steps instead of 800 (its cosine schedule ends
    at step 500); greedy think accuracy 0.225 on 200 held-out ``add3-5`` problems."""
    return BaseJob(
        train=NextTokenConfig(steps=500, batch_size=64, lr=2e-3, warmup_steps=100, save_every=100, max_length=128)
    )


class EarlyExperienceJob(ThinkSettings, BaseModel):
    """Settings of ``ponder early-experience`` (the thought format of its evaluations and GRPO runs:
    :class:`~ponder.lm.thinking.ThinkSettings`, as every job that samples)."""

    model_config = SETTINGS
    model: str = Field(
        EARLY_BASE,
        description="base policy: tiny-early, or any model name or path (tiny, tiny-lazy, a HF directory, ...)",
    )
    task: str = Field(DEMO_TASK, description="task (one with a step environment: the addition tasks)")
    experts: int = Field(256, ge=1, description="expert trajectories (the same for every recipe)")
    samples_per_state: int = Field(2, ge=1, description="own actions sampled at each expert state")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the own actions")
    recipes: list[str] = Field(
        ["imitation", "world_model", "reflection"],
        description="recipes compared: imitation, world_model, world_model_first (the paper's two stages), reflection",
    )
    world_model_share: float = Field(
        0.5, ge=0, le=1, description="world_model(_first): share of the examples (steps) on world modelling"
    )
    reflection_share: float = Field(0.5, ge=0, le=1, description="reflection: share of examples that are reflections")
    train: NextTokenConfig = NextTokenConfig(
        steps=80, batch_size=32, lr=3e-4, warmup_steps=5, min_lr_ratio=0.1, save_every=1000, max_length=128
    )
    grpo_steps: int = Field(30, ge=0, description="GRPO steps from each recipe's model (0: no GRPO)")
    grpo_prompts: int = Field(8, ge=1, description="GRPO prompts per step")
    grpo_group: int = Field(8, ge=2, description="GRPO completions per prompt")
    grpo_lr: float = Field(3e-5, gt=0, description="GRPO learning rate")
    eval_n: int = Field(200, ge=1, description="held-out problems (greedy think accuracy)")
    max_thought_tokens: int | None = Field(None, ge=1, description="thought budget (default: from the task, else 256)")
    world_model_probe: int = Field(
        32, ge=0, description="held-out problems whose states probe each model's world model (0: skip)"
    )
    seeds: list[int] = Field([0, 1, 2], description="seeds of the expert problems, sampling, training and GRPO")
    out: str = Field("runs/early-experience", description="run directory")


def _base_spec(job: EarlyExperienceJob, progress: bool) -> str:
    """The model :func:`~ponder.models.lookup.load_model` loads: ``tiny-early``'s cached checkpoint (trained first if
    needed), else the name or path as given."""
    if job.model == EARLY_BASE:
        return str(ensure_base(early_base_job(), progress=progress))
    return job.model


def run_early_experience(job: EarlyExperienceJob, progress: bool = True, printer=print) -> dict:
    """Run every recipe for every seed (module docstring); returns the payload written to JSON."""
    unknown = sorted(set(job.recipes) - set(RECIPES))
    if unknown:
        raise ConfigError(f"unknown recipes {unknown}; known: {', '.join(RECIPES)}")
    task = get_task(job.task)
    env = step_environment(task)
    rank, world = distributed.init_from_env()
    if rank != 0:  # one voice: rank 0 prints and shows progress; every rank computes
        progress, printer = False, lambda *_: None
    with open_run(job.out, "early-experience", job, rank=rank) as out:
        return _early_experience(job, task, env, out, progress, printer, rank, world)


def _early_experience(
    job: EarlyExperienceJob, task, env, out: Path, progress: bool, printer, rank: int = 0, world: int = 1
) -> dict:
    base = _base_spec(job, progress)
    budget = task_thought_budget(task, job.max_thought_tokens)
    device = distributed.rank_device(None, world)
    lm = load_model(base, device=device, think_settings=job)
    base_acc = held_out_think_accuracy(lm.model, lm.tokenizer, task, job.eval_n, budget, ThinkSettings.of(job))
    printer(f"base {base}: think accuracy {base_acc['think_accuracy']:.3f}")
    rows, collection = [], []
    for seed in job.seeds:
        problems = task.problems(job.experts, seed=seed, split="train")
        lm = load_model(base, device=device, think_settings=job)
        transitions = collect_experience(
            lm.model, lm.tokenizer, env, problems, job.samples_per_state, job.temperature, seed=seed
        )
        data = build_examples(env, problems, transitions)
        probe = []
        if job.world_model_probe:  # the base's own actions at held-out states, and what they led to
            held_out = task.problems(job.world_model_probe, seed=seed, split="test")
            probe = collect_experience(lm.model, lm.tokenizer, env, held_out, 1, job.temperature, seed=seed)
            data.stats["base_world_model_accuracy"] = world_model_accuracy(lm.model, lm.tokenizer, probe)
        collection.append({"seed": seed, **data.stats})
        printer(f"seed {seed}: {data.stats}")
        for recipe in job.recipes:
            run_dir = out / f"seed{seed}" / recipe
            lm = load_model(base, device=device, think_settings=job)
            cfg = job.train.model_copy(update={"seed": seed})
            summary = train_recipe(
                lm.model,
                lm.tokenizer,
                data,
                recipe,
                cfg,
                run_dir,
                job.world_model_share,
                job.reflection_share,
                progress=progress,
            )
            row = {
                "seed": seed,
                "recipe": recipe,
                "target_tokens": summary["target_tokens"],
                "examples_by_kind": summary["examples_by_kind"],
                "train_seconds": summary["seconds"],
            }
            if probe:
                row["world_model_accuracy"] = world_model_accuracy(lm.model, lm.tokenizer, probe)
            if job.grpo_steps:
                grpo = run_grpo(
                    GRPOJob(
                        model=str(run_dir / "final"),
                        task=job.task,
                        steps=job.grpo_steps,
                        prompts_per_step=job.grpo_prompts,
                        group_size=job.grpo_group,
                        lr=job.grpo_lr,
                        seed=seed,
                        eval_n=job.eval_n,
                        max_thought_tokens=budget,
                        out=str(run_dir / "grpo"),
                        **ThinkSettings.of(job).model_dump(),
                    ),
                    resume=False,
                    progress=progress,
                )
                row.update(accuracy=grpo["think_accuracy_before"], accuracy_after_grpo=grpo["think_accuracy_after"])
                row["thought_tokens"] = grpo["mean_thought_tokens_before"]
            else:
                acc = held_out_think_accuracy(lm.model, lm.tokenizer, task, job.eval_n, budget, ThinkSettings.of(job))
                row.update(accuracy=acc["think_accuracy"], thought_tokens=acc["mean_thought_tokens"])
            rows.append(row)
            printer(
                f"seed {seed} {recipe:11s}: accuracy {row['accuracy']:.3f}"
                + (f" -> {row['accuracy_after_grpo']:.3f} after GRPO" if job.grpo_steps else "")
            )
    payload = {
        "settings": job.model_dump(),
        "base": base,
        "base_accuracy": base_acc["think_accuracy"],
        "collection": collection,
        "runs": rows,
    }
    if rank == 0:
        write_json_file(out / "early_experience.json", payload)
    return payload


def early_experience_table(payload: dict) -> tuple[list[str], list[list]]:
    """Header and rows: the base, then each recipe's held-out accuracy (mean, std and per seed over
    seeds) after training and after GRPO, the tokens it trained on, and how well it predicts the
    observations of held-out own actions (world-model accuracy, mean over seeds)."""

    def spread(values: list[float]) -> list:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return [statistics.fmean(values), std, " ".join(f"{v:.3f}" for v in values)]

    def mean_of(rows: list[dict], key: str):
        values = [r[key] for r in rows if key in r]
        return statistics.fmean(values) if values else "-"

    grpo = any("accuracy_after_grpo" in r for r in payload["runs"])
    header = ["recipe", "accuracy", "std", "per seed", "target tokens", "world-model acc"]
    header += ["after GRPO", "std", "per seed"] if grpo else []
    base_wm = mean_of(payload["collection"], "base_world_model_accuracy")
    rows = [["base", payload["base_accuracy"], "-", "-", "-", base_wm] + (["-", "-", "-"] if grpo else [])]
    for recipe in payload["settings"]["recipes"]:
        runs = [r for r in payload["runs"] if r["recipe"] == recipe]
        row = [
            recipe,
            *spread([r["accuracy"] for r in runs]),
            round(statistics.fmean(r["target_tokens"] for r in runs)),
        ]
        row.append(mean_of(runs, "world_model_accuracy"))
        if grpo:
            row += spread([r["accuracy_after_grpo"] for r in runs])
        rows.append(row)
    return header, rows

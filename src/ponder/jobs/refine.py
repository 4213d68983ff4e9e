"""Teacher-refined data filtered by the student's profile: build the table, train the student on a selection.

The experiment of ``bench/refine_filter.py``: training problems of a task written plainly
(``prompt answer``, the originals) and as a teacher model rewrote them (its own worked thought,
then its own answer: ``prompt <think>...</think> answer``, the refinements). The student scores
both with its per-token loss (:func:`ponder.data.refine.response_losses`), a filter rule
(:class:`ponder.data.refine.RefineFilter`) keeps some refinements, and the student is trained
by next-token prediction on the selection (refinement where kept, original elsewhere), then
measured on held-out problems. The teacher's refinements are not checked against the labels:
a wrong one is kept or dropped only by what the student's statistics say.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from ponder.data.refine import RefineFilter, keep_mask, response_losses, select_responses
from ponder.data.registry import DEMO_TASK, get_task
from ponder.eval import evaluate
from ponder.jobs.base import BaseJob, thought_budget
from ponder.lm.generate import generate
from ponder.lm.load import load_hf_dir
from ponder.lm.thoughts import wrap_thought
from ponder.lm.tiny_cache import builtin_tiny_path, ensure_base
from ponder.train.next_token import NextTokenConfig, train_next_token

#: Steps of the weak student's pretraining (the default ``tiny`` teacher has 800).
WEAK_STUDENT_STEPS = 400


def weak_student_job() -> BaseJob:
    """The default student: the default tiny recipe stopped at :data:`WEAK_STUDENT_STEPS` steps (cached like any base)."""
    base = BaseJob()
    return base.model_copy(
        update={"train": base.train.model_copy(update={"steps": WEAK_STUDENT_STEPS, "save_every": WEAK_STUDENT_STEPS})}
    )


class RefineJob(BaseModel):
    """Settings of one student-filtered refinement run."""

    model_config = ConfigDict(extra="forbid")
    task: str = Field(DEMO_TASK, description="task whose training problems are refined")
    teacher: str = Field("tiny", description="model that writes the refinements (tiny or a HF directory)")
    student: str | None = Field(
        None, description="student HF directory (default: the weak student, trained on first use)"
    )
    n_train: int = Field(1000, ge=1, description="training problems (originals and refinements)")
    teacher_temperature: float = Field(0.0, ge=0, description="teacher sampling temperature (0 = greedy)")
    filter: RefineFilter = RefineFilter()
    eval_n: int = Field(200, ge=1, description="held-out problems")
    seed: int = Field(0, description="seed of the problem draw, the teacher's sampling and the student's training")
    out: str = Field("runs/refine", description="output directory")
    train: NextTokenConfig = NextTokenConfig(
        steps=120, batch_size=32, lr=5e-4, min_lr_ratio=1.0, warmup_steps=10, save_every=120, max_length=128
    )


@dataclass
class RefinementTable:
    """Per training problem: prompt, original and refined response, the student's losses on both ``[N]``,
    and (for diagnosis only, never used to select) whether the teacher's answer was right."""

    prompts: list[str]
    originals: list[str]
    refined: list[str]
    loss_original: torch.Tensor
    loss_refined: torch.Tensor
    teacher_correct: torch.Tensor

    def to_json(self) -> dict:
        out = asdict(self)
        for key in ("loss_original", "loss_refined", "teacher_correct"):
            out[key] = out[key].tolist()
        return out


def student_dir(job: RefineJob, progress: bool = False) -> Path:
    return Path(job.student) if job.student else ensure_base(weak_student_job(), progress=progress)


def teacher_refinements(model, tokenizer, task, problems, temperature: float = 0.0, seed: int = 0) -> list[str]:
    """The teacher's think-mode completion of each prompt, ``<think>thought</think>answer`` (a thought cut at
    the budget is closed there)."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed) if temperature > 0 else None
    done = generate(
        model,
        tokenizer,
        [p.prompt for p in problems],
        think=True,
        temperature=temperature,
        generator=gen,
        max_thought_tokens=thought_budget(task),
        max_answer_tokens=16,
        batch_size=256,
    )
    return [wrap_thought(t) + a for t, a in zip(done.thoughts, done.answers)]


def build_table(job: RefineJob, progress: bool = False) -> RefinementTable:
    """Draw the problems, let the teacher refine them and the student score both versions."""
    task = get_task(job.task)
    problems = task.problems(job.n_train, seed=job.seed, split="train")
    teacher, teacher_tok = load_hf_dir(builtin_tiny_path(job.teacher, progress=progress))
    refined = teacher_refinements(teacher, teacher_tok, task, problems, job.teacher_temperature, job.seed)
    del teacher
    student, student_tok = load_hf_dir(student_dir(job, progress))
    prompts, originals = [p.prompt for p in problems], [p.answer for p in problems]
    return RefinementTable(
        prompts=prompts,
        originals=originals,
        refined=refined,
        loss_original=response_losses(student, student_tok, prompts, originals),
        loss_refined=response_losses(student, student_tok, prompts, refined),
        teacher_correct=torch.tensor([task.score(p, r) for p, r in zip(problems, refined)]),
    )


def _epochs(docs: Sequence[str], seed: int) -> Iterator[str]:
    """The documents over and over, reshuffled each epoch (reproducible from ``seed``)."""
    rng = random.Random(f"refine-epochs:{seed}")
    while True:
        order = list(range(len(docs)))
        rng.shuffle(order)
        yield from (docs[i] for i in order)


def train_on_selection(
    job: RefineJob,
    table: RefinementTable,
    keep: torch.Tensor,
    out: str | Path,
    progress: bool = False,
    fallback: Literal["original", "drop"] = "original",
) -> dict:
    """Train the student on ``prompt + response`` (the refinement where ``keep``, else the original, or
    nothing with ``fallback="drop"``) for ``job.train.steps`` steps, then evaluate it held out."""
    task = get_task(job.task)
    responses = select_responses(table.originals, table.refined, keep, fallback)
    docs = [p + r for p, r in zip(table.prompts, responses) if r is not None]
    if not docs:
        raise ValueError("the selection keeps no documents to train on")
    model, tokenizer = load_hf_dir(student_dir(job, progress))
    summary = train_next_token(
        model,
        tokenizer,
        documents=lambda: _epochs(docs, job.seed),
        cfg=job.train.model_copy(update={"seed": job.seed}),
        run_dir=out,
        progress=progress,
        description="student",
    )
    result = evaluate(
        model, tokenizer, task, n=job.eval_n, seed=job.seed, max_thought_tokens=thought_budget(task), progress=progress
    )
    kept = keep.bool()
    wrong = table.teacher_correct < 1
    summary.update(
        documents=len(docs),
        kept=int(kept.sum()),
        kept_wrong=int((kept & wrong).sum()),
        eval=result.to_json(),
    )
    return summary


def run_refine(job: RefineJob, progress: bool = True) -> dict:
    """One run: table, the filter's selection, training, evaluation; writes ``out/refine_summary.json``."""
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    table = build_table(job, progress)
    (out / "refinement_table.json").write_text(json.dumps(table.to_json()))
    keep = keep_mask(job.filter, table.loss_original, table.loss_refined)
    summary = train_on_selection(job, table, keep, out / "student", progress)
    (out / "refine_summary.json").write_text(json.dumps(summary, indent=2))
    return summary

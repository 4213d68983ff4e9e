"""Teacher-refined data filtered by the student's profile: build the table, train the student on a selection.

The experiment of ``bench/refine_filter.py``: training problems of a task written plainly
(``prompt answer``, the originals) and as a teacher model rewrote them (its own worked thought,
then its own answer: ``prompt <think>...</think> answer``, the refinements). The student scores
both with its per-token loss (:func:`ponder.data.refine.response_losses`), a filter rule
(:class:`ponder.data.refine.RefineFilter`) keeps some refinements, and the student is trained
by next-token prediction on the selection (refinement where kept, original elsewhere), then
measured on held-out problems. The teacher's refinements are not checked against the labels:
a wrong one is kept or dropped only by what the student's statistics say.

Refinements travel as the token ids the teacher sampled (:func:`ponder.lm.thinking.think_then_answer`)
into the student's scoring and training documents, so teacher and student share one tokenizer (the
built-in tiny models do); text is decoded only to score the teacher's answers.

Under ``torchrun`` / ``accelerate launch`` the job is data-parallel: the teacher's prompts are split
across ranks in decode batches of ``teacher_batch_size`` (batch ``b`` goes to rank ``b % world``, each
batch sampled with a generator keyed by the seed and ``b``), so every refinement is the one a single
process writes, bit for bit; the ranks gather the table, the student trains on the one engine (DDP or
FSDP2), and rank 0 writes the run directory.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field

from ponder.config import SETTINGS
from ponder.data.refine import RefineFilter, keep_mask, response_losses, select_responses
from ponder.data.registry import DEMO_TASK, get_task
from ponder.data.task import thought_budget
from ponder.errors import ConfigError
from ponder.eval.accuracy import evaluate
from ponder.lm.thinking import Completions, ThoughtFormat, think_then_answer
from ponder.models.lookup import load_model
from ponder.models.tiny_base import BaseJob, ensure_base
from ponder.train import distributed
from ponder.train.next_token import NextTokenConfig, train_next_token
from ponder.train.rundir import open_run, write_json_file

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

    model_config = SETTINGS
    task: str = Field(DEMO_TASK, description="task whose training problems are refined")
    teacher: str = Field("tiny", description="model that writes the refinements (a model name or a HF directory)")
    student: str | None = Field(
        None,
        description="the student: a model name or HF directory sharing the teacher's tokenizer (default: the weak student, trained on first use)",
    )
    n_train: int = Field(1000, ge=1, description="training problems (originals and refinements)")
    teacher_temperature: float = Field(0.0, ge=0, description="teacher sampling temperature (0 = greedy)")
    teacher_batch_size: int = Field(
        256, ge=1, description="prompts per teacher decode batch (the unit split across data-parallel ranks)"
    )
    filter: RefineFilter = RefineFilter()
    eval_n: int = Field(200, ge=1, description="held-out problems")
    seed: int = Field(0, description="seed of the problem draw, the teacher's sampling and the student's training")
    out: str = Field("runs/refine", description="output directory")
    train: NextTokenConfig = NextTokenConfig(
        steps=120, batch_size=32, lr=5e-4, min_lr_ratio=1.0, warmup_steps=10, save_every=120, max_length=128
    )


@dataclass
class RefinementTable:
    """Per training problem: the prompt's ids, the original response's (the label) and the refined one's
    (the teacher's ``<think> thought </think> answer``), the student's losses on both ``[N]``, and for
    reading and diagnosis only (never used to select) the texts and whether the teacher's answer was right."""

    prompt_ids: list[list[int]]
    original_ids: list[list[int]]
    refined_ids: list[list[int]]
    loss_original: torch.Tensor
    loss_refined: torch.Tensor
    teacher_correct: torch.Tensor
    prompts: list[str]
    originals: list[str]
    refined: list[str]

    def to_json(self) -> dict:
        out = asdict(self)
        for key in ("loss_original", "loss_refined", "teacher_correct"):
            out[key] = out[key].tolist()
        return out


def _rank_device() -> str | None:
    """This rank's device under a multi-GPU launcher, else the default (None)."""
    return distributed.rank_device(None, distributed.init_from_env()[1])


def student_spec(job: RefineJob, progress: bool = False) -> str:
    """The student model to load: ``job.student``, else the weak student's checkpoint (trained on first use)."""
    return job.student if job.student else str(ensure_base(weak_student_job(), progress=progress))


def teacher_batches(n: int, batch_size: int, rank: int = 0, world: int = 1) -> list[tuple[int, range]]:
    """``(b, prompt indices)`` of the decode batches of ``n`` prompts that ``rank`` of ``world`` samples:
    batch ``b`` holds prompts ``[b * batch_size, (b + 1) * batch_size)`` and goes to rank ``b % world``."""
    starts = range(0, n, batch_size)
    return [(b, range(s, min(s + batch_size, n))) for b, s in enumerate(starts) if b % world == rank]


def _batch_generator(model, seed: int, batch: int) -> torch.Generator:
    """The generator of teacher batch ``batch``: keyed by (seed, batch), so no rank's draws depend on another's."""
    key = random.Random(f"refine-teacher:{seed}:{batch}").getrandbits(63)
    return torch.Generator(device=next(model.parameters()).device).manual_seed(key)


def teacher_refinements(
    model,
    tokenizer,
    fmt: ThoughtFormat,
    task,
    prompt_ids: list[list[int]],
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
    rank: int = 0,
    world: int = 1,
) -> tuple[list[list[int]], list[str]]:
    """The teacher's think-mode completion of each prompt (a thought cut at the budget is closed there):
    ``<think> thought </think> answer`` ids without an ending EOS, and their texts, in prompt order.

    Each rank samples its :func:`teacher_batches` and the ranks gather them (a collective when ``world > 1``).
    """
    local: dict[int, tuple[list[int], str]] = {}
    for b, rows in teacher_batches(len(prompt_ids), batch_size, rank, world):
        done = think_then_answer(
            model,
            tokenizer,
            fmt,
            [prompt_ids[i] for i in rows],
            think=True,
            temperature=temperature,
            generator=_batch_generator(model, seed, b) if temperature > 0 else None,
            max_thought_tokens=thought_budget(task),
            max_answer_tokens=16,
            batch_size=batch_size,
        )
        local.update(zip(rows, zip(refinement_ids(done, fmt.eos_ids), done.texts(tokenizer))))
    merged: dict[int, tuple[list[int], str]] = {}
    for part in distributed.all_gather_objects(local, world):
        merged.update(part)
    ids, texts = zip(*(merged[i] for i in range(len(prompt_ids)))) if prompt_ids else ((), ())
    return list(ids), list(texts)


def refinement_ids(completions: Completions, end_ids: Sequence[int]) -> list[list[int]]:
    """``<think> thought </think> answer`` ids of each completion, without an ending EOS (training adds its own)."""
    out = []
    for row in range(len(completions)):
        ids = completions.completion_ids(row)
        out.append(ids[:-1] if ids and ids[-1] in end_ids else ids)
    return out


def _check_same_tokenizer(teacher_tok, student_tok, job: RefineJob) -> None:
    if teacher_tok.get_vocab() != student_tok.get_vocab():
        raise ConfigError(
            f"teacher {job.teacher!r} and student {job.student or 'the weak student'!r} have different tokenizers; "
            "refinements pass to the student as token ids, so pick a student with the teacher's tokenizer"
        )


def build_table(job: RefineJob, progress: bool = False, rank: int = 0, world: int = 1) -> RefinementTable:
    """Draw the problems, let the teacher refine them (split across ``world`` ranks) and the student score
    both versions (every rank holds the whole table)."""
    task = get_task(job.task)
    problems = task.problems(job.n_train, seed=job.seed, split="train")
    teacher = load_model(job.teacher, device=_rank_device())
    fmt = ThoughtFormat.of(teacher.model, teacher.tokenizer)
    prompt_ids = fmt.prompt_ids(teacher.tokenizer, [p.prompt for p in problems])
    refined_ids, refined_texts = teacher_refinements(
        teacher.model,
        teacher.tokenizer,
        fmt,
        task,
        prompt_ids,
        job.teacher_temperature,
        job.seed,
        job.teacher_batch_size,
        rank,
        world,
    )
    student = load_model(student_spec(job, progress), device=_rank_device())
    _check_same_tokenizer(teacher.tokenizer, student.tokenizer, job)
    del teacher
    original_ids = [student.tokenizer(p.answer, add_special_tokens=False)["input_ids"] for p in problems]
    return RefinementTable(
        prompt_ids=prompt_ids,
        original_ids=original_ids,
        refined_ids=refined_ids,
        loss_original=response_losses(student.model, student.tokenizer, prompt_ids, original_ids),
        loss_refined=response_losses(student.model, student.tokenizer, prompt_ids, refined_ids),
        teacher_correct=torch.tensor([task.score(p, r) for p, r in zip(problems, refined_texts)]),
        prompts=[p.prompt for p in problems],
        originals=[p.answer for p in problems],
        refined=refined_texts,
    )


def _epochs(docs: Sequence[list[int]], seed: int) -> Iterator[list[int]]:
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
    """Train the student on ``prompt + response`` ids (the refinement where ``keep``, else the original, or
    nothing with ``fallback="drop"``) for ``job.train.steps`` steps, then evaluate it held out."""
    task = get_task(job.task)
    responses = select_responses(table.original_ids, table.refined_ids, keep, fallback)
    docs = [[*p, *r] for p, r in zip(table.prompt_ids, responses) if r is not None]
    if not docs:
        raise ConfigError(
            "the selection keeps no documents to train on; keep some refinements or use fallback 'original'"
        )
    student = load_model(student_spec(job, progress), device=_rank_device())
    model, tokenizer = student.model, student.tokenizer
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
    """One run: table, the filter's selection, training, evaluation; writes ``out/refine_summary.json``.

    Joins the process group ``torchrun`` / ``accelerate launch`` describes, if any (module docstring).
    """
    rank, world = distributed.init_from_env()
    with open_run(job.out, "refine", job, rank=rank) as out:
        table = build_table(job, progress and rank == 0, rank, world)
        if rank == 0:
            (out / "refinement_table.json").write_text(json.dumps(table.to_json()))
        keep = keep_mask(job.filter, table.loss_original, table.loss_refined)
        summary = train_on_selection(job, table, keep, out / "student", progress and rank == 0)
        if rank == 0:
            write_json_file(out / "refine_summary.json", summary)
        return summary

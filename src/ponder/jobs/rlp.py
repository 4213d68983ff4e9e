"""``ponder rlp`` and ``ponder cpt``: RLP and its compute-matched continued-pretraining baseline."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ponder.config import SETTINGS
from ponder.data.registry import DEMO_TASK
from ponder.data.sources import make_source
from ponder.errors import PonderError
from ponder.models.lookup import load_model
from ponder.rl.rlp import RLPConfig, RLPTrainer
from ponder.train import distributed
from ponder.train.compute import cpt_budget_tokens, model_size, steps_for_budget
from ponder.train.next_token import NextTokenConfig, document_token_windows, train_next_token
from ponder.train.rundir import open_run, write_json_file

LOG = logging.getLogger(__name__)


class ModelAndCorpus(BaseModel):
    """What a training job trains and reads: shared by ``rlp`` and ``cpt`` so both see the same corpus."""

    model_config = SETTINGS
    model: str = Field(
        "tiny",
        description="tiny, tiny-lazy, smollm2-135m, a random-init shape (smollm2-135m-shape, qwen3-0.6b-shape[:LAYERS]), a HF model directory or a .gguf file",
    )
    task: str = Field(
        DEMO_TASK, description="task whose training problems form the corpus (when --corpus is not given)"
    )
    corpus: str | None = Field(None, description="text/jsonl/parquet file or folder of documents (overrides --task)")
    text_field: str = Field("text", description="field holding the text in jsonl/parquet/HF datasets")
    think_fraction: float = Field(0.0, ge=0, le=1, description="share of task documents written with their scratchpad")
    device: str | None = Field(None, description="cpu, cuda, ... (default: cuda when available)")


class RLPJob(RLPConfig, ModelAndCorpus):
    """Settings of ``ponder rlp`` (the RLP options plus what to train and where)."""

    out: str = Field("runs/rlp", description="run directory (checkpoints, metrics, final model)")


class CPTJob(NextTokenConfig, ModelAndCorpus):
    """Settings of ``ponder cpt``: next-token training on the same corpus, optionally compute-matched to an RLP run."""

    out: str = Field("runs/cpt", description="run directory")
    match_run: str | None = Field(
        None, description="an RLP run directory whose compute this run matches (sets --steps)"
    )
    match: Literal["flop", "token", "compute"] = Field(
        "flop",
        description="flop: the paper's T_flop = rollout tokens + input tokens; token: input tokens; "
        "compute: the RLP run's FLOPs / (6 x CPT's parameters) (see ponder.train.compute)",
    )


def _source(job):

    return make_source(job.corpus, job.task, job.seed, job.think_fraction, job.text_field)


def run_rlp(job: RLPJob, resume: bool = True, progress: bool = True, allow_config_change: bool = False) -> dict:
    """Train ``job.model`` with RLP on ``job.corpus`` (or the task's documents): what ``ponder rlp`` runs.

    Joins the process group ``torchrun`` / ``accelerate launch`` describes, if any (each rank then takes its
    share of the documents). Writes checkpoints, ``metrics.jsonl``, ``final/`` (a Hugging Face model, or
    the LoRA adapter) and ``rlp_summary.json`` (with the compute account ``ponder cpt --match-run`` reads)
    into ``job.out``.

    Args:
        job: the settings (every field is a flag of ``ponder rlp``; see the configuration reference).
        resume: continue from the newest intact checkpoint in ``job.out``; ``False`` starts over, deleting
            the directory's checkpoints, final model and metrics.
        progress: show a progress bar.
        allow_config_change: resume even when the saved settings differ in a way that changes the run
            (the changes are recorded in ``run.json``); otherwise such a change is an error.

    Returns:
        The summary: step counts, the compute account (summed over ranks) and the last metrics.
    """
    # Under torchrun / accelerate launch: join the group first so each GPU rank loads onto its own device.
    rank, world = distributed.init_from_env()
    with open_run(job.out, "rlp", job, resume, allow_config_change, rank) as out:
        lm = load_model(job.model, device=distributed.rank_device(job.device, world))
        cfg = RLPConfig(**job.model_dump(include=set(RLPConfig.model_fields)))
        trainer = RLPTrainer(lm.model, lm.tokenizer, _source(job), cfg, out)
        summary = trainer.train(resume=resume, progress=progress)
        if rank == 0:
            write_json_file(out / "rlp_summary.json", summary)
    return summary


def trained_tokens_per_step(tokenizer, documents, batch_size: int, max_length: int) -> Iterator[int]:
    """Tokens each successive CPT step trains on: its ``batch_size`` windows, as the trainer reads them."""
    windows = document_token_windows(tokenizer, documents, max_length)
    while True:
        yield sum(len(next(windows)) for _ in range(batch_size))


def cpt_steps(job: CPTJob, model, tokenizer, documents) -> tuple[int, dict | None]:
    """``(steps, plan)``: from ``--match-run`` when given (plan: budget and planned tokens), else ``--steps``.

    The steps are counted on the very documents CPT will read, the last one cut to the budget, so
    the trained tokens equal the budget.
    """

    if not job.match_run:
        return job.steps, None
    summary_path = Path(job.match_run) / "rlp_summary.json"
    if not summary_path.is_file():
        raise PonderError(f"{summary_path} not found: --match-run must name a finished `ponder rlp` run directory")
    try:
        rlp = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise PonderError(
            f"{summary_path} is damaged ({type(e).__name__}: {e}); rerun that `ponder rlp` to rewrite it"
        ) from None
    if not isinstance(rlp, dict) or "flop_matched_tokens" not in rlp:
        raise PonderError(
            f"{summary_path} has no compute account (written by an older ponder); rerun that `ponder rlp` run"
        )
    budget = cpt_budget_tokens(job.match, rlp, model_size(model).params)
    per_step = trained_tokens_per_step(tokenizer, documents, job.batch_size, job.max_length)
    steps, last_step_tokens = steps_for_budget(per_step, budget)
    return steps, {"budget_tokens": budget, "planned_tokens": budget, "last_step_tokens": last_step_tokens}


def run_cpt(job: CPTJob, resume: bool = True, progress: bool = True, allow_config_change: bool = False) -> dict:
    """Continued pretraining (next-token) on the same documents as RLP: what ``ponder cpt`` runs.

    With ``job.match_run`` the step count is set so the trained tokens equal that RLP run's budget
    (``job.match``: ``flop``, ``token`` or ``compute``); otherwise ``job.steps``. Writes ``final/`` and
    ``cpt_summary.json`` into ``job.out``. Joins the process group ``torchrun`` / ``accelerate launch``
    describes, if any (each rank trains on its share of each step's windows, the engine's DDP or FSDP2).

    Args:
        job: the settings (every field is a flag of ``ponder cpt``).

    ``resume``, ``progress`` and ``allow_config_change`` are those of :func:`~ponder.jobs.rlp.run_rlp`.

    Returns:
        The summary: steps, trained tokens and, when matched, the budget.
    """
    # Under torchrun / accelerate launch: join the group first so each GPU rank loads onto its own device.
    rank, world = distributed.init_from_env()
    with open_run(job.out, "cpt", job, resume, allow_config_change, rank) as out:
        lm = load_model(job.model, device=distributed.rank_device(job.device, world))
        source = _source(job)
        steps, plan = cpt_steps(job, lm.model, lm.tokenizer, (text for text, _ in source.stream()))
        cfg = NextTokenConfig(**{**job.model_dump(include=set(NextTokenConfig.model_fields)), "steps": steps})
        summary = train_next_token(
            lm.model,
            lm.tokenizer,
            lambda: (text for text, _ in source.stream()),
            cfg,
            out,
            resume=resume,
            progress=progress,
            description="ponder cpt",
            token_budget=plan["budget_tokens"] if plan else None,
        )
        summary.update({"match": job.match if job.match_run else None, **(plan or {"budget_tokens": None})})
        if rank == 0:
            write_json_file(out / "cpt_summary.json", summary)
    return summary

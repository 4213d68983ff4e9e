"""``ponder rlp`` and ``ponder cpt``: RLP and its compute-matched continued-pretraining baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ponder.data.registry import DEMO_TASK
from ponder.errors import PonderError
from ponder.rl.rlp import RLPConfig
from ponder.train.next_token import NextTokenConfig


class ModelAndCorpus(BaseModel):
    """What a training job trains and reads: shared by ``rlp`` and ``cpt`` so both see the same corpus."""

    model_config = ConfigDict(extra="forbid")
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
    match: Literal["flop", "token"] = Field(
        "flop", description="flop: T_flop = rollout tokens + input tokens; token: input tokens"
    )


def _source(job):
    from ponder.data.sources import make_source

    return make_source(job.corpus, job.task, job.seed, job.think_fraction, job.text_field)


def run_rlp(job: RLPJob, resume: bool = True, progress: bool = True) -> dict:
    import torch

    from ponder.lm.load import load_model
    from ponder.rl import distributed
    from ponder.rl.rlp import RLPTrainer

    # Under torchrun / accelerate launch: join the group first so each GPU rank loads onto its own device.
    rank, world = distributed.init_from_env()
    device = job.device
    if world > 1 and device in (None, "cuda") and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.current_device()}"
    lm = load_model(job.model, device=device)
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rlp_job.json").write_text(job.model_dump_json(indent=2))
    cfg = RLPConfig(**job.model_dump(include=set(RLPConfig.model_fields)))
    summary = RLPTrainer(lm.model, lm.tokenizer, _source(job), cfg, out).train(resume=resume, progress=progress)
    if rank == 0:
        (out / "rlp_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def mean_doc_tokens(tokenizer, source, n: int = 256) -> float:
    stream = source.stream()
    docs = [next(stream)[0] for _ in range(n)]
    return sum(len(ids) + 1 for ids in tokenizer(docs)["input_ids"]) / n  # +1: the EOS the trainer appends


def cpt_steps(job: CPTJob, tokenizer, source) -> tuple[int, int | None]:
    """(steps, token budget): from ``--match-run`` when given, else ``--steps``."""
    from ponder.rl.compute import cpt_budget_tokens, steps_for_tokens

    if not job.match_run:
        return job.steps, None
    summary_path = Path(job.match_run) / "rlp_summary.json"
    if not summary_path.is_file():
        raise PonderError(f"{summary_path} not found: --match-run must name a finished `ponder rlp` run directory")
    rlp = json.loads(summary_path.read_text())
    budget = cpt_budget_tokens(job.match, rlp["input_tokens"], rlp["rollout_tokens"])
    return steps_for_tokens(budget, job.batch_size, mean_doc_tokens(tokenizer, source)), budget


def run_cpt(job: CPTJob, resume: bool = True, progress: bool = True) -> dict:
    from ponder.lm.load import load_model
    from ponder.train.next_token import train_next_token

    lm = load_model(job.model, device=job.device)
    source = _source(job)
    steps, budget = cpt_steps(job, lm.tokenizer, source)
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpt_job.json").write_text(job.model_dump_json(indent=2))
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
    )
    summary.update({"match": job.match if job.match_run else None, "budget_tokens": budget})
    (out / "cpt_summary.json").write_text(json.dumps(summary, indent=2))
    return summary

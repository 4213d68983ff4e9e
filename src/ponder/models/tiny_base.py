"""The built-in tiny models: the recipe ``ponder base`` trains them with, and their cache.

The corpus mixes documents with a worked scratchpad inside think delimiters and documents
without one, so the model learns both to think and to answer directly; on the demo task the
scratchpad makes the answer a sequence of local steps, which is what opens the gap between
think and no-think accuracy that every later job studies.

A job can also start from a trained model (``init``) and go on with another document mix:
:func:`lazy_base_job` is the demo's base, the default tiny model taught that most thoughts
are a bare pause, so it can reason in a thought but about half the time does not.

The cache: the default base (``tiny``) lives in ``$PONDER_TINY_DIR`` if set, else
``$PONDER_CACHE`` (default ``~/.cache/ponder``) ``/tiny-<fingerprint>``, where the
fingerprint hashes the default :class:`BaseJob`: changing the recipe trains a new model instead
of silently reusing a stale one. Any other recipe, such as the demo's ``tiny-lazy``
(:func:`lazy_base_job`) or a base retrained with another seed (``tiny@S``, ``tiny-lazy@S``), is
cached the same way under its own fingerprint. A recipe and the cache are one module because
each needs the other: a missing model is trained by :func:`run_base`, and a recipe whose
``init`` is a built-in name starts from that model's cached checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pydantic import BaseModel, Field

from ponder.config import SETTINGS
from ponder.data.corpus import iter_task_documents
from ponder.data.registry import DEMO_TASK, get_task
from ponder.data.task import thought_budget
from ponder.errors import ModelLoadError
from ponder.eval.accuracy import evaluate
from ponder.lm.load import load_hf_dir
from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model
from ponder.progress import console
from ponder.train import distributed
from ponder.train.next_token import NextTokenConfig, train_next_token
from ponder.train.reproducible import TRAINING_THREADS, fixed_threads, weights_fingerprint
from ponder.train.run_config import SettingsMismatchError
from ponder.train.rundir import open_run, write_json_file
from ponder.train.trackers import TrackingSettings

#: Recipe fields added after caches existed: left out of the fingerprint at their default.
_LATER_FIELDS = ("lazy_thoughts", "init", "threads")
#: The same for fields of the training settings (``micro_batch``: None trains the whole batch at once, as before;
#: the engine's settings, which next-token training shares since it runs on the engine: none changes the weights
#: at its default).
_LATER_TRAIN_FIELDS = (
    "micro_batch",
    "gradient_checkpointing",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "lora_save_merged",
    "keep_checkpoints",
    "data_parallel",
)

#: ``init`` value naming the default tiny base (the cached ``BaseJob()``): its model name.
INIT_DEFAULT_TINY = TINY = "tiny"
#: The demo's base (:func:`lazy_base_job`).
TINY_LAZY = "tiny-lazy"


def split_base_seed(spec: str) -> tuple[str, int] | None:
    """``("tiny" | "tiny-lazy", S)`` for a built-in tiny name, ``NAME@S`` naming its recipe retrained
    with base seed S (no suffix: seed 0, the default); ``None`` for any other model spec."""
    name, at, seed = str(spec).partition("@")
    if name not in (TINY, TINY_LAZY):
        return None
    if not at:
        return name, 0
    if not seed.isdigit():
        raise ModelLoadError(f"model {spec!r}: the base seed after '@' must be a whole number >= 0, e.g. {name}@1")
    return name, int(seed)


def tiny_spec(name: str, base_seed: int) -> str:
    """The model name of built-in ``name`` retrained with ``base_seed`` (the plain name for seed 0)."""
    return name if base_seed == 0 else f"{name}@{base_seed}"


class BaseJob(BaseModel):
    """Settings of ``ponder base``."""

    model_config = SETTINGS
    task: str = Field(DEMO_TASK, description="synthetic task whose documents form the corpus")
    think_fraction: float = Field(0.5, ge=0, le=1, description="share of documents written with a worked scratchpad")
    mid_answer_thoughts: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of scratchpad documents whose thought sits inside the answer (text resumes after it)",
    )
    pause_thoughts: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of documents with one pause thought (a single space) at a random point other than the answer start",
    )
    lazy_thoughts: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of scratchpad documents whose thought is a pause instead of the worked steps: the model can reason when it thinks but usually does not",
    )
    init: str | None = Field(
        None,
        description="start from this model instead of a random initialisation: 'tiny' (the default base, trained first if not cached), 'tiny@S' (the default recipe with seed S) or a Hugging Face directory of a tiny model; its architecture replaces arch",
    )
    out: str | None = Field(None, description="output directory (default: the tiny-model cache)")
    eval_n: int = Field(200, ge=1, description="held-out problems measured at the end")
    seed: int = Field(0, description="seed of the data stream, the initialisation and the optimizer")
    threads: int = Field(
        TRAINING_THREADS,
        ge=1,
        description="intra-op torch threads while training and measuring, whatever OMP_NUM_THREADS says: "
        "CPU reductions split over another thread count sum in another order, which trains other weights",
    )
    arch: TinyArch = TinyArch()
    train: NextTokenConfig = NextTokenConfig(
        steps=800, batch_size=64, lr=2e-3, warmup_steps=100, save_every=200, max_length=128
    )

    def fingerprint(self) -> str:
        """Hash of everything that determines the trained weights (not ``out`` or ``eval_n``)."""
        payload = self.model_dump(
            mode="json", exclude={"out": True, "eval_n": True, "train": set(TrackingSettings.model_fields)}
        )
        for name in _LATER_FIELDS:  # at their neutral value they leave earlier caches valid
            if payload[name] == BaseJob.model_fields[name].default:
                del payload[name]
        for name in _LATER_TRAIN_FIELDS:
            if payload["train"][name] == NextTokenConfig.model_fields[name].default:
                del payload["train"][name]
        if (builtin := split_base_seed(self.init or "")) and builtin[0] == TINY:
            # the default base's own recipe, so a change there retrains this one
            payload["init"] = f"tiny-{BaseJob(seed=builtin[1]).fingerprint()}"
        elif self.init is not None:
            payload["init"] = str(Path(self.init).expanduser().resolve())
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


def run_base(
    job: BaseJob, out_dir: str | Path, resume: bool = False, progress: bool = True, allow_config_change: bool = False
) -> dict:
    """Train, save ``out_dir/final`` and measure think / no-think accuracy on held-out problems."""

    rank, _ = distributed.init_from_env()  # under torchrun: rank 0 holds the run directory, every rank trains
    with open_run(out_dir, "base", job, resume, allow_config_change, rank) as out, fixed_threads(job.threads):
        return _train_base(job, out, resume, progress, rank)


def _train_base(job: BaseJob, out_dir: Path, resume: bool, progress: bool, rank: int = 0) -> dict:

    task = get_task(job.task)
    if job.init is None:
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(tokenizer, job.arch, seed=job.seed)
    else:
        builtin = split_base_seed(job.init)
        if builtin and builtin[0] == TINY:
            init = ensure_base(BaseJob(seed=builtin[1]), progress=progress)
        else:
            init = Path(job.init).expanduser()
        model, tokenizer = load_hf_dir(init)
    summary = train_next_token(
        model,
        tokenizer,
        documents=lambda: iter_task_documents(
            task,
            seed=job.seed,
            think_fraction=job.think_fraction,
            mid_answer_thoughts=job.mid_answer_thoughts,
            pause_thoughts=job.pause_thoughts,
            lazy_thoughts=job.lazy_thoughts,
        ),
        cfg=job.train.model_copy(update={"seed": job.seed}),
        run_dir=out_dir,
        resume=resume,
        progress=progress,
        description="ponder base",
    )
    result = evaluate(
        model,
        tokenizer,
        task,
        n=job.eval_n,
        seed=job.seed,
        model_name=str(out_dir / "final"),
        max_thought_tokens=thought_budget(task),
        progress=progress,
    )
    summary["weights_fingerprint"] = weights_fingerprint(model)
    summary["threads"] = job.threads
    summary["eval"] = result.to_json()
    if rank == 0:
        write_json_file(out_dir / "base_summary.json", summary)
    return summary


def lazy_base_job(base_seed: int = 0) -> BaseJob:
    """The demo's base: the default tiny model, then 150 steps on the default mix (half the documents
    with a thought) in which 60% of the thoughts are a bare pause, half of them sit inside the answer
    rather than before it, and half the documents carry a pause elsewhere.

    It keeps the worked-scratchpad skill but opens a pause more often than it works the steps, so
    its greedy think accuracy is far below the default base's (figures in ``bench/RESULTS.md``).
    Whether a training method teaches a model to *use* its thoughts shows on this base; the default
    one always works the steps when it thinks, which leaves nothing to teach.

    ``base_seed`` S > 0 retrains the whole recipe independently: the default base with seed S
    (``tiny@S``), then this phase with seed S + 1 (seed 0 keeps the cached demo base).
    """
    return BaseJob(
        init=tiny_spec(TINY, base_seed),
        think_fraction=0.5,
        mid_answer_thoughts=0.5,
        lazy_thoughts=0.6,
        pause_thoughts=0.5,
        seed=1 + base_seed,
        train=NextTokenConfig(
            steps=150, batch_size=64, lr=5e-4, min_lr_ratio=1.0, warmup_steps=10, save_every=50, max_length=128
        ),
    )


def cache_root() -> Path:
    return Path(os.environ.get("PONDER_CACHE", Path.home() / ".cache" / "ponder"))


def base_dir(job=None) -> Path:
    """Cache directory of the run of ``job`` (default: the default ``BaseJob``); its HF checkpoint is ``<dir>/final``."""

    fingerprint = (job or BaseJob()).fingerprint()
    if fingerprint == BaseJob().fingerprint() and os.environ.get("PONDER_TINY_DIR"):
        return Path(os.environ["PONDER_TINY_DIR"])
    return cache_root() / f"tiny-{fingerprint}"


def tiny_dir(override: str | os.PathLike | None = None) -> Path:
    """Directory of the default tiny model's run; its HF checkpoint is ``<dir>/final``."""
    return Path(override) if override else base_dir()


def ensure_base(job=None, override: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """HF checkpoint of ``job``'s model (default: the default tiny base), training it first if not cached."""

    job = job or BaseJob()
    root = Path(override) if override else base_dir(job)
    final = root / "final"
    if (final / "config.json").is_file():
        return final
    console.print(
        f"[bold]ponder:[/] no cached tiny model for this recipe; training it now (minutes on CPU) into {root}\n"
        "        (set PONDER_TINY_DIR or PONDER_CACHE to choose another place)"
    )
    try:
        run_base(job, root, resume=True, progress=progress)
    except SettingsMismatchError as e:
        # A partial run left by another ponder version (or a foreign job) cannot be resumed. The cache is
        # ponder's own derived data, and a user of `ponder demo` has no --no-resume to give: start over.
        reason = str(e).split(": its settings")[0]
        console.print(
            f"[bold]ponder:[/] the cached partial run cannot be resumed ({reason}); training it from the start"
        )
        run_base(job, root, resume=False, progress=progress)
    return final


def ensure_tiny(override: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """HF checkpoint of the default tiny model, training it first if it is not cached yet."""
    return ensure_base(None, override, progress)


def ensure_lazy_tiny(progress: bool = True, base_seed: int = 0) -> Path:
    """HF checkpoint of the demo's ``tiny-lazy`` base (:func:`lazy_base_job`), retrained
    from base seed ``base_seed`` when it is not 0."""

    return ensure_base(lazy_base_job(base_seed), progress=progress)


def builtin_tiny_path(spec: str, override: str | os.PathLike | None = None, progress: bool = True) -> str:
    """``spec`` with the built-in tiny names (``tiny``, ``tiny-lazy``, ``NAME@S`` for base seed S) replaced by
    their cached checkpoints (trained first if needed); any other spec unchanged. ``override`` is the
    default base's run directory (seed 0)."""
    builtin = split_base_seed(spec)
    if builtin is None:
        return spec
    name, seed = builtin
    if name == TINY:
        return str(
            ensure_tiny(override, progress=progress)
            if seed == 0
            else ensure_base(BaseJob(seed=seed), progress=progress)
        )
    return str(ensure_lazy_tiny(progress=progress, base_seed=seed))

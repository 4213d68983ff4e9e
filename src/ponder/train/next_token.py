"""Next-token (language-model) training on a stream of documents.

One loop serves ``ponder base`` (pretraining the tiny model from scratch) and ``ponder cpt``
(continued pretraining, the compute-matched baseline of RLP). Documents come from a
deterministic factory and are read as windows of at most ``max_length`` tokens (EOS closing each
document; :mod:`ponder.data.windows`), so a step's memory is bounded by the settings whatever the
documents' length, and a resumed run skips exactly the windows it already consumed and ends with
the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from pydantic import Field

from ponder.config import SETTINGS
from ponder.data.windows import document_windows, id_windows
from ponder.errors import PonderError
from ponder.lm.padding import pad_ids, used_width
from ponder.progress import make_progress
from ponder.train.checkpoint import (
    latest_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    save_final,
)
from ponder.train.checkpoint_checks import require_count
from ponder.train.guard import step_if_finite
from ponder.train.metrics import MetricsLogger
from ponder.train.rundir import begin_run
from ponder.train.trackers import TrackingSettings


class NextTokenConfig(TrackingSettings):
    """Optimisation settings of next-token training."""

    model_config = SETTINGS
    steps: int = Field(2000, ge=1, description="optimizer steps")
    batch_size: int = Field(64, ge=1, description="documents per step")
    micro_batch: int | None = Field(
        None,
        ge=1,
        description="windows per forward/backward; gradients accumulate over a step's micro-batches "
        "(none: the whole step at once)",
    )
    lr: float = Field(2e-3, gt=0, description="peak learning rate (AdamW)")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr as a fraction of the peak (cosine decay)")
    warmup_steps: int = Field(100, ge=0, description="linear warmup steps")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.98), description="AdamW betas")
    grad_clip: float = Field(1.0, gt=0, description="gradient norm clip")
    max_length: int = Field(256, ge=2, description="tokens per window (a longer document is read as several windows)")
    seed: int = Field(0, description="seed of the data order and initialisation")
    save_every: int = Field(500, ge=1, description="checkpoint every N steps (and at the end)")
    log_every: int = Field(10, ge=1, description="write metrics every N steps")


def lr_lambda(cfg: NextTokenConfig) -> Callable[[int], float]:
    """Linear warmup then cosine decay to ``min_lr_ratio`` (a multiplier of the peak lr)."""

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def document_token_windows(
    tokenizer, documents: Iterator[str] | Iterator[list[int]], max_length: int
) -> Iterator[list[int]]:
    """Windows of at most ``max_length`` tokens of each document (special tokens, then EOS closing the document).

    A document given as token ids (a token-level transform's output, its special tokens in place) is
    windowed as it is (:func:`~ponder.data.windows.id_windows`).
    """
    eos = tokenizer.eos_token_id
    for doc in documents:
        if isinstance(doc, str):
            yield from (ids for ids, _ in document_windows(tokenizer, doc, max_length, eos_id=eos))
        else:
            yield from id_windows(doc, max_length, eos)


def example_window(tokenizer, example, max_length: int) -> tuple[list[int], int]:
    """A context/target example (``context``, ``target``, ``eos``; e.g.
    :class:`ponder.data.early_experience.Example`) as one window and the index its loss starts at.

    The context is tokenized as a prompt is (special tokens), the target on its own after it, as
    the sampler would write it; EOS follows when ``eos``. The window is cut at ``max_length``.
    """
    context = tokenizer(example.context, add_special_tokens=True)["input_ids"]
    if len(context) >= max_length:
        raise PonderError(
            f"an example's context has {len(context)} tokens, leaving no room for its target in windows of "
            f"{max_length}; raise the training max_length"
        )
    target = tokenizer(example.target, add_special_tokens=False)["input_ids"]
    return (context + target + ([tokenizer.eos_token_id] if example.eos else []))[:max_length], len(context)


def training_windows(tokenizer, documents: Iterator, max_length: int) -> Iterator[tuple[list[int], int]]:
    """The windows next-token training reads, each with the index its loss starts at.

    A text or token-id document: its windows (:func:`document_token_windows`), every token trained
    (0). A context/target example: one window whose loss falls on the target only (:func:`example_window`).
    """
    for doc in documents:
        if isinstance(doc, (str, list)):
            yield from ((ids, 0) for ids in document_token_windows(tokenizer, [doc], max_length))
        else:
            yield example_window(tokenizer, doc, max_length)


def cut_to_tokens(rows: list[tuple[list[int], int]], limit: int) -> list[tuple[list[int], int]]:
    """The first ``limit`` tokens of a batch of ``(window ids, loss start)`` rows, in order (the crossing row cut)."""
    kept, left = [], limit
    for ids, start in rows:
        if left <= 0:
            break
        kept.append((ids[:left], start))
        left -= len(kept[-1][0])
    return kept


def collate_windows(
    rows: list[list[int]], pad_id: int, device, loss_starts: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad token windows: ``input_ids [B, T]``, ``attention_mask [B, T]``, ``labels [B, T]`` (-100 on padding,
    and before ``loss_starts[b]`` in row ``b`` when given)."""
    input_ids, mask = pad_ids(rows, pad_id, device)
    labels = input_ids.masked_fill(mask == 0, -100)
    for row, start in enumerate(loss_starts or ()):
        labels[row, :start] = -100
    return input_ids, mask, labels


def accumulate_next_token_loss(model, input_ids, mask, labels, micro_batch: int | None) -> torch.Tensor:
    """Backward of the mean next-token loss of ``input_ids [B, T]``, ``micro_batch`` rows at a time; returns the loss.

    Each part's mean is weighted by its share of the batch's predicted tokens, so the accumulated
    gradient is the whole batch's; trailing padding columns of a part are cut.
    """
    predicted = (labels[:, 1:] != -100).sum(1)  # [B]: tokens each row predicts (the model shifts the labels)
    total_predicted = max(int(predicted.sum()), 1)  # a batch predicting nothing: a NaN loss, skipped by the guard
    size = input_ids.shape[0] if micro_batch is None else micro_batch
    total = None
    for a in range(0, input_ids.shape[0], size):
        rows = slice(a, a + size)
        share = int(predicted[rows].sum()) / total_predicted
        if share == 0 and bool(predicted.any()):
            continue  # nothing to predict in this part (its mean would be 0 / 0)
        # One part: the batch as it is, so default runs train exactly the weights they did before micro-batches.
        width = used_width(mask[rows]) if size < input_ids.shape[0] else input_ids.shape[1]
        out = model(input_ids=input_ids[rows, :width], attention_mask=mask[rows, :width], labels=labels[rows, :width])
        part = out.loss * share
        part.backward()
        total = part.detach() if total is None else total + part.detach()
    return total


def train_next_token(
    model,
    tokenizer,
    documents: Callable[[], Iterator],
    cfg: NextTokenConfig,
    run_dir: str | Path,
    resume: bool = False,
    on_eval: Callable[[int], dict] | None = None,
    eval_every: int | None = None,
    progress: bool = True,
    description: str = "next-token training",
    token_budget: int | None = None,
) -> dict:
    """Train ``model`` on documents from ``documents()`` for ``cfg.steps`` steps.

    Documents are texts, token-id lists or context/target examples (see :func:`training_windows`).
    ``documents`` must return the same sequence every call (it is replayed on resume).
    Writes checkpoints and ``metrics.jsonl`` under ``run_dir`` and the final model to
    ``run_dir/final``. Returns a summary dict (steps, tokens, seconds, final loss).
    ``token_budget``: the last step's windows are cut so the run trains at most this many tokens
    (a compute-matched run; the other steps must fit under it).
    """

    run_dir = Path(run_dir)
    device = next(model.parameters()).device
    torch.manual_seed(cfg.seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    step, docs_consumed, tokens_seen, skipped = 0, 0, 0, 0
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        state = restore_checkpoint(ckpt, model, optimizer, scheduler)
        step = state["step"]  # validated: the folder's step
        # Counters bounded by what the steps read: the windows are replayed below, a forged count must not hang.
        docs_consumed = require_count(state["docs_consumed"], "docs_consumed", step * cfg.batch_size, ckpt)
        tokens_seen = require_count(state["tokens_seen"], "tokens_seen", docs_consumed * cfg.max_length, ckpt)
        skipped = require_count(state.get("skipped_nonfinite", 0), "skipped_nonfinite", step, ckpt)
    stream = training_windows(tokenizer, documents(), cfg.max_length)  # docs_consumed counts windows
    for _ in range(docs_consumed):
        next(stream)
    begin_run(run_dir, step if ckpt is not None else None)  # everything loaded: now the directory may change
    logger = MetricsLogger(run_dir, step if ckpt is not None else None, **cfg.tracking())

    def checkpoint() -> None:
        save_checkpoint(
            run_dir,
            step,
            model,
            tokenizer,
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "docs_consumed": docs_consumed,
                "tokens_seen": tokens_seen,
                "skipped_nonfinite": skipped,
            },
        )

    start, loss_value = time.time(), float("nan")
    with make_progress(progress) as bar:
        task = bar.add_task(description, total=cfg.steps, completed=step)
        while step < cfg.steps:
            rows = [next(stream) for _ in range(cfg.batch_size)]
            docs_consumed += len(rows)
            if token_budget is not None and step == cfg.steps - 1:
                rows = cut_to_tokens(rows, token_budget - tokens_seen)
            input_ids, mask, labels = collate_windows(
                [ids for ids, _ in rows], tokenizer.pad_token_id, device, [start for _, start in rows]
            )
            loss = accumulate_next_token_loss(model, input_ids, mask, labels, cfg.micro_batch)
            outcome = step_if_finite(loss, model.parameters(), optimizer, scheduler, cfg.grad_clip)
            skipped += not outcome.stepped
            optimizer.zero_grad(set_to_none=True)
            step += 1
            step_tokens = int(mask.sum())
            tokens_seen += step_tokens
            loss_value = loss.item()
            if step % cfg.log_every == 0 or step == cfg.steps:
                elapsed = time.time() - start
                metrics = {  # per-step values under their names, running totals as *_total
                    "loss": loss_value,
                    "grad_norm": outcome.grad_norm,
                    "skipped": int(not outcome.stepped),
                    "skipped_nonfinite_total": skipped,
                    "lr": scheduler.get_last_lr()[0],
                    "tokens": step_tokens,
                    "tokens_seen_total": tokens_seen,
                    "tokens_per_s": tokens_seen / max(elapsed, 1e-9),
                }
                if on_eval is not None and eval_every and (step % eval_every == 0 or step == cfg.steps):
                    model.eval()
                    metrics.update(on_eval(step))
                    model.train()
                logger.log(step, metrics)
            bar.update(task, completed=step, description=f"{description} loss={loss_value:.3f}")
            if step % cfg.save_every == 0 or step == cfg.steps:
                checkpoint()
    logger.close()
    model.eval()
    save_final(run_dir, model, tokenizer)
    return {
        "steps": step,
        "tokens_seen": tokens_seen,
        "seconds": time.time() - start,
        "final_loss": loss_value,
        "skipped_nonfinite": skipped,
    }

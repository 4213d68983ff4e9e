"""Next-token (language-model) training on a stream of documents.

One loop serves ``ponder base`` (pretraining the tiny model from scratch) and ``ponder cpt``
(continued pretraining, the compute-matched baseline of RLP). Documents come from a
deterministic factory, so a resumed run skips exactly the documents it already consumed and
ends with the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from ponder.lm.score import pad_ids
from ponder.train.checkpoint import (
    latest_checkpoint,
    load_state,
    load_weights_into,
    save_checkpoint,
    save_pretrained_atomic,
    set_rng_state,
)
from ponder.train.metrics import MetricsLogger


class NextTokenConfig(BaseModel):
    """Optimisation settings of next-token training."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(2000, ge=1, description="optimizer steps")
    batch_size: int = Field(64, ge=1, description="documents per step")
    lr: float = Field(2e-3, gt=0, description="peak learning rate (AdamW)")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr as a fraction of the peak (cosine decay)")
    warmup_steps: int = Field(100, ge=0, description="linear warmup steps")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.98), description="AdamW betas")
    grad_clip: float = Field(1.0, gt=0, description="gradient norm clip")
    max_length: int = Field(256, ge=2, description="tokens per document (longer ones are truncated)")
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


def collate_documents(
    tokenizer, docs: list, max_length: int, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokenize documents (special tokens + EOS), right-pad.

    A document is a string (every token is trained) or an example with ``context``, ``target``
    and ``eos`` attributes (e.g. :class:`ponder.data.early_experience.Example`): only the target's
    tokens (and the EOS when ``eos``) are trained, the context conditions them.

    Returns ``input_ids [B, T]``, ``attention_mask [B, T]``, ``labels [B, T]`` (-100 on padding
    and on context tokens).
    """
    rows, starts = [], []
    for doc in docs:
        if isinstance(doc, str):
            rows.append(
                tokenizer(doc, add_special_tokens=True)["input_ids"][: max_length - 1] + [tokenizer.eos_token_id]
            )
            starts.append(0)
            continue
        context = tokenizer(doc.context, add_special_tokens=True)["input_ids"]
        target = tokenizer(doc.target, add_special_tokens=False)["input_ids"]
        rows.append((context + target + ([tokenizer.eos_token_id] if doc.eos else []))[:max_length])
        starts.append(len(context))
    input_ids, mask = pad_ids(rows, tokenizer.pad_token_id, device)
    labels = input_ids.masked_fill(mask == 0, -100)
    for row, start in enumerate(starts):
        labels[row, :start] = -100
    return input_ids, mask, labels


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
) -> dict:
    """Train ``model`` on documents from ``documents()`` for ``cfg.steps`` steps.

    Documents are strings or context/target examples (see :func:`collate_documents`).
    ``documents`` must return the same sequence every call (it is replayed on resume).
    Writes checkpoints and ``metrics.jsonl`` under ``run_dir`` and the final model to
    ``run_dir/final``. Returns a summary dict (steps, tokens, seconds, final loss).
    """
    from ponder.report.progress import make_progress

    run_dir = Path(run_dir)
    device = next(model.parameters()).device
    torch.manual_seed(cfg.seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    step, docs_consumed, tokens_seen = 0, 0, 0
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        state = load_state(ckpt)
        load_weights_into(model, ckpt)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step, docs_consumed, tokens_seen = state["step"], state["docs_consumed"], state["tokens_seen"]
    logger = MetricsLogger(run_dir, resume_step=step if ckpt is not None else None)
    stream = documents()
    for _ in range(docs_consumed):
        next(stream)

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
            },
        )

    start, loss_value = time.time(), float("nan")
    with make_progress(progress) as bar:
        task = bar.add_task(description, total=cfg.steps, completed=step)
        while step < cfg.steps:
            docs = [next(stream) for _ in range(cfg.batch_size)]
            docs_consumed += len(docs)
            input_ids, mask, labels = collate_documents(tokenizer, docs, cfg.max_length, device)
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += int(mask.sum())
            loss_value = loss.item()
            if step % cfg.log_every == 0 or step == cfg.steps:
                elapsed = time.time() - start
                metrics = {
                    "loss": loss_value,
                    "grad_norm": float(grad_norm),
                    "lr": scheduler.get_last_lr()[0],
                    "tokens_seen": tokens_seen,
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
    save_pretrained_atomic(run_dir / "final", model, tokenizer)
    return {"steps": step, "tokens_seen": tokens_seen, "seconds": time.time() - start, "final_loss": loss_value}

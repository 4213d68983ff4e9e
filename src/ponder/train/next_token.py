"""Next-token (language-model) training: a recipe on the engine (:mod:`ponder.train.engine`).

One recipe serves ``ponder base`` (pretraining the tiny model from scratch), ``ponder cpt``
(continued pretraining, the compute-matched baseline of RLP), ``ponder trelawney``, the refinement
student and early experience. Through the engine each gets data parallelism (DDP or FSDP2 under
``torchrun``), LoRA, micro-batches, the non-finite guard, exact resume and the engine's one
checkpoint format. Documents come from a deterministic factory and are read as windows of at most
``max_length`` tokens (EOS closing each document; :mod:`ponder.data.windows`), so a step's memory is
bounded by the settings whatever the documents' length, and a resumed run skips exactly the windows
it already consumed and ends with the same parameters as an uninterrupted run.

The loss is one term over ``tokens``, the tokens the windows predict (a sum of cross-entropies in
each micro-batch, divided by the step's count over every rank by the engine): the mean over the
step's predicted tokens however the step is cut into micro-batches and ranks. Each rank reads the
whole stream and trains on every ``world``-th window of a step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ponder.config import SETTINGS
from ponder.data.windows import document_windows, id_windows
from ponder.errors import PonderError
from ponder.lm.padding import pad_ids, used_width
from ponder.train.checkpoint_checks import checkpoint_step, require_count
from ponder.train.engine import Engine, Recipe, StepBatch, TrainSettings, prepare_model
from ponder.train.losses import Term
from ponder.train.optim import adamw_warmup_cosine, warmup_cosine


class NextTokenConfig(TrainSettings):
    """Settings of next-token training: the engine's, with next-token defaults and a warmup-cosine schedule."""

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
    max_length: int = Field(256, ge=2, description="tokens per window (a longer document is read as several windows)")
    seed: int = Field(0, description="seed of the data order and initialisation")
    save_every: int = Field(
        500,
        ge=1,
        description="resumable checkpoint every N steps, and at the end of a run of at least N steps "
        "(a shorter run writes only final/, the weights)",
    )
    log_every: int = Field(10, ge=1, description="write metrics every N steps")


def lr_lambda(cfg: NextTokenConfig) -> Callable[[int], float]:
    """Linear warmup then cosine decay to ``min_lr_ratio`` (a multiplier of the peak lr)."""
    return warmup_cosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)


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


@dataclass
class WindowBatch:
    """A step's (or a part's) right-padded windows: ``input_ids``, ``attention_mask``, ``labels`` ``[N, T]``
    (labels -100 where there is no loss: padding, and an example's context).

    A layout of the one batch contract (:class:`~ponder.train.batch.TrainBatch`) in ``[N, T - 1]`` column
    coordinates (column ``j`` predicts token ``j + 1``): the "actions" are the tokens a row predicts, with no
    reward targets and no behaviour policy (the text is data, not samples).
    """

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor
    layout = "windows"

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def loss_mask(self) -> Tensor:
        """``[N, T - 1]``: the tokens each row predicts (column ``j`` predicts token ``j + 1``)."""
        return self.labels[:, 1:] != -100

    @property
    def target_mask(self) -> Tensor:
        """``[N, T - 1]`` all False: next-token training scores no reward targets."""
        return torch.zeros_like(self.loss_mask)

    @property
    def behaviour_logp(self) -> Tensor:
        """``[N, T - 1]`` zeros: the windows are data, no sampler drew them."""
        return torch.zeros(self.loss_mask.shape, dtype=torch.float32, device=self.labels.device)

    def sequence(self, row: int) -> list[int]:
        return self.input_ids[row][self.attention_mask[row].bool()].tolist()

    def select(self, rows: Tensor) -> WindowBatch:
        """The rows ``rows``, trailing padding columns cut."""
        mask = self.attention_mask[rows]
        width = used_width(mask)
        return WindowBatch(self.input_ids[rows, :width], mask[:, :width], self.labels[rows, :width])

    def scores(self, model, inv_temperature: float = 1.0) -> tuple[Tensor, Tensor]:
        """``(logp, entropy) [N, T - 1]`` of the predicted tokens at ``inv_temperature`` (0 elsewhere). Differentiable."""
        logits = model(input_ids=self.input_ids, attention_mask=self.attention_mask, use_cache=False).logits[:, :-1]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) * inv_temperature
        logp_all = torch.log_softmax(logits, dim=-1)
        mask = self.loss_mask
        targets = self.labels[:, 1:].clamp(min=0)
        logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask
        entropy = -(logp_all.exp() * logp_all).sum(-1) * mask
        return logp, entropy


def next_token_sum(model, batch: WindowBatch) -> Tensor:
    """The sum of the cross-entropies of the tokens ``batch`` predicts (fp32 or wider): a scalar."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    logits = logits[:, :-1]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    targets = batch.labels[:, 1:]
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")


class NextTokenRecipe(Recipe):
    """Next-token training on the engine: each step reads ``batch_size`` windows of the stream (every rank the
    same), the rank trains on every ``world``-th, the loss is the mean over the step's predicted tokens."""

    name = "next-token"
    work_name = "windows"
    update = "terms"
    progress_metric = "loss"

    def __init__(
        self,
        model,
        tokenizer,
        documents: Callable[[], Iterator],
        cfg: NextTokenConfig,
        token_budget: int | None = None,
        on_eval: Callable[[int], dict] | None = None,
        eval_every: int | None = None,
    ):
        super().__init__()
        self.model, self.tokenizer, self.documents, self.settings = model, tokenizer, documents, cfg
        self.token_budget, self.on_eval, self.eval_every = token_budget, on_eval, eval_every
        self.docs_consumed = 0  # windows read, every rank's (the stream is replayed on resume)
        self.tokens_seen = 0  # tokens of the windows trained, every rank's
        self._stream: Iterator | None = None
        self._started, self._tokens_this_run = None, 0

    def optimizer(self, model):
        cfg = self.settings
        return adamw_warmup_cosine(model, cfg.lr, cfg.weight_decay, cfg.betas, lr_lambda(cfg))

    def make_step(self, engine: Engine) -> StepBatch:
        cfg = self.settings
        if self._stream is None:  # first step of this process: skip what the resumed steps read
            self._stream = training_windows(self.tokenizer, self.documents(), cfg.max_length)
            for _ in range(self.docs_consumed):
                next(self._stream)
            self._started = time.time()
        rows = [next(self._stream) for _ in range(cfg.batch_size)]
        self.docs_consumed += len(rows)
        if self.token_budget is not None and engine.step == cfg.steps - 1:
            rows = cut_to_tokens(rows, self.token_budget - self.tokens_seen)
        step_tokens = sum(len(ids) for ids, _ in rows)
        self.tokens_seen += step_tokens
        self._tokens_this_run += step_tokens
        mine = rows[engine.rank :: engine.world]
        self.counters["windows"] = self.counters.get("windows", 0) + len(mine)
        metrics = {  # per-step values under their names, running totals as *_total
            "tokens": step_tokens,
            "tokens_seen_total": self.tokens_seen,
            "tokens_per_s": self._tokens_this_run / max(time.time() - self._started, 1e-9),
        }
        self.model.train()
        # No advantages here: zeros keep the engine's finiteness check on them neutral (a non-finite loss or
        # gradient is still caught by the optimizer step's guard).
        if not mine:
            return StepBatch(None, torch.zeros(0), metrics)
        ids, mask, labels = collate_windows(
            [ids for ids, _ in mine], self.tokenizer.pad_token_id, engine.device, [start for _, start in mine]
        )
        return StepBatch(WindowBatch(ids, mask, labels), torch.zeros(len(mine)), metrics)

    def loss_terms(self, engine: Engine, part: StepBatch) -> tuple[list[Term], dict]:
        total = engine.run(lambda m, b=part.batch: next_token_sum(m, b))
        return [Term("next_token", total, "tokens")], {}

    def eval_due(self, step: int, last: bool) -> bool:
        logged = step % self.settings.log_every == 0 or last
        return self.on_eval is not None and bool(self.eval_every) and logged and (step % self.eval_every == 0 or last)

    def evaluate(self, engine: Engine) -> dict:
        self.model.eval()
        try:
            return self.on_eval(engine.step)
        finally:
            self.model.train()

    def summary(self) -> dict:
        return {"tokens_seen": self.tokens_seen}

    def state_dict(self) -> dict:
        return {"docs_consumed": self.docs_consumed, "tokens_seen": self.tokens_seen}

    def load_state_dict(self, state: dict, ckpt: Path) -> None:
        # Bounded by what the steps read: the windows are replayed, a forged count must not hang the resume.
        cfg = self.settings
        limit = checkpoint_step(ckpt) * cfg.batch_size
        self.docs_consumed = require_count(state.get("docs_consumed"), "docs_consumed", limit, ckpt)
        limit = self.docs_consumed * cfg.max_length
        self.tokens_seen = require_count(state.get("tokens_seen"), "tokens_seen", limit, ckpt)
        self._stream = None


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
    """Train ``model`` on documents from ``documents()`` for ``cfg.steps`` steps (through the engine).

    Documents are texts, token-id lists or context/target examples (see :func:`training_windows`).
    ``documents`` must return the same sequence every call (it is replayed on resume).
    Writes checkpoints and ``metrics.jsonl`` under ``run_dir`` and the final model to
    ``run_dir/final``. ``on_eval(step)`` runs at logged steps that are multiples of ``eval_every``
    (and the last), its metrics logged with the step. ``token_budget``: the last step's windows are
    cut so the run trains at most this many tokens (a compute-matched run; the other steps must fit
    under it). With ``cfg.lora_rank`` the model is given LoRA adapters in place.

    Returns the engine's summary (steps, seconds, counters, ``world_size``...) with ``tokens_seen`` and
    ``final_loss`` (the last step's loss).
    """
    torch.manual_seed(cfg.seed)
    model = prepare_model(model, cfg)
    model.train()
    recipe = NextTokenRecipe(model, tokenizer, documents, cfg, token_budget, on_eval, eval_every)
    recipe.description = description
    engine = Engine(model, tokenizer, recipe, run_dir)
    summary = engine.train(resume=resume, progress=progress)
    summary["final_loss"] = engine.last_metrics.get("loss", math.nan)
    return summary

"""One training loop for every job that trains: RLP, GRPO, TTRL and next-token training are recipes on it.

The engine owns what the recipes share: the optimizer and its schedule, data parallelism
(``torchrun`` / ``accelerate launch``: DDP through :mod:`ponder.train.distributed`, or FSDP2 sharding
through :mod:`ponder.train.sharding`), the PPO-epoch
update with the clipped surrogate, the non-finite guard, the behaviour policy and its importance
correction, metrics, progress, checkpoints and resume. A recipe (:class:`Recipe`) turns one step's
data into a :class:`StepBatch` (sequences, action masks, behaviour log-probs, advantages) and may
add loss terms or hooks (the EMA teacher). A recipe with ``update = "terms"`` (next-token training,
:mod:`ponder.train.next_token`) skips the PPO update: its own loss terms are accumulated over the
micro-batches and ranks the same way, one optimizer step per step.

The behaviour policy: ``logp_old`` is what the sampler reported for each action (its own
forward, or an external engine's), so the ratio of the first PPO epoch is 1 up to the float
difference between sampler and trainer, and a sampler that differs from the trainer (bf16 vLLM,
another kernel) is seen: every step logs the mismatch (mean ``|logp_sampler - logp_trainer|`` and a
k3 estimate of KL(sampler || trainer) over action tokens). With ``tis_cap`` set, truncated importance
sampling corrects it: ``logp_old`` becomes the trainer's own first-epoch log-probs and each token's
surrogate is weighted by ``min(exp(logp_old - logp_sampler), tis_cap)``.

Data parallelism: each rank trains on its share of the step's sequences (recipes draw their
randomness per item, keyed by seed, step and global index, so the shares do not depend on the
number of ranks), and counters are summed over ranks in the summary.

Every loss term declares what it averages over (a :class:`~ponder.train.losses.Term`: a sum over
sequences, action tokens, reward tokens or text tokens). Once per step the engine all-reduces the
count of each unit over every rank's share, and each part of each rank contributes
``total / global count``, times the world size (the gradient average of DDP's all-reduce or
FSDP's reduce-scatter divides by it): the gradient is the one-process gradient of the whole global
batch, whatever the micro-batches and ranks, by construction.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from ponder.errors import PonderError
from ponder.lm import adapters, hf_compat
from ponder.progress import make_progress
from ponder.train import distributed, sharding
from ponder.train.batch import TrainBatch
from ponder.train.checkpoint import (
    latest_checkpoint,
    load_weights_into,
    restore_checkpoint,
    save_checkpoint,
    save_final,
)
from ponder.train.checkpoint_checks import CheckpointError
from ponder.train.guard import step_if_finite
from ponder.train.losses import SURROGATE_UNIT, UNITS, Reduce, Term, clipped_surrogate, masked_mean
from ponder.train.metrics import MetricsLogger
from ponder.train.micro import WeightedMeans, split_step
from ponder.train.optim import OptimizerSettings, PolicyUpdateSettings, adamw_constant_after_warmup
from ponder.train.rundir import begin_run


class TrainSettings(OptimizerSettings):
    """Settings every recipe on the engine has, next-token training included (recipes override defaults where
    they differ)."""

    steps: int = Field(100, ge=1, description="optimizer steps")
    lr: float = Field(1e-6, gt=0, description="learning rate (AdamW, constant after warmup)")
    seed: int = Field(0, description="seed of the data draw and of sampling")
    micro_batch: int | None = Field(
        None,
        ge=1,
        description="positions (RLP) or completions (GRPO, TTRL) per forward/backward of the training pass; "
        "gradients accumulate over a step's micro-batches (none: the whole step at once)",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="recompute each decoder layer's activations in the backward (less memory, about one more "
        "forward); RLP then lays its batch out as padded rows",
    )
    lora_rank: int | None = Field(
        None,
        ge=1,
        description="train LoRA adapters of this rank on the frozen model (extra `peft`) instead of every weight "
        "(none: full fine-tuning)",
    )
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scale: an adapter's update is scaled by alpha / rank")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input while training")
    lora_target_modules: str = Field(
        "all-linear",
        description="layers given adapters: all-linear (every linear layer but the output layer) or "
        "comma-separated module names, e.g. q_proj,k_proj,v_proj,o_proj",
    )
    lora_save_merged: bool = Field(
        False,
        description="with LoRA: also save final/merged, the model with the adapter merged in (an ordinary HF model)",
    )
    save_every: int = Field(
        50,
        ge=1,
        description="resumable checkpoint every N steps, and at the end of a run of at least N steps "
        "(a shorter run writes only final/, the weights)",
    )
    keep_checkpoints: int = Field(
        1,
        ge=1,
        description="resumable step checkpoints kept (the newest; older ones are deleted once a newer one is "
        "written); each holds the optimizer state, about 3x the weights",
    )
    log_every: int = Field(1, ge=1, description="write metrics every N steps")
    data_parallel: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="under torchrun / accelerate launch: ddp (full replicas) or fsdp (FSDP2: parameters, gradients, "
        "optimizer state and the EMA teacher sharded at rest, gathered once per step; an accelerate FSDP config "
        "selects it too)",
    )


class EngineSettings(TrainSettings, PolicyUpdateSettings):
    """Settings of the policy-gradient recipes (RLP, GRPO, TTRL): the clipped surrogate's and the behaviour policy's."""

    logprob_temperature: Literal["sampling", "one"] = Field(
        "sampling",
        description="policy log-probs at the sampling temperature (the distribution thoughts are drawn from; TRL's convention) or at 1",
    )
    tis_cap: float | None = Field(
        None,
        gt=1,
        description="truncated importance sampling of the sampler/trainer mismatch with this cap (off: none)",
    )


@dataclass
class StepBatch:
    """One rank's share of a step, ready for the policy update.

    ``batch``: any layout of the one batch contract (:class:`~ponder.train.batch.TrainBatch`: a
    :class:`~ponder.rl.batches.PaddedBatch` or :class:`~ponder.rl.batches.TreeBatch`), or None
    when this rank has nothing to train on; ``advantages`` ``[N]``
    (one per sequence) or ``[N, L]`` (per token, e.g. HICRA); ``first``: ``(logp, entropy)`` of a
    forward already run with gradients (reused by the first epoch). ``reduce`` and ``max_len``
    select the surrogate's reduction (:func:`~ponder.train.losses.clipped_surrogate`). ``counts``: this
    rank's count of each unit its recipe's extra terms average over beyond ``sequences`` and
    ``tokens``, which the engine counts itself (e.g. RLP's ``targets``). A micro-batch of a step
    (:mod:`ponder.train.micro`) has ``sequence_share`` (its fraction of the rank's sequences, a
    weight of its statistics) and ``part`` (its index).
    """

    batch: TrainBatch | None
    advantages: Tensor
    metrics: dict = field(default_factory=dict)
    first: tuple[Tensor, Tensor] | None = None
    reduce: Reduce = "rlp"
    max_len: int | None = None
    counts: dict[str, float] = field(default_factory=dict)
    sequence_share: float = 1.0
    part: int = 0

    @property
    def num_sequences(self) -> int:
        """Sequences this rank trains on (0: only metrics, or a non-finite signal, to report)."""
        return 0 if self.batch is None else len(self.batch)

    def unit_counts(self) -> dict[str, float]:
        """This rank's count of every unit a term may average over: sequences and action tokens from the
        batch, the recipe's own (``counts``) beside them; 0 for the rest."""
        local = dict.fromkeys(UNITS, 0.0)
        if self.batch is not None:
            local.update({k: float(v) for k, v in self.counts.items()})
            local.update(sequences=float(len(self.batch)), tokens=float(self.batch.loss_mask.sum()))
        return local


class Recipe:
    """What a training method adds to the engine. Subclasses set ``name``, ``work_name`` and ``settings``."""

    name = "recipe"
    work_name = "sequences"  # the unit of work a rank does (a counter it keeps), reported per rank in the summary
    settings: EngineSettings
    temperature: float = 1.0  # the policy's sampling temperature
    description: str | None = None  # the progress bar's label (default: "ponder <name>")
    progress_metric = "reward_mean"  # the metric the progress bar shows
    #: Step metrics that are counts (summed over ranks when logged); every other number is averaged over ranks.
    summed_metrics: tuple[str, ...] = ()
    #: ``surrogate``: the PPO update (clipped surrogate, epochs, behaviour policy) plus :meth:`extra_loss`;
    #: ``terms``: the recipe's own loss terms (:meth:`loss_terms`), one optimizer step per step (next-token training).
    update: Literal["surrogate", "terms"] = "surrogate"

    def __init__(self):
        self.counters: dict[str, float] = {}  # this rank's counts, summed over ranks in the summary

    def make_step(self, engine: Engine) -> StepBatch | None:
        """This rank's share of the next step (None: nothing to train on this rank)."""
        raise NotImplementedError

    def extra_loss(self, engine: Engine, logp: Tensor, sb: StepBatch) -> tuple[list[Term], dict]:
        """Loss terms beside the surrogate (KL, next-token): ``(terms, stats)``.

        ``sb`` may be one micro-batch of the step: each term is that part's *sum* over its unit
        (``reduction="sum"``), weight included; the engine divides by the unit's global count.
        """
        return [], {}

    def loss_terms(self, engine: Engine, part: StepBatch) -> tuple[list[Term], dict]:
        """With ``update = "terms"``: a part's loss terms (sums over their units, run through ``engine.run``)
        and statistics."""
        raise NotImplementedError

    def optimizer(self, model) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """``(optimizer, scheduler)`` over ``model``'s trainable parameters: AdamW, constant lr after warmup."""
        s = self.settings
        return adamw_constant_after_warmup(model, s.lr, s.weight_decay, s.warmup_steps)

    def eval_due(self, step: int, last: bool) -> bool:
        """Whether :meth:`evaluate` runs after ``step`` (identical on every rank)."""
        return False

    def evaluate(self, engine: Engine) -> dict:
        """Metrics logged with the step (every rank calls it, on the whole model)."""
        return {}

    def micro_rows(self) -> int | None:
        """Sequences per forward/backward of the training pass (None: the whole step)."""
        return self.settings.micro_batch

    def autocast(self, engine: Engine):
        """The context the policy's scoring passes run in (e.g. bf16 autocast)."""
        return contextlib.nullcontext()

    def after_optimizer_step(self, engine: Engine) -> None:
        """After every optimizer step (e.g. the EMA teacher's update)."""

    def after_update(self, engine: Engine) -> None:
        """After the step's last epoch (e.g. syncing an external sampler's weights)."""

    def extra_models(self) -> dict:
        """Models saved beside the policy in each checkpoint (name -> object with ``save_pretrained(path)``)."""
        return {}

    def summary(self) -> dict:
        """Entries the recipe adds to the run's summary."""
        return {}

    def state_dict(self) -> dict:
        """The recipe's own resumable state (counters, data position), saved in every checkpoint (JSON values)."""
        return {}

    def load_state_dict(self, state: dict, ckpt: Path) -> None:
        """Restore the recipe from a checkpoint (``ckpt`` holds :meth:`extra_models`' weights)."""


def prepare_model(model, settings: EngineSettings):
    """The model a recipe trains: ``model`` itself, or with ``lora_rank`` set, ``model`` wrapped in LoRA adapters.

    Trainers call it before building their recipe, so that the recipe and the engine hold the same
    (wrapped) model. Wrapping injects the adapters into ``model`` in place: a caller's reference to
    ``model`` computes with them too.
    """
    if settings.lora_rank is None or adapters.is_adapted(model):
        return model
    return adapters.add_lora(
        model,
        settings.lora_rank,
        settings.lora_alpha,
        settings.lora_dropout,
        settings.lora_target_modules,
        seed=settings.seed,
    )


class Engine:
    """Trains ``model`` with ``recipe`` into ``run_dir`` (see the module docstring)."""

    def __init__(self, model, tokenizer, recipe: Recipe, run_dir: str | Path):
        self.model, self.tokenizer, self.recipe = model, tokenizer, recipe
        self.cfg = recipe.settings
        self.run_dir = Path(run_dir)
        self.device = next(model.parameters()).device
        if self.cfg.lora_rank is not None and not adapters.is_adapted(model):
            raise PonderError("lora_rank is set but the model has no adapters: pass it through prepare_model first")
        self.rank, self.world = distributed.init_from_env()
        if self.cfg.gradient_checkpointing and not hf_compat.enable_activation_checkpointing(model):
            raise PonderError(f"{type(model).__name__} has no activation checkpointing: drop --gradient-checkpointing")
        self.sharded = None  # the FSDP2 units (ponder.train.sharding) in fsdp mode on more than one rank
        if self.world > 1 and distributed.parallel_mode(self.cfg.data_parallel) == "fsdp":
            if adapters.is_adapted(model):
                # Not built: the EMA adapter lives inside the policy's unit. Adapters are small: DDP replicates them cheaply.
                raise PonderError("LoRA adapters are not sharded: use --data-parallel ddp with --lora-rank")
            self.sharded = self.run = sharding.ShardedRun(model, self.world)
        else:
            self.run = distributed.wrap(model, self.world)  # run(fn) = fn(model), through DDP when data-parallel
        self.optimizer, self.scheduler = recipe.optimizer(model)
        if self.sharded is not None:
            self.sharded.gather()  # outside train() the model is an ordinary full model on every rank
        self.step = 0
        # Identical on every rank. steps_trained: steps in which at least one optimizer step changed the weights;
        # while it is 0 the weights are the input model's, and no checkpoint or final model is written.
        self.counters = {"skipped_nonfinite": 0, "skipped_no_work": 0, "steps_trained": 0}
        self._stepped = False  # an optimizer step was taken in the current training step
        self.saved_totals: dict[str, float] = {}  # recipe counters summed over ranks, as of the resumed checkpoint
        self.work_per_rank: list[float] = []
        self.last_metrics: dict = {}  # the metrics of the last step trained by train()

    # ------------------------------------------------------------------ temperatures
    @property
    def inv_temperature(self) -> float:
        """The policy's inverse temperature for log-probs of actions (1 when ``logprob_temperature`` is ``one``)."""
        return 1.0 / self.recipe.temperature if self.cfg.logprob_temperature == "sampling" else 1.0

    @property
    def sampler_logprob_temperature(self) -> float | None:
        """What the sampler passes as ``logprob_temperature`` (None: its sampling temperature)."""
        return None if self.cfg.logprob_temperature == "sampling" else 1.0

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict:
        """Run one optimizer step of the recipe (its batch, every PPO epoch and micro-batch); returns its metrics."""
        with self.sharded.step() if self.sharded is not None else contextlib.nullcontext():
            return self._train_step()

    def _train_step(self) -> dict:
        t0 = time.time()
        before = dict(self.recipe.counters)
        self._stepped = False
        sb = self.recipe.make_step(self)
        self._adopt_extras()
        self.step += 1
        metrics = dict(sb.metrics) if sb is not None else {}
        if self.world > 1:  # what is logged is the step's, not rank 0's share of it (a collective: every rank is here)
            work = self.recipe.counters.get(self.recipe.work_name, 0) - before.get(self.recipe.work_name, 0)
            gathered = distributed.all_gather_objects((work, metrics), self.world)
            metrics = distributed.mean_over_ranks(
                [m for _, m in gathered], [w for w, _ in gathered], summed=self.recipe.summed_metrics
            )
        finite = sb is None or bool(torch.isfinite(sb.advantages).all())
        if distributed.all_sum([float(not finite)], self.world, self.device)[0] > 0:
            self.counters["skipped_nonfinite"] += 1  # never averaged in: the whole step is dropped and counted
            self.optimizer.zero_grad(set_to_none=True)
            return {**self._counter_metrics(before), **metrics, "skipped": 1}
        local = 0 if sb is None else sb.num_sequences
        if distributed.all_sum([local], self.world, self.device)[0] == 0:
            self.counters["skipped_no_work"] += 1
            return {**self._counter_metrics(before), **metrics, "skipped": 1}
        self.recipe.counters["trained_sequences"] = self.recipe.counters.get("trained_sequences", 0) + local
        if local == 0:
            sb = None
        stats = self._idle_update() if sb is None else self._update(sb)
        self.counters["steps_trained"] += int(self._stepped)
        self.recipe.after_update(self)
        elapsed = time.time() - t0
        metrics.update(stats)
        # This rank's counts first: a recipe metric of the same name (GRPO's groups_trained) is the step's, over ranks.
        return {
            **self._counter_metrics(before),
            **metrics,
            "lr": self.scheduler.get_last_lr()[0],
            "step_seconds": elapsed,
            f"{self.recipe.work_name}_per_s": local / elapsed,
        }

    def _counter_metrics(self, before: dict) -> dict:
        """This step's counts under their own names, running totals (this rank, resumed totals included) as ``*_total``."""
        out = {f"{k}_total": v for k, v in self.counters.items()}
        for k, v in self.recipe.counters.items():
            out[k] = v - before.get(k, 0)
            out[f"{k}_total"] = v + self.saved_totals.get(k, 0)
        return out

    def global_counts(self, sb: StepBatch | None) -> dict[str, float]:
        """Each unit's count over the whole step, every rank's share (one all-reduce; a collective)."""
        local = dict.fromkeys(UNITS, 0.0) if sb is None else sb.unit_counts()
        return dict(zip(UNITS, distributed.all_sum([local[u] for u in UNITS], self.world, self.device)))

    def _weighted(self, terms: list[Term], counts: dict[str, float]) -> Tensor:
        """``sum over terms of total / count[unit]``: this part's share of the step's loss (0 for an empty unit)."""
        loss = None
        for term in terms:
            value = term.total / counts[term.unit] if counts[term.unit] > 0 else term.total * 0
            loss = value if loss is None else loss + value
        return loss

    def _update(self, sb: StepBatch) -> dict:
        """PPO epochs over the step; each epoch accumulates the gradients of the step's micro-batches, then steps once."""
        if self.recipe.update == "terms":
            return self._terms_update(sb)
        cfg = self.cfg
        counts = self.global_counts(sb)
        parts = split_step(sb, self.recipe.micro_rows())
        if cfg.gradient_checkpointing:
            self.model.train()  # transformers checkpoints layers in training mode only
        logp_old: list[Tensor] = [p.batch.behaviour_logp for p in parts]
        weights: list[Tensor | None] = [None] * len(parts)
        stats: dict = {"micro_batches": len(parts)}
        for epoch in range(cfg.ppo_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            total, surrogates, extras, first = None, WeightedMeans(), WeightedMeans(), WeightedMeans()
            for i, part in enumerate(parts):
                mask = part.batch.loss_mask
                tokens = float(mask.sum())
                with self._sync(last=i == len(parts) - 1):
                    if epoch == 0 and part.first is not None:
                        logp, entropy = part.first
                    else:
                        with self.recipe.autocast(self):
                            logp, entropy = self.run(lambda m, b=part.batch: b.scores(m, self.inv_temperature))
                    if epoch == 0:
                        first.add(mismatch_stats(part.batch.behaviour_logp, logp.detach(), mask), tokens)
                        first.add({"policy_entropy": masked_mean(entropy.detach(), mask)}, tokens)
                        if cfg.tis_cap is not None:
                            logp_old[i] = logp.detach()
                            weights[i] = tis_weights(logp_old[i], part.batch.behaviour_logp, mask, cfg.tis_cap)
                            first.add({"tis_weight_mean": masked_mean(weights[i], mask)}, tokens)
                    surrogate_total, surrogate = clipped_surrogate(
                        logp,
                        logp_old[i],
                        part.advantages.to(self.device),
                        mask,
                        cfg.eps_low,
                        cfg.eps_high,
                        reduce=part.reduce,
                        max_len=part.max_len,
                        token_weights=weights[i],
                        reduction="sum",
                    )
                    extra, extra_stats = self.recipe.extra_loss(self, logp, part)
                    terms = [Term("surrogate", surrogate_total, SURROGATE_UNIT[part.reduce]), *extra]
                    loss = self._weighted(terms, counts)
                    (loss * self.world).backward()  # the gradient average over ranks divides by world
                total = loss.detach() if total is None else total + loss.detach()
                surrogates.add({k: surrogate[k] for k in ("clip_fraction", "ratio_mean", "approx_kl")}, tokens)
                extras.add(extra_stats, part.sequence_share)
            stepped, grad_norm = self._step(total)
            surrogate_means = surrogates.means()
            if epoch == 0:
                stats.update(first.means())
                stats["ratio_mean_first_epoch"] = surrogate_means["ratio_mean"]
                stats["clip_fraction_first_epoch"] = surrogate_means["clip_fraction"]
            # This rank's part of the step's loss, times world: the whole loss in one process, its estimate on a rank.
            stats.update(
                {"loss": float(total) * self.world, "grad_norm": grad_norm, **surrogate_means, **extras.means()}
            )
            if not stepped:  # the rest of the epochs would only repeat the non-finite step
                stats["skipped"] = 1
                break
            self._after_optimizer_step()
        return stats

    def _terms_update(self, sb: StepBatch) -> dict:
        """One optimizer step on the recipe's own terms, accumulated over the step's micro-batches.

        Each term of each part is divided by its unit's count over the whole step (every rank), as
        in the surrogate update; the logged ``loss`` is summed over ranks: the whole step's loss.
        """
        counts = self.global_counts(sb)
        parts = split_step(sb, self.recipe.micro_rows())
        if self.cfg.gradient_checkpointing:
            self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total, stats = None, WeightedMeans()
        for i, part in enumerate(parts):
            with self._sync(last=i == len(parts) - 1):
                terms, part_stats = self.recipe.loss_terms(self, part)
                loss = self._weighted(terms, counts)
                (loss * self.world).backward()  # the gradient average over ranks divides by world
            total = loss.detach() if total is None else total + loss.detach()
            stats.add(part_stats, part.sequence_share)
        stepped, grad_norm = self._step(total)
        whole = distributed.all_sum([float(total)], self.world, self.device)[0]
        out = {"loss": whole, "grad_norm": grad_norm, "micro_batches": len(parts), **stats.means()}
        if stepped:
            self._after_optimizer_step()
        else:
            out["skipped"] = 1
        return out

    def _sync(self, last: bool):
        """Data-parallel: gradients are all-reduced (reduce-scattered) in the backward of a step's last micro-batch only."""
        if self.sharded is not None:
            return self.sharded.accumulating(last)
        if self.world > 1 and not last:
            return self.run.no_sync()
        return contextlib.nullcontext()

    def _after_optimizer_step(self) -> None:
        """The recipe's hook (the EMA update), on the extra models' local shards when sharded."""
        with self.sharded.extras_at_rest() if self.sharded is not None else contextlib.nullcontext():
            self.recipe.after_optimizer_step(self)

    def _adopt_extras(self) -> None:
        """Shard the extra models a recipe created (the EMA teacher on its first step or on resume)."""
        if self.sharded is not None:
            self.sharded.adopt(self.recipe.extra_models())

    def _idle_update(self) -> dict:
        """A rank without work while others train: a zero loss through the DDP model, so its collectives pair up."""
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((1, 2), pad, dtype=torch.long, device=self.device)
        self.global_counts(None)  # pairs with the other ranks' count all-reduce
        for _ in range(getattr(self.cfg, "ppo_epochs", 1)):
            out = self.run(lambda m: m(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits)
            stepped = self._optimizer_step(out.float().sum() * 0)[0]
            if self.recipe.update == "terms":
                distributed.all_sum([0.0], self.world, self.device)  # pairs with the loss's sum over ranks
            if not stepped:
                break  # another rank's step was not finite: skip with it
            self._after_optimizer_step()
        return {"idle_rank": 1}

    def _optimizer_step(self, loss: Tensor) -> tuple[bool, float]:
        """Backward, then step unless the loss or the gradient norm is non-finite on any rank (skipped and counted).

        :func:`~ponder.train.guard.step_if_finite` decides with every rank (DDP has averaged the
        gradients, so a NaN on one rank is a NaN everywhere); a skipped step leaves the weights, the
        optimizer state and the schedule untouched.
        """
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return self._step(loss)

    def _step(self, loss: Tensor) -> tuple[bool, float]:
        """Step on the gradients already accumulated, unless ``loss`` or the gradient norm is non-finite (counted)."""
        outcome = step_if_finite(loss, self.model.parameters(), self.optimizer, self.scheduler, self.cfg.grad_clip)
        if not outcome.stepped:
            self.counters["skipped_nonfinite"] += 1
        self._stepped |= outcome.stepped
        return outcome.stepped, outcome.grad_norm

    @property
    def _save_merged(self) -> bool:
        return self.cfg.lora_save_merged and adapters.is_adapted(self.model)

    # ------------------------------------------------------------------ counters
    def totals(self) -> dict:
        """Recipe counters summed over ranks (a collective: every rank calls it), including resumed totals."""
        names = sorted(set(self.recipe.counters) | set(self.saved_totals))
        sums = distributed.all_sum([float(self.recipe.counters.get(k, 0)) for k in names], self.world, self.device)
        out = {k: s + self.saved_totals.get(k, 0) for k, s in zip(names, sums)}
        return {k: int(v) if float(v).is_integer() else v for k, v in out.items()}

    def work_by_rank(self) -> list[float]:
        """This run's units of work per rank (a collective)."""
        mine = [0.0] * self.world
        mine[self.rank] = float(self.recipe.counters.get(self.recipe.work_name, 0))
        return [int(x) for x in distributed.all_sum(mine, self.world, self.device)]

    # ------------------------------------------------------------------ state
    @property
    def trained_nothing(self) -> bool:
        """No step has changed the weights yet (every step's groups set aside, or every update non-finite)."""
        return self.counters["steps_trained"] == 0

    def save(self) -> Path | None:
        """Every rank takes part (counters are summed, sharded weights gathered); rank 0 writes; every rank waits for it.

        Nothing is written while no step has trained: the weights are still the input model's, so a
        checkpoint would only copy it (1.6 GB for SmolLM2-135M); a resumed run then starts from step 0.
        """
        if self.trained_nothing:
            return None
        model, extras, optimizer = self.model, self.recipe.extra_models(), None
        if self.sharded is not None:
            model = self.sharded.full_weights(self.model)
            extras = {name: self.sharded.full_weights(m) for name, m in extras.items()}
            optimizer = self.sharded.optimizer_state(self.optimizer)
        state = {
            "optimizer": self.optimizer.state_dict() if optimizer is None else optimizer,
            "scheduler": self.scheduler.state_dict(),
            "counters": dict(self.counters),
            "totals": self.totals(),
            "world_size": self.world,
            "work_per_rank": self.work_by_rank(),
            "recipe": self.recipe.state_dict(),
        }
        path = None
        if self.rank == 0:
            path = save_checkpoint(
                self.run_dir,
                self.step,
                model,
                self.tokenizer,
                state,
                extra_models=extras,
                keep_last=self.cfg.keep_checkpoints,
            )
        distributed.barrier(self.world)
        return path

    def resume(self) -> bool:
        """Restore the newest checkpoint of the run directory (weights, optimizer, schedule, recipe state);
        False when there is none."""
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            return False
        sharded = self.sharded is not None
        state = restore_checkpoint(
            ckpt,
            self.model,
            self.optimizer,
            self.scheduler,
            load_weights=self.sharded.load_weights if sharded else load_weights_into,
            load_optimizer=lambda opt, saved: sharding.load_optimizer_state(self.model, opt, saved, sharded),
        )
        if not isinstance(state.get("counters"), dict) or not isinstance(state.get("recipe"), dict):
            raise CheckpointError(
                f"{ckpt} was written by another trainer (the next-token loop of an older ponder); "
                "rerun with --no-resume to start over"
            )
        # A checkpoint is only written once a step has trained; older ones lack the count: take every step as trained.
        self.step, self.counters = state["step"], {"steps_trained": state["step"], **state["counters"]}
        # Totals are global: rank 0 carries them on, the others start from zero so sums stay right.
        self.saved_totals = dict(state["totals"]) if self.rank == 0 else {}
        self.recipe.counters = {}
        if state.get("world_size") == self.world:
            self.work_per_rank = list(state["work_per_rank"])
        with self.sharded.step() if sharded else contextlib.nullcontext():  # extra models load as full copies
            self.recipe.load_state_dict(state["recipe"], ckpt)
            self._adopt_extras()
        return True

    # ------------------------------------------------------------------ loop
    def train(self, resume: bool = False, progress: bool = True) -> dict:
        """Run to ``settings.steps``; the last step is always logged, and checkpointed in a run of at least
        ``save_every`` steps (a shorter run writes only ``final/``: no optimizer state unless asked). Returns the summary.

        A run in which no step trained (``summary["trained_nothing"]``) writes no checkpoint and no final model.
        """
        if self.sharded is not None:
            self.sharded.release()
        resumed = self.resume() if resume else False
        if self.rank == 0:
            begin_run(self.run_dir, self.step if resumed else None)  # loaded: now the run directory may change
        progress = progress and self.rank == 0
        resume_step = self.step if resumed else None
        logger = MetricsLogger(self.run_dir, resume_step, **self.cfg.tracking()) if self.rank == 0 else None
        start, cfg, label = time.time(), self.cfg, self.recipe.description or f"ponder {self.recipe.name}"
        with make_progress(progress) as bar:
            task = bar.add_task(label, total=cfg.steps, completed=self.step)
            while self.step < cfg.steps:
                metrics = self.train_step()
                last = self.step == cfg.steps
                if self.recipe.eval_due(self.step, last):
                    with self.sharded.step() if self.sharded is not None else contextlib.nullcontext():
                        metrics.update(self.recipe.evaluate(self))
                self.last_metrics = metrics
                if logger is not None and (self.step % cfg.log_every == 0 or last):
                    logger.log(self.step, metrics)
                shown = self.recipe.progress_metric
                value = metrics.get(shown, math.nan)
                bar.update(task, completed=self.step, description=f"{label} {shown.removesuffix('_mean')}={value:+.3f}")
                if self.step % cfg.save_every == 0 or (last and self.step >= cfg.save_every):
                    self.save()  # a run shorter than save_every: no optimizer state written, final/ only
        seconds = time.time() - start
        if logger is not None:
            logger.close()
        self.model.eval()
        this_run = self.work_by_rank()
        work = [a + b for a, b in zip(self.work_per_rank, this_run)] if self.work_per_rank else this_run
        summary = {
            "steps": self.step,
            "seconds": seconds,
            "world_size": self.world,
            "data_parallel": "fsdp" if self.sharded is not None else "ddp" if self.world > 1 else "none",
            f"{self.recipe.work_name}_per_rank": work,
            **self.counters,
            **self.totals(),
            **self.recipe.summary(),
            "trained_nothing": self.trained_nothing,
        }
        final = self.model if self.sharded is None else self.sharded.full_weights(self.model)
        if self.rank == 0 and not self.trained_nothing:  # else the input model, unchanged: nothing worth writing
            merged = {"merged": adapters.MergedModel(self.model, self.tokenizer)} if self._save_merged else None
            save_final(self.run_dir, final, self.tokenizer, extra_models=merged)
        if self.sharded is not None:
            self.sharded.gather()  # the trained model, whole on every rank, for whatever the caller does next
        distributed.barrier(self.world)
        return summary


def mismatch_stats(behaviour: Tensor, trainer: Tensor, mask: Tensor) -> dict:
    """Sampler vs trainer log-probs of the actions ``[N, L]``: mean absolute difference and k3 KL(sampler || trainer)."""
    d = (trainer.float() - behaviour.float()).masked_fill(~mask.bool(), 0.0)
    k3 = torch.expm1(d) - d  # (r - 1) - log r with r = p_trainer / p_sampler, >= 0
    return {"logp_mismatch_abs": float(masked_mean(d.abs(), mask)), "logp_mismatch_kl": float(masked_mean(k3, mask))}


def tis_weights(trainer: Tensor, behaviour: Tensor, mask: Tensor, cap: float) -> Tensor:
    """Truncated importance weights ``min(exp(logp_trainer - logp_sampler), cap)`` ``[N, L]`` (1 off the mask)."""
    d = (trainer.float() - behaviour.float()).masked_fill(~mask.bool(), 0.0)
    return torch.exp(d).clamp(max=cap).detach()

"""RLP: reinforcement as a pretraining objective (Hatamizadeh et al., arXiv 2510.01265).

At positions of ordinary text the model samples G thoughts; each is rewarded by the
information gain it brings to the next token against an EMA no-think baseline,

    r(c) = log p_theta(x_t | x_<t, c) - log p_EMA(x_t | x_<t),

and the thought tokens are trained with a clipped surrogate on the group advantage
A_i = G/(G-1) (r_i - mean r). No next-token loss (optional here, off by default), no KL
(optional, off by default). The EMA teacher is copied from the model on the first batch and
updated after every optimizer step with tau.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import ConfigDict, Field, field_validator

from ponder.lm.score import pad_id_of, pad_ids, token_logprobs
from ponder.rl import distributed
from ponder.rl.advantages import group_advantages, rlp_reward, valid_groups
from ponder.rl.compute import RLPCompute, model_size, rollout_compute
from ponder.rl.ema import EMATeacher
from ponder.rl.loop import run_steps
from ponder.rl.losses import clipped_surrogate, kl_penalty, masked_mean, next_token_loss
from ponder.rl.rollout import (
    ANSWER,
    OTHER,
    Rollout,
    keyed_generators,
    make_rollout,
    resolve_layout,
    target_logprob_sums,
    tokenize_docs,
)
from ponder.train.checkpoint import (
    latest_checkpoint,
    load_weights_into,
    restore_checkpoint,
    save_checkpoint,
    save_pretrained_atomic,
)
from ponder.train.metrics import MetricsLogger
from ponder.train.optim import PolicyUpdateSettings, adamw_constant_after_warmup


class RLPConfig(PolicyUpdateSettings):
    """RLP settings. Defaults follow the paper where it states them (G, tau, eps, temperature, no KL)."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(100, ge=1, description="optimizer steps")
    docs_per_step: int = Field(16, ge=1, description="documents drawn per step")
    positions_per_doc: int = Field(1, ge=1, description="positions sampled in each document")
    group_size: int = Field(8, ge=2, description="thoughts per position (G)")
    context_length: int = Field(512, ge=2, description="prefix tokens kept before a position")
    max_thought_tokens: int = Field(64, description="thought budget; an unclosed thought is cut here and closed")
    temperature: float = Field(0.7, gt=0, description="thought sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling of thoughts")
    lr: float = Field(1e-6, gt=0, description="learning rate (AdamW, constant after warmup)")
    kl_coef: float = Field(0.0, ge=0, description="KL(policy || EMA) on thought tokens (paper: 0)")
    ema_tau: float = Field(0.999, ge=0, le=1, description="EMA teacher decay")
    position_weighting: Literal["uniform", "ema_loss", "ema_entropy", "think_prob"] = Field(
        "uniform",
        description="how positions are drawn: uniform, or in proportion to the EMA baseline's loss "
        "(ema_loss), predictive entropy (ema_entropy) or probability of opening a thought there (think_prob)",
    )
    reward_tokens: int = Field(1, ge=1, description="reward over the next k tokens (paper: 1)")
    next_token_weight: float = Field(0.0, ge=0, description="weight of a mixed-in next-token loss (paper: 0)")
    min_reward_spread: float = Field(
        1e-4, ge=0, description="groups whose rewards differ by at most this (nats) get zero advantage"
    )
    sample_batch_size: int | None = Field(None, ge=1, description="positions sampled together (memory bound)")
    batch_layout: Literal["auto", "tree", "padded"] = Field(
        "auto",
        description="policy forward: shared-prefix tree (auto when the attention takes a 4D mask) or padded rows",
    )
    autocast_bf16: bool = Field(False, description="sample and score under bf16 autocast (GPU); weights stay fp32")
    generation_backend: Literal["auto", "transformers", "vllm"] = Field(
        "auto", description="thought sampler: transformers, vllm (GPU, extra `vllm`), auto (vllm when usable)"
    )
    seed: int = Field(0, description="seed of positions and thought sampling")
    save_every: int = Field(50, ge=1, description="checkpoint every N steps (and at the end)")
    log_every: int = Field(1, ge=1, description="write metrics every N steps")

    @field_validator("max_thought_tokens")
    @classmethod
    def _budget(cls, v: int) -> int:
        if v < 1:
            raise ValueError("the thought budget must be at least 1 token: RLP needs a thought to reward")
        return v


def _class_mean(rewards_per_position: torch.Tensor, classes: list[str], cls: str) -> float:
    sel = [i for i, c in enumerate(classes) if c == cls]
    return float(rewards_per_position[sel].mean()) if sel else float("nan")


class RLPTrainer:
    """Runs RLP on ``model`` over documents from ``source`` (see :mod:`ponder.data.sources`)."""

    def __init__(self, model, tokenizer, source, cfg: RLPConfig, run_dir: str | Path):
        self.model, self.tokenizer, self.source, self.cfg = model, tokenizer, source, cfg
        self.run_dir = Path(run_dir)
        self.device = next(model.parameters()).device
        self.pad_id = pad_id_of(tokenizer)
        self.rank, self.world = distributed.init_from_env()
        self.run = distributed.wrap(model, self.world)  # run(fn) = fn(model), through DDP when data-parallel
        self.layout = resolve_layout(model, cfg.batch_layout)
        from ponder.rl.generation import make_backend

        self.backend = make_backend(cfg.generation_backend, model, tokenizer, cfg.sample_batch_size)
        self.optimizer, self.scheduler = adamw_constant_after_warmup(model, cfg.lr, cfg.weight_decay, cfg.warmup_steps)
        self.ema = EMATeacher(cfg.ema_tau)
        self.step = 0
        self.docs_consumed = 0
        self.model_size = model_size(model)
        self.counters = {
            "skipped_nonfinite": 0,
            "skipped_no_position": 0,
            "unclosed_thoughts": 0,
            "document_tokens": 0,  # tokens of the document windows this rank drew (the text consumed)
            **RLPCompute().counters(),  # the compute account (ponder.rl.compute), summed over ranks
        }

    # ------------------------------------------------------------------ state
    def _state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "docs_consumed": self.docs_consumed,
            "counters": dict(self.counters),
            "ema_updates": self.ema.num_updates,
            "ema_initialized": self.ema.initialized,
        }

    def save(self) -> Path | None:
        """Rank 0 writes the checkpoint (replicas are identical); every rank waits for it."""
        path = None
        if self.rank == 0:
            extra = {"ema": self.ema.model} if self.ema.initialized else {}
            path = save_checkpoint(
                self.run_dir, self.step, self.model, self.tokenizer, self._state(), extra_models=extra
            )
        distributed.barrier(self.world)
        return path

    def resume(self) -> bool:
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            return False
        state = restore_checkpoint(ckpt, self.model, self.optimizer, self.scheduler)  # sampling RNGs are keyed per step
        self.step, self.docs_consumed, self.counters = state["step"], state["docs_consumed"], state["counters"]
        if state["ema_initialized"]:
            self.ema.initialize(self.model)
            load_weights_into(self.ema.model, ckpt / "ema")
            self.ema.num_updates = state["ema_updates"]
        return True

    # ------------------------------------------------------------------ one step
    def _next_docs(self, stream):
        """This rank's documents of the step and one generator each, keyed by (seed, step, global index).

        Every rank reads the whole global batch from the stream and keeps every world-th window:
        a window's positions and thoughts depend only on its key, so any number of ranks sees
        the same rollouts as one process.
        """
        texts = [next(stream) for _ in range(self.cfg.docs_per_step)]
        self.docs_consumed += len(texts)
        docs = tokenize_docs(self.tokenizer, texts, self.cfg.context_length)
        keys = [self.step * 1_000_003 + i for i in range(len(docs))]
        mine = list(range(self.rank, len(docs), self.world))
        return [docs[i] for i in mine], keyed_generators(self.cfg.seed, [keys[i] for i in mine], self.device)

    def _loss(self, logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, rollout: Rollout):
        """Clipped surrogate on thought tokens, plus the optional KL and next-token terms (both off by default)."""
        cfg, batch = self.cfg, rollout.batch
        loss, stats = clipped_surrogate(
            logp, logp_old, advantages, batch.loss_mask, cfg.eps_low, cfg.eps_high, reduce="rlp"
        )
        if cfg.kl_coef > 0:
            with torch.no_grad():
                ref = batch.logprobs(self.ema.model)
            kl = kl_penalty(logp, ref, batch.loss_mask)
            loss = loss + cfg.kl_coef * kl
            stats["kl_to_ema"] = kl.detach()
        if cfg.next_token_weight > 0:
            ntp = self._next_token_term(rollout)
            loss = loss + cfg.next_token_weight * ntp
            stats["next_token_loss"] = ntp.detach()
        return loss, stats

    def train_step(self, stream) -> dict:
        cfg = self.cfg
        t0 = time.time()
        docs, generators = self._next_docs(stream)
        if not self.ema.initialized:
            self.ema.initialize(self.model)  # phi <- theta lazily on the first batch
        with self._autocast():
            rollout = (
                make_rollout(
                    self.model,
                    self.ema.model,
                    self.tokenizer,
                    docs,
                    cfg.positions_per_doc,
                    cfg.group_size,
                    cfg.reward_tokens,
                    cfg.max_thought_tokens,
                    cfg.temperature,
                    cfg.top_p,
                    generators,
                    cfg.position_weighting,
                    cfg.sample_batch_size,
                    self.layout,
                    self.backend,
                )
                if docs
                else None
            )
        self.step += 1
        # The compute account of every rank's rollouts, summed in one all-reduce (an idle rank adds zeros).
        account = rollout_compute(
            rollout,
            cfg.group_size,
            self.model_size,
            policy_epochs=cfg.ppo_epochs,
            next_token_pass=cfg.next_token_weight > 0,
            kl_pass=cfg.kl_coef > 0,
        ).counters()
        totals = dict(zip(account, distributed.all_sum(list(account.values()), self.world, self.device)))
        # The loss is a mean over the global batch's thoughts: ranks scale theirs by their share.
        global_pos = totals["positions"]
        if global_pos == 0:
            self.counters["skipped_no_position"] += 1
            return {"skipped": 1}
        for key, value in totals.items():
            self.counters[key] = self.counters.get(key, 0) + round(value)
        if rollout is None:  # this rank drew nothing but the others train: join their gradient all-reduce
            return self._idle_step()
        num_pos, group = len(rollout.positions), cfg.group_size
        share = num_pos * self.world / global_pos
        self.model.train()
        # One forward gives the reward's log p(x_t | x_<t, c) and the thought tokens' log-probs.
        batch = rollout.batch
        with self._autocast():
            logp, entropy = self.run(batch.logprobs, return_entropy=True)
        policy_target = target_logprob_sums(logp.detach(), batch.target_mask).view(num_pos, group).cpu()
        rewards = rlp_reward(policy_target, rollout.baseline_logp[:, None].expand(num_pos, group))
        thought_len = rollout.thoughts.lengths
        unclosed = int((~rollout.thoughts.closed).sum())
        self.counters["unclosed_thoughts"] += unclosed
        self.counters["document_tokens"] += sum(len(d.ids) for d in docs)
        metrics = {
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            "thought_tokens_mean": float(thought_len.mean()),
            "unclosed_fraction": unclosed / len(thought_len),
        }
        if distributed.all_sum([float(not torch.isfinite(rewards).all())], self.world, self.device)[0] > 0:
            # Never averaged in: the whole step is dropped and counted.
            self.counters["skipped_nonfinite"] += 1
            self.optimizer.zero_grad(set_to_none=True)
            return {**metrics, "skipped": 1, "skipped_nonfinite": self.counters["skipped_nonfinite"]}
        advantages = group_advantages(rewards, correction="rlp")
        # A group of (near-)identical rewards teaches nothing; left in, its float-noise advantages
        # still move Adam's normalized update. Zero them (counted).
        signal = valid_groups(rewards, min_spread=cfg.min_reward_spread)
        advantages = (advantages * signal[:, None]).flatten().to(self.device)
        logp_old = logp.detach()
        for epoch in range(cfg.ppo_epochs):
            if epoch > 0:  # later epochs re-score the same rollout with the updated policy
                with self._autocast():
                    logp, entropy = self.run(batch.logprobs, return_entropy=True)
            loss, stats = self._loss(logp, logp_old, advantages, rollout)
            self.optimizer.zero_grad(set_to_none=True)
            (loss * share).backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.ema.update(self.model)
        self.backend.sync_weights(self.model)
        per_position = rewards.mean(1)
        elapsed = time.time() - t0
        metrics.update(
            {
                "loss": float(loss.detach()),
                "grad_norm": float(grad_norm),
                "lr": self.scheduler.get_last_lr()[0],
                "info_gain_answer": _class_mean(per_position, rollout.classes, ANSWER),
                "info_gain_other": _class_mean(per_position, rollout.classes, OTHER),
                "signal_group_fraction": float(signal.float().mean()),
                "clip_fraction": float(stats["clip_fraction"]),
                "ratio_mean": float(stats["ratio_mean"]),
                "approx_kl": float(stats["approx_kl"]),
                "policy_entropy": float(masked_mean(entropy.detach(), batch.loss_mask)),
                "ema_param_distance": self._ema_distance(),
                "positions_per_s": num_pos / elapsed,
                "thought_tokens_per_s": float(thought_len.sum()) / elapsed,
                **{k: float(v) for k, v in stats.items() if k in ("kl_to_ema", "next_token_loss")},
                **{k: v for k, v in self.counters.items()},
            }
        )
        return metrics

    def _autocast(self):
        """bf16 autocast on the model's device when ``autocast_bf16`` (log-probs are upcast to fp32 anyway)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.autocast_bf16)

    def _idle_step(self) -> dict:
        """A rank without positions: a zero loss through the DDP model, so its gradient all-reduces pair up."""
        if distributed.all_sum([0.0], self.world, self.device)[0] > 0:  # pairs with the non-finite vote
            self.optimizer.zero_grad(set_to_none=True)
            return {"skipped": 1}
        for _ in range(self.cfg.ppo_epochs):
            ids = torch.full((1, 2), self.pad_id, dtype=torch.long, device=self.device)
            out = self.run(
                lambda m, ids=ids: m(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
            )
            self.optimizer.zero_grad(set_to_none=True)
            (out.float().sum() * 0).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.ema.update(self.model)
        self.backend.sync_weights(self.model)
        return {"idle_rank": 1}

    def _next_token_term(self, rollout: Rollout) -> torch.Tensor:
        docs = [p + t for p, t in zip(rollout.prefixes, rollout.targets)]
        ids, mask = pad_ids(docs, self.pad_id, self.device)
        # The unwrapped model: a second DDP forward before one backward is not allowed; autograd sums
        # both paths' gradients before DDP's per-parameter hooks fire, so this term is all-reduced too.
        return next_token_loss(token_logprobs(self.model, ids, mask), mask.bool())

    @torch.no_grad()
    def _ema_distance(self) -> float:
        """||theta - phi|| / ||phi||: how far the policy has moved from its no-think baseline."""
        num = den = 0.0
        for p, q in zip(self.model.parameters(), self.ema.parameters()):
            num += float((p.float() - q.float()).pow(2).sum())
            den += float(q.float().pow(2).sum())
        return math.sqrt(num / max(den, 1e-30))

    # ------------------------------------------------------------------ loop
    def train(self, resume: bool = False, progress: bool = True) -> dict:
        resumed = self.resume() if resume else False
        progress = progress and self.rank == 0
        logger = MetricsLogger(self.run_dir, resume_step=self.step if resumed else None) if self.rank == 0 else None
        stream = self.source.stream()
        for _ in range(self.docs_consumed):
            next(stream)
        seconds = run_steps(self, "rlp", lambda: self.train_step(stream), logger, progress)
        if logger is not None:
            logger.close()
        self.model.eval()
        if self.rank == 0:
            save_pretrained_atomic(self.run_dir / "final", self.model, self.tokenizer)
        distributed.barrier(self.world)
        return {"steps": self.step, "seconds": seconds, **self.counters}

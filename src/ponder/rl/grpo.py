"""GRPO on task prompts with any weighted mix of :mod:`ponder.rewards`, and TTRL (test-time RL).

Each step draws ``B`` prompts from a :class:`~ponder.rl.prompts.PromptPool`, samples ``G``
think-then-answer completions per prompt (``prompt <think> thought </think> answer``, the thought
cut and closed at the budget), scores them with the reward mix, and trains the thought *and*
answer tokens with the clipped surrogate on group advantages (the RLP engine:
:func:`~ponder.rl.advantages.group_advantages`, :func:`~ponder.rl.losses.clipped_surrogate`,
optional KL to the initial model or an EMA of the policy).

Filters, on by default, logged every step:

* equal-reward groups (every advantage 0) are dropped from the batch: they carry no signal and
  would only dilute the mean;
* overly hard prompts (pass rate 0 over the G samples, judged by the task's labels, so only when
  the reward mix uses labels) are not trained on and are set aside to the next epoch.

Bad input: a completion without an extractable answer gets ``no_answer_reward`` in place of its
mixed reward (counted); a non-finite reward skips the whole step (counted); G < 2 is rejected.

TTRL (:class:`TTRLTrainer`) samples ``n`` votes per prompt, rewards each by agreement with the
group's majority answer (no labels), and trains on ``m`` of them drawn at random; labels, when
the problems have them, are used only to log how good the pseudo-labels are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import ConfigDict, Field, field_validator, model_validator

from ponder.data.task import Problem, Task
from ponder.lm.generate import drop_stop
from ponder.lm.score import model_device, pad_id_of, pad_ids, token_logprobs
from ponder.lm.thoughts import think_ban_ids, think_token_ids
from ponder.rl.advantages import group_advantages
from ponder.rl.ema import EMATeacher
from ponder.rl.formats import format_shares
from ponder.rl.loop import run_steps
from ponder.rl.losses import clipped_surrogate, kl_penalty, masked_mean
from ponder.rl.prompts import PromptPool
from ponder.train.checkpoint import (
    latest_checkpoint,
    load_weights_into,
    restore_checkpoint,
    save_checkpoint,
    save_pretrained_atomic,
)
from ponder.train.metrics import MetricsLogger
from ponder.train.optim import PolicyUpdateSettings, adamw_constant_after_warmup

#: Rewards that read the reference answers: with one of them the hard-prompt filter may use labels too.
LABEL_REWARDS = frozenset({"verifiable", "answer_likelihood"})


def parse_reward_spec(spec: str) -> dict[str, float]:
    """``"verifiable=1,format=0.1"`` -> ``{"verifiable": 1.0, "format": 0.1}`` (a bare name weighs 1).

    Raises ``ValueError`` naming the known rewards for an unknown name or a bad weight.
    """
    from ponder.rewards import REWARDS

    weights: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, w = part.partition("=")
        name = name.strip()
        if name not in REWARDS:
            raise ValueError(f"unknown reward {name!r}; known rewards: {', '.join(sorted(REWARDS))}")
        try:
            weights[name] = float(w) if w.strip() else 1.0
        except ValueError:
            raise ValueError(f"reward weight {w!r} of {name!r} is not a number") from None
    if not weights:
        raise ValueError(
            "the reward spec names no reward (e.g. --reward verifiable or --reward 'verifiable=1,format=0.1')"
        )
    return weights


class GRPOConfig(PolicyUpdateSettings):
    """GRPO settings (a GRPO / Dr.GRPO family member chosen by ``scale`` and ``loss_reduce``)."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(40, ge=1, description="optimizer steps")
    prompts_per_step: int = Field(16, ge=1, description="prompts drawn per step (B)")
    group_size: int = Field(8, description="completions sampled per prompt (G >= 2)")
    pool_size: int = Field(256, ge=1, description="distinct prompts visited in epochs")
    split: Literal["train", "test"] = Field("train", description="task split the prompts come from")
    reward: str = Field(
        "verifiable",
        description="reward mix, e.g. verifiable or 'verifiable=1,format=0.1' (names: ponder.rewards.REWARDS)",
    )
    no_answer_reward: float = Field(
        0.0, description="reward of a completion with no extractable answer (replaces the mix)"
    )
    length_target: int | None = Field(
        None, ge=1, description="target thought tokens of the length reward (default: the thought budget)"
    )
    max_thought_tokens: int = Field(64, ge=1, description="thought budget; an unclosed thought is cut here and closed")
    max_answer_tokens: int = Field(16, ge=1, description="answer budget")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of thoughts and answers")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling")
    lr: float = Field(3e-5, gt=0, description="learning rate (AdamW, constant after warmup)")
    scale: Literal["std", "none"] = Field("std", description="advantage scale: std (GRPO) or none (Dr.GRPO)")
    loss_reduce: Literal["rlp", "token"] = Field(
        "rlp", description="rlp: mean over completions of per-token means (GRPO); token: over all tokens (DAPO)"
    )
    kl_coef: float = Field(0.0, ge=0, description="KL(policy || reference) on completion tokens (0: off)")
    kl_ref: Literal["initial", "ema"] = Field(
        "initial", description="KL reference: the initial model or an EMA of the policy"
    )
    ema_tau: float = Field(0.99, ge=0, le=1, description="EMA decay when --kl-ref ema")
    filter_equal: bool = Field(True, description="drop groups whose rewards are all equal (no signal)")
    filter_hard: bool = Field(
        True, description="set aside prompts with pass rate 0 over the group (needs a label-using reward)"
    )
    sample_batch_size: int | None = Field(None, ge=1, description="prompts sampled and scored together (memory bound)")
    seed: int = Field(0, description="seed of the prompt pool, sampling and subsampling")
    save_every: int = Field(50, ge=1, description="checkpoint every N steps (and at the end)")
    log_every: int = Field(1, ge=1, description="write metrics every N steps")

    @field_validator("group_size")
    @classmethod
    def _group(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"group methods need G >= 2 (got {v}): a lone sample has no group baseline")
        return v

    @field_validator("reward")
    @classmethod
    def _reward(cls, v: str) -> str:
        parse_reward_spec(v)
        return v

    @model_validator(mode="after")
    def _pool(self):
        if self.pool_size < self.prompts_per_step:
            raise ValueError(
                f"pool_size ({self.pool_size}) must be at least prompts_per_step ({self.prompts_per_step})"
            )
        return self


class TTRLConfig(GRPOConfig):
    """TTRL: ``group_size`` = n votes per prompt, ``train_samples`` = m of them trained on."""

    split: Literal["train", "test"] = Field("test", description="task split the (unlabeled) prompts come from")
    reward: str = Field("majority_vote", description="reward mix; TTRL's is majority_vote (labels never reach it)")
    train_samples: int | None = Field(None, description="m: votes trained on per prompt (default: all n)")
    filter_hard: bool = Field(False, description="unused: TTRL has no labels to judge a pass rate")

    @model_validator(mode="after")
    def _subset(self):
        m = self.group_size if self.train_samples is None else self.train_samples
        if not 2 <= m <= self.group_size:
            raise ValueError(
                f"train_samples must be in [2, group_size={self.group_size}] (got {m}): group methods need G >= 2"
            )
        if LABEL_REWARDS & set(parse_reward_spec(self.reward)):
            raise ValueError(f"TTRL trains without labels: the reward mix cannot use {sorted(LABEL_REWARDS)}")
        return self


@dataclass
class GroupRollout:
    """``N = B * G`` completions (rows ``b*G .. b*G+G-1`` answer prompt ``b``), token ids kept."""

    prompt_ids: list[list[int]]  # B
    thought_ids: list[list[int]]  # N, without delimiters
    closed: torch.Tensor  # [N] bool: the model closed its thought itself
    answer_ids: list[list[int]]  # N, as sampled (stop string or EOS included)
    texts: list[str]  # N: "<think>thought</think>answer", the answer without its stop string

    @property
    def thought_tokens(self) -> torch.Tensor:
        return torch.tensor([len(t) for t in self.thought_ids], dtype=torch.float32)


def sample_group_rollout(
    model,
    tokenizer,
    prompts: list[str],
    group_size: int,
    max_thought_tokens: int,
    max_answer_tokens: int,
    temperature: float,
    top_p: float,
    generator: torch.Generator,
    answer_stop: tuple[str, ...] = ("\n",),
    batch_size: int | None = None,
) -> GroupRollout:
    """Sample G thoughts after each ``prompt <think>``, then one answer after each closed thought."""
    from ponder.lm.sample import sample
    from ponder.rl.rollout import sample_thoughts

    open_id, close_id = think_token_ids(tokenizer)
    prompt_ids = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    thoughts = sample_thoughts(
        model, tokenizer, prompt_ids, group_size, max_thought_tokens, temperature, top_p, generator, batch_size
    )
    contexts = [prompt_ids[n // group_size] + [open_id] + ids + [close_id] for n, ids in enumerate(thoughts.ids)]
    was_training = model.training
    model.eval()
    answer = sample(
        model,
        tokenizer,
        contexts,
        n=1,
        max_new_tokens=max_answer_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=answer_stop,
        ban_token_ids=think_ban_ids(tokenizer),
        generator=generator,
        batch_size=None if batch_size is None else batch_size * group_size,
    )
    model.train(was_training)
    answer_ids = [row[mask].tolist() for row, mask in zip(answer.tokens.cpu(), answer.mask.cpu())]
    answers = drop_stop(answer.texts, answer_stop)
    texts = [
        f"<think>{tokenizer.decode(t, skip_special_tokens=False)}</think>{a}" for t, a in zip(thoughts.ids, answers)
    ]
    return GroupRollout(prompt_ids, thoughts.ids, thoughts.closed, answer_ids, texts)


def completion_batch(
    rollout: GroupRollout, rows: list[int], group_size: int, open_id: int, close_id: int, pad_id: int, device=None
):
    """Right-padded ``prompt <think> thought </think> answer`` for ``rows``: ``(ids, attention, loss_mask)`` ``[R, T]``.

    The loss mask marks the model's own actions: thought tokens, ``</think>`` when the model closed
    the thought itself (a close forced at the budget is not an action), and every answer token.
    """
    seqs, spans = [], []
    for n in rows:
        prompt, thought, answer = rollout.prompt_ids[n // group_size], rollout.thought_ids[n], rollout.answer_ids[n]
        start = len(prompt) + 1
        thought_end = start + len(thought) + (1 if bool(rollout.closed[n]) else 0)
        answer_start = start + len(thought) + 1
        seqs.append(prompt + [open_id] + thought + [close_id] + answer)
        spans.append(((start, thought_end), (answer_start, answer_start + len(answer))))
    ids, attention = pad_ids(seqs, pad_id)
    loss_mask = torch.zeros(ids.shape, dtype=torch.bool)
    for i, ((a, b), (c, d)) in enumerate(spans):
        loss_mask[i, a:b] = True
        loss_mask[i, c:d] = True
    return ids.to(device), attention.to(device), loss_mask.to(device)


class GRPOTrainer:
    """Runs GRPO of ``model`` on problems of ``task`` (see module docstring)."""

    name = "grpo"

    def __init__(self, model, tokenizer, task: Task, cfg: GRPOConfig, run_dir: str | Path):
        self.model, self.tokenizer, self.task, self.cfg = model, tokenizer, task, cfg
        self.run_dir = Path(run_dir)
        self.device = model_device(model)
        self.pad_id = pad_id_of(tokenizer)
        self.open_id, self.close_id = think_token_ids(tokenizer)
        self.weights = parse_reward_spec(cfg.reward)
        self.problems: list[Problem] = task.problems(cfg.pool_size, seed=cfg.seed, split=cfg.split)
        if len(self.problems) < cfg.prompts_per_step:
            raise ValueError(
                f"task {task.name} has only {len(self.problems)} {cfg.split} problems; "
                f"need at least prompts_per_step={cfg.prompts_per_step}"
            )
        self.pool = PromptPool(len(self.problems), seed=cfg.seed)
        self.optimizer, self.scheduler = adamw_constant_after_warmup(model, cfg.lr, cfg.weight_decay, cfg.warmup_steps)
        self.ref = EMATeacher(1.0 if cfg.kl_ref == "initial" else cfg.ema_tau)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.step = 0
        self.counters = {
            "skipped_nonfinite": 0,
            "skipped_no_signal": 0,
            "no_answer": 0,
            "completions": 0,
            "groups_equal_filtered": 0,
            "groups_hard_set_aside": 0,
            "groups_trained": 0,
            "hard_revisited": 0,
            "hard_revisit_solved": 0,
            "thought_tokens": 0,
        }

    # ------------------------------------------------------------------ hooks TTRL changes
    @property
    def uses_labels(self) -> bool:
        """The reward mix reads reference answers (so may the hard-prompt filter)."""
        return bool(LABEL_REWARDS & set(self.weights))

    def _label_columns(self, problems: list[Problem]) -> dict:
        rep = [p for p in problems for _ in range(self.cfg.group_size)]
        return {"problems": rep, "reference_answers": [p.answer for p in rep]}

    def _train_columns(self, num_groups: int) -> torch.Tensor:
        """``[B, m]`` indices (within each group) of the completions trained on: all G here."""
        return torch.arange(self.cfg.group_size).expand(num_groups, -1)

    def _extra_metrics(self, problems: list[Problem], texts: list[str], group_ids: torch.Tensor) -> dict:
        return {}

    # ------------------------------------------------------------------ state
    def _state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "pool": self.pool.state_dict(),
            "generator": self.generator.get_state(),
            "counters": dict(self.counters),
            "ref_updates": self.ref.num_updates,
            "ref_initialized": self.ref.initialized,
        }

    def save(self) -> Path:
        extra = {"ref": self.ref.model} if self.ref.initialized else {}
        return save_checkpoint(self.run_dir, self.step, self.model, self.tokenizer, self._state(), extra_models=extra)

    def resume(self) -> bool:
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            return False
        state = restore_checkpoint(ckpt, self.model, self.optimizer, self.scheduler, self.generator)
        self.pool.load_state_dict(state["pool"])
        self.step, self.counters = state["step"], state["counters"]
        if state["ref_initialized"]:
            self.ref.initialize(self.model)
            load_weights_into(self.ref.model, ckpt / "ref")
            self.ref.num_updates = state["ref_updates"]
        return True

    # ------------------------------------------------------------------ rewards
    def _rewards(self, problems: list[Problem], rollout: GroupRollout) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """``(mixed rewards [B, G], metrics, no_answer [N] bool)``."""
        from ponder.rewards import REWARDS, combine

        cfg, G = self.cfg, self.cfg.group_size
        prompts = [p.prompt for p in problems for _ in range(G)]
        group_ids = torch.arange(len(problems)).repeat_interleave(G)
        columns = {
            "task": self.task,
            "model": self.model,
            "tokenizer": self.tokenizer,
            "no_answer_reward": cfg.no_answer_reward,
            "target": cfg.length_target or cfg.max_thought_tokens,
            "batch_size": None if cfg.sample_batch_size is None else cfg.sample_batch_size * G,
        }
        if self.uses_labels:
            columns.update(self._label_columns(problems))
        was_training = self.model.training
        self.model.eval()
        parts = {name: REWARDS[name](prompts, rollout.texts, group_ids, **columns) for name in self.weights}
        self.model.train(was_training)
        mixed = combine(parts, self.weights)
        no_answer = torch.tensor([self.task.extract_answer(t) is None for t in rollout.texts])
        mixed = torch.where(no_answer, torch.tensor(cfg.no_answer_reward), mixed)
        metrics = {f"reward/{k}": float(v.float().mean()) for k, v in parts.items()}
        metrics.update(self._extra_metrics(problems, rollout.texts, group_ids))
        return mixed.view(len(problems), G), metrics, no_answer

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict:
        cfg, G = self.cfg, self.cfg.group_size
        t0 = time.time()
        indices = self.pool.next_batch(cfg.prompts_per_step)
        problems = [self.problems[i] for i in indices]
        if cfg.kl_coef > 0 and not self.ref.initialized:
            self.ref.initialize(self.model)
        rollout = sample_group_rollout(
            self.model,
            self.tokenizer,
            [p.prompt for p in problems],
            G,
            cfg.max_thought_tokens,
            cfg.max_answer_tokens,
            cfg.temperature,
            cfg.top_p,
            self.generator,
            batch_size=cfg.sample_batch_size,
        )
        self.step += 1
        rewards, metrics, no_answer = self._rewards(problems, rollout)
        correct = torch.tensor([self.task.score(problems[n // G], t) >= 1.0 for n, t in enumerate(rollout.texts)])
        pass_rate = correct.float().view(len(problems), G).mean(1)  # [B]; diagnostic unless the filter uses it
        thought_len = rollout.thought_tokens
        self.counters["no_answer"] += int(no_answer.sum())
        self.counters["completions"] += len(rollout.texts)
        self.counters["thought_tokens"] += int(thought_len.sum())
        metrics.update(
            {
                "reward_mean": float(rewards.mean()),
                "reward_std": float(rewards.std()),
                "label_pass_rate": float(pass_rate.mean()),
                "no_answer_fraction": float(no_answer.float().mean()),
                "thought_tokens_mean": float(thought_len.mean()),
                "unclosed_fraction": float((~rollout.closed).float().mean()),
                **format_shares(rollout.texts, rollout.closed.tolist()),
            }
        )
        if not torch.isfinite(rewards).all():
            # Never averaged in: the whole step is dropped and counted.
            self.counters["skipped_nonfinite"] += 1
            self.optimizer.zero_grad(set_to_none=True)
            return {**metrics, "skipped": 1, **self.counters}

        revisits = [b for b, i in enumerate(indices) if i in self.pool.revisiting]
        self.counters["hard_revisited"] += len(revisits)
        self.counters["hard_revisit_solved"] += sum(int(pass_rate[b] > 0) for b in revisits)
        hard = torch.zeros(len(problems), dtype=torch.bool)
        if cfg.filter_hard and self.uses_labels:
            hard = pass_rate == 0
            for b in hard.nonzero().flatten().tolist():
                self.pool.set_aside(indices[b])
        cols = self._train_columns(len(problems))  # [B, m]
        train_rewards = rewards.gather(1, cols)
        equal = (train_rewards.amax(1) - train_rewards.amin(1)) == 0
        keep = ~hard & (~equal if cfg.filter_equal else torch.ones_like(equal))
        n_hard, n_equal = int(hard.sum()), int((equal & ~hard).sum()) if cfg.filter_equal else 0
        self.counters["groups_hard_set_aside"] += n_hard
        self.counters["groups_equal_filtered"] += n_equal
        self.counters["groups_trained"] += int(keep.sum())
        metrics.update({"groups_hard": n_hard, "groups_equal": n_equal, "groups_trained": int(keep.sum())})
        if not keep.any():
            self.counters["skipped_no_signal"] += 1
            return {**metrics, "skipped": 1, **self.counters}

        advantages = group_advantages(train_rewards[keep], correction="none", scale=cfg.scale)  # [b, m]
        groups = keep.nonzero().flatten()
        rows = (groups[:, None] * G + cols[groups]).flatten().tolist()
        ids, attention, loss_mask = completion_batch(
            rollout, rows, G, self.open_id, self.close_id, self.pad_id, self.device
        )
        adv = advantages.flatten().to(self.device)
        self.model.train()
        logp, entropy = token_logprobs(self.model, ids, attention, return_entropy=True)
        logp_old = logp.detach()
        for epoch in range(cfg.ppo_epochs):
            if epoch > 0:
                logp, entropy = token_logprobs(self.model, ids, attention, return_entropy=True)
            loss, stats = clipped_surrogate(
                logp, logp_old, adv, loss_mask, cfg.eps_low, cfg.eps_high, reduce=cfg.loss_reduce
            )
            if cfg.kl_coef > 0:
                with torch.no_grad():
                    ref_logp = token_logprobs(self.ref.model, ids, attention)
                kl = kl_penalty(logp, ref_logp, loss_mask)
                loss = loss + cfg.kl_coef * kl
                stats["kl_to_ref"] = kl.detach()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            if cfg.kl_coef > 0:
                self.ref.update(self.model)  # tau = 1 for the initial model: a no-op
        elapsed = time.time() - t0
        metrics.update(
            {
                "loss": float(loss.detach()),
                "grad_norm": float(grad_norm),
                "lr": self.scheduler.get_last_lr()[0],
                "clip_fraction": float(stats["clip_fraction"]),
                "approx_kl": float(stats["approx_kl"]),
                "policy_entropy": float(masked_mean(entropy.detach(), loss_mask)),
                "completions_per_s": len(rollout.texts) / elapsed,
                **({"kl_to_ref": float(stats["kl_to_ref"])} if "kl_to_ref" in stats else {}),
                **self.counters,
            }
        )
        return metrics

    # ------------------------------------------------------------------ loop
    def train(self, resume: bool = False, progress: bool = True) -> dict:
        resumed = self.resume() if resume else False
        logger = MetricsLogger(self.run_dir, self.step if resumed else None, **self.cfg.tracking())
        seconds = run_steps(self, self.name, self.train_step, logger, progress)
        logger.close()
        self.model.eval()
        save_pretrained_atomic(self.run_dir / "final", self.model, self.tokenizer)
        return {"steps": self.step, "seconds": seconds, "epochs": self.pool.epoch, **self.counters}


class TTRLTrainer(GRPOTrainer):
    """TTRL: majority-vote rewards over n votes, trained on m of them (labels only logged)."""

    name = "ttrl"

    @property
    def uses_labels(self) -> bool:
        return False

    def _train_columns(self, num_groups: int) -> torch.Tensor:
        n, m = self.cfg.group_size, self.cfg.train_samples or self.cfg.group_size
        if m == n:
            return super()._train_columns(num_groups)
        return torch.stack(
            [
                torch.randperm(n, generator=self.generator, device=self.generator.device)[:m].sort().values.cpu()
                for _ in range(num_groups)
            ]
        )

    def _extra_metrics(self, problems: list[Problem], texts: list[str], group_ids: torch.Tensor) -> dict:
        from ponder.rewards import majority_stats

        G = self.cfg.group_size
        labelled = all(p.answer for p in problems)
        refs = [p.answer for p in problems for _ in range(G)] if labelled else None
        stats = majority_stats(
            [p.prompt for p in problems for _ in range(G)],
            texts,
            group_ids,
            task=self.task,
            reference_answers=refs,
            no_answer_reward=self.cfg.no_answer_reward,
        )
        return {k: float(v) for k, v in stats.items() if k != "num_groups"}

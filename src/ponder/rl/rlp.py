"""RLP: reinforcement as a pretraining objective (Hatamizadeh et al., arXiv 2510.01265), a recipe on the engine.

At positions of ordinary text the model samples G thoughts; each is rewarded by the information
gain it brings to the next token against an EMA no-think baseline,

    r(c) = log p_theta(x_t | x_<t, c) - log p_EMA(x_t | x_<t),

and the thought tokens are trained with a clipped surrogate on the group advantage
A_i = G/(G-1) (r_i - mean r). No next-token loss (optional here, off by default), no KL
(optional, off by default). The EMA teacher is copied from the model on the first batch and
updated after every optimizer step with tau. Both reward terms are text likelihoods at
temperature 1; the thought tokens' policy log-probs are at the sampling temperature
(``logprob_temperature``), as in TRL, on which the paper's code was built.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator

from ponder.data.windows import window_stream
from ponder.lm.logprobs import token_logprobs
from ponder.lm.padding import pad_id_of, pad_ids
from ponder.lm.thinking import ThoughtFormat
from ponder.rl.advantages import group_advantages, rlp_reward, valid_groups
from ponder.rl.batches import target_logprob_sums
from ponder.rl.ema import EMATeacher
from ponder.rl.generation import SamplerSettings, sampler_of
from ponder.rl.positions import ANSWER, OTHER, Doc, keyed_generators
from ponder.rl.rollout import POSITION_WEIGHTINGS, Rollout, baseline_pass, make_rollout
from ponder.train.checkpoint_checks import checkpoint_step, require_count
from ponder.train.compute import model_size, rollout_compute
from ponder.train.engine import Engine, EngineSettings, Recipe, StepBatch, prepare_model
from ponder.train.losses import Term, kl_penalty, next_token_loss
from ponder.train.micro import part_rows, scores_in_parts

EMA_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class RLPConfig(EngineSettings, SamplerSettings):
    """RLP settings. Defaults follow the paper where it states them (G, tau, eps, temperature, no KL)."""

    docs_per_step: int = Field(16, ge=1, description="documents drawn per step")
    positions_per_doc: int = Field(1, ge=1, description="positions sampled in each document")
    group_size: int = Field(8, ge=2, description="thoughts per position (G)")
    micro_batch: int | None = Field(
        4,
        ge=1,
        description="positions (their G thoughts each) per forward/backward of the training pass; gradients "
        "accumulate over a step's micro-batches, and a step of more positions takes its rewards from a pass "
        "without gradients (none: the whole step at once)",
    )
    context_length: int = Field(512, ge=2, description="prefix tokens kept before a position")
    max_thought_tokens: int = Field(64, description="thought budget; an unclosed thought is cut here and closed")
    temperature: float = Field(0.7, gt=0, description="thought sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling of thoughts")
    kl_coef: float = Field(0.0, ge=0, description="KL(policy || EMA) on thought tokens (paper: 0)")
    ema_tau: float = Field(0.999, ge=0, le=1, description="EMA teacher decay")
    ema_dtype: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="the EMA teacher's weights: fp32, or bf16 (half its memory; updated in fp32 and rounded "
        "stochastically). With LoRA the teacher is an adapter, kept in fp32",
    )
    position_weighting: Literal[POSITION_WEIGHTINGS] = Field(  # type: ignore[valid-type]
        "uniform",
        description="how positions are drawn: uniform, or in proportion to the EMA baseline's loss "
        "(ema_loss), predictive entropy (ema_entropy) or probability of opening a thought there (think_prob)",
    )
    reward_tokens: int = Field(1, ge=1, description="reward over the next k tokens (paper: 1)")
    next_token_weight: float = Field(0.0, ge=0, description="weight of a mixed-in next-token loss (paper: 0)")
    reward_token_weight: float = Field(
        0.0,
        ge=0,
        description="weight of the next-token loss of the reward tokens after each thought, -log p(x_t | x_<t, c): "
        "teaches a model new to the thought delimiters to read on past a thought (paper: 0)",
    )
    min_reward_spread: float = Field(
        1e-4, ge=0, description="groups whose rewards differ by at most this (nats) get zero advantage"
    )
    sample_batch_size: int | None = Field(None, ge=1, description="positions sampled together (memory bound)")
    batch_layout: Literal["auto", "tree", "padded"] = Field(
        "auto",
        description="policy forward: shared-prefix tree (auto when the attention takes a 4D mask) or padded rows",
    )
    autocast_bf16: bool = Field(False, description="sample and score under bf16 autocast (GPU); weights stay fp32")

    @field_validator("max_thought_tokens")
    @classmethod
    def _budget(cls, v: int) -> int:
        if v < 1:
            raise ValueError("the thought budget must be at least 1 token: RLP needs a thought to reward")
        return v

    @model_validator(mode="after")
    def _checkpointing_layout(self):
        if self.gradient_checkpointing and self.batch_layout == "tree":
            raise ValueError(
                "gradient checkpointing drops the KV cache the tree layout's branches read: "
                "use batch_layout auto or padded with it"
            )
        return self

    @property
    def layout(self) -> str:
        """The batch layout asked for: padded under gradient checkpointing (the tree forward needs the cache)."""
        return "padded" if self.gradient_checkpointing else self.batch_layout


def _class_mean(rewards_per_position: torch.Tensor, classes: list[str], cls: str) -> float:
    sel = [i for i, c in enumerate(classes) if c == cls]
    return float(rewards_per_position[sel].mean()) if sel else float("nan")


class RLPRecipe(Recipe):
    """RLP over documents from ``source`` (see :mod:`ponder.data.sources`)."""

    name = "rlp"
    work_name = "positions"

    def __init__(self, model, tokenizer, source, cfg: RLPConfig):
        super().__init__()
        self.model, self.tokenizer, self.source, self.settings = model, tokenizer, source, cfg
        self.temperature = cfg.temperature
        self.fmt = ThoughtFormat.of(model, tokenizer)
        self.pad_id = pad_id_of(tokenizer)
        self.ema = EMATeacher(cfg.ema_tau, dtype=EMA_DTYPES[cfg.ema_dtype], seed=cfg.seed)
        self.docs_consumed = 0
        self._stream = None
        self.backend = None
        self.model_size = model_size(model)  # for the compute account (ponder.train.compute)

    # ------------------------------------------------------------------ data
    def _next_docs(self, engine: Engine):
        """This rank's documents of the step and one generator each, keyed by (seed, step, global index).

        A step takes ``docs_per_step`` token windows of the source
        (:func:`~ponder.data.windows.window_stream`), however long its documents are. Every rank
        reads the whole global batch and keeps every world-th window: a window's positions and
        thoughts depend only on its key, so any number of ranks sees the same rollouts as one process.
        """
        cfg = self.settings
        if self._stream is None:
            self._stream = window_stream(self.tokenizer, self.source.stream(), cfg.context_length)
            for _ in range(self.docs_consumed):  # windows, replayed: a resumed run reads what it would have
                next(self._stream)
        docs = [Doc(ids, answer_start) for ids, answer_start in itertools.islice(self._stream, cfg.docs_per_step)]
        self.docs_consumed += len(docs)
        keys = [engine.step * 1_000_003 + i for i in range(len(docs))]
        mine = list(range(engine.rank, len(docs), engine.world))
        return [docs[i] for i in mine], keyed_generators(cfg.seed, [keys[i] for i in mine], engine.device)

    def micro_rows(self) -> int | None:
        """A micro-batch holds ``micro_batch`` whole positions: their ``G`` thoughts each (a group's advantage is its own)."""
        micro = self.settings.micro_batch
        return None if micro is None else micro * self.settings.group_size

    def autocast(self, engine: Engine):
        """bf16 autocast on the model's device when ``autocast_bf16`` (log-probs are upcast to fp32 anyway)."""
        return torch.autocast(engine.device.type, dtype=torch.bfloat16, enabled=self.settings.autocast_bf16)

    # ------------------------------------------------------------------ one step
    def make_step(self, engine: Engine) -> StepBatch | None:
        cfg = self.settings
        if self.backend is None:  # the run's one sampling setting and its sampler, on the first step
            self.sampling, self.backend = sampler_of(cfg, self.model, self.tokenizer, self.fmt, engine)
        docs, generators = self._next_docs(engine)
        if not self.ema.initialized:
            self.ema.initialize(self.model)  # phi <- theta lazily on the first batch
        rollout = None
        if docs:
            with self.autocast(engine):
                with self.ema.scope() as teacher:
                    base = baseline_pass(teacher, self.tokenizer, self.fmt, docs, cfg.position_weighting)
                rollout = make_rollout(
                    self.model,
                    base,
                    self.tokenizer,
                    self.fmt,
                    docs,
                    cfg.positions_per_doc,
                    cfg.group_size,
                    cfg.reward_tokens,
                    self.sampling,
                    generators,
                    self.backend,
                    cfg.position_weighting,
                    cfg.layout,
                )
        if rollout is None:
            return None
        self.rollout = rollout
        num_pos, group = len(rollout.positions), cfg.group_size
        # One forward gives the reward's log p(x_t | x_<t, c) and the thought tokens' log-probs, when it can: the
        # rewards are scored as GRPO's are, in eval mode, so a model with dropout (a LoRA dropout) gets a pass of its own.
        batch = rollout.batch
        first = None
        with self.autocast(engine):
            if len(part_rows(len(batch), self.micro_rows())) == 1 and not dropout_active(self.model):
                self.model.train()
                logp, entropy = first = engine.run(lambda m: batch.scores(m, engine.inv_temperature))
            else:  # rewards from a pass without gradients, part by part when the training pass runs in micro-batches
                self.model.eval()
                with torch.no_grad():
                    logp, entropy = scores_in_parts(
                        batch, self.micro_rows(), lambda part: part.scores(self.model, engine.inv_temperature)
                    )
        self.model.train()
        policy_target = target_logprob_sums(logp.detach(), batch.target_mask).view(num_pos, group).cpu()
        rewards = rlp_reward(policy_target, rollout.baseline_logp[:, None].expand(num_pos, group))
        thought_len = rollout.thoughts.lengths
        unclosed = int((~rollout.thoughts.closed).sum())
        # The compute account (ponder.train.compute): layout-independent, summed over ranks in the summary.
        account = rollout_compute(
            rollout,
            group,
            self.model_size,
            policy_epochs=cfg.ppo_epochs,
            next_token_pass=cfg.next_token_weight > 0,
            kl_pass=cfg.kl_coef > 0,
        ).counters()
        account.update({"unclosed_thoughts": unclosed, "document_tokens": sum(len(d.ids) for d in docs)})
        c = self.counters
        for key, value in account.items():
            c[key] = c.get(key, 0) + value
        advantages = group_advantages(rewards, correction="rlp")
        # A group of (near-)identical rewards teaches nothing; left in, its float-noise advantages
        # still move Adam's normalized update. Zero them (counted).
        signal = valid_groups(rewards, min_spread=cfg.min_reward_spread)
        advantages = (advantages * signal[:, None]).flatten()
        per_position = rewards.mean(1)
        metrics = {
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            "thought_tokens_mean": float(thought_len.mean()),
            "unclosed_fraction": unclosed / len(thought_len),
            "info_gain_answer": _class_mean(per_position, rollout.classes, ANSWER),
            "info_gain_other": _class_mean(per_position, rollout.classes, OTHER),
            "signal_group_fraction": float(signal.float().mean()),
            "docs_consumed_total": self.docs_consumed,
        }
        counts = {"targets": float(batch.target_mask.sum())}
        if cfg.next_token_weight > 0:
            counts["text_tokens"] = float(sum(max(len(doc) - 1, 0) for doc in text_of(rollout)))
        return StepBatch(batch, advantages, metrics, first=first, reduce="rlp", counts=counts)

    def extra_loss(self, engine: Engine, logp, sb: StepBatch):
        """The optional KL to the EMA teacher on thought tokens and the mixed-in next-token losses (all off by default)."""
        cfg, batch, stats, terms = self.settings, sb.batch, {}, []
        if cfg.kl_coef > 0:
            with torch.no_grad(), self.ema.scope() as teacher:
                ref = batch.scores(teacher, engine.inv_temperature)[0]
            kl = kl_penalty(logp, ref, batch.loss_mask, reduction="sum")  # a mean over sequences (thoughts)
            terms.append(Term("kl", cfg.kl_coef * kl, "sequences"))
            stats["kl_to_ema"] = kl.detach() / max(sb.num_sequences, 1)
        if cfg.reward_token_weight > 0:
            # The reward's own term, log p(x_t | x_<t, c), made a loss: the gradient reaches what the policy
            # gradient cannot (the delimiters and the text after them); a mean over the step's reward tokens.
            targets = batch.target_mask.bool()
            nll = next_token_loss(logp, targets, reduction="sum")
            terms.append(Term("reward_tokens", cfg.reward_token_weight * nll, "targets"))
            stats["reward_token_loss"] = nll.detach() / max(float(targets.sum()), 1.0)
        if cfg.next_token_weight > 0 and sb.part == 0:  # over the whole rollout's text, once per step
            nll, count = self._next_token_term(self.rollout, engine)
            terms.append(Term("next_token", cfg.next_token_weight * nll, "text_tokens"))
            stats["next_token_loss"] = nll.detach() / max(count, 1.0)
        return terms, stats

    def _next_token_term(self, rollout: Rollout, engine: Engine) -> tuple[torch.Tensor, float]:
        """``(summed NLL, predicted tokens)`` of the rollout's text (its prefixes and targets, no thought)."""
        ids, mask = pad_ids(text_of(rollout), self.pad_id, engine.device)
        predicted = predicted_mask(mask)
        # The unwrapped model: a second DDP forward before one backward is not allowed; autograd sums
        # both paths' gradients before DDP's per-parameter hooks fire, so this term is all-reduced too.
        nll = next_token_loss(token_logprobs(self.model, ids, mask), predicted, reduction="sum")
        return nll, float(predicted.sum())

    def after_optimizer_step(self, engine: Engine) -> None:
        self.ema.update(self.model)

    def after_update(self, engine: Engine) -> None:
        if self.backend is not None:
            self.backend.sync_weights(self.model)

    # ------------------------------------------------------------------ state
    def extra_models(self) -> dict:
        return {"ema": self.ema.checkpointed()} if self.ema.initialized else {}

    def state_dict(self) -> dict:
        return {
            "docs_consumed": self.docs_consumed,
            "ema_updates": self.ema.num_updates,
            "ema_initialized": self.ema.initialized,
        }

    def load_state_dict(self, state: dict, ckpt: Path) -> None:
        # Bounded by what the steps read: the windows are replayed, a forged count must not hang the resume.
        limit = checkpoint_step(ckpt) * self.settings.docs_per_step
        self.docs_consumed = require_count(state["docs_consumed"], "docs_consumed", limit, ckpt)
        self._stream = None
        if state["ema_initialized"]:
            self.ema.initialize(self.model)
            self.ema.load_pretrained(Path(ckpt) / "ema")
            self.ema.num_updates = state["ema_updates"]

    def ema_distance(self) -> float:
        """||theta - phi|| / ||phi||: how far the policy (its adapter, with LoRA) has moved from its no-think baseline."""
        return self.ema.distance(self.model)


class RLPTrainer(Engine):
    """The engine running :class:`RLPRecipe`: ``RLPTrainer(model, tokenizer, source, cfg, run_dir).train()``."""

    def __init__(self, model, tokenizer, source, cfg: RLPConfig, run_dir: str | Path):
        model = prepare_model(model, cfg)
        super().__init__(model, tokenizer, RLPRecipe(model, tokenizer, source, cfg), run_dir)

    def train_step(self) -> dict:
        metrics = super().train_step()
        if self.recipe.ema.initialized and "skipped" not in metrics:
            metrics["ema_param_distance"] = self.recipe.ema_distance()
        return metrics


def dropout_active(model: torch.nn.Module) -> bool:
    """Whether ``model`` in train mode differs from eval mode: a dropout module or an attention dropout above 0."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            return True
        if any("dropout" in name and isinstance(v, float) and v > 0 for name, v in vars(module).items()):
            return True
    return False


def text_of(rollout: Rollout) -> list[list[int]]:
    """The rollout's text sequences without thoughts: each position's prefix and its reward tokens."""
    return [p + t for p, t in zip(rollout.prefixes, rollout.targets)]


def predicted_mask(mask: torch.Tensor) -> torch.Tensor:
    """``[N, L]`` bool: the tokens a next-token loss predicts, ``mask`` without column 0 (nothing predicts it)."""
    predicted = mask.bool().clone()
    predicted[:, 0] = False
    return predicted

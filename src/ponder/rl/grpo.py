"""GRPO on task prompts with any weighted mix of :mod:`ponder.rewards`, a recipe on the engine.

Each step draws ``B`` prompts from a :class:`~ponder.rl.prompts.PromptPool`, samples ``G``
think-then-answer completions per prompt with the run's sampler backend (``--generation-backend``:
ponder's one sampler or vLLM, :mod:`ponder.rl.generation`; ``prompt <think> thought </think> answer``,
the thought cut and closed at the budget), scores them with the reward mix on the ids as
sampled, and trains the thought *and* answer tokens with the clipped surrogate on group
advantages (optional KL to the initial model or an EMA of the policy). Data-parallel ranks take
prompts ``rank, rank + world, ...`` of the step, each sampled from a generator keyed by seed, step
and the prompt's index in the step, so any number of ranks trains on the same completions.

Filters, on by default, logged every step:

* equal-reward groups (every advantage 0) are dropped from the batch: they carry no signal and
  would only dilute the mean;
* overly hard prompts (pass rate 0 over the G samples, judged by the task's labels, so only when
  the reward mix uses labels) are not trained on and are set aside to the next epoch.

The GRPO family: ``scale`` std (GRPO) or none (Dr. GRPO); ``loss_reduce`` rlp (mean over
completions of per-token means), token (DAPO: over all tokens) or constant (Dr. GRPO: the sum
over tokens divided by a constant, the completion budget); ``hicra_alpha`` amplifies the
advantage on planning tokens (HICRA).

Bad input: a completion without an extractable answer gets ``no_answer_reward`` in place of its
mixed reward (counted); a non-finite reward skips the whole step (counted); G < 2 is rejected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator

from ponder.data.task import Problem, Task, problem_answer_prefixes
from ponder.errors import TaskError
from ponder.lm.padding import pad_id_of
from ponder.lm.thinking import Completions, ThinkSettings, ThoughtFormat
from ponder.rewards import REWARDS, combine, parse_reward_spec
from ponder.rl.advantages import group_advantages, hicra_advantages
from ponder.rl.batches import PaddedBatch, padded_batch
from ponder.rl.ema import EMATeacher
from ponder.rl.formats import format_shares
from ponder.rl.generation import SamplerSettings, sampler_of
from ponder.rl.hicra import phrase_pattern, planning_token_mask
from ponder.rl.positions import keyed_generators
from ponder.rl.prompts import PromptPool
from ponder.train import distributed
from ponder.train.engine import Engine, EngineSettings, Recipe, StepBatch, prepare_model
from ponder.train.losses import Reduce, Term, kl_penalty

#: Rewards that read the reference answers: with one of them the hard-prompt filter may use labels too.
LABEL_REWARDS = frozenset({"verifiable", "answer_likelihood"})


class GRPOConfig(EngineSettings, ThinkSettings, SamplerSettings):
    """GRPO settings (a GRPO / Dr.GRPO / DAPO family member chosen by ``scale`` and ``loss_reduce``)."""

    steps: int = Field(40, ge=1, description="optimizer steps")
    lr: float = Field(3e-5, gt=0, description="learning rate (AdamW, constant after warmup)")
    prompts_per_step: int = Field(16, ge=1, description="prompts drawn per step (B)")
    group_size: int = Field(8, description="completions sampled per prompt (G >= 2)")
    micro_batch: int | None = Field(
        32,
        ge=1,
        description="completions per forward/backward of the training pass; gradients accumulate over a "
        "step's micro-batches (none: the whole step at once)",
    )
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
    scale: Literal["std", "none"] = Field("std", description="advantage scale: std (GRPO) or none (Dr.GRPO)")
    loss_reduce: Reduce = Field(
        "rlp",
        description="rlp: mean over completions of per-token means (GRPO); token: over all tokens (DAPO); "
        "constant: token sum over completions x the completion budget (Dr.GRPO)",
    )
    hicra_alpha: float = Field(0.0, ge=0, description="HICRA: A' = A + alpha |A| on planning tokens (0: off)")
    planning_lexicon: list[str] | None = Field(
        None, description="strategic phrases whose tokens are planning tokens (needed by --hicra-alpha)"
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
    def _checks(self):
        if self.pool_size < self.prompts_per_step:
            raise ValueError(
                f"pool_size ({self.pool_size}) must be at least prompts_per_step ({self.prompts_per_step})"
            )
        if self.hicra_alpha > 0 and not self.planning_lexicon:
            raise ValueError("hicra_alpha needs planning_lexicon: the strategic phrases whose tokens get the boost")
        return self


class GRPORecipe(Recipe):
    """GRPO of ``model`` on problems of ``task`` (see the module docstring)."""

    name = "grpo"
    work_name = "completions"
    summed_metrics = ("groups_hard", "groups_equal", "groups_trained")  # each rank counts its own groups

    def __init__(self, model, tokenizer, task: Task, cfg: GRPOConfig):
        super().__init__()
        self.model, self.tokenizer, self.task, self.settings = model, tokenizer, task, cfg
        self.temperature = cfg.temperature
        self.fmt = ThoughtFormat.of(model, tokenizer, cfg)
        self.pad_id = pad_id_of(tokenizer)
        self.weights = parse_reward_spec(cfg.reward)
        self.problems: list[Problem] = task.problems(cfg.pool_size, seed=cfg.seed, split=cfg.split)
        if len(self.problems) < cfg.prompts_per_step:
            raise TaskError(
                f"task {task.name} has only {len(self.problems)} {cfg.split} problems; "
                f"need at least prompts_per_step={cfg.prompts_per_step} (lower --prompts-per-step or give more examples)"
            )
        self.pool = PromptPool(len(self.problems), seed=cfg.seed)
        self.ref = EMATeacher(1.0 if cfg.kl_ref == "initial" else cfg.ema_tau)
        self.planning = phrase_pattern(cfg.planning_lexicon or [])
        self.backend = None

    # ------------------------------------------------------------------ hooks TTRL changes
    @property
    def uses_labels(self) -> bool:
        """The reward mix reads reference answers (so may the hard-prompt filter)."""
        return bool(LABEL_REWARDS & set(self.weights))

    def train_columns(self, num_groups: int, generators: list[torch.Generator]) -> torch.Tensor:
        """``[B, m]`` indices (within each group) of the completions trained on: all G here."""
        return torch.arange(self.settings.group_size).expand(num_groups, -1)

    def extra_metrics(self, problems: list[Problem], texts: list[str], group_ids: torch.Tensor) -> dict:
        return {}

    # ------------------------------------------------------------------ rewards
    def rewards(self, problems: list[Problem], comp: Completions, texts: list[str], group_ids: torch.Tensor):
        """``(mixed rewards [B, G], metrics, no_answer [N] bool)``; model-based rewards score the sampled ids."""
        cfg, G = self.settings, self.settings.group_size
        prompts = [p.prompt for p in problems for _ in range(G)]
        columns = {
            "task": self.task,
            "model": self.model,
            "tokenizer": self.tokenizer,
            "no_answer_reward": cfg.no_answer_reward,
            "target": cfg.length_target or cfg.max_thought_tokens,
            "batch_size": None if cfg.sample_batch_size is None else cfg.sample_batch_size * G,
            "prompt_ids": [comp.prompt_ids[r // G] for r in range(len(comp))],
            "completion_ids": [comp.completion_ids(r) for r in range(len(comp))],
        }
        if self.uses_labels:
            rep = [p for p in problems for _ in range(G)]
            columns.update({"problems": rep, "reference_answers": [p.answer for p in rep]})
        was_training = self.model.training
        self.model.eval()
        parts = {name: REWARDS[name](prompts, texts, group_ids, **columns) for name in self.weights}
        self.model.train(was_training)
        mixed = combine(parts, self.weights)
        no_answer = torch.tensor([self.task.extract_answer(t) is None for t in texts], dtype=torch.bool)
        mixed = torch.where(no_answer, torch.tensor(cfg.no_answer_reward), mixed)
        metrics = {f"reward/{k}": float(v.float().mean()) for k, v in parts.items()}
        metrics.update(self.extra_metrics(problems, texts, group_ids))
        return mixed.view(len(problems), G), metrics, no_answer

    # ------------------------------------------------------------------ one step
    def make_step(self, engine: Engine) -> StepBatch | None:
        cfg, G = self.settings, self.settings.group_size
        if cfg.prompts_per_step < engine.world:
            raise ValueError(
                f"prompts_per_step ({cfg.prompts_per_step}) must be at least the number of ranks "
                f"({engine.world}): every rank samples whole groups"
            )
        indices = self.pool.next_batch(cfg.prompts_per_step)  # the same global batch on every rank
        mine = list(range(engine.rank, len(indices), engine.world))
        problems = [self.problems[indices[b]] for b in mine]
        generators = keyed_generators(cfg.seed, [engine.step * 1_000_003 + b for b in mine], engine.device)
        if cfg.kl_coef > 0 and not self.ref.initialized:
            self.ref.initialize(self.model)
        if self.backend is None:  # the run's one sampling setting and its sampler, on the first step
            self.sampling, self.backend = sampler_of(cfg, self.model, self.tokenizer, self.fmt, engine)
        prompt_ids = self.fmt.prompt_ids(
            self.tokenizer, [p.prompt for p in problems], problem_answer_prefixes(problems)
        )
        comp = self.backend.complete(prompt_ids, G, self.sampling, generators)  # ids in, ids and log-probs out
        texts = comp.texts(self.tokenizer, self.sampling.stops)
        group_ids = torch.tensor(mine).repeat_interleave(G)  # global ids: a group vote may gather across ranks
        rewards, metrics, no_answer = self.rewards(problems, comp, texts, group_ids)
        correct = torch.tensor([self.task.score(problems[r // G], t) >= 1.0 for r, t in enumerate(texts)])
        pass_rate = correct.float().view(len(problems), G).mean(1)  # [B]; diagnostic unless the filter uses it
        thought_len = comp.thought_tokens
        c = self.counters
        for key, value in (
            ("completions", len(comp)),
            ("no_answer", int(no_answer.sum())),
            ("thought_tokens", int(thought_len.sum())),
        ):
            c[key] = c.get(key, 0) + value
        metrics.update(
            {
                "reward_mean": float(rewards.mean()),
                "reward_std": float(rewards.std()),
                "label_pass_rate": float(pass_rate.mean()),
                "no_answer_fraction": float(no_answer.float().mean()),
                "thought_tokens_mean": float(thought_len.mean()),
                "unclosed_fraction": float((~comp.closed).float().mean()),
                **format_shares(texts, comp.closed.tolist()),
            }
        )
        # Every rank agrees before skipping: a rank returning alone would leave the others at the next collective.
        nonfinite = float(not torch.isfinite(rewards).all())
        if distributed.all_sum([nonfinite], engine.world, engine.device)[0] > 0:
            return StepBatch(None, torch.tensor([float("nan")]), metrics)
        hard = self._set_aside_hard(engine, indices, mine, pass_rate)
        cols = self.train_columns(len(problems), generators)  # [B, m]
        train_rewards = rewards.gather(1, cols)
        equal = (train_rewards.amax(1) - train_rewards.amin(1)) == 0
        keep = ~hard & (~equal if cfg.filter_equal else torch.ones_like(equal))
        n_hard, n_equal = int(hard.sum()), int((equal & ~hard).sum()) if cfg.filter_equal else 0
        for key, value in (
            ("groups_hard_set_aside", n_hard),
            ("groups_equal_filtered", n_equal),
            ("groups_trained", int(keep.sum())),
        ):
            c[key] = c.get(key, 0) + value
        metrics.update({"groups_hard": n_hard, "groups_equal": n_equal, "groups_trained": int(keep.sum())})
        if not keep.any():
            return StepBatch(None, torch.zeros(0), metrics)
        advantages = group_advantages(train_rewards[keep], correction="none", scale=cfg.scale)  # [b, m]
        groups = keep.nonzero().flatten()
        rows = (groups[:, None] * G + cols[groups]).flatten().tolist()
        batch = completion_batch(comp, rows, self.pad_id, engine.device)
        adv = advantages.flatten()
        if cfg.hicra_alpha > 0:
            adv = self._hicra(comp, rows, batch, adv)
        budget = cfg.max_thought_tokens + 2 + cfg.max_answer_tokens
        reduce = cfg.loss_reduce
        return StepBatch(batch, adv, metrics, reduce=reduce, max_len=budget if reduce == "constant" else None)

    def _set_aside_hard(self, engine: Engine, indices: list[int], mine: list[int], pass_rate) -> torch.Tensor:
        """``[B_local]`` prompts with pass rate 0 (when the filter applies); every rank's pool sets all of them aside."""
        hard = torch.zeros(len(mine), dtype=torch.bool)
        revisits = [b for b, g in enumerate(mine) if indices[g] in self.pool.revisiting]
        c = self.counters
        c["hard_revisited"] = c.get("hard_revisited", 0) + len(revisits)
        c["hard_revisit_solved"] = c.get("hard_revisit_solved", 0) + sum(int(pass_rate[b] > 0) for b in revisits)
        if self.settings.filter_hard and self.uses_labels:
            hard = pass_rate == 0
        local = [indices[mine[b]] for b in hard.nonzero().flatten().tolist()]
        for parts in distributed.all_gather_objects(local, engine.world):
            for index in parts:
                self.pool.set_aside(index)
        return hard

    def _hicra(self, comp: Completions, rows: list[int], batch: PaddedBatch, adv: torch.Tensor) -> torch.Tensor:
        """Per-token advantages ``[N, T]`` with HICRA's boost on planning tokens of the completions."""
        planning = torch.zeros_like(batch.loss_mask)
        for i, r in enumerate(rows):
            ids = comp.completion_ids(r)
            start = len(comp.prompt_ids[r // comp.n])
            mask = planning_token_mask(self.tokenizer, ids, self.planning)
            planning[i, start : start + len(ids)] = torch.tensor(mask, dtype=torch.bool)
        planning &= batch.loss_mask
        self.counters["planning_tokens"] = self.counters.get("planning_tokens", 0) + int(planning.sum())
        return hicra_advantages(adv.to(batch.loss_mask.device), planning, self.settings.hicra_alpha)

    def extra_loss(self, engine: Engine, logp, sb: StepBatch):
        cfg = self.settings
        if cfg.kl_coef <= 0:
            return [], {}
        with torch.no_grad():
            with self.ref.scope() as reference:
                ref = sb.batch.scores(reference, engine.inv_temperature)[0]
        kl = kl_penalty(logp, ref, sb.batch.loss_mask, reduction="sum")  # a mean over sequences, whatever the reduce
        stats = {"kl_to_ref": kl.detach() / max(sb.num_sequences, 1)}
        return [Term("kl", cfg.kl_coef * kl, "sequences")], stats

    def after_optimizer_step(self, engine: Engine) -> None:
        if self.settings.kl_coef > 0:
            self.ref.update(self.model)  # tau = 1 for the initial model: a no-op

    def after_update(self, engine: Engine) -> None:
        if self.backend is not None:
            self.backend.sync_weights(self.model)

    # ------------------------------------------------------------------ state
    def summary(self) -> dict:
        return {"epochs": self.pool.epoch}

    def extra_models(self) -> dict:
        return {"ref": self.ref.checkpointed()} if self.ref.initialized else {}

    def state_dict(self) -> dict:
        return {
            "pool": self.pool.state_dict(),
            "ref_updates": self.ref.num_updates,
            "ref_initialized": self.ref.initialized,
        }

    def load_state_dict(self, state: dict, ckpt: Path) -> None:
        self.pool.load_state_dict(state["pool"])
        if state["ref_initialized"]:
            self.ref.initialize(self.model)
            self.ref.load_pretrained(Path(ckpt) / "ref")
            self.ref.num_updates = state["ref_updates"]


def completion_batch(comp: Completions, rows: list[int], pad_id: int, device=None) -> PaddedBatch:
    """Right-padded ``prompt <think> thought </think> answer`` rows, exactly the ids sampled.

    The loss mask marks the model's own actions: thought tokens, ``</think>`` when the model closed
    the thought itself (a close forced at the budget is not an action), and every answer token;
    ``behaviour_logp`` holds the sampler's log-prob of each.
    """
    seqs, masks, logps = [], [], []
    for r in range(len(comp)) if rows is None else rows:
        prompt = comp.prompt_ids[r // comp.n]
        seqs.append(list(prompt) + comp.completion_ids(r))
        masks.append([False] * len(prompt) + comp.action_mask(r))
        logps.append(torch.cat([torch.zeros(len(prompt)), comp.behaviour_logprobs(r)]))
    return padded_batch(seqs, masks, logps, pad_id, device=device)


class GRPOTrainer(Engine):
    """The engine running :class:`GRPORecipe`: ``GRPOTrainer(model, tokenizer, task, cfg, run_dir).train()``."""

    recipe_class = GRPORecipe

    def __init__(self, model, tokenizer, task: Task, cfg: GRPOConfig, run_dir: str | Path):
        model = prepare_model(model, cfg)
        super().__init__(model, tokenizer, self.recipe_class(model, tokenizer, task, cfg), run_dir)

"""TTRL, test-time RL (arXiv 2504.16084): GRPO without labels, rewarded by agreement with the group's majority.

``group_size`` = n votes per unlabeled prompt, each rewarded 1 when its answer is the group's
majority answer (:func:`ponder.rewards.majority_vote`); ``train_samples`` = m of them, drawn per
prompt from its own keyed generator, are trained on. Labels, when the problems have them, are used
only to log how good the pseudo-labels are (majority ratio, label accuracy, reward accuracy). A
group always lives on one rank, so the majority is over the whole group in a data-parallel run too.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from ponder.data.task import Problem
from ponder.rewards import majority_stats, parse_reward_spec
from ponder.rl.grpo import LABEL_REWARDS, GRPOConfig, GRPORecipe, GRPOTrainer


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


class TTRLRecipe(GRPORecipe):
    """Majority-vote rewards over n votes, trained on m of them (labels only logged)."""

    name = "ttrl"

    @property
    def uses_labels(self) -> bool:
        return False

    def train_columns(self, num_groups: int, generators: list[torch.Generator]) -> torch.Tensor:
        n, m = self.settings.group_size, self.settings.train_samples or self.settings.group_size
        if m == n:
            return super().train_columns(num_groups, generators)
        return torch.stack(
            [torch.randperm(n, generator=g, device=g.device)[:m].sort().values.cpu() for g in generators]
        )

    def extra_metrics(self, problems: list[Problem], texts: list[str], group_ids: torch.Tensor) -> dict:
        G = self.settings.group_size
        labelled = all(p.answer for p in problems)
        refs = [p.answer for p in problems for _ in range(G)] if labelled else None
        stats = majority_stats(
            [p.prompt for p in problems for _ in range(G)],
            texts,
            group_ids,
            task=self.task,
            reference_answers=refs,
            no_answer_reward=self.settings.no_answer_reward,
        )
        return {k: float(v) for k, v in stats.items() if k != "num_groups"}


class TTRLTrainer(GRPOTrainer):
    """The engine running :class:`TTRLRecipe`."""

    recipe_class = TTRLRecipe

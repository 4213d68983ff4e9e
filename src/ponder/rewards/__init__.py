"""Pure reward functions for verifier-free RL (GRPO / TTRL / INTUITOR / RLPR-style).

Batch rewards share the signature ``fn(prompts, completions, group_ids, **columns) -> FloatTensor [N]``
and are registered by name in :data:`REWARDS`; :func:`combine` weights several of them and
:func:`trl_reward` adapts one to TRL's ``f(prompts, completions, **kwargs) -> list[float]``.
"""

from ponder.rewards.compose import (
    REWARDS,
    combine,
    from_trl_reward,
    parse_reward_spec,
    prompt_group_id,
    register_reward,
    trl_reward,
)
from ponder.rewards.core import (
    format_batch,
    format_ok,
    format_reward,
    gather_answers_for_vote,
    length_penalty,
    length_reward,
    majority_stats,
    majority_vote,
    thought_token_counts,
    verifiable,
)
from ponder.rewards.likelihood import (
    answer_confidence,
    answer_likelihood,
    answer_likelihood_reward,
    answer_span,
    margin_confidence_from_logprobs,
    self_certainty,
    self_certainty_from_logprobs,
)

__all__ = [
    "REWARDS",
    "combine",
    "parse_reward_spec",
    "prompt_group_id",
    "trl_reward",
    "from_trl_reward",
    "register_reward",
    "format_batch",
    "format_ok",
    "format_reward",
    "gather_answers_for_vote",
    "length_penalty",
    "length_reward",
    "majority_stats",
    "majority_vote",
    "thought_token_counts",
    "verifiable",
    "answer_confidence",
    "answer_likelihood",
    "answer_likelihood_reward",
    "answer_span",
    "margin_confidence_from_logprobs",
    "self_certainty",
    "self_certainty_from_logprobs",
]

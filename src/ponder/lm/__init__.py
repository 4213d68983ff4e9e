"""Everything that touches a model: loading, think delimiters, the one sampler, scoring, logit lens."""

from ponder.lm.decode import DecodeRules, Samples, sample
from ponder.lm.lens import LensUnsupported, hidden_states, jsd, layer_logprobs, lens_jsd, lens_parts
from ponder.lm.load import LM, load_pretrained
from ponder.lm.logprobs import TokenScorer, logprobs_from_logits, token_logprobs
from ponder.lm.score import PairScores, score_pairs
from ponder.lm.thinking import (
    Completions,
    Sampling,
    ThinkSettings,
    ThoughtFormat,
    Thoughts,
    complete,
    continue_thoughts,
    draw_thoughts,
    force_thoughts,
    sample_thoughts,
    think_then_answer,
)
from ponder.lm.thoughts import THINK_CLOSE, THINK_OPEN, ensure_think_tokens, split_thought, strip_thoughts, wrap_thought

__all__ = [
    "LM",
    "load_pretrained",
    "sample",
    "Samples",
    "DecodeRules",
    "score_pairs",
    "PairScores",
    "TokenScorer",
    "token_logprobs",
    "logprobs_from_logits",
    "lens_parts",
    "hidden_states",
    "layer_logprobs",
    "lens_jsd",
    "jsd",
    "LensUnsupported",
    "THINK_OPEN",
    "THINK_CLOSE",
    "ensure_think_tokens",
    "wrap_thought",
    "strip_thoughts",
    "split_thought",
    "ThoughtFormat",
    "ThinkSettings",
    "Thoughts",
    "Completions",
    "Sampling",
    "sample_thoughts",
    "draw_thoughts",
    "complete",
    "continue_thoughts",
    "think_then_answer",
    "force_thoughts",
]

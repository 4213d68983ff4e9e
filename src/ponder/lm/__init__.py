"""Everything that touches a model: loading, think delimiters, sampling, scoring, logit lens."""

from ponder.lm.generate import Completions, generate
from ponder.lm.lens import LensUnsupported, hidden_states, jsd, layer_logprobs, lens_jsd, lens_parts
from ponder.lm.load import LM, load_model
from ponder.lm.sample import Samples, sample
from ponder.lm.score import PairScores, logprobs_from_logits, score_pairs, token_logprobs
from ponder.lm.thoughts import THINK_CLOSE, THINK_OPEN, ensure_think_tokens, split_thought, strip_thoughts, wrap_thought

__all__ = [
    "LM",
    "load_model",
    "sample",
    "Samples",
    "generate",
    "Completions",
    "score_pairs",
    "PairScores",
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
]

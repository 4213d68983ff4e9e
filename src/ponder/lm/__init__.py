"""Everything that touches a model's forward: loading, the think delimiters, the one sampler, scoring.

load.py (a Hugging Face directory or a GGUF file as an ``LM``), tiny.py and shapes.py (the built-in tiny
architecture, random-init shapes of real models), adapters.py (LoRA), delimiters.py (``<think>``/``</think>``:
registered, wrapped, stripped), thinking.py (the one sampler of thoughts and answers and the rules of a
thought), decode.py and shared_prefix.py (the decode loop, shared-prefix attention), logprobs.py and score.py
(token log-probs without full logits, teacher-forced scoring), padding.py and tokens.py (id batches, token
offsets), lens.py (logit lens), hf_compat.py (every transformers internal used).
"""

from ponder.lm.decode import DecodeRules, Samples, sample
from ponder.lm.delimiters import (
    THINK_CLOSE,
    THINK_OPEN,
    ensure_think_tokens,
    split_thought,
    strip_thoughts,
    wrap_thought,
)
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

"""The built-in tiny model: a transformers Llama with a character-level tokenizer.

Both are ordinary Hugging Face objects: the tokenizer is a ``tokenizers`` WordLevel model over
single characters (saved as ``tokenizer.json``, loaded by ``AutoTokenizer`` with no custom
code) and the model is a ``LlamaForCausalLM``. Everything else in ponder treats it exactly as
it treats a downloaded model.
"""

from __future__ import annotations

import string

from pydantic import BaseModel, Field

from ponder.config import SETTINGS
from ponder.lm.delimiters import THINK_CLOSE, THINK_OPEN

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
#: Printable ASCII plus newline: every character the synthetic tasks and BIG-bench-style text use.
CHARSET = list(string.printable[:95]) + ["\n"]


class TinyArch(BaseModel):
    """Shape of the tiny model (defaults: about 1.8M parameters)."""

    model_config = SETTINGS
    hidden_size: int = Field(192, ge=8, description="width of the residual stream")
    num_layers: int = Field(4, ge=1, description="transformer blocks")
    num_heads: int = Field(6, ge=1, description="attention heads (hidden size must divide by it)")
    intermediate_size: int = Field(512, ge=8, description="width of the MLP")
    max_positions: int = Field(512, ge=16, description="longest sequence (rotary positions)")


def build_char_tokenizer(vocab_size: int | None = None):
    """A character-level ``PreTrainedTokenizerFast`` with pad/bos/eos/unk and think delimiters.

    Encoding prepends ``<bos>`` (the tiny model always sees a start token); pass
    ``add_special_tokens=False`` to encode a continuation. ``vocab_size`` pads the vocabulary
    with placeholder tokens ``<pN>`` until ``len(tokenizer) == vocab_size`` (a stand-in for a
    real model's tokenizer of that size: text still encodes character by character, every id
    decodes to a string that encodes back to it).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = [PAD, BOS, EOS, UNK, *CHARSET]
    pattern = r"[\s\S]"
    if vocab_size is not None:
        fill = vocab_size - len(pieces) - 2  # the two think delimiters are added below
        if fill < 0:
            raise ValueError(
                f"vocab_size {vocab_size} is below the {len(pieces) + 2} tokens every ponder tokenizer has"
            )
        pieces += [f"<p{i}>" for i in range(fill)]
        pattern = r"<p\d+>|[\s\S]"
    vocab = {tok: i for i, tok in enumerate(pieces)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK)
    tok.add_special_tokens({"additional_special_tokens": [THINK_OPEN, THINK_CLOSE]})
    tok.model_max_length = TinyArch().max_positions
    return tok


def build_tiny_model(tokenizer, arch: TinyArch | None = None, seed: int = 0):
    """A freshly initialised ``LlamaForCausalLM`` sized by ``arch`` for ``tokenizer``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    arch = arch or TinyArch()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_heads,
        max_position_embeddings=arch.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)

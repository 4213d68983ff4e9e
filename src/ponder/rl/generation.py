"""Where RLP's thoughts are sampled: a small backend interface.

``TransformersBackend`` (default) decodes with ponder's own shared-prefix KV-cache loop
(:func:`ponder.lm.decode.sample`) on the live policy, so it never needs a weight sync.
:class:`~ponder.rl.vllm_backend.VLLMBackend` (extra ``vllm``, GPU only) keeps a vLLM engine beside
the policy, asleep while it trains, and sends it the policy's weights (CUDA IPC) before each rollout;
vLLM's prefix caching shares each prefix's KV cache among the G thoughts.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from typing import Protocol

import torch

from ponder.errors import PonderError
from ponder.lm import adapters
from ponder.lm.thinking import ThoughtFormat, Thoughts, sample_thoughts
from ponder.rl.vllm_backend import VLLMBackend

LOG = logging.getLogger(__name__)


class GenerationBackend(Protocol):
    """Samples ``n`` thoughts after each ``prefix + <think>`` under the thought rules of :mod:`ponder.lm.thinking`."""

    name: str

    def generate(
        self,
        prefixes: Sequence[Sequence[int]],
        n: int,
        max_tokens: int,
        temperature: float = 0.7,
        generators: Sequence[torch.Generator] | None = None,
    ) -> Thoughts:
        """``len(prefixes) * n`` thoughts with behaviour log-probs, rows ``i*n .. i*n+n-1`` for prefix ``i``."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the next ``generate`` use ``model``'s current weights."""
        ...


class TransformersBackend:
    """Decodes with the policy itself (ponder's KV-cache sampler); ``generators``: one per prefix, reproducible."""

    name = "transformers"

    def __init__(
        self,
        model,
        tokenizer,
        fmt: ThoughtFormat,
        top_p: float = 1.0,
        batch_size: int | None = None,
        logprob_temperature: float | None = None,
    ):
        self.model, self.tokenizer, self.fmt = model, tokenizer, fmt
        self.top_p, self.batch_size, self.logprob_temperature = top_p, batch_size, logprob_temperature

    def generate(self, prefixes, n, max_tokens, temperature=0.7, generators=None) -> Thoughts:
        return sample_thoughts(
            self.model,
            self.tokenizer,
            self.fmt,
            prefixes,
            n,
            max_tokens,
            temperature,
            self.top_p,
            prompt_generators=generators,
            batch_size=self.batch_size,
            logprob_temperature=self.logprob_temperature,
        )

    def sync_weights(self, model) -> None:
        self.model = model  # samples from the live module: nothing to copy


def make_backend(
    name: str,
    model,
    tokenizer,
    fmt: ThoughtFormat,
    top_p: float = 1.0,
    batch_size: int | None = None,
    logprob_temperature: float | None = None,
) -> GenerationBackend:
    """``transformers``, ``vllm``, or ``auto``: vLLM when it is installed and a GPU is visible, else transformers.

    A LoRA model samples with transformers: the vLLM backend syncs whole weights, not adapters.
    """
    lora = adapters.is_adapted(model)
    if name == "auto":
        usable = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available() and not lora
        name = "vllm" if usable else "transformers"
        LOG.info("generation backend: %s", name)
    if name == "vllm" and lora:
        raise PonderError(
            "the vllm generation backend does not sync LoRA adapters: use --generation-backend transformers"
        )
    if name == "transformers":
        return TransformersBackend(model, tokenizer, fmt, top_p, batch_size, logprob_temperature)
    if name == "vllm":
        return VLLMBackend(model, tokenizer, fmt, top_p, logprob_temperature)
    raise PonderError(f"unknown generation backend {name!r}: use transformers, vllm or auto")

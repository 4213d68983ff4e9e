"""Where the RL recipes' thoughts and answers are sampled: a small backend interface.

``TransformersBackend`` (default) decodes with ponder's own shared-prefix KV-cache loop
(:mod:`ponder.lm.thinking` over :func:`ponder.lm.decode.sample`) on the live policy, so it never
needs a weight sync. :class:`~ponder.rl.vllm_backend.VLLMBackend` (extra ``vllm``, GPU only) keeps
a vLLM engine beside the policy, asleep while it trains, and sends it the policy's weights (CUDA
IPC) before each rollout; vLLM's prefix caching shares each prefix's KV cache among the G samples.

RLP draws thoughts (:meth:`GenerationBackend.generate`), GRPO and TTRL whole completions
(:meth:`GenerationBackend.complete`); both take the run's one :class:`~ponder.lm.thinking.Sampling`
and return token ids with the backend's behaviour log-probs, which the engine reads as the
behaviour policy (mismatch statistics, ``--tis-cap``).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from typing import Literal, Protocol

import torch
from pydantic import BaseModel, Field

from ponder.errors import PonderError
from ponder.lm import adapters
from ponder.lm.thinking import Completions, Sampling, ThoughtFormat, Thoughts, complete, draw_thoughts
from ponder.rl.vllm_backend import VLLMBackend

LOG = logging.getLogger(__name__)

BACKENDS = ("auto", "transformers", "vllm")


class SamplerSettings(BaseModel):
    """The sampler setting every RL recipe has (``--generation-backend`` of ``ponder rlp``, ``grpo`` and ``ttrl``)."""

    generation_backend: Literal[BACKENDS] = Field(  # type: ignore[valid-type]
        "auto", description="sampler: transformers, vllm (GPU, extra `vllm`), auto (vllm when usable)"
    )


def sampling_of(cfg, logprob_temperature: float | None, think: bool = True) -> Sampling:
    """The one :class:`Sampling` of a recipe's settings ``cfg`` (fields it lacks keep their defaults).

    ``cfg.sample_batch_size`` bounds the prompts (positions) per decode batch; ``logprob_temperature``
    is the engine's (:attr:`~ponder.train.engine.Engine.sampler_logprob_temperature`).
    """
    budgets = {k: getattr(cfg, k) for k in ("max_thought_tokens", "max_answer_tokens") if hasattr(cfg, k)}
    return Sampling(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        think=think,
        batch_size=cfg.sample_batch_size,
        logprob_temperature=logprob_temperature,
        **budgets,
    )


class GenerationBackend(Protocol):
    """Samples under the thought rules of :mod:`ponder.lm.thinking`; ``generators``: one per prompt, reproducible."""

    name: str

    def generate(
        self,
        prefixes: Sequence[Sequence[int]],
        n: int,
        sampling: Sampling,
        generators: Sequence[torch.Generator] | None = None,
    ) -> Thoughts:
        """``len(prefixes) * n`` thoughts after each ``prefix + <think>`` with behaviour log-probs, rows ``i*n .. i*n+n-1``."""
        ...

    def complete(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int,
        sampling: Sampling,
        generators: Sequence[torch.Generator] | None = None,
    ) -> Completions:
        """``len(prompt_ids) * n`` completions ``[<think> thought </think>] answer``, ids and behaviour log-probs."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the next draw use ``model``'s current weights."""
        ...


class TransformersBackend:
    """Decodes with the policy itself (ponder's KV-cache sampler)."""

    name = "transformers"

    def __init__(self, model, tokenizer, fmt: ThoughtFormat):
        self.model, self.tokenizer, self.fmt = model, tokenizer, fmt

    def generate(self, prefixes, n, sampling: Sampling, generators=None) -> Thoughts:
        return draw_thoughts(self.model, self.tokenizer, self.fmt, prefixes, n, sampling, prompt_generators=generators)

    def complete(self, prompt_ids, n, sampling: Sampling, generators=None) -> Completions:
        return complete(self.model, self.tokenizer, self.fmt, prompt_ids, n, sampling, prompt_generators=generators)

    def sync_weights(self, model) -> None:
        self.model = model  # samples from the live module: nothing to copy


def sampler_of(cfg, model, tokenizer, fmt: ThoughtFormat, engine) -> tuple[Sampling, GenerationBackend]:
    """A recipe's :class:`Sampling` (from its settings ``cfg``) and the backend ``cfg.generation_backend`` names.

    ``engine``: the :class:`~ponder.train.engine.Engine` (its log-prob temperature is the sampler's).
    """
    sampling = sampling_of(cfg, engine.sampler_logprob_temperature)
    return sampling, make_backend(cfg.generation_backend, model, tokenizer, fmt, sampling.logprob_temperature)


def make_backend(
    name: str, model, tokenizer, fmt: ThoughtFormat, logprob_temperature: float | None = None
) -> GenerationBackend:
    """``transformers``, ``vllm``, or ``auto``: vLLM when it is installed and a GPU is visible, else transformers.

    ``logprob_temperature``: the run's (:class:`~ponder.lm.thinking.Sampling`); vLLM fixes it per engine.
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
        return TransformersBackend(model, tokenizer, fmt)
    if name == "vllm":
        return VLLMBackend(model, tokenizer, fmt, logprob_temperature)
    raise PonderError(f"unknown generation backend {name!r}: use {', '.join(BACKENDS)}")

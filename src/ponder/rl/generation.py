"""Where RLP's thoughts are sampled: a small backend interface.

``TransformersBackend`` (default) decodes with ponder's own shared-prefix KV-cache loop
(:func:`ponder.lm.sample.sample`) on the live policy, so it never needs a weight sync.
``VLLMBackend`` (extra ``vllm``, GPU only) keeps a vLLM engine beside the policy and loads the
policy's weights into it after every optimizer step; vLLM's prefix caching shares each
prefix's KV cache among the G thoughts.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from typing import Protocol

import torch

from ponder.errors import PonderError
from ponder.lm.thinking import ThoughtFormat, Thoughts, sample_thoughts

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


class VLLMBackend:
    """A vLLM engine on the GPU, refreshed from the policy after each update (not reproducible per seed)."""

    name = "vllm"

    def __init__(
        self,
        model,
        tokenizer,
        fmt: ThoughtFormat,
        top_p: float = 1.0,
        logprob_temperature: float | None = None,
        gpu_memory_utilization: float = 0.3,
    ):
        try:
            import vllm
        except ImportError as e:
            raise PonderError(
                "the vLLM generation backend needs vLLM: install ponder with the `vllm` extra "
                "(pip install 'ponder[vllm]') on a machine with a CUDA GPU, or use the transformers "
                "backend (--generation-backend transformers)"
            ) from e
        if not torch.cuda.is_available():
            raise PonderError(
                "the vLLM generation backend needs a CUDA GPU; none is visible. Use "
                "--generation-backend transformers (the default on CPU)."
            )
        import tempfile

        self._vllm = vllm
        self.open_id, self.close_id, self.eos = fmt.open_id, fmt.close_id, list(fmt.eos_ids)
        self.top_p = top_p
        self._dir = tempfile.mkdtemp(prefix="ponder-vllm-")
        model.save_pretrained(self._dir)
        tokenizer.save_pretrained(self._dir)
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        self.llm = vllm.LLM(
            model=self._dir, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True
        )

    def generate(self, prefixes, n, max_tokens, temperature=0.7, generators=None) -> Thoughts:
        seed = (
            None
            if generators is None
            else int(torch.randint(2**31 - 1, (1,), generator=generators[0], device=generators[0].device))
        )
        params = self._vllm.SamplingParams(
            n=n,
            temperature=temperature,
            top_p=self.top_p,
            max_tokens=max_tokens,
            logprobs=0,
            min_tokens=1,
            stop_token_ids=[self.close_id],
            seed=seed,
            logit_bias={t: -100.0 for t in [self.open_id, *self.eos]},
        )
        prompts = [{"prompt_token_ids": [*p, self.open_id]} for p in prefixes]
        ids, logps, closed = [], [], []
        for out in self.llm.generate(prompts, params, use_tqdm=False):
            for c in out.outputs:
                toks = list(c.token_ids)
                shut = bool(toks) and toks[-1] == self.close_id
                ids.append(toks[:-1] if shut else toks)
                logps.append(torch.tensor([step[t].logprob for step, t in zip(c.logprobs, toks)]))
                closed.append(shut)
        return Thoughts([list(p) for p in prefixes], n, ids, logps, torch.tensor(closed))

    def sync_weights(self, model) -> None:
        # The engine's in-process model (vLLM's offline LLM, single GPU); names match the HF checkpoint's.
        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.model.load_weights((name, p.detach()) for name, p in model.state_dict().items())


def make_backend(
    name: str,
    model,
    tokenizer,
    fmt: ThoughtFormat,
    top_p: float = 1.0,
    batch_size: int | None = None,
    logprob_temperature: float | None = None,
) -> GenerationBackend:
    """``transformers``, ``vllm``, or ``auto``: vLLM when it is installed and a GPU is visible, else transformers."""
    if name == "auto":
        name = "vllm" if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available() else "transformers"
        LOG.info("generation backend: %s", name)
    if name == "transformers":
        return TransformersBackend(model, tokenizer, fmt, top_p, batch_size, logprob_temperature)
    if name == "vllm":
        return VLLMBackend(model, tokenizer, fmt, top_p, logprob_temperature)
    raise PonderError(f"unknown generation backend {name!r}: use transformers, vllm or auto")

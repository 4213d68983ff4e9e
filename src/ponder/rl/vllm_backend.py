"""Thoughts and answers sampled by a vLLM engine colocated with the policy on one GPU (extra ``vllm``).

Written against vLLM's public API as read in vllm-project/vllm at commit 055e47c2 (the newest
snapshot this project could read; the weight-transfer API below is in vLLM's docs since 0.29) and
never run here: no vLLM install and no GPU were available (README, "GPU path"). What it uses:

* ``LLM(enable_sleep_mode=True)``: the engine sleeps (``sleep(level=2)``: weights and KV cache
  released) while the policy trains and wakes for rollouts: ``wake_up(tags=["weights"])``, the
  weight sync, then ``wake_up(tags=["kv_cache"])`` (the order vLLM's sleep-mode docs give for RL).
* Weight sync through vLLM's weight-transfer API, CUDA IPC backend
  (``weight_transfer_config=WeightTransferConfig(backend="ipc")``): the trainer-side engine from
  ``WeightTransferTrainerFactory.trainer_init(IPCTrainerInitInfo(rank=0), client=..., source=ModuleSource(policy))``
  and one ``send_weights()`` per sync. The client is vLLM's four-method protocol
  (``VLLMWeightSyncClient``) over the in-process ``LLM``'s ``init_weight_transfer_engine``,
  ``start_weight_update``, ``update_weights`` and ``finish_weight_update``. The engine starts on
  dummy weights (``load_format="dummy"``); the policy's are sent before the first rollout.
* ``enable_prefix_caching=True``: a prefix's KV cache is shared by its G thoughts and by the other
  positions of its document; the cache is reset after every weight sync (old weights' KV is stale).
* One ``SamplingParams`` per prefix with its own ``seed``, drawn from ponder's per-prefix
  generator: identical prefixes get different thought groups, and vLLM gives child ``i`` of the
  ``n`` the seed ``seed + i``.
* ``logprobs=0`` with the engine's ``logprobs_mode="processed_logprobs"`` (ponder's default,
  log-probs at the sampling temperature): each sampled token's log-prob under the distribution it
  was drawn from (after the temperature, the logit bias that bans ``<think>``/EOS inside a thought,
  and top-p), returned in :attr:`Thoughts.logprobs`; with ``--logprob-temperature one``,
  ``"raw_logprobs"`` (the model's own distribution at temperature 1). The trainer scores the
  tempered distribution over the whole vocabulary, without the bans and top-p: the engine logs the
  difference every step (``logp_mismatch_*``) and ``--tis-cap`` corrects it.
* Completions (GRPO, TTRL): the thoughts as above, then one request per row for its answer after
  ``prompt <think> thought </think>`` (ids in, ids out), with the answer rules' bans (both
  delimiters) as logit bias and EOS as stop tokens. Stop strings need text, which this engine does
  not make (``skip_tokenizer_init``): the answer is cut where the one sampler's own stop test
  (:func:`ponder.lm.decode.stop_length`) ends it, its log-probs with it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import torch

from ponder.errors import PonderError
from ponder.lm.decode import stop_length
from ponder.lm.thinking import Completions, Sampling, ThoughtFormat, Thoughts

#: A logit bias that no sampler overcomes: vLLM's way to ban a token for one request.
BAN = -100.0


def import_vllm():
    """The ``vllm`` module, or a PonderError saying how to get it."""
    try:
        import vllm
    except ImportError as e:
        raise PonderError(
            "the vLLM generation backend needs vLLM: install ponder with the `vllm` extra "
            "(pip install 'ponder[vllm]') on a machine with a CUDA GPU, or use the transformers "
            "backend (--generation-backend transformers)"
        ) from e
    return vllm


def on_cuda(model) -> bool:
    return next(model.parameters()).device.type == "cuda"


class EngineClient:
    """vLLM's weight-sync client protocol (the four calls a trainer engine drives) over an in-process ``LLM``."""

    def __init__(self, llm):
        self.llm = llm

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self.llm.init_weight_transfer_engine({"init_info": init_info})

    def start_weight_update(self) -> None:
        self.llm.start_weight_update()

    def update_weights(self, update_info) -> None:
        self.llm.update_weights({"update_info": update_info})

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self.llm.finish_weight_update(weight_version)


def request_seeds(generators: Sequence[torch.Generator] | None, num_prefixes: int, n: int) -> list[int | None]:
    """One vLLM seed per prefix, drawn from its generator (None: the engine's own randomness).

    vLLM seeds a prefix's ``n`` children ``seed .. seed + n - 1``, so seeds leave room for them.
    """
    if generators is None:
        return [None] * num_prefixes
    if len(generators) != num_prefixes:
        raise ValueError(f"{len(generators)} generators for {num_prefixes} prefixes: pass one per prefix")
    return [int(torch.randint(2**31 - n, (1,), generator=g, device=g.device)) for g in generators]


def row_seeds(generators: Sequence[torch.Generator] | None, num_prefixes: int, n: int) -> list[int | None]:
    """One vLLM seed per row (``n`` per prefix, drawn in order from its generator): each answer its own."""
    if generators is None:
        return [None] * (num_prefixes * n)
    return [seed for g in generators for seed in request_seeds([g] * n, n, 1)]


def completion_outputs(outputs) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Token ids and fp32 log-probs of each request's completions, in order (one list entry per completion)."""
    ids, logprobs = [], []
    for out in outputs:
        for c in out.outputs:
            toks = list(c.token_ids)
            if c.logprobs is None or len(c.logprobs) != len(toks):
                raise PonderError("vLLM returned no per-token log-probs: the engine must be asked for logprobs=0")
            ids.append(toks)
            logprobs.append(torch.tensor([c.logprobs[i][t].logprob for i, t in enumerate(toks)], dtype=torch.float32))
    return ids, logprobs


def thoughts_from_outputs(outputs, close_id: int, prefixes: Sequence[Sequence[int]], n: int) -> Thoughts:
    """``Thoughts`` from vLLM ``RequestOutput``s (one per prefix, ``n`` completions each, in order).

    A completion the model closed ends with ``close_id`` (vLLM keeps a stop token in ``token_ids``
    and names it in ``stop_reason``); the thought is the tokens before it, and its log-probs keep
    the closing token's, since stopping is the model's own action.
    """
    for out in outputs:
        for c in out.outputs:
            toks = list(c.token_ids)
            if c.stop_reason == close_id and not (toks and toks[-1] == close_id):
                raise PonderError("vLLM stopped at </think> but did not return it: this vLLM version is not supported")
    sampled, logprobs = completion_outputs(outputs)
    closed = [bool(toks) and toks[-1] == close_id for toks in sampled]
    ids = [toks[:-1] if shut else toks for toks, shut in zip(sampled, closed)]
    return Thoughts([list(p) for p in prefixes], n, ids, logprobs, torch.tensor(closed, dtype=torch.bool))


class VLLMBackend:
    """A vLLM engine beside the policy on its GPU: asleep while the policy trains, refreshed before each rollout."""

    name = "vllm"

    def __init__(
        self,
        model,
        tokenizer,
        fmt: ThoughtFormat,
        logprob_temperature: float | None = None,
        gpu_memory_utilization: float = 0.3,
        enforce_eager: bool = False,
    ):
        vllm = import_vllm()
        if not torch.cuda.is_available():
            raise PonderError(
                "the vLLM generation backend needs a CUDA GPU; none is visible. Use "
                "--generation-backend transformers (the default on CPU)."
            )
        if not on_cuda(model):
            raise PonderError(
                "the vLLM backend shares the policy's weights with its engine by CUDA IPC: put the policy on the GPU "
                "(--device cuda)"
            )
        from vllm.config import WeightTransferConfig

        if logprob_temperature not in (None, 1.0):
            raise PonderError(f"vLLM reports log-probs at the sampling temperature or at 1, not {logprob_temperature}")
        self._vllm = vllm
        self.tokenizer, self.logprob_temperature = tokenizer, logprob_temperature
        self.open_id, self.close_id = fmt.open_id, fmt.close_id
        self.min_tokens = max(1, fmt.min_thought_tokens)
        self.banned = list(fmt.thought_rules().ban_ids)  # the one sampler's thought bans (EOS, <think>, structure)
        self.answer_banned = list(fmt.answer_rules().ban_ids)  # both delimiters
        self.eos_ids = list(fmt.eos_ids)  # an answer ends at EOS (kept), as in the one sampler
        # What the sampler's stop test skips: padding, BOS and the ids that end a text.
        specials = (tokenizer.pad_token_id, tokenizer.bos_token_id)
        self.drop_ids = {int(t) for t in specials if t is not None} | set(self.eos_ids)
        # The CUDA IPC handles reach vLLM's engine process pickled (vLLM's RLHF IPC example sets the same).
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        self._dir = tempfile.mkdtemp(prefix="ponder-vllm-")
        model.config.save_pretrained(self._dir)  # architecture only: the weights arrive by IPC
        tokenizer.save_pretrained(self._dir)
        self.llm = vllm.LLM(
            model=self._dir,
            dtype="bfloat16" if torch.cuda.is_bf16_supported() else "float16",
            load_format="dummy",
            skip_tokenizer_init=True,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            enable_prefix_caching=True,
            enable_sleep_mode=True,
            logprobs_mode="processed_logprobs" if logprob_temperature is None else "raw_logprobs",
            weight_transfer_config=WeightTransferConfig(backend="ipc"),
        )
        self.model, self._sender = None, None
        self._stale, self._asleep = True, False
        self.sync_weights(model)

    # ------------------------------------------------------------------ weights
    def sync_weights(self, model) -> None:
        """Mark the engine's weights stale; they are sent (zero-copy, CUDA IPC) when the next rollout needs them."""
        if model is not self.model:
            from vllm.distributed.weight_transfer import ModuleSource, WeightTransferTrainerFactory
            from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

            self.model = model
            self._sender = WeightTransferTrainerFactory.trainer_init(
                IPCTrainerInitInfo(rank=0), client=EngineClient(self.llm), source=ModuleSource(model)
            )
        self._stale = True

    def _wake(self) -> None:
        """Weights in place and a KV cache allocated: ready to sample with the current policy."""
        if self._stale:
            if self._asleep:
                self.llm.wake_up(tags=["weights"])
            with torch.no_grad():
                self._sender.send_weights()
            self._stale = False
        if self._asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        self.llm.reset_prefix_cache()  # cached prefixes were computed by the previous weights

    def sleep(self) -> None:
        """Release the engine's GPU memory (weights and KV cache) for training; the next rollout re-sends weights."""
        if not self._asleep:
            self.llm.sleep(level=2)
            self._asleep, self._stale = True, True

    # ------------------------------------------------------------------ sampling
    def _check(self, sampling: Sampling) -> None:
        if sampling.logprob_temperature != self.logprob_temperature:
            raise PonderError(
                "this vLLM engine reports log-probs at "
                f"{'the sampling temperature' if self.logprob_temperature is None else 'temperature 1'}: "
                "sample with the logprob temperature it was built for"
            )

    def generate(self, prefixes, n, sampling: Sampling, generators=None) -> Thoughts:
        """``len(prefixes) * n`` thoughts after each ``prefix + <think>`` (see :class:`ponder.rl.generation.GenerationBackend`)."""
        self._check(sampling)
        self._wake()
        thoughts = self._thoughts(prefixes, n, sampling, generators)
        self.sleep()
        return thoughts

    def complete(self, prompt_ids, n, sampling: Sampling, generators=None) -> Completions:
        """``len(prompt_ids) * n`` completions ``[<think> thought </think>] answer`` (module docstring), ids in and out."""
        self._check(sampling)
        self._wake()
        prompts = [list(p) for p in prompt_ids]
        thoughts = self._thoughts(prompts, n, sampling, generators) if sampling.think else None
        if thoughts is None:
            contexts = [p for p in prompts for _ in range(n)]
        else:
            contexts = [prompts[r // n] + [self.open_id, *t, self.close_id] for r, t in enumerate(thoughts.ids)]
        ids, logprobs, finished = self._answers(contexts, sampling, row_seeds(generators, len(prompts), n))
        self.sleep()
        return Completions(prompts, n, thoughts, ids, logprobs, finished, self.open_id, self.close_id)

    def _thoughts(self, prefixes, n: int, sampling: Sampling, generators) -> Thoughts:
        params = [
            self._vllm.SamplingParams(
                n=n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_thought_tokens,
                min_tokens=self.min_tokens,
                stop_token_ids=[self.close_id],
                seed=seed,
                logprobs=0,
                logit_bias={t: BAN for t in self.banned},
                detokenize=False,
            )
            for seed in request_seeds(generators, len(prefixes), n)
        ]
        prompts = [{"prompt_token_ids": [*p, self.open_id]} for p in prefixes]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return thoughts_from_outputs(outputs, self.close_id, prefixes, n)

    def _answers(self, contexts, sampling: Sampling, seeds) -> tuple[list[list[int]], list[torch.Tensor], torch.Tensor]:
        """One answer per context: ``(ids, log-probs, finished [N])``, cut at the first stop string as the sampler cuts."""
        params = [
            self._vllm.SamplingParams(
                n=1,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_answer_tokens,
                stop_token_ids=self.eos_ids,
                seed=seed,
                logprobs=0,
                logit_bias={t: BAN for t in self.answer_banned},
                detokenize=False,
            )
            for seed in seeds
        ]
        outputs = self.llm.generate([{"prompt_token_ids": list(c)} for c in contexts], params, use_tqdm=False)
        ids, logprobs = completion_outputs(outputs)
        finished = []
        for r, toks in enumerate(ids):
            cut = stop_length(self.tokenizer, toks, sampling.stops, self.drop_ids, after_text=True)
            if cut is not None:
                ids[r], logprobs[r] = toks[:cut], logprobs[r][:cut]
            finished.append(cut is not None or (bool(toks) and toks[-1] in self.eos_ids))
        return ids, logprobs, torch.tensor(finished, dtype=torch.bool)

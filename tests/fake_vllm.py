"""A stand-in ``vllm`` package for testing ponder's vLLM backend without vLLM or a GPU.

Every class and method ponder calls has the signature it has in vllm-project/vllm at commit
055e47c2 (the snapshot the backend was written against), keyword names and defaults included, so
a call ponder makes with a wrong name or a removed argument fails here as it would there:

* ``LLM.__init__(model, *, ..., **kwargs)`` with ``kwargs`` checked against the ``EngineArgs`` fields
  ponder may pass (vllm/frontend/entrypoints/llm.py, vllm/engine/arg_utils.py);
* ``LLM.generate / sleep / wake_up / reset_prefix_cache / init_weight_transfer_engine /
  start_weight_update / update_weights / finish_weight_update`` (vllm/frontend/entrypoints/llm.py);
* ``SamplingParams`` fields (vllm/frontend/processing/sampling_params.py);
* ``CompletionOutput`` / ``RequestOutput`` / ``Logprob`` (vllm/frontend/processing/outputs.py, vllm/logprobs.py);
* ``WeightTransferConfig`` (vllm/config), ``ModuleSource``, ``WeightTransferTrainerFactory.trainer_init``
  and ``IPCTrainerInitInfo`` with the IPC trainer engine's call order
  (vllm/backends/distributed/weight_transfer/{base,factory,ipc_engine}.py);
* parallel sampling gives child ``i`` of a seeded request the seed ``seed + i``
  (vllm/v1/engine/parallel_sampling.py); a stop token stays in ``token_ids`` and is the
  ``stop_reason`` (vllm/v1/core/sched/utils.py ``check_stop``).

Sampling is a seeded pseudo-random walk, not a model: it only has to be reproducible per seed.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

#: EngineArgs fields ponder's backend may pass to LLM(...) (each exists in vLLM's EngineArgs).
ENGINE_ARGS = {
    "dtype",
    "load_format",
    "skip_tokenizer_init",
    "gpu_memory_utilization",
    "enforce_eager",
    "enable_prefix_caching",
    "enable_sleep_mode",
    "logprobs_mode",
    "weight_transfer_config",
    "seed",
}
LOGPROBS_MODES = ("raw_logprobs", "processed_logprobs", "raw_logits", "processed_logits")


@dataclass
class SamplingParams:
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True
    logit_bias: dict[int, float] | None = None
    allowed_token_ids: list[int] | None = None


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: Any
    outputs: list[CompletionOutput]
    finished: bool


@dataclass
class WeightTransferConfig:
    backend: str = "nccl"


@dataclass
class TrainerInitInfo:
    backend: ClassVar[str]
    rank: int = field(kw_only=True)

    @property
    def is_sender(self) -> bool:
        return self.rank == 0


@dataclass
class IPCTrainerInitInfo(TrainerInitInfo):
    backend: ClassVar[str] = "ipc"
    packed: bool = False
    packed_buffer_size_bytes: int = 1 << 30


class ModuleSource:
    def __init__(self, module) -> None:
        self._module = module

    def __iter__(self):
        yield from self._module.named_parameters()


class IPCTrainerEngine:
    """The IPC trainer engine's control flow: one start / update / finish round per ``send_weights``."""

    def __init__(self, client, source, is_sender: bool):
        self.client, self.source, self.is_sender = client, source, is_sender

    def send_weights(self) -> None:
        if self.is_sender:
            self.client.start_weight_update()
        names, dtypes, shapes, handles = [], [], [], []
        for name, tensor in self.source:
            names.append(name)
            dtypes.append(str(tensor.dtype).split(".")[-1])
            shapes.append(list(tensor.shape))
            handles.append({"fake-gpu-uuid": ("shared storage of", tensor.detach().data_ptr())})
        if self.is_sender:
            self.client.update_weights(
                {"names": names, "dtype_names": dtypes, "shapes": shapes, "ipc_handles": handles}
            )
            self.client.finish_weight_update()


class WeightTransferTrainerFactory:
    @classmethod
    def trainer_init(cls, init_info, *, client, source=None):
        if init_info.backend != "ipc":
            raise ValueError(f"Invalid weight transfer backend: {init_info.backend}")
        if source is None:
            raise ValueError("IPC trainer weight transfer requires a WeightSource.")
        engine = IPCTrainerEngine(client, source, init_info.is_sender)
        if engine.is_sender:
            client.init_weight_transfer_engine({"packed": init_info.packed})
        return engine


class LLM:
    """Records every call in ``calls`` (name, arguments); ``instances`` holds every engine built."""

    instances: ClassVar[list[LLM]] = []

    def __init__(self, model: str, *, seed: int = 0, gpu_memory_utilization: float = 0.92, **kwargs: Any) -> None:
        unknown = set(kwargs) - ENGINE_ARGS
        if unknown:
            raise TypeError(f"LLM() got unexpected engine arguments {sorted(unknown)}")
        if kwargs.get("logprobs_mode", "raw_logprobs") not in LOGPROBS_MODES:
            raise ValueError(f"logprobs_mode must be one of {LOGPROBS_MODES}")
        self.model, self.kwargs = model, {"seed": seed, "gpu_memory_utilization": gpu_memory_utilization, **kwargs}
        self.calls: list[tuple[str, Any]] = []
        self.weights: dict | None = None
        self.transfer_ready, self.sleeping = False, set()
        self._global = random.Random(seed)
        self.vocab_size = json.loads((Path(model) / "config.json").read_text())["vocab_size"]  # the model dir's config
        LLM.instances.append(self)

    # ---- sleep mode
    def sleep(self, level: int = 1, mode: str = "abort"):
        if not self.kwargs.get("enable_sleep_mode"):
            raise ValueError("Sleep mode is not enabled")
        self.calls.append(("sleep", level))
        self.sleeping = {"weights", "kv_cache"} if level >= 1 else {"scheduling"}
        if level == 2:
            self.weights = None  # discarded

    def wake_up(self, tags: list[str] | None = None):
        if tags is not None and not set(tags) <= {"weights", "kv_cache", "scheduling"}:
            raise ValueError(f"unknown wake-up tags {tags}")
        self.calls.append(("wake_up", tags))
        self.sleeping -= set(tags) if tags is not None else self.sleeping

    def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        self.calls.append(("reset_prefix_cache", None))
        return True

    # ---- weight transfer (the LLM's RL methods)
    def init_weight_transfer_engine(self, request) -> None:
        init_info = request["init_info"] if isinstance(request, dict) else request.init_info
        if self.kwargs.get("weight_transfer_config") is None:
            raise RuntimeError("no weight_transfer_config: the workers have no weight transfer engine")
        self.calls.append(("init_weight_transfer_engine", init_info))
        self.transfer_ready = True

    def start_weight_update(self) -> None:
        assert self.transfer_ready and "weights" not in self.sleeping, "weights must be awake before an update"
        self.calls.append(("start_weight_update", None))

    def update_weights(self, request) -> None:
        update_info = request["update_info"] if isinstance(request, dict) else request.update_info
        self.calls.append(("update_weights", update_info))
        self.weights = {name: handle for name, handle in zip(update_info["names"], update_info["ipc_handles"])}

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self.calls.append(("finish_weight_update", weight_version))

    # ---- generation
    def generate(
        self,
        prompts,
        sampling_params=None,
        *,
        use_tqdm=True,
        lora_request=None,
        priority=None,
        tokenization_kwargs=None,
        mm_processor_kwargs=None,
    ) -> list[RequestOutput]:
        assert not self.sleeping, f"generate while asleep ({self.sleeping})"
        assert self.weights is not None, "generate with discarded or dummy weights"
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(params) == len(prompts), "one SamplingParams per prompt"
        self.calls.append(("generate", (prompts, params)))
        return [
            RequestOutput(str(i), None, list(p["prompt_token_ids"]), None, self._complete(sp), True)
            for i, (p, sp) in enumerate(zip(prompts, params))
        ]

    def _complete(self, sp: SamplingParams) -> list[CompletionOutput]:
        outs = []
        for index in range(sp.n):
            rng = self._global if sp.seed is None else random.Random(sp.seed + index)
            banned = {t for t, b in (sp.logit_bias or {}).items() if b <= -100}
            toks, logprobs, stop = [], [], None
            while len(toks) < sp.max_tokens:
                tok = rng.choice([t for t in range(self.vocab_size) if t not in banned])
                if len(toks) < sp.min_tokens and tok in (sp.stop_token_ids or []):
                    continue
                toks.append(tok)
                logprobs.append({tok: Logprob(logprob=-rng.random() * 3, rank=1)})
                if tok in (sp.stop_token_ids or []):
                    stop = tok
                    break
            outs.append(
                CompletionOutput(
                    index,
                    "" if not sp.detokenize else "<text>",
                    toks,
                    sum(lp[t].logprob for lp, t in zip(logprobs, toks)),
                    logprobs if sp.logprobs is not None else None,
                    "stop" if stop is not None else "length",
                    stop,
                )
            )
        return outs


def install(monkeypatch) -> types.ModuleType:
    """Put this fake in ``sys.modules`` as ``vllm`` (and its submodules) for one test."""
    LLM.instances.clear()
    modules = {
        "vllm": dict(LLM=LLM, SamplingParams=SamplingParams),
        "vllm.config": dict(WeightTransferConfig=WeightTransferConfig),
        "vllm.distributed": {},
        "vllm.distributed.weight_transfer": dict(
            ModuleSource=ModuleSource, WeightTransferTrainerFactory=WeightTransferTrainerFactory
        ),
        "vllm.distributed.weight_transfer.ipc_engine": dict(IPCTrainerInitInfo=IPCTrainerInitInfo),
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    return sys.modules["vllm"]


def field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}

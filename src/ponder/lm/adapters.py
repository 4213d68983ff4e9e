"""LoRA adapters through peft (optional extra ``peft``): train low-rank adapters on a frozen base.

:func:`add_lora` wraps a model in a ``peft.PeftModel`` whose adapter ``default`` is the policy's:
only the adapter's parameters require gradients, the base weights stay bit-identical. The wrapper
runs wherever a model does (its forward is the model's, adapters active; the scorer and the sampler
reach the transformers model under it through :func:`ponder.lm.hf_compat.transformers_model`).

More adapters live beside the policy's in the same ``PeftModel``, on the one frozen base: RLP's EMA
teacher is the base plus an adapter holding the EMA of the policy's adapter
(:func:`add_adapter_copy`, :func:`active_adapter`), so no second copy of the model exists.

Files: an adapter is saved the way ``PeftModel.save_pretrained`` saves one (``adapter_config.json``
+ ``adapter_model.safetensors``, loadable by ``PeftModel.from_pretrained``); :func:`save_merged`
writes the base with the adapter merged in as an ordinary Hugging Face model.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from ponder.errors import ModelLoadError, PonderError

try:  # an optional extra: everything here asks for it only when LoRA is used
    import peft
    from peft.tuners.tuners_utils import BaseTunerLayer
except ImportError:  # pragma: no cover - the core install
    peft = None
    BaseTunerLayer = ()

#: peft's name of a model's first adapter: the policy's.
POLICY = "default"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: Every linear layer but the output layer (peft's own shorthand).
ALL_LINEAR = "all-linear"


def require_peft() -> None:
    if peft is None:
        raise PonderError("LoRA adapters need peft: `pip install 'ponder[peft]'` (or drop --lora-rank)")


def is_adapted(model) -> bool:
    """Whether ``model`` is a peft model (LoRA adapters on a frozen base)."""
    return peft is not None and isinstance(model, peft.PeftModel)


def target_modules(spec: str) -> str | list[str]:
    """``all-linear`` or a comma-separated list of module names (``q_proj,v_proj``) as peft takes them."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise PonderError(f"lora target modules {spec!r} name no module: pass all-linear or e.g. q_proj,v_proj")
    return ALL_LINEAR if names == [ALL_LINEAR] else names


def add_lora(model: nn.Module, rank: int, alpha: float, dropout: float = 0.0, targets: str = ALL_LINEAR, seed: int = 0):
    """``model`` wrapped in a ``PeftModel`` with a fresh LoRA adapter (``B = 0``: the wrapped model computes what ``model`` did).

    The base is frozen in place (the same module, its linear layers now carrying adapters); only the
    adapter's parameters require gradients. ``targets``: see :func:`target_modules`. The adapter's
    random ``A`` is drawn from ``seed`` (the global generators are left as they were), so a run is
    reproducible. The adapter records the base model's ``name_or_path`` so a saved adapter names the
    model it adapts.
    """
    require_peft()
    if rank < 1:
        raise PonderError(f"lora rank must be at least 1 (got {rank})")
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules(targets),
        base_model_name_or_path=getattr(getattr(model, "config", None), "name_or_path", None) or None,
    )
    try:
        with _own_generators(model):
            torch.manual_seed(seed)
            return peft.get_peft_model(model, config)
    except ValueError as e:  # peft's "Target modules {...} not found in the base model"
        reason = " ".join(str(e).split())[:200]
        raise PonderError(
            f"lora target modules {targets!r} do not fit {type(model).__name__} ({reason}); "
            "pass all-linear or names of its linear layers, e.g. q_proj,v_proj"
        ) from None


def _own_generators(model: nn.Module):
    """A block whose use of the global random number generators (CPU and the model's GPUs) is undone after it."""
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    return torch.random.fork_rng(devices=cuda)


def adapter_parameters(model, name: str = POLICY) -> dict[str, Tensor]:
    """Adapter ``name``'s parameters by their name with the adapter's name left out (the same keys for every adapter)."""
    part = f".{name}."
    return {n.replace(part, "."): p for n, p in model.named_parameters() if part in n and "lora_" in n}


def add_adapter_copy(model, name: str, source: str = POLICY) -> dict[str, Tensor]:
    """A new frozen adapter ``name`` holding a copy of adapter ``source``'s weights; returns its parameters.

    The active adapter, which parameters require gradients and the random number generators (peft
    draws the new adapter's initial weights, overwritten here) stay as they were: a run resumed from a
    checkpoint, which adds the adapter after restoring the generators, samples what it would have.
    """
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    with _own_generators(model):
        model.add_adapter(name, copy.deepcopy(model.peft_config[source]))
    target, origin = adapter_parameters(model, name), adapter_parameters(model, source)
    if target.keys() != origin.keys():
        raise RuntimeError(f"adapter {name!r} does not mirror adapter {source!r}")
    with torch.no_grad():
        for key, p in target.items():
            p.copy_(origin[key])
    _restore_trainable(model, trainable)
    return target


def _restore_trainable(model, trainable: set[int]) -> None:
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)


@contextlib.contextmanager
def active_adapter(model, name: str) -> Iterator[nn.Module]:
    """Inside the block ``model`` computes with adapter ``name`` (in eval mode); it is put back as it was after.

    Which parameters require gradients is restored too (peft's ``set_adapter`` changes it), so a
    graph built before the block backpropagates into the same parameters after it.
    """
    before = list(model.active_adapters)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    was_training = model.training
    model.set_adapter(name, inference_mode=True)
    model.eval()
    try:
        yield model
    finally:
        model.set_adapter(before[0] if len(before) == 1 else before)
        _restore_trainable(model, trainable)
        model.train(was_training)


# ---------------------------------------------------------------- files


def is_adapter_dir(path) -> bool:
    """A folder holding a saved adapter (``adapter_config.json``)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def save_adapter(model, path, name: str = POLICY) -> Path:
    """Adapter ``name`` as ``PeftModel.save_pretrained`` writes one: ``adapter_config.json`` + ``adapter_model.safetensors``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(model.peft_config[name])
    config.inference_mode = True
    config.save_pretrained(str(path))
    weights = peft.get_peft_model_state_dict(model, adapter_name=name, save_embedding_layers=False)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(path / ADAPTER_WEIGHTS), {"format": "pt"}
    )
    return path


def save_pretrained(model, path) -> None:
    """The policy's weights into ``path``: its adapter for a peft model, else the whole model (``save_pretrained``)."""
    if is_adapted(model):
        save_adapter(model, path)
    else:
        model.save_pretrained(path)


def load_adapter_weights(model, path, name: str = POLICY) -> None:
    """Copy a saved adapter's weights into adapter ``name`` of ``model`` (same rank and targets)."""
    from safetensors.torch import load_file

    file = Path(path) / ADAPTER_WEIGHTS
    try:
        weights = load_file(str(file))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
        raise ModelLoadError(f"cannot read the adapter weights {file} ({type(e).__name__}: {e})") from None
    before = {k: p.detach().clone() for k, p in adapter_parameters(model, name).items()}
    result = peft.set_peft_model_state_dict(model, weights, adapter_name=name)
    unexpected = list(getattr(result, "unexpected_keys", []))
    if unexpected or len(weights) != len(before):
        raise ModelLoadError(
            f"the adapter in {path} does not fit the model ({len(weights)} tensors for {len(before)}; "
            f"unexpected {unexpected[:3]}): was it trained with other --lora-rank or --lora-target-modules?"
        )


@torch.no_grad()
def merged_state_dict(model) -> dict[str, Tensor]:
    """The base model's state dict with the active adapters merged into their layers (nothing is changed in place).

    Keys are the plain model's (no ``base_layer``, no adapter tensors), so ``save_pretrained`` of
    the base with this state dict writes an ordinary checkpoint. One merged weight exists at a time.
    """
    base = model.get_base_model()
    tuned = {name: m for name, m in base.named_modules() if isinstance(m, BaseTunerLayer)}
    out = {}
    for key, value in base.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        layer_name = owner.removesuffix(".base_layer")
        layer = tuned.get(layer_name)
        if layer is None:
            if not any(key.startswith(f"{t}.") for t in tuned):
                out[key] = value
            continue
        if not owner.endswith(".base_layer"):
            continue  # the adapters' own tensors
        if leaf == "weight":
            for adapter in layer.active_adapters:
                value = value + layer.get_delta_weight(adapter).to(value.dtype)
        out[f"{layer_name}.{leaf}"] = value
    return out


def save_merged(model, path, tokenizer=None) -> Path:
    """The base with the policy's adapter merged in, as an ordinary Hugging Face model (+ tokenizer) in ``path``."""
    path = Path(path)
    model.get_base_model().save_pretrained(path, state_dict=merged_state_dict(model))
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


class MergedModel:
    """What :func:`save_merged` writes, as an object with ``save_pretrained(path)`` (a checkpoint's extra model)."""

    def __init__(self, model, tokenizer=None):
        self.model, self.tokenizer = model, tokenizer

    def save_pretrained(self, path) -> None:
        save_merged(self.model, path, self.tokenizer)


def adapter_base(path) -> str:
    """The base model a saved adapter names (``base_model_name_or_path`` of its config)."""
    try:
        base = json.loads((Path(path) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{Path(path) / ADAPTER_CONFIG} is unreadable ({type(e).__name__}: {e})") from None
    if not base:
        raise ModelLoadError(
            f"the adapter in {path} names no base model (base_model_name_or_path is empty); "
            "load its merged/ folder instead, or set base_model_name_or_path in its adapter_config.json"
        )
    return str(base)


def apply_saved_adapter(model: nn.Module, path) -> nn.Module:
    """``model`` (the base) with the adapter saved in ``path`` merged in: an ordinary model again."""
    require_peft()
    try:
        wrapped = peft.PeftModel.from_pretrained(model, str(path))
    except Exception as e:  # noqa: BLE001 - peft raises many types for a mismatched or damaged adapter
        reason = " ".join(str(e).split())[:300]
        raise ModelLoadError(f"cannot apply the adapter in {path} ({type(e).__name__}: {reason})") from None
    return wrapped.merge_and_unload()

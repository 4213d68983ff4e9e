"""Atomic, resumable checkpoints in Hugging Face format.

Layout of a run directory::

    run_dir/
      checkpoints/step-00000100/   model (save_pretrained), tokenizer, trainer_state.pt,
                                   extra models in sub-directories (e.g. ema/)
      checkpoints/latest           name of the newest complete checkpoint
      final/                       the final model, an ordinary HF checkpoint

A checkpoint is written into a hidden temporary directory and moved into place with one
``os.replace``, so a run killed mid-write leaves either the old checkpoint or the new one,
never a half-written one.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_pretrained_atomic(
    target: Path, model, tokenizer=None, extra_models: dict | None = None, state: dict | None = None
) -> Path:
    """Write model (+ tokenizer, extra models, trainer state) to ``target`` atomically."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per shard per checkpoint is noise in our logs
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    for name, extra in (extra_models or {}).items():
        extra.save_pretrained(tmp / name)
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    if target.exists():
        old = target.with_name(f".{target.name}.old{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return target


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(
    run_dir: Path, step: int, model, tokenizer, state: dict, extra_models: dict | None = None, keep_last: int = 2
) -> Path:
    """Save checkpoint ``step`` (model, tokenizer, extras, ``state`` + RNG), mark it latest, prune old ones."""
    root = checkpoint_dir(run_dir)
    target = root / f"step-{step:08d}"
    save_pretrained_atomic(target, model, tokenizer, extra_models, {**state, "step": step, "rng": rng_state()})
    atomic_write_text(root / "latest", target.name)
    if keep_last > 0:
        for old in sorted(root.glob("step-*"))[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    root = checkpoint_dir(run_dir)
    pointer = root / "latest"
    if pointer.is_file():
        path = root / pointer.read_text().strip()
        if (path / STATE_FILE).is_file():
            return path
    complete = [p for p in sorted(root.glob("step-*")) if (p / STATE_FILE).is_file()]
    return complete[-1] if complete else None


def load_state(ckpt: Path) -> dict:
    """Trainer state saved beside a checkpoint (restores nothing by itself)."""
    return torch.load(Path(ckpt) / STATE_FILE, map_location="cpu", weights_only=False)


def load_weights_into(model, ckpt: Path) -> None:
    """Copy a saved HF checkpoint's weights into an existing model (same architecture)."""
    from safetensors.torch import load_file

    files = sorted(Path(ckpt).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {ckpt}")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied output embeddings are saved once; anything else missing is a real mismatch.
    tied = (
        {k for k in missing if k.endswith("lm_head.weight")}
        if getattr(model.config, "tie_word_embeddings", False)
        else set()
    )
    if set(missing) - tied or unexpected:
        raise RuntimeError(
            f"checkpoint {ckpt} does not match the model: missing {sorted(set(missing) - tied)}, unexpected {unexpected}"
        )


def restore_checkpoint(ckpt: Path, model, optimizer, scheduler, generator: torch.Generator | None = None) -> dict:
    """Resume a trainer from ``ckpt``: model weights, optimizer, scheduler, sampling ``generator`` and the
    global RNGs are restored in place; returns the saved state for the trainer's own fields."""
    state = load_state(ckpt)
    load_weights_into(model, ckpt)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if generator is not None:
        generator.set_state(state["generator"])
    set_rng_state(state["rng"])
    return state

"""Atomic, verified, resumable checkpoints in Hugging Face format; nothing in them can run code.

Layout of a run directory::

    run_dir/
      checkpoints/step-00000100/   model (save_pretrained, safetensors), tokenizer,
                                   trainer_state.json + trainer_state.safetensors,
                                   extra models in sub-directories (e.g. ema/),
                                   manifest.json (sha256 of every other file, written last)
      checkpoints/latest           name of the newest complete checkpoint (for people; resume
                                   takes the newest intact step-* folder)
      final/                       the final model, an ordinary HF checkpoint (+ manifest.json)

A LoRA run (:mod:`ponder.lm.adapters`) saves its adapter in place of the model's weights
(``adapter_config.json`` + ``adapter_model.safetensors``; its EMA teacher's adapter in ``ema/``),
and with ``lora_save_merged`` also ``final/merged/``, the model with the adapter merged in.

A checkpoint is written into a hidden temporary directory (``.step-N.tmpPID``), its files are
flushed to disk, and it is moved into place with one ``os.replace``, so a run killed mid-write
leaves either the old checkpoint or the new one, never a half-written one. The manifest
catches what atomicity cannot (a disk that lost or cut a file, a file edited by hand): resume
verifies the newest checkpoint and falls back to the newest intact one, saying which it
skipped and why (:func:`latest_checkpoint`).

Trainer state (optimizer, scheduler, RNG states, counters) is stored as JSON for its
structure and safetensors for its tensors (:mod:`ponder.train.state`), never as a pickle: loading a run directory
parses JSON and safetensors only, so a file planted in it cannot execute code.

Test-only fault hook: ``PONDER_FAULT=before-save:N`` SIGKILLs the process as checkpoint N is
about to be written (the state after step N is lost, as in a kill during step N+1);
``PONDER_FAULT=mid-save:N`` SIGKILLs it inside the write of checkpoint N, after the model
weights and before the trainer state and manifest (``tests/test_faults.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
from pathlib import Path

import torch

from ponder.lm import adapters
from ponder.progress import console
from ponder.train import run_config
from ponder.train.checkpoint_checks import STEP_DIR as _STEP_DIR
from ponder.train.checkpoint_checks import CheckpointError, validate_state
from ponder.train.guard import NonFiniteWeightsError, nonfinite_tensors, require_finite_weights
from ponder.train.safe_files import as_os_error, atomic_write_text, fresh_dir, require_real_dir
from ponder.train.state import (
    STATE_JSON,
    STATE_TENSORS,
    nonfinite_entries,
    read_state,
    rng_state,
    set_rng_state,
    write_state,
)

MANIFEST = "manifest.json"
#: State file of ponder before checkpoints were pickle-free: never loaded.
LEGACY_STATE = "trainer_state.pt"
#: Hidden leftovers of a killed write: ``.step-N.tmpPID``, ``.step-N.oldPID``, ``.latest.tmpPID``, ``.final.tmpPID``.
_STALE = re.compile(r"\.(.+)\.(tmp|old)\d+")


# ---------------------------------------------------------------------------- fault hook (tests)
def _fault(phase: str, step: int) -> None:
    """SIGKILL this process when ``PONDER_FAULT`` is ``<phase>:<step>`` (see the module docstring)."""
    spec = os.environ.get("PONDER_FAULT", "")
    if spec and spec == f"{phase}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def load_state(ckpt: Path) -> dict:
    """Trainer state saved beside a checkpoint (restores nothing by itself); parses JSON and safetensors only."""
    ckpt = Path(ckpt)
    if not (ckpt / STATE_JSON).is_file() and (ckpt / LEGACY_STATE).is_file():
        raise CheckpointError(
            f"{ckpt} was written by an older ponder (pickled {LEGACY_STATE}); it is not loaded because a pickle "
            "can run code. Rerun with --no-resume to start over."
        )
    try:
        return read_state(ckpt)
    except Exception as e:  # JSON, safetensors (its own error type) and shape errors alike: a damaged state
        raise CheckpointError(f"cannot read the trainer state of {ckpt}: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------------- manifest
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path) -> None:
    """``manifest.json``: sha256 of every file under ``folder`` (relative paths)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {p.relative_to(folder).as_posix(): _sha256(p) for p in files}
    (folder / MANIFEST).write_text(json.dumps({"sha256": entries}, indent=1))


def verify_checkpoint(folder: Path) -> str | None:
    """Why ``folder`` cannot be trusted (a missing manifest or file, a checksum mismatch), or None when intact."""
    folder = Path(folder)
    if (folder / LEGACY_STATE).is_file() and not (folder / STATE_JSON).is_file():
        return f"written by an older ponder (pickled {LEGACY_STATE}, never loaded)"
    try:
        entries = json.loads((folder / MANIFEST).read_text())["sha256"]
        if not isinstance(entries, dict):
            raise TypeError("sha256 is not a mapping")
    except FileNotFoundError:
        return f"no {MANIFEST} (an incomplete write)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{MANIFEST} is unreadable ({type(e).__name__})"
    for name in (STATE_JSON, STATE_TENSORS):
        if name not in entries:
            return f"{name} is not in the manifest"
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            return f"{rel} is a symbolic link (never written by ponder)"
        if path.is_file() and rel != MANIFEST and rel not in entries:
            return f"{rel} is not in the manifest (added after the checkpoint was written)"
    for rel, digest in entries.items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if _sha256(path) != digest:
            return f"{rel} does not match its checksum (damaged or modified)"
    return None


def _fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` to disk, so a rename never publishes unwritten data."""
    for path in sorted(folder.rglob("*"), reverse=True) + [folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------- writing
def save_pretrained_atomic(
    target: Path,
    model,
    tokenizer=None,
    extra_models: dict | None = None,
    state: dict | None = None,
    step: int | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    """Write model (+ tokenizer, extra models, trainer state, text ``files``, manifest) to ``target`` atomically.

    ``step`` only identifies the write to the test fault hook. A write that fails (a full disk: an
    ``OSError``, or safetensors' own error quoting one) removes its temporary folder and raises the
    ``OSError`` naming ``target``; whatever was at ``target`` is untouched.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per shard per checkpoint is noise in our logs
    target = Path(target)
    require_real_dir(target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        fresh_dir(tmp)  # a link planted at the temporary name is removed, never written through
        adapters.save_pretrained(model, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, extra in (extra_models or {}).items():
            extra.save_pretrained(tmp / name)
        if step is not None:
            _fault("mid-save", step)
        if state is not None:
            write_state(tmp, state)
        for name, text in (files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        write_manifest(tmp)
        _fsync_tree(tmp)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)  # frees the space a full disk needs back
        if (os_error := as_os_error(e, target)) is not None:
            raise os_error from None
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return target


def save_final(run_dir: Path, model, tokenizer=None, extra_models: dict | None = None) -> Path:
    """``run_dir/final``: the trained model as an ordinary HF checkpoint (a LoRA model: its adapter), never one with
    inf or NaN weights; ``extra_models`` (name -> object with ``save_pretrained``) go into sub-folders."""

    require_finite_weights(model, where=f" of {run_dir}")
    return save_pretrained_atomic(Path(run_dir) / "final", model, tokenizer, extra_models)


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(
    run_dir: Path, step: int, model, tokenizer, state: dict, extra_models: dict | None = None, keep_last: int = 2
) -> Path:
    """Save checkpoint ``step`` (model, tokenizer, extras, ``state`` + RNG, the run's settings), mark it latest,
    prune old ones.

    Refused before anything is written when a weight, an extra model's weight or a number of the
    state (a learning rate, an Adam moment) is inf or NaN: the run stops with its checkpoints as they were.
    """
    _fault("before-save", step)
    root = checkpoint_dir(run_dir)
    target = root / f"step-{step:08d}"
    full_state = {**state, "step": step, "rng": rng_state()}
    _require_finite_checkpoint(run_dir, step, model, extra_models or {}, full_state)
    files = run_config.checkpoint_files(run_dir)
    save_pretrained_atomic(target, model, tokenizer, extra_models, full_state, step=step, files=files)
    atomic_write_text(root / "latest", target.name)
    if keep_last > 0:  # the newest is the one just written, finite: it is always kept
        for old in _step_dirs(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _require_finite_checkpoint(run_dir: Path, step: int, model, extra_models: dict, state: dict) -> None:
    bad = [f"weight {n}" for n in nonfinite_tensors(model)]
    for name, extra in extra_models.items():
        module = extra if isinstance(extra, torch.nn.Module) else getattr(extra, "model", None)
        if isinstance(module, torch.nn.Module):
            bad += [f"{name} weight {n}" for n in nonfinite_tensors(module)]
    bad += [f"trainer state {n}" for n in nonfinite_entries(state)]
    if bad:
        kept = [p.name for p in _step_dirs(checkpoint_dir(run_dir))]
        rerun = (
            f"then rerun: it resumes from the last checkpoint, {kept[-1]}, which is intact"
            if kept
            else "then rerun with --no-resume"
        )
        raise NonFiniteWeightsError(
            f"training produced non-finite weights or optimizer state at step {step}: inf or NaN in {len(bad)} "
            f"places (first: {bad[0]}); checkpoint {step} was not written. Lower --lr or check the rewards, {rerun}"
        )


# ---------------------------------------------------------------------------- resuming
def _step_dirs(root: Path) -> list[Path]:
    """``step-N`` folders of ``root``, oldest first (by N)."""
    found = [(int(m[1]), p) for p in root.glob("step-*") if p.is_dir() and (m := _STEP_DIR.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path, report=None) -> Path | None:
    """The newest intact checkpoint of a run, or None when the run has none.

    Checkpoints are tried newest first; each one that fails :func:`verify_checkpoint` is skipped
    and reported (``report(message)``, default: printed). A run whose checkpoints are all damaged
    is an error rather than a silent fresh start.
    """
    if report is None:

        def report(message: str) -> None:
            console.print(f"[yellow]resume:[/] {message}", highlight=False, soft_wrap=True)

    candidates = list(reversed(_step_dirs(checkpoint_dir(run_dir))))
    skipped = []
    for ckpt in candidates:
        why = verify_checkpoint(ckpt)
        if why is None:
            if skipped:
                report(f"resuming from {ckpt.name}")
            return ckpt
        skipped.append(f"{ckpt.name}: {why}")
        report(f"skipping checkpoint {ckpt}: {why}")
    if skipped:
        raise CheckpointError(
            f"no intact checkpoint in {checkpoint_dir(run_dir)} ({'; '.join(skipped)}); "
            f"rerun with --no-resume to start over, or delete {run_dir}"
        )
    return None


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the hidden leftovers of writes killed midway (``.step-N.tmpPID``, ``.final.oldPID``, ...).

    An ``.X.oldPID`` folder whose ``X`` is gone (killed between the two renames) is moved back instead.
    Call it only while holding the run directory's lock (:mod:`ponder.train.rundir`): another
    live writer's temporary folder would look the same. Returns what was removed.
    """
    removed = []
    for folder in (Path(run_dir), checkpoint_dir(run_dir)):
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if not (m := _STALE.fullmatch(p.name)):
                continue
            if m[2] == "old" and p.is_dir() and not (folder / m[1]).exists():
                # Killed between moving the old copy aside and the new one in: the old copy is whole.
                os.replace(p, folder / m[1])
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def load_weights_into(model, ckpt: Path, assign=None) -> None:
    """Copy a saved HF checkpoint's weights into an existing model (same architecture; a saved adapter into a LoRA model).

    ``assign(model, state) -> (missing, unexpected)`` puts them in (default: ``model.load_state_dict(state,
    strict=False)``; a sharded model passes its own).
    """
    from safetensors.torch import load_file

    if adapters.is_adapter_dir(ckpt) and adapters.is_adapted(model):
        adapters.load_adapter_weights(model, ckpt)
        return
    files = weight_files(Path(ckpt))
    state = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as e:  # safetensors raises its own error type for a damaged file
            raise CheckpointError(f"cannot read the weights {f} ({type(e).__name__}: {e})") from None
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{ckpt} holds inf or NaN weights ({bad[0]}); rerun with --no-resume to start over")
    missing, unexpected = (assign or _load_state_dict)(model, state)
    # Tied output embeddings are saved once; anything else missing is a real mismatch.
    tied = (
        {k for k in missing if k.endswith("lm_head.weight")}
        if getattr(model.config, "tie_word_embeddings", False)
        else set()
    )
    if set(missing) - tied or unexpected:
        raise CheckpointError(
            f"checkpoint {ckpt} does not match the model: missing {sorted(set(missing) - tied)}, unexpected {unexpected}"
        )


def weight_files(ckpt: Path) -> list[Path]:
    """The weight files of a saved HF model, by name: ``model.safetensors``, or the shards its index lists."""
    index = ckpt / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index} is unreadable ({type(e).__name__})") from None
        files = [ckpt / name for name in shards]
        if any(Path(name).name != name or not name.endswith(".safetensors") for name in shards):
            raise CheckpointError(f"{index} names files outside its folder")
        return files
    if (ckpt / "model.safetensors").is_file():
        return [ckpt / "model.safetensors"]
    raise CheckpointError(f"no safetensors weights (model.safetensors) in {ckpt}")


def _load_state_dict(model, state: dict):
    return model.load_state_dict(state, strict=False)


def restore_checkpoint(
    ckpt: Path,
    model,
    optimizer,
    scheduler,
    generator: torch.Generator | None = None,
    load_weights=load_weights_into,
    load_optimizer=None,
) -> dict:
    """Resume a trainer from ``ckpt``: model weights, optimizer, scheduler, sampling ``generator`` and the
    global RNGs are restored in place; returns the saved state for the trainer's own fields.

    ``load_weights(model, ckpt)`` and ``load_optimizer(optimizer, saved)`` replace the plain loaders
    (``load_weights_into``, ``optimizer.load_state_dict``) for a sharded model (:mod:`ponder.train.sharding`).

    The optimizer's hyperparameters (lr, weight decay, betas...) stay the ones it was built with:
    the checkpoint restores its moments and step counts, not the settings, so a run resumed with
    a changed lr (``--allow-config-change``) trains with the new lr.
    """
    state = load_state(ckpt)
    validate_state(state, ckpt)
    run_config.check_checkpoint_settings(ckpt.parent.parent, ckpt)
    load_weights(model, ckpt)
    configured = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    base_lrs = list(getattr(scheduler, "base_lrs", []))
    if load_optimizer is None:
        optimizer.load_state_dict(state["optimizer"])
    else:
        load_optimizer(optimizer, state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _keep_configured_hyperparameters(optimizer, scheduler, configured, base_lrs)
    if generator is not None:
        generator.set_state(state["generator"])
    set_rng_state(state["rng"])
    return state


def _keep_configured_hyperparameters(optimizer, scheduler, configured: list[dict], base_lrs: list[float]) -> None:
    """Put back the hyperparameters the optimizer was built with, when the checkpoint's differ.

    Left alone when nothing changed, so a plain resume is bit-identical to an uninterrupted run.
    """
    loaded = [{k: v for k, v in g.items() if k not in ("params", "lr")} for g in optimizer.param_groups]
    wanted = [{k: v for k, v in g.items() if k != "lr"} for g in configured]
    if loaded == wanted and list(getattr(scheduler, "base_lrs", [])) == base_lrs:
        return
    for group, settings in zip(optimizer.param_groups, configured):
        group.update({k: v for k, v in settings.items() if k != "lr"})
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if base_lrs and lambdas is not None:  # LambdaLR: the lr of the restored step under the new peak
        scheduler.base_lrs = base_lrs
        for group, base, f in zip(optimizer.param_groups, base_lrs, lambdas):
            group["lr"] = base * f(scheduler.last_epoch)
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]

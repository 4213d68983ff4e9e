"""A run directory belongs to one job, one configuration and one process at a time.

:func:`open_run` is what every job does with its ``--out`` before any work:

* creates it and checks it is writable (:func:`prepare_output`), so a bad path fails in a second,
  not after an hour of training;
* takes an exclusive lock (:func:`run_lock`, ``flock`` on ``.lock``): a second process on the same
  directory gets an error naming the holder's PID; the kernel drops the lock of a process that
  died (even by ``kill -9``), so a stale lock is simply taken over;
* refuses a directory that holds another job's run (``<job>_job.json`` of another job);
* on resume, compares the saved configuration with the new one: a changed setting that alters the
  run (anything but :data:`MAY_CHANGE`) is an error listing each key with its old and new value,
  unless ``allow_config_change``; on a fresh start (``--no-resume``) the old checkpoints and final
  model are removed, so a later resume can never pick up the previous run's steps;
* removes the leftovers of checkpoint writes that were killed midway;
* writes ``<job>_job.json`` (the configuration the run continues with) and appends the start to
  ``run.json``: time, resumed or not, the settings changed and the environment (package
  versions, torch threads, device, Python) of every start.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from ponder.errors import PonderError
from ponder.train.checkpoint import atomic_write_text, checkpoint_dir, remove_stale_temporaries

LOCK_FILE = ".lock"
RUN_RECORD = "run.json"
#: Settings whose change does not alter what a run computes: extending it, logging, where it runs.
MAY_CHANGE = frozenset(
    {"steps", "save_every", "log_every", "eval_n", "out", "device", "match_run", "match", "data_parallel"}
)
#: Packages whose versions are recorded with every start.
PACKAGES = ("ponder", "torch", "transformers", "accelerate", "tokenizers", "safetensors", "numpy", "pydantic", "trl")


class RunDirError(PonderError):
    """An output directory that cannot be used as asked; the message says why and what to do."""


# ---------------------------------------------------------------------------- paths
def _probe_writable(folder: Path, what: str) -> None:
    probe = folder / f".ponder-write-test{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise RunDirError(f"{what} {folder} is not writable ({e.strerror or e}); pass a writable directory") from None


def prepare_output(path: str | Path, what: str = "--out") -> Path:
    """Create the folder ``path`` (parents too) and check that files can be written in it."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise RunDirError(f"{what} {folder} is a file, not a directory; pass a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create {what} {folder} ({e.strerror or e}); pass a writable directory") from None
    _probe_writable(folder, what)
    return folder


def prepare_json_path(path: str | Path) -> Path:
    """Check that ``--json PATH`` can be written (its folder created and writable) before any work."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise RunDirError(f"--json {target} is a directory; pass a file path such as {target / 'result.json'}")
    prepare_output(target.parent if str(target.parent) else Path("."), what="the folder of --json")
    return target


def write_json_file(path: str | Path, payload) -> None:
    """Write ``payload`` as indented JSON, atomically (a reader never sees half a file)."""
    atomic_write_text(Path(path), json.dumps(payload, indent=2, default=str))


# ---------------------------------------------------------------------------- lock
@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` for the block; another holder is an error naming its PID."""
    path = Path(folder) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirError(f"cannot lock {folder} ({e.strerror}); use a directory on a local disk") from None
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunDirError(
                f"{folder} is in use by another ponder process (PID {holder}); wait for it to finish, "
                "or pass another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the flock


# ---------------------------------------------------------------------------- configuration
def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunDirError(
            f"{path} ({what}) is unreadable ({type(e).__name__}); restore it, or rerun with --no-resume to start over"
        ) from None


def config_changes(saved: dict, config: BaseModel) -> dict[str, tuple]:
    """``{dotted key: (old, new)}`` of the settings of ``config`` that differ from ``saved`` (a JSON dump).

    A key the saved run does not know (a setting added since) counts as changed only when the new
    value is not the model's default.
    """
    new = _flatten(config.model_dump(mode="json"))
    old = _flatten(saved) if isinstance(saved, dict) else {}
    defaults = _flatten(type(config)().model_dump(mode="json")) if _constructible(type(config)) else {}
    changes = {}
    for key, value in new.items():
        if key in old:
            if old[key] != value:
                changes[key] = (old[key], value)
        elif key in defaults and defaults[key] != value:
            changes[key] = (defaults[key], value)
    return changes


def _constructible(cls: type[BaseModel]) -> bool:
    return all(not f.is_required() for f in cls.model_fields.values())


def altering_changes(changes: dict[str, tuple]) -> dict[str, tuple]:
    """The changes that alter what a run computes: every key whose last part is not in :data:`MAY_CHANGE`."""
    return {k: v for k, v in changes.items() if k.rsplit(".", 1)[-1] not in MAY_CHANGE}


def _job_files(folder: Path) -> dict[str, Path]:
    return {p.name[: -len("_job.json")]: p for p in folder.glob("*_job.json") if p.is_file()}


def check_job_type(folder: Path, job: str) -> None:
    """Refuse a directory holding another job's run (its ``<job>_job.json``)."""
    others = sorted(name for name in _job_files(folder) if name != job)
    if others:
        raise RunDirError(
            f"{folder} holds a `ponder {others[0]}` run ({others[0]}_job.json), not a `ponder {job}` run; "
            "pass another --out"
        )


def check_resume_config(folder: Path, job: str, config: BaseModel, allow_change: bool) -> dict[str, tuple]:
    """The settings changed since the saved run; an error if one alters the run and ``allow_change`` is False."""
    path = folder / f"{job}_job.json"
    if not path.is_file():
        return {}
    changes = config_changes(_read_json(path, "the saved job configuration"), config)
    altering = altering_changes(changes)
    if altering and not allow_change:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(altering.items()))
        raise RunDirError(
            f"{folder} holds a `ponder {job}` run with other settings ({listed}); resuming would mix them. "
            "Pass --allow-config-change to continue with the new ones, --no-resume to start over, or another --out"
        )
    return changes


# ---------------------------------------------------------------------------- environment
def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: str | None = None) -> dict:
    """What the figures of a run depend on besides its settings: packages, threads, device, Python."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": device or ("cuda" if cuda else "cpu"),
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
    }


def record_start(folder: Path, job: str, config: BaseModel, resumed: bool | None, changes: dict) -> None:
    """Write ``<job>_job.json`` and append this start (environment, changed settings) to ``run.json``."""
    atomic_write_text(folder / f"{job}_job.json", config.model_dump_json(indent=2))
    record_path = folder / RUN_RECORD
    record = {"job": job, "starts": []}
    if record_path.is_file():
        try:
            old = json.loads(record_path.read_text(encoding="utf-8"))
            if isinstance(old, dict) and isinstance(old.get("starts"), list):
                record["starts"] = old["starts"]
        except (OSError, UnicodeDecodeError, ValueError):
            pass  # a damaged record is replaced: it is a log, nothing is resumed from it
    record["starts"].append(
        {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv[1:],
            "resumed": resumed,
            "config_changes": {k: list(v) for k, v in changes.items()},
            "environment": environment(getattr(config, "device", None)),
        }
    )
    atomic_write_text(record_path, json.dumps(record, indent=2))


def start_over(folder: Path) -> None:
    """Remove a previous run's checkpoints, final model and logs (``--no-resume``)."""
    for name in (checkpoint_dir(folder).name, "final", "tb"):
        shutil.rmtree(folder / name, ignore_errors=True)
    (folder / "metrics.jsonl").unlink(missing_ok=True)


# ---------------------------------------------------------------------------- the whole protocol
@contextlib.contextmanager
def open_run(
    out: str | Path,
    job: str,
    config: BaseModel,
    resume: bool | None = None,
    allow_config_change: bool = False,
    rank: int = 0,
) -> Iterator[Path]:
    """Prepare, lock, check and record the run directory ``out`` of ``job`` for the block (see module docstring).

    ``resume``: True/False for a resumable training job (continue / start over), None for a job
    that writes results but has no checkpoints (demo, audit, plan). Ranks other than 0 of a
    data-parallel job only check that the directory exists: rank 0 holds the lock and writes.
    """
    folder = prepare_output(out)
    if rank != 0:
        yield folder
        return
    with run_lock(folder):
        check_job_type(folder, job)
        changes: dict = {}
        if resume:
            changes = check_resume_config(folder, job, config, allow_config_change)
        elif resume is False:
            start_over(folder)
        remove_stale_temporaries(folder)
        record_start(folder, job, config, resume, changes)
        yield folder

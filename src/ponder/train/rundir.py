"""A run directory belongs to one job, one configuration and one process at a time.

:func:`open_run` is what every job does with its ``--out`` before any work:

* creates it and checks it is writable (:func:`prepare_output`), so a bad path fails in a second,
  not after an hour of training;
* takes an exclusive lock (:func:`run_lock`, ``flock`` on ``.lock``): a second process on the same
  directory gets an error naming the holder's PID; the kernel drops the lock of a process that
  died (even by ``kill -9``), so a stale lock is simply taken over;
* refuses a directory that holds another job's run (``<job>_job.json`` of another job), or files of a
  run (checkpoints, metrics, a final model) but no ``<job>_job.json``: not a ponder run of this job;
* on resume, compares the saved configuration with the new one: a changed setting that alters the
  run (anything but :data:`MAY_CHANGE`) is an error listing each key with its old and new value,
  unless ``allow_config_change`` (the checkpoint's own copy of the settings is compared again when
  it is restored, :mod:`ponder.train.run_config`);
* removes the leftovers of checkpoint writes that were killed midway;
* turns an OS error inside the block (full disk, read-only file system, permission) into one line
  naming the path and what to do (:mod:`ponder.train.safe_files`).

Nothing is deleted or written until the trainer calls :func:`begin_run` as its first step starts,
after the model, the data and any checkpoint have loaded: a start that fails (a typo in ``--model``)
leaves the directory as it was. :func:`begin_run` removes the previous run's files on a fresh start
(``--no-resume``: only what a ponder run of this job wrote), writes ``<job>_job.json`` (the
configuration the run continues with) and appends the start to ``run.json``: time, whether it
resumed and from which step, the settings changed and the environment (package versions, torch
threads, device, Python).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from ponder.errors import PonderError
from ponder.train import run_config
from ponder.train.checkpoint import remove_stale_temporaries
from ponder.train.run_config import (  # noqa: F401 - re-exported: the run directory's API
    MAY_CHANGE,
    RunStart,
    altering_changes,
    config_changes,
    job_file_name,
)
from ponder.train.safe_files import (
    atomic_write_text,
    open_run_file,
    read_run_text,
    remove_path,
    require_real_dir,
    run_io_error,
)

LOCK_FILE = ".lock"
RUN_RECORD = "run.json"
METRICS = "metrics.jsonl"
#: What a ponder training run writes besides ``<job>_job.json`` and ``run.json``: what ``--no-resume`` removes.
RUN_OUTPUTS = ("checkpoints", "final", "tb", METRICS)
#: Packages whose versions are recorded with every start.
PACKAGES = ("ponder", "torch", "transformers", "accelerate", "tokenizers", "safetensors", "numpy", "pydantic", "trl")


class RunDirError(PonderError):
    """An output directory that cannot be used as asked; the message says why and what to do."""


# ---------------------------------------------------------------------------- paths
def _probe_writable(folder: Path, what: str) -> None:
    probe = folder / f".ponder-write-test{os.getpid()}"
    try:
        if probe.is_symlink() or probe.exists():  # a planted link is removed, never written through
            probe.unlink()
        os.close(open_run_file(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        probe.unlink()
    except OSError as e:
        raise RunDirError(f"{what} {folder} is not writable ({e.strerror or e}); pass a writable directory") from None


def prepare_output(path: str | Path, what: str = "--out") -> Path:
    """Create the folder ``path`` (parents too) and check that files can be written in it."""
    folder = Path(path).expanduser()
    if folder.is_symlink() and not folder.exists():
        raise RunDirError(
            f"{what} {folder} is a symbolic link to {os.readlink(folder)}, which does not exist; "
            "create that directory, or pass another path"
        )
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
    """Hold an exclusive lock on ``folder`` for the block; another holder is an error naming its PID.

    The lock file is opened without following a link and must be a regular file of this user: a
    planted ``.lock`` link would otherwise have ponder truncate and overwrite the file it points to.
    """
    path = Path(folder) / LOCK_FILE
    fd = open_run_file(path, os.O_RDWR | os.O_CREAT, 0o644)
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
def _read_json(path: Path, what: str):
    try:
        return json.loads(read_run_text(path))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunDirError(
            f"{path} ({what}) is unreadable ({type(e).__name__}); restore it, or rerun with --no-resume to start over"
        ) from None


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
    path = folder / job_file_name(job)
    if not path.is_file() and not path.is_symlink():
        return {}
    changes = config_changes(_read_json(path, "the saved job configuration"), config)
    run_config.refuse_altering(folder, job, changes, allow_change)
    return changes


def check_run_files(folder: Path, job: str) -> None:
    """Refuse a directory holding a run's files (checkpoints, metrics, final model) but no ``<job>_job.json``.

    Such a directory is not a ponder run of ``job`` (or its settings file was removed): resuming it
    would continue unknown settings, and ``--no-resume`` would delete files ponder did not write.
    """
    if (folder / job_file_name(job)).is_file():
        return
    found = [name for name in RUN_OUTPUTS if (folder / name).exists() or (folder / name).is_symlink()]
    if found:
        raise RunDirError(
            f"{folder} holds {', '.join(found)} but no {job_file_name(job)}: it is not a `ponder {job}` run "
            "(or its settings file was removed), so ponder neither resumes nor deletes it. Pass another --out, "
            "or move those files away yourself"
        )


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


def record_start(
    folder: Path, job: str, config: BaseModel, resumed: bool | None, changes: dict, resumed_from: int | None = None
) -> None:
    """Write ``<job>_job.json`` and append this start (resumed and from which step, environment, changed
    settings) to ``run.json``. ``resumed``: None for a job without checkpoints."""
    atomic_write_text(folder / job_file_name(job), config.model_dump_json(indent=2))
    record_path = folder / RUN_RECORD
    record = {"job": job, "starts": []}
    if record_path.is_file() or record_path.is_symlink():
        try:
            old = json.loads(read_run_text(record_path))
            if isinstance(old, dict) and isinstance(old.get("starts"), list):
                record["starts"] = old["starts"]
        except (OSError, UnicodeDecodeError, ValueError):
            pass  # a damaged record is replaced: it is a log, nothing is resumed from it
    record["starts"].append(
        {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv[1:],
            "resumed": resumed,
            "resumed_from_step": resumed_from,
            "config_changes": {k: list(v) for k, v in changes.items()},
            "environment": environment(getattr(config, "device", None)),
        }
    )
    atomic_write_text(record_path, json.dumps(record, indent=2))


def start_over(folder: Path, job: str) -> None:
    """Remove the previous run's checkpoints, final model and logs (``--no-resume``): only in a directory holding
    this job's ``<job>_job.json`` (:func:`check_run_files` refused any other before the model loaded)."""
    if not (folder / job_file_name(job)).is_file():
        return
    for name in RUN_OUTPUTS:
        remove_path(folder / name)


def begin_run(run_dir: str | Path, resumed_from: int | None) -> None:
    """Called by a trainer as its first step starts (after the model, data and any checkpoint loaded):
    on a fresh start with ``--no-resume`` remove the previous run; write ``<job>_job.json`` and ``run.json``.

    ``resumed_from``: the step of the checkpoint restored, None for a fresh start. Outside
    :func:`open_run`, and on the second call of a start, it does nothing.
    """
    start = run_config.active(run_dir)
    if start is None or start.begun:
        return
    start.begun = True
    if resumed_from is None and start.resume is False:
        start_over(start.folder, start.job)
    for name in ("checkpoints", "final", "tb"):  # folders ponder writes into: never through a planted link
        require_real_dir(start.folder / name)
    record_start(start.folder, start.job, start.config, resumed_from is not None, start.changes, resumed_from)


@contextlib.contextmanager
def os_errors_as_one_line() -> Iterator[None]:
    """An ``OSError`` raised in the block becomes a :class:`~ponder.train.safe_files.RunIOError` (one line)."""
    try:
        yield
    except OSError as e:
        raise run_io_error(e) from None


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
    """Prepare, lock and check the run directory ``out`` of ``job`` for the block (see module docstring).

    ``resume``: True/False for a resumable training job (continue / start over), whose trainer calls
    :func:`begin_run`; None for a job that writes results but has no checkpoints (demo, audit, plan),
    recorded at once. Ranks other than 0 of a data-parallel job only check that the directory
    exists: rank 0 holds the lock and writes.
    """
    folder = prepare_output(out)
    if rank != 0:
        yield folder
        return
    with run_lock(folder), os_errors_as_one_line():
        check_job_type(folder, job)
        changes: dict = {}
        if resume is not None:
            check_run_files(folder, job)
        if resume:
            changes = check_resume_config(folder, job, config, allow_config_change)
        remove_stale_temporaries(folder)
        if resume is None:
            record_start(folder, job, config, None, changes)
        run_config.register(RunStart(folder, job, config, resume, allow_config_change, changes))
        try:
            yield folder
        finally:
            run_config.unregister(folder)

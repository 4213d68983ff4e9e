"""Files in a run directory that a stranger cannot redirect, and OS errors that read as one line.

A run directory may be shared or prepared by someone else: a symbolic link planted where ponder
writes (``.lock``, ``metrics.jsonl``, ``run.json``, a manifest, a temporary folder) would make ponder
overwrite whatever it points to, with ponder's privileges. So every file ponder writes into a run
directory is opened with ``O_NOFOLLOW`` (a link is refused, never followed) and must be a regular
file owned by this user (:func:`open_run_file`); a whole file is written to a new temporary name
(``O_EXCL``) and renamed over the old one, which replaces a link rather than writing through it
(:func:`atomic_write_text`).

A disk that fills up, a file system remounted read-only or a permission taken away during a run is
not a bug: :func:`os_error_message` turns the ``OSError`` into one line naming the path and what to
do, and :class:`RunIOError` carries the exit code (75, ``EX_TEMPFAIL``, when freeing space or
waiting fixes it; 2 otherwise).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from ponder.errors import PonderError

#: ``EX_TEMPFAIL`` of sysexits.h: a temporary condition, retrying later may work (a full disk, a quota).
EXIT_TEMPFAIL = 75
#: Errors that go away by themselves or when the user frees space: the run can simply be rerun.
TEMPORARY = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EAGAIN, errno.EINTR, errno.EBUSY})
_ADVICE = {
    errno.ENOSPC: "the disk is full: free space there, then rerun the same command to resume from the last checkpoint",
    errno.EDQUOT: "the disk quota is used up: free space there, then rerun the same command to resume",
    errno.EROFS: "the file system is read-only: remount it writable or pass another --out, then rerun the same command",
    errno.EACCES: "permission denied: give this user write access or pass another --out, then rerun the same command",
    errno.EPERM: "operation not permitted: give this user write access or pass another --out, then rerun",
}


class RunIOError(PonderError):
    """An OS error on a run's files; ``exit_code`` is 75 for a temporary condition (full disk), else 2."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class UnsafeRunFileError(PonderError):
    """A file in a run directory that ponder will not write through (a link, another user's file, a device)."""


def os_error_message(e: OSError) -> str:
    """One line: what failed on which path, and what to do."""
    path = e.filename or "a file of the run"
    advice = _ADVICE.get(e.errno, "fix the cause, then rerun the same command to resume from the last checkpoint")
    return f"cannot write {path} ({e.strerror or e}): {advice}"


def run_io_error(e: OSError) -> RunIOError:
    return RunIOError(os_error_message(e), EXIT_TEMPFAIL if e.errno in TEMPORARY else 2)


_RUST_OS_ERROR = re.compile(r"Os \{ code: (\d+)")


def as_os_error(e: Exception, path: str | os.PathLike) -> OSError | None:
    """The ``OSError`` behind ``e`` (itself, or a safetensors error quoting Rust's ``Os { code: N }``), or None."""
    if isinstance(e, OSError):
        return e if e.filename else OSError(e.errno, e.strerror, str(path))
    if m := _RUST_OS_ERROR.search(str(e)):
        code = int(m[1])
        return OSError(code, os.strerror(code), str(path))
    return None


def check_owned_regular(fd: int, path: Path) -> None:
    """Refuse the open file ``fd`` unless it is a regular file owned by this user."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeRunFileError(f"{path} is not a regular file; remove it, or pass another --out")
    if info.st_uid != os.geteuid():
        raise UnsafeRunFileError(
            f"{path} belongs to another user (uid {info.st_uid}); ponder writes only its own files. "
            "Remove it, or pass another --out"
        )


def open_run_file(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that never follows a link at ``path`` and accepts only a regular file owned by this user."""
    path = Path(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeRunFileError(
                f"{path} is a symbolic link; ponder does not write through links in a run directory. "
                "Remove it, or pass another --out"
            ) from None
        raise
    try:
        check_owned_regular(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_run_text(path: Path) -> str:
    """The text of the run file ``path`` (a link or a file of another user is refused)."""
    fd = open_run_file(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        return f.read().decode("utf-8")


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to the run file ``path`` (created when missing)."""
    fd = open_run_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "wb") as f:
        f.write(text.encode("utf-8"))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a new temporary file (never a planted one), then a rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        remove_path(tmp)
    fd = open_run_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_path(path: Path) -> None:
    """Remove a file, a link (not what it points to) or a folder tree."""
    import shutil

    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def fresh_dir(path: Path) -> Path:
    """Create ``path`` as a new empty folder, replacing whatever is there (a planted link is removed, not followed)."""
    path = Path(path)
    if path.is_symlink() or path.exists():
        remove_path(path)
    os.mkdir(path, 0o755)
    return path


def require_real_dir(path: Path) -> None:
    """Refuse a folder of the run that is a symbolic link (ponder would write through it)."""
    if Path(path).is_symlink():
        raise UnsafeRunFileError(
            f"{path} is a symbolic link; ponder does not write through links in a run directory. "
            "Remove it, or pass another --out"
        )

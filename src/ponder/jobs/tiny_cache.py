"""Where the built-in tiny models live, and training them on first use.

The default base (``tiny``) is cached in ``$PONDER_TINY_DIR`` if set, else
``$PONDER_CACHE`` (default ``~/.cache/ponder``) ``/tiny-<fingerprint>``, where the
fingerprint hashes the default :class:`~ponder.jobs.base.BaseJob`: changing the recipe
trains a new model instead of silently reusing a stale one. Any other recipe, such as the
demo's ``tiny-lazy`` (:func:`~ponder.jobs.base.lazy_base_job`) or a base retrained with another
seed (``tiny@S``, ``tiny-lazy@S``), is cached the same way under its own fingerprint.
"""

from __future__ import annotations

import os
from pathlib import Path

from ponder.jobs.base import TINY, BaseJob, lazy_base_job, run_base, split_base_seed
from ponder.progress import console
from ponder.train.run_config import SettingsMismatchError


def cache_root() -> Path:
    return Path(os.environ.get("PONDER_CACHE", Path.home() / ".cache" / "ponder"))


def base_dir(job=None) -> Path:
    """Cache directory of the run of ``job`` (default: the default ``BaseJob``); its HF checkpoint is ``<dir>/final``."""

    fingerprint = (job or BaseJob()).fingerprint()
    if fingerprint == BaseJob().fingerprint() and os.environ.get("PONDER_TINY_DIR"):
        return Path(os.environ["PONDER_TINY_DIR"])
    return cache_root() / f"tiny-{fingerprint}"


def tiny_dir(override: str | os.PathLike | None = None) -> Path:
    """Directory of the default tiny model's run; its HF checkpoint is ``<dir>/final``."""
    return Path(override) if override else base_dir()


def ensure_base(job=None, override: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """HF checkpoint of ``job``'s model (default: the default tiny base), training it first if not cached."""

    job = job or BaseJob()
    root = Path(override) if override else base_dir(job)
    final = root / "final"
    if (final / "config.json").is_file():
        return final
    console.print(
        f"[bold]ponder:[/] no cached tiny model for this recipe; training it now (minutes on CPU) into {root}\n"
        "        (set PONDER_TINY_DIR or PONDER_CACHE to choose another place)"
    )
    try:
        run_base(job, root, resume=True, progress=progress)
    except SettingsMismatchError as e:
        # A partial run left by another ponder version (or a foreign job) cannot be resumed. The cache is
        # ponder's own derived data, and a user of `ponder demo` has no --no-resume to give: start over.
        reason = str(e).split(": its settings")[0]
        console.print(
            f"[bold]ponder:[/] the cached partial run cannot be resumed ({reason}); training it from the start"
        )
        run_base(job, root, resume=False, progress=progress)
    return final


def ensure_tiny(override: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """HF checkpoint of the default tiny model, training it first if it is not cached yet."""
    return ensure_base(None, override, progress)


def ensure_lazy_tiny(progress: bool = True, base_seed: int = 0) -> Path:
    """HF checkpoint of the demo's ``tiny-lazy`` base (:func:`~ponder.jobs.base.lazy_base_job`), retrained
    from base seed ``base_seed`` when it is not 0."""

    return ensure_base(lazy_base_job(base_seed), progress=progress)


def builtin_tiny_path(spec: str, override: str | os.PathLike | None = None, progress: bool = True) -> str:
    """``spec`` with the built-in tiny names (``tiny``, ``tiny-lazy``, ``NAME@S`` for base seed S) replaced by
    their cached checkpoints (trained first if needed); any other spec unchanged. ``override`` is the
    default base's run directory (seed 0)."""
    builtin = split_base_seed(spec)
    if builtin is None:
        return spec
    name, seed = builtin
    if name == TINY:
        return str(
            ensure_tiny(override, progress=progress)
            if seed == 0
            else ensure_base(BaseJob(seed=seed), progress=progress)
        )
    return str(ensure_lazy_tiny(progress=progress, base_seed=seed))

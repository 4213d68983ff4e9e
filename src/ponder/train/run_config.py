"""The settings a run continues with, and the run being started in this process.

A run's settings are stored twice: ``<job>_job.json`` at the top of the run directory (for people, and
to refuse a mismatch in a second, before any model loads) and a copy inside every checkpoint, covered
by its manifest. Resume compares the new settings with the copy of the checkpoint it resumes, so
deleting or editing the top-level file cannot smuggle other settings into a run.

:func:`register` records the start :func:`ponder.train.rundir.open_run` is preparing (job, settings,
resume or not); the trainers find it by their run directory (:func:`active`) when they save a
checkpoint (the settings copy) and when they restore one (:func:`check_checkpoint_settings`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from ponder.errors import PonderError

#: Settings whose change does not alter what a run computes: extending it, logging, where it runs.
MAY_CHANGE = frozenset(
    {
        "steps",
        "save_every",
        "keep_checkpoints",
        "log_every",
        "eval_n",
        "out",
        "device",
        "match_run",
        "match",
        "data_parallel",
    }
)


class SettingsMismatchError(PonderError):
    """A run directory holding a run with other settings than the ones given."""


def job_file_name(job: str) -> str:
    return f"{job}_job.json"


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def _constructible(cls: type[BaseModel]) -> bool:
    return all(not f.is_required() for f in cls.model_fields.values())


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


def altering_changes(changes: dict[str, tuple]) -> dict[str, tuple]:
    """The changes that alter what a run computes: every key whose last part is not in :data:`MAY_CHANGE`."""
    return {k: v for k, v in changes.items() if k.rsplit(".", 1)[-1] not in MAY_CHANGE}


def refuse_altering(folder: Path, job: str, changes: dict[str, tuple], allow_change: bool) -> None:
    """An error listing each setting that alters the run, unless ``allow_change``."""
    altering = altering_changes(changes)
    if altering and not allow_change:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(altering.items()))
        raise SettingsMismatchError(
            f"{folder} holds a `ponder {job}` run with other settings ({listed}); resuming would mix them. "
            "Pass --allow-config-change to continue with the new ones, --no-resume to start over, or another --out"
        )


# ---------------------------------------------------------------------------- the start in progress
@dataclass
class RunStart:
    """A start of ``job`` in ``folder`` that :func:`ponder.train.rundir.open_run` is holding open."""

    folder: Path
    job: str
    config: BaseModel
    resume: bool | None
    allow_change: bool
    changes: dict = field(default_factory=dict)
    begun: bool = False

    def settings_json(self) -> str:
        return self.config.model_dump_json(indent=2)


_STARTS: dict[Path, RunStart] = {}


def _key(folder) -> Path:
    return Path(folder).expanduser().resolve()


def register(start: RunStart) -> None:
    _STARTS[_key(start.folder)] = start


def unregister(folder) -> None:
    _STARTS.pop(_key(folder), None)


def active(folder) -> RunStart | None:
    """The start being prepared in ``folder`` by this process (None outside :func:`~ponder.train.rundir.open_run`)."""
    return _STARTS.get(_key(folder))


def checkpoint_files(folder) -> dict[str, str]:
    """Files a checkpoint of the run in ``folder`` carries besides the model: its settings (``<job>_job.json``)."""
    start = active(folder)
    return {job_file_name(start.job): start.settings_json()} if start is not None else {}


def check_checkpoint_settings(run_dir, ckpt: Path) -> None:
    """Compare the settings saved in ``ckpt`` with the run's (refusing a change that alters it); record the changes.

    Outside a run started by ``open_run`` (a trainer used as a library) there is nothing to compare.
    """
    start = active(run_dir)
    if start is None:
        return
    path = Path(ckpt) / job_file_name(start.job)
    if not path.is_file() or path.is_symlink():
        raise SettingsMismatchError(
            f"checkpoint {ckpt} holds no {path.name} (written by an older ponder, or by another job): its settings "
            "are unknown. Rerun with --no-resume to start over, or pass another --out"
        )
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(saved, dict):
            raise ValueError("not an object")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SettingsMismatchError(
            f"{path} is unreadable ({type(e).__name__}); rerun with --no-resume to start over"
        ) from None
    changes = config_changes(saved, start.config)
    refuse_altering(start.folder, start.job, changes, start.allow_change)
    start.changes = changes

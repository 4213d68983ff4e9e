"""Where a run's per-step scalars go besides ``metrics.jsonl``: TensorBoard and Weights & Biases.

One setting, ``report_to`` (flag ``--report-to tensorboard,wandb``; ``none`` for neither), picks the
trackers; ``metrics.jsonl`` is always written (resume, compute matching and the reports read it).
Every tracker gets the same metric names, the keys of the row the trainer logs, and only the finite
numbers among them (JSONL keeps every value, non-finite ones as null).

Weights & Biases (extra ``wandb``) runs offline unless ``WANDB_MODE`` or ``WANDB_API_KEY`` is set, so a
run never waits on a network or a login prompt; ``wandb sync RUN_DIR/wandb/offline-run-*`` uploads it
later. Its files go under the run directory, the project is ``WANDB_PROJECT`` (default ``ponder``) and
the run id is kept in ``RUN_DIR/wandb-run-id``, so a resumed run continues the same W&B run (steps
already logged are not logged twice: ponder resumes to identical values).
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field, field_validator

from ponder.config import SETTINGS
from ponder.errors import PonderError

TRACKERS = ("tensorboard", "wandb")
LOG = logging.getLogger(__name__)


class TrackingSettings(BaseModel):
    """The ``report_to`` setting, shared by every training job's config."""

    model_config = SETTINGS
    report_to: list[str] = Field(
        ["tensorboard"],
        description="trackers besides metrics.jsonl: tensorboard, wandb (offline unless WANDB_MODE/WANDB_API_KEY), none",
    )

    @field_validator("report_to")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        names = [n.strip().lower() for n in v if n.strip()]
        unknown = [n for n in names if n not in (*TRACKERS, "none")]
        if unknown:
            raise ValueError(f"unknown tracker {unknown[0]!r}: use {', '.join(TRACKERS)} or none")
        return [n for n in dict.fromkeys(names) if n != "none"]

    def tracking(self) -> dict:
        """``MetricsLogger`` keywords: the trackers and the settings W&B records."""
        return {"report_to": self.report_to, "config": self.model_dump(mode="json")}


class Tracker(Protocol):
    def log(self, step: int, scalars: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def finite_scalars(row: dict) -> dict[str, float]:
    """The entries of ``row`` (but ``step``) that are finite numbers: what a tracker can plot."""
    return {
        k: v
        for k, v in row.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


class TensorBoardTracker:
    """Scalars to ``RUN_DIR/tb``."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(Path(run_dir) / "tb"))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            self._writer.add_scalar(k, v, step)

    def close(self) -> None:
        self._writer.close()


class WandbTracker:
    """One W&B run per run directory (see the module docstring for mode, project and resume)."""

    def __init__(self, run_dir: Path, config: dict | None = None):
        try:
            import wandb
        except ImportError as e:
            raise PonderError(
                "--report-to wandb needs Weights & Biases: pip install 'ponder[wandb]' (or drop wandb from --report-to)"
            ) from e
        run_dir = Path(run_dir)
        id_file = run_dir / "wandb-run-id"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        online = "WANDB_MODE" in os.environ or "WANDB_API_KEY" in os.environ
        self._run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "ponder"),
            name=run_dir.name,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            config=config,
            mode=None if online else "offline",
        )
        self._last_step = self._run.step - 1 if self._run.resumed else -1

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if step > self._last_step:  # W&B steps only increase; a resumed run re-logs identical rows
            self._run.log(scalars, step=step)
            self._last_step = step

    def close(self) -> None:
        self._run.finish()


def make_trackers(report_to: list[str] | tuple[str, ...], run_dir: Path, config: dict | None = None) -> list[Tracker]:
    """The trackers named in ``report_to`` (validated by :class:`TrackingSettings`), writing under ``run_dir``."""
    made: list[Tracker] = []
    for name in TrackingSettings(report_to=list(report_to)).report_to:
        if name == "wandb":
            made.append(WandbTracker(run_dir, config))
            continue
        try:
            made.append(TensorBoardTracker(run_dir))
        except ImportError:  # tensorboard is a core dependency; stay usable without it
            LOG.warning("tensorboard is not installed: no TensorBoard logs for this run")
    return made

"""Per-step metrics to JSONL and the trackers of ``report_to`` (TensorBoard, W&B), resume-aware."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ponder.errors import PonderError
from ponder.progress import console
from ponder.train.safe_files import append_text, atomic_write_text, read_run_text
from ponder.train.trackers import finite_scalars, make_trackers


class MetricsLogger:
    """Append one JSON object per step to ``run_dir/metrics.jsonl`` and mirror scalars to the trackers.

    On resume from step k, rows after k are dropped first so the log matches an uninterrupted run. The
    file is never written through a link (:mod:`ponder.train.safe_files`).
    ``report_to``: tracker names (:mod:`ponder.train.trackers`; default: TensorBoard unless
    ``tensorboard=False``); ``config``: the run's settings, recorded by W&B.
    """

    def __init__(
        self,
        run_dir: Path,
        resume_step: int | None = None,
        tensorboard: bool = True,
        report_to: list[str] | None = None,
        config: dict | None = None,
    ):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            atomic_write_text(self.path, "")
        elif self.path.exists() or self.path.is_symlink():
            kept = [line for line, row in _rows(self.path) if row.get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        if report_to is None:
            report_to = ["tensorboard"] if tensorboard else []
        self._trackers = make_trackers(report_to, Path(run_dir), config)

    def log(self, step: int, metrics: dict) -> None:
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        append_text(self.path, json.dumps(row) + "\n")
        scalars = finite_scalars(row)
        for tracker in self._trackers:
            tracker.log(step, scalars)

    def close(self) -> None:
        for tracker in self._trackers:
            tracker.close()


def _plain(v):
    """A JSON-safe scalar: non-finite floats become null (e.g. a class with no positions this step)."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _rows(path: Path) -> list[tuple[str, dict]]:
    """``(line, row)`` of every row of a metrics file. A cut last line (a write stopped by power loss or
    a full disk) is dropped with a warning; damage anywhere else is an error naming the line."""
    try:
        lines = [line for line in read_run_text(path).splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise PonderError(f"{path} is unreadable ({type(e).__name__}); move it away to resume without it") from None
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except ValueError:
            if i == len(lines) - 1:
                console.print(
                    f"[yellow]warning:[/] {path}: dropped its last line, cut short ({line[:40]!r})",
                    highlight=False,
                    soft_wrap=True,
                )
                break
            raise PonderError(f"{path}, line {i + 1} is not a JSON object; move the file away to resume") from None
        rows.append((line, row))
    return rows


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [row for _, row in _rows(path)] if path.exists() else []

"""The step loop every RL trainer shares: progress bar, metrics every ``log_every`` steps, checkpoints."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def run_steps(trainer, name: str, step_fn: Callable[[], dict], logger=None, progress: bool = True) -> float:
    """Call ``step_fn`` until ``trainer.step`` reaches ``trainer.cfg.steps``; return the seconds taken.

    ``trainer`` has ``step`` (advanced by ``step_fn``), ``cfg.steps``, ``cfg.log_every``,
    ``cfg.save_every`` and ``save()``. The last step is always logged and checkpointed, so a
    finished run resumes to the same state. ``logger`` may be None (ranks other than 0).
    """
    from ponder.report.progress import make_progress

    start = time.time()
    cfg = trainer.cfg
    with make_progress(progress) as bar:
        task = bar.add_task(f"ponder {name}", total=cfg.steps, completed=trainer.step)
        while trainer.step < cfg.steps:
            metrics = step_fn()
            last = trainer.step == cfg.steps
            if logger is not None and (trainer.step % cfg.log_every == 0 or last):
                logger.log(trainer.step, metrics)
            reward = metrics.get("reward_mean", math.nan)
            bar.update(task, completed=trainer.step, description=f"ponder {name} reward={reward:+.3f}")
            if trainer.step % cfg.save_every == 0 or last:
                trainer.save()
    return time.time() - start

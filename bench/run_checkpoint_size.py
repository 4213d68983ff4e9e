"""What a short training run writes to disk: every checkpoint and final-model write of a 2-step ``ponder cpt``
run, its size and the seconds spent writing it, and what is left in the run directory at the end.

A checkpoint is written every step (``--save-every 1``) so that pruning shows: every write is counted,
including checkpoints removed later. Prints one table per run (markdown) and the totals.

    OMP_NUM_THREADS=1 python bench/run_checkpoint_size.py                      # SmolLM2-135M, 2 steps
    OMP_NUM_THREADS=1 python bench/run_checkpoint_size.py --model tiny --steps 3
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 1e6


def optimizer_files(folder: Path) -> list[str]:
    """Files holding trainer state (the optimizer's moments live in trainer_state.*)."""
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("trainer_state*"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--save-every", type=int, default=1)
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = ap.parse_args()

    from ponder.jobs.rlp import CPTJob, run_cpt
    from ponder.train import checkpoint

    writes: list[tuple[str, float, float]] = []  # (what, MB, seconds)
    plain = checkpoint.save_pretrained_atomic

    def counted(target, *a, **k):
        t0 = time.perf_counter()
        out = plain(target, *a, **k)
        writes.append((Path(target).name, size_mb(out), time.perf_counter() - t0))
        return out

    checkpoint.save_pretrained_atomic = counted
    root = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        job = CPTJob(
            model=args.model,
            steps=args.steps,
            batch_size=args.batch_size,
            max_length=args.max_length,
            save_every=args.save_every,
            warmup_steps=0,
            out=str(root / "cpt"),
            report_to=[],
        )
        t0 = time.perf_counter()
        run_cpt(job, resume=False, progress=False)
        total_s = time.perf_counter() - t0
        run = root / "cpt"
        print(f"ponder cpt --model {args.model} --steps {args.steps} --batch-size {args.batch_size} "
              f"--max-length {args.max_length} --save-every {args.save_every}")  # fmt: skip
        print("| write | MB | seconds |\n| --- | --- | --- |")
        for what, mb, s in writes:
            print(f"| {what} | {mb:.0f} | {s:.2f} |")
        written, seconds = sum(w[1] for w in writes), sum(w[2] for w in writes)
        print(f"| **all writes** | **{written:.0f}** | **{seconds:.2f}** |")
        kept = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
        print(f"run directory at the end: {size_mb(run):.0f} MB; checkpoints kept: {kept}; "
              f"final/: {size_mb(run / 'final'):.0f} MB, trainer state in final/: {optimizer_files(run / 'final')}")  # fmt: skip
        print(f"whole run: {total_s:.1f} s, of which writing checkpoints and final: {seconds:.1f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

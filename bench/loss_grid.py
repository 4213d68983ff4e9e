"""The loss grid's first-step gradients: micro-batches vs one pass, and 2 gloo ranks vs one process, per cell.

Prints, for each cell of ``tests/grid_worker.py`` (GRPO's reductions x KL x micro-batch, RLP's KL x
next-token term x reward-token weight x micro-batch; fp64 tiny model), ``||g - g_ref|| / ||g_ref||``
against the one-process, one-pass gradient: what ``tests/test_loss_grid.py`` bounds by 1e-6.

    PYTHONPATH=src python bench/loss_grid.py [--mode ddp|fsdp]

Point ``PYTHONPATH`` at another checkout's ``src`` to measure its weighting (the workers take theirs
from this checkout's ``src``, so copy ``tests/`` and this script along).
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
from grid_worker import run_grid  # noqa: E402
from test_loss_grid import _micro_twin, launch_grid, relative_difference  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["ddp", "fsdp"], default="ddp")
    args = parser.parse_args()
    one = run_grid()
    with tempfile.TemporaryDirectory() as tmp:
        two = launch_grid(Path(tmp), args.mode)
    print(f"| cell | micro vs one pass | 2 ranks ({args.mode}) vs 1 process |")
    print("| --- | --- | --- |")
    for name, grads in one.items():
        twin = _micro_twin(name)
        reference = one[twin] if twin else grads
        micro = f"{relative_difference(grads, reference):.1e}" if twin else "-"
        ranks = relative_difference(two[name], reference)
        print(f"| {name} | {micro} | {ranks:.1e} |")
    worst = max(relative_difference(two[n], one[_micro_twin(n) or n]) for n in one)
    print(f"worst 2-rank difference against the one-pass, one-process gradient: {worst:.1e}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()

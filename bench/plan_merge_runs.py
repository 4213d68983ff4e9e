"""Merge ``bench/plan_compare.py --json`` files run method by method into one table of calls to target and savings.

Each ``LABEL=FILE`` adds the runs of FILE; with a label, a run's method is renamed ``LABEL`` (so two
runs of MPPI with different settings, e.g. ``--value-head world_model``, sit side by side). Per task
and seed the target is the best baseline's final held-out accuracy (``--baselines``), and the
summary is ``bench/plan_smollm2.py``'s: median calls to target, never-counts, median saving against
the best baseline with its 95% bootstrap interval.

    python bench/plan_merge_runs.py =base.json mppi=ridge.json mppi_world_model=wm.json --budget 1200
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from plan_compare import BASELINE_METHODS  # noqa: E402  (sibling scripts)
from plan_smollm2 import payload, print_summary  # noqa: E402


def cells_of(label: str, data: dict) -> list[dict]:
    """``data``'s runs as ``plan_smollm2`` cells (one per task, seed and method), renamed ``label`` if given."""
    out = []
    for result in data["results"]:
        for method, run in result["runs"].items():
            out.append({"task": result["task"], "method": label or method, "seed": result["seed"], **run})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="[LABEL]=FILE")
    p.add_argument("--budget", type=int, required=True)
    p.add_argument("--baselines", default=",".join(BASELINE_METHODS))
    p.add_argument("--json", metavar="PATH")
    a = p.parse_args(argv)
    cells = []
    for spec in a.files:
        label, _, path = spec.rpartition("=")
        cells += cells_of(label, json.loads(Path(path).read_text()))
    data = payload(cells, a.budget, tuple(a.baselines.split(",")))
    for c in data["cells"]:
        c.pop("curve", None)
    print_summary(data)
    if a.json:
        Path(a.json).write_text(json.dumps(data, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

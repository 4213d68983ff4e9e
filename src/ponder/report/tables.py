"""Rich tables for results printed at the end of a job."""

from __future__ import annotations

import statistics

from rich.console import Console
from rich.table import Table

#: Results go to stdout (progress bars and notices go to stderr), so they can be piped.
console = Console()


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def print_eval_table(result: dict, title: str = "") -> None:
    """Print the think / no-think block of an eval JSON (see :meth:`ponder.eval.accuracy.EvalResult.to_json`)."""
    modes = [m for m in ("think", "no_think") if m in result]
    rows = {m: _scalar_cells(result[m]) for m in modes}
    keys: list[str] = []
    for m in modes:
        keys += [k for k in rows[m] if k not in keys]
    table = Table(title=title)
    table.add_column("mode")
    for k in keys:
        table.add_column(k.replace("_", " "), justify="right")
    for m in modes:
        table.add_row(m.replace("_", "-"), *[_fmt(rows[m].get(k, "")) for k in keys])
    console.print(table)


def _scalar_cells(mode: dict) -> dict:
    """A mode's numbers for the table: its metrics first (the headline's name in ``metric``), then the rest."""
    cells = dict(mode.get("metrics", {}))
    skip = {"metrics", "examples", "warnings", "answer_rule", "metric", "accuracy", "unclosed_fraction"}
    cells.update({k: v for k, v in mode.items() if k not in skip and not isinstance(v, (dict, list))})
    return cells


def seed_summary(values: list[float]) -> dict:
    """``{"mean", "std", "per_seed"}`` of one figure over seeds (sample std; 0 for one seed)."""
    values = list(values)
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "per_seed": values,
    }


def seed_cells(summary: dict) -> str:
    """Markdown cells ``mean | std | per seed`` of a :func:`seed_summary`."""
    per_seed = " ".join(f"{v:.3f}" for v in summary["per_seed"])
    return f"{summary['mean']:.3f} | {summary['std']:.3f} | {per_seed}"


def print_table(header: list[str], rows: list[list], title: str = "") -> None:
    """Print a header and rows (floats to 3 decimals)."""
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[_fmt(v) for v in row])
    console.print(table)


def _cell(v) -> str:
    return "-" if v is None else _fmt(v)


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table (floats to 3 decimals, None as ``-``), as the benches print and RESULTS.md holds."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)

"""Copy figures out of ponder's HTML reports into docs/img/ as small palette PNGs for the documentation.

    python bench/docs_figures.py RUN/report.html "budget curve=audit_budget.png" ...

Each ``ALT=FILE`` takes the report's figure whose alt text is ALT (the reports embed every plot as a
base64 PNG) and writes it to ``docs/img/FILE`` reduced to 64 colours. docs/img/figures.txt records the
commands behind each committed figure.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import re
import sys
from pathlib import Path

from PIL import Image

DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def report_figures(report: str) -> dict[str, bytes]:
    """alt text -> PNG bytes of every ``<img alt=... src="data:image/png;base64,...">`` in a report."""
    found = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', report)
    return {html.unescape(alt): base64.b64decode(data) for alt, data in found}


def small_png(png: bytes, colors: int = 64) -> bytes:
    """The image as a palette PNG of ``colors`` colours (plots have few; this keeps the docs small)."""
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=colors).save(out, format="PNG", optimize=True)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="a report.html written by ponder demo, audit, plan or thought-mdp")
    parser.add_argument("pairs", nargs="+", metavar="ALT=FILE", help="figure alt text = file name under docs/img")
    args = parser.parse_args(argv)
    figures = report_figures(Path(args.report).read_text(encoding="utf-8"))
    for pair in args.pairs:
        alt, _, name = pair.partition("=")
        if alt not in figures or not name:
            print(f"error: no figure {alt!r} in {args.report}; it has: {', '.join(figures)}", file=sys.stderr)
            return 2
        (DOCS_IMG / name).write_bytes(small_png(figures[alt]))
        print(f"wrote docs/img/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

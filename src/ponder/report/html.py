"""Self-contained HTML reports: sections of text, tables and matplotlib figures (embedded PNG).

Readable offline: no scripts, no external assets. Figures are rendered with the Agg backend
and inlined as base64 PNG.
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

_STYLE = """
body { font-family: system-ui, -apple-system, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: .35em .7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
.note { color: #555; font-size: .95em; }
.skipped { color: #a33; }
img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 .2em; }
"""


def figure_to_png_b64(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _cell(v) -> str:
    if v is None:  # a JSON null: a figure not measured (a mean over nothing); never Python's "None"
        return "n/a"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.4g}"
    return html.escape(str(v))


@dataclass
class Section:
    title: str
    parts: list[str] = field(default_factory=list)

    def text(self, text: str, css: str = "note") -> Section:
        self.parts.append(f'<p class="{css}">{html.escape(text)}</p>')
        return self

    def code(self, text: str) -> Section:
        self.parts.append(f"<pre><code>{html.escape(text)}</code></pre>")
        return self

    def table(self, header: list[str], rows: list[list]) -> Section:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return self

    def figure(self, fig, alt: str = "") -> Section:
        self.parts.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{figure_to_png_b64(fig)}">')
        return self


@dataclass
class Report:
    title: str
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        s = Section(title)
        self.sections.append(s)
        return s

    def render(self) -> str:
        body = "".join(f"<h2>{html.escape(s.title)}</h2>{''.join(s.parts)}" for s in self.sections)
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>{body}</body></html>"
        )

    def write(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(self.render())
        os.replace(tmp, path)
        return path


def line_plot(series: dict[str, tuple[list[float], list[float]]], title: str, xlabel: str, ylabel: str):
    """A matplotlib figure with one line per ``name -> (xs, ys)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, label=name, linewidth=1.4)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return fig

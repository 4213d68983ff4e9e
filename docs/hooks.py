"""MkDocs hook: the command-line and configuration references, rendered from the code at build time.

A page holding ``<!-- ponder:cli-reference -->`` gets every ``ponder`` command with every flag, as
``ponder.cli.build_parser()`` defines them; ``<!-- ponder:config-reference -->`` gets every job's
settings (YAML keys, types, defaults, descriptions) from the pydantic models behind those commands.
Nothing is copied by hand, so neither page can drift from the code. ``tests/test_docs.py`` imports
:func:`commands` and :func:`flags` from here to check every flag the docs and the README write.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The hook runs inside mkdocs: make the worktree's package importable even without an editable install.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

CLI_MARKER = "<!-- ponder:cli-reference -->"
CONFIG_MARKER = "<!-- ponder:config-reference -->"


def commands(parser: argparse.ArgumentParser | None = None, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every ``ponder`` command -> its parser, nested ones by their full name (``"corpus build"``)."""
    if parser is None:
        from ponder.cli import build_parser

        parser = build_parser()
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix}{name}"
                found[full] = sub
                found.update(commands(sub, f"{full} "))
    return found


def flags(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` (``--steps``, ``--no-resume``, ``-h``)."""
    return {opt for action in parser._actions for opt in action.option_strings}


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _flag_row(action: argparse.Action) -> str:
    names = ", ".join(f"`{o}`" for o in action.option_strings)
    if action.choices:
        value = "{" + ",".join(map(str, action.choices)) + "}"
    elif action.nargs == 0:
        value = ""
    else:
        value = action.metavar or action.dest.upper()
    help_text = action.help or ""
    # Settings flags carry their effective default in the help already; the run flags have a plain default.
    if action.default not in (None, argparse.SUPPRESS, False) and "default" not in help_text:
        help_text = f"{help_text} (default: {action.default})"
    return f"| {names} | {_cell(value)} | {_cell(help_text)} |"


def render_cli() -> str:
    """Markdown: one section per command, its description and a table of every flag."""
    from ponder import __version__
    from ponder.cli import build_parser

    parser = build_parser()
    lines = [f"Generated from `ponder.cli.build_parser()` (ponder {__version__}) when the site was built.", ""]
    lines += ["| command | what it does |", "| --- | --- |"]
    subs = commands(parser)
    helps = {
        f"{prefix}{choice.dest}": choice.help
        for prefix, p in [("", parser)] + [(f"{n} ", s) for n, s in subs.items()]
        for a in p._actions
        if isinstance(a, argparse._SubParsersAction)
        for choice in a._choices_actions
    }
    lines += [
        f"| [`ponder {name}`](#ponder-{name.replace(' ', '-')}) | {_cell(helps.get(name, ''))} |" for name in subs
    ]
    for name, sub in subs.items():
        lines += ["", f"## ponder {name} {{#ponder-{name.replace(' ', '-')}}}", ""]
        if sub.description:
            lines += [sub.description, ""]
        rows = [a for a in sub._actions if a.option_strings and "-h" not in a.option_strings]
        if rows:
            lines += ["| flag | value | meaning |", "| --- | --- | --- |"] + [_flag_row(a) for a in rows]
        else:
            lines += ["No flags of its own."]
    return "\n".join(lines) + "\n"


def _type_name(annotation) -> str:
    text = getattr(annotation, "__name__", None) if not getattr(annotation, "__args__", None) else None
    return text or str(annotation).replace("typing.", "").replace("pathlib.", "")


def _config_rows(model, prefix: str = "", defaults=None) -> list[str]:
    from ponder.config import _nested_model

    rows = []
    for name, field in model.model_fields.items():
        default = getattr(defaults, name) if defaults is not None else field.get_default(call_default_factory=True)
        if nested := _nested_model(field.annotation):
            rows += _config_rows(nested, f"{prefix}{name}.", default)
            continue
        shown = "null" if default is None else f"`{default!r}`" if isinstance(default, str) else f"`{default}`"
        typ = _type_name(field.annotation)
        rows.append(f"| `{prefix}{name}` | `{_cell(typ)}` | {_cell(shown)} | {_cell(field.description or '')} |")
    return rows


def render_config() -> str:
    """Markdown: per command, its settings model's keys with type, default and description."""
    lines = []
    for name, sub in commands().items():
        model = sub.get_default("config_cls")
        if model is None:
            continue
        lines += [
            "",
            f"## ponder {name}: `{model.__module__}.{model.__name__}` {{#config-{name.replace(' ', '-')}}}",
            "",
        ]
        if model.__doc__:
            lines += [model.__doc__.strip().splitlines()[0], ""]
        lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"] + _config_rows(model)
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    """MkDocs event: fill the reference markers of a page."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, render_cli())
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, render_config())
    return markdown

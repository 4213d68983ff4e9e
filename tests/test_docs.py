"""The documentation stays true to the code: documented flags exist, the API reference has docstrings,
the README stays short, and the built site opens in headless Chromium with every page in its navigation."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# A ponder command in code: `ponder rlp --steps 5`, `torchrun ... -m ponder.cli rlp ...`.
COMMAND = re.compile(r"(?:(?<![\w./-])ponder|-m ponder\.cli)\s+(?!import\b)(corpus\s+build|[a-z][a-z-]*)([^`#;|&\n]*)")
FLAG = re.compile(r"(?<![\w-])(--[a-zA-Z][\w.-]*)")
# Flags of other tools that the pages write as bare `--flag` spans (torchrun, accelerate, pip, pytest, bench/).
OTHER_TOOLS_FLAGS = {
    "--answers", "--apply_chat_template", "--check", "--collect-only", "--cpu", "--dtype", "--eval-samples", "--methods", "--models", "--multi_gpu",
    "--no-deps", "--nproc_per_node", "--num_processes", "--smollm-tasks", "--target", "--train", "--use_fsdp",
}  # fmt: skip


@functools.cache
def hooks():
    """docs/hooks.py, the module that renders the CLI reference: the test walks the same parser."""
    spec = importlib.util.spec_from_file_location("ponder_docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_of(text: str) -> list[str]:
    """Fenced code blocks (continuation lines joined) and inline code spans of a markdown text."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    return [b.replace("\\\n", " ") for b in blocks] + re.findall(r"`([^`\n]+)`", rest)


def documented_commands(text: str) -> list[tuple[str, list[str]]]:
    """``[(command, [flags])]`` for every ponder command written in the code of ``text``."""
    found = []
    for code in code_of(text):
        for m in COMMAND.finditer(code):
            flags = [f.split("=")[0] for f in FLAG.findall(m.group(2))]
            found.append((" ".join(m.group(1).split()), flags))
    return found


def test_command_scan_reads_blocks_spans_and_continuations():
    text = "Run `ponder eval --n 5`.\n```bash\nponder rlp --steps 2 \\\n    --lr 1e-4  # --not-this\n```\n"
    assert documented_commands(text) == [("rlp", ["--steps", "--lr"]), ("eval", ["--n"])]
    assert documented_commands("```\ntorchrun -m ponder.cli corpus build --out d\n```") == [("corpus build", ["--out"])]


def test_every_documented_flag_exists_in_its_command():
    commands = hooks().commands()
    every_flag = set().union(*(hooks().flags(p) for p in commands.values()))
    missing, seen = [], 0
    for path in DOC_FILES:
        text = path.read_text()
        for command, flags in documented_commands(text):
            if command not in commands:
                missing.append(f"{path.name}: ponder {command} (no such command)")
                continue
            seen += 1
            known = hooks().flags(commands[command])
            missing += [f"{path.name}: ponder {command} {f}" for f in flags if f not in known]
        # A bare `--flag` in prose names a ponder setting unless it is another tool's.
        for span in re.findall(r"`(--[a-zA-Z][\w.-]*)", text):
            flag = span.split("=")[0]
            if flag not in every_flag and flag not in OTHER_TOOLS_FLAGS:
                missing.append(f"{path.name}: {flag} (no ponder command has it)")
    assert seen > 50  # the scan found the commands (a broken pattern would pass vacuously)
    assert not missing, "documented flags the parser no longer has:\n" + "\n".join(missing)


def test_documented_flag_check_catches_a_removed_flag():
    commands = hooks().commands()
    (command, flags), *_ = documented_commands("`ponder rlp --steps 1 --no-such-flag 2`")
    assert [f for f in flags if f not in hooks().flags(commands[command])] == ["--no-such-flag"]


def test_readme_is_an_overview():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail into docs/"
    for link in re.findall(r"\]\((docs/[^)#]+)", "\n".join(lines)):
        assert (ROOT / link).exists(), link


def _api_targets() -> list[tuple[str, list[str] | None]]:
    """``(dotted path, members or None)`` of every ``::: target`` in the API reference page."""
    text = (ROOT / "docs" / "reference" / "api.md").read_text()
    targets = []
    for m in re.finditer(r"^::: (\S+)((?:\n    .*)*)", text, flags=re.M):
        members = re.search(r"members: \[([^\]]*)\]", m.group(2))
        targets.append((m.group(1), [s.strip() for s in members.group(1).split(",")] if members else None))
    return targets


def _resolve(path: str):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def test_every_documented_api_object_has_a_docstring():
    targets = _api_targets()
    assert len(targets) >= 20
    undocumented = []
    for path, members in targets:
        obj = _resolve(path)
        objs = {path: obj} | {f"{path}.{m}": getattr(obj, m) for m in members or []}
        for name, o in list(objs.items()):
            if inspect.isclass(o):  # and the public methods defined on it
                objs |= {
                    f"{name}.{k}": v for k, v in vars(o).items() if inspect.isfunction(v) and not k.startswith("_")
                }
        undocumented += [n for n, o in objs.items() if callable(o) and not (o.__doc__ or "").strip()]
    assert not undocumented, f"public API without a docstring: {undocumented}"


def test_trainer_entry_points_document_every_parameter():
    """The functions a user calls to train document every argument (an ``Args:`` entry or a ``name`` in the text)."""
    for path in ("ponder.models.lookup.load_model", "ponder.jobs.rlp.run_rlp", "ponder.jobs.grpo.run_grpo",
                 "ponder.jobs.grpo.run_ttrl", "ponder.jobs.rlp.run_cpt", "ponder.jobs.eval.run_eval"):  # fmt: skip
        fn = _resolve(path)
        doc = fn.__doc__ or ""
        absent = [p for p in inspect.signature(fn).parameters if not re.search(rf"``{p}``|^\s+{p}:", doc, flags=re.M)]
        assert not absent, f"{path}: parameters missing from the docstring: {absent}"


def _nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for v in nav.values() for p in _nav_pages(v)]
    return [p for item in nav for p in _nav_pages(item)]


def test_every_docs_page_is_in_the_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text().replace("!!python", "#"))
    pages = set(_nav_pages(config["nav"]))
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages == on_disk


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _built_site(mkdocs: str, tmp_path: Path) -> Path:
    """``site/`` when ``make docs`` built it after every source changed (CI runs it first), else a fresh
    ``mkdocs build --strict`` into ``tmp_path``."""
    sources = [ROOT / "mkdocs.yml", ROOT / "CHANGELOG.md", *ROOT.glob("docs/**/*"), *ROOT.glob("src/**/*.py"),
               *ROOT.glob("examples/*")]  # fmt: skip
    index = ROOT / "site" / "index.html"
    if index.is_file() and index.stat().st_mtime > max(p.stat().st_mtime for p in sources if p.is_file()):
        return ROOT / "site"
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [mkdocs, "build", "--strict", "-q", "-d", str(site)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr[-3000:]
    return site


@pytest.mark.slow
def test_built_site_opens_in_headless_chromium(tmp_path):
    """``mkdocs build --strict``, then the index served over HTTP in headless Chromium: no console error,
    and the navigation links every page of mkdocs.yml's nav."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    exe = _chromium()
    if mkdocs is None or exe is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs or chromium missing (make install-test; apt-get install -y chromium): CI must run this")
        pytest.skip("mkdocs or chromium not installed (set CI=1 to make this a failure)")
    site = _built_site(mkdocs, tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
        flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}",
                 "--virtual-time-budget=3000", "--dump-dom", url]  # fmt: skip
        run = subprocess.run(flags, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
    assert run.returncode == 0, run.stderr[-2000:]
    # Chromium logs every console message as INFO:CONSOLE without its level: the site is expected to log
    # nothing, so any message (an uncaught error, a failed asset, console.error) fails.
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, "console messages:\n" + "\n".join(console)

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    expected = {p.removesuffix(".md") + ".html" for p in _nav_pages(config["nav"])}
    linked = {
        href.split("#")[0].removeprefix("./")
        for href in re.findall(r'class="md-nav__link[^"]*" href="([^"]+)"', run.stdout)
    }
    linked |= {
        h.split("#")[0].removeprefix("./") for h in re.findall(r'href="([^"]+)" class="md-nav__link', run.stdout)
    }
    linked = {"index.html" if h in ("", ".") else h for h in linked}
    assert expected <= linked, f"pages missing from the navigation: {sorted(expected - linked)}"
    assert "ponder" in run.stdout and "Quickstart" in run.stdout


def test_docs_figures_come_out_of_a_report_small_and_whole(tmp_path):
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from ponder.report.html import Report

    sys.path.insert(0, str(ROOT / "bench"))
    from docs_figures import report_figures, small_png

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1, 2], [0.1, 0.5, 0.4])
    report = Report("r")
    report.section("s").figure(fig, alt="reward & curve")
    page = report.write(tmp_path / "report.html").read_text()
    figures = report_figures(page)
    assert list(figures) == ["reward & curve"]  # the alt text unescaped
    original, small = (
        Image.open(io.BytesIO(figures["reward & curve"])),
        Image.open(io.BytesIO(small_png(figures["reward & curve"]))),
    )
    assert small.mode == "P" and small.size == original.size and len(small.getcolors()) <= 64


def test_demo_seeds_plot_reads_every_seed_the_results_page_quotes():
    sys.path.insert(0, str(ROOT / "bench"))
    from demo_seeds_plot import base_accuracies

    base, seeds = base_accuracies("A")  # two JSON layouts across the files, ten seeds
    assert base == 0.155
    assert seeds["rlp"] == [0.345, 0.35, 0.39, 0.255, 0.255, 0.325, 0.29, 0.29, 0.28, 0.205]
    assert len(seeds["cpt"]) == 10 and max(seeds["cpt"]) <= 0.08

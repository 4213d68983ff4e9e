"""A real-text corpus built offline from the prose that installed Python packages ship.

Three sources, each read from files on disk (nothing is imported or downloaded):

* ``python-reference``: the Python language and library reference topics that ``pydoc`` shows,
  ``pydoc_data/topics.py`` of the standard library (Sphinx's plain-text rendering; one unit per topic);
* ``package-readme``: the long description (README) in each installed distribution's
  ``*.dist-info/METADATA`` (Markdown or reStructuredText; one unit per package);
* ``stdlib-docstrings``: module, class and function docstrings of the standard library's
  modules, read with :mod:`ast` (one unit per module, docstrings in source order).

Every unit is reduced to its prose paragraphs (:func:`ponder.data.prose.prose_paragraphs`),
paragraphs already seen anywhere are dropped (licence and badge boilerplate repeats across
packages), a unit keeps its first ``max_unit_chars`` characters of prose (one package's
changelog, fonttools', would otherwise be a fifth of all READMEs), and the rest is cut at
paragraph boundaries into documents of at most ``max_chars`` characters (shorter than
``min_chars``: dropped). A unit goes wholly to ``heldout`` or to
``train`` by a hash of its name (kind, package, topic or module; not its version or text), so a
held-out README never lends paragraphs to training and a version bump does not move it.

Reasoning-gym and BIG-bench are excluded (they are kept for evaluation), and so is ponder itself
(its README changes with every commit). ``manifest.json`` records, per source file, the
package, version, path and sha256, and an overall fingerprint: the same installed versions give
byte-identical output.
"""

from __future__ import annotations

import ast
import hashlib
import json
import platform
import re
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from email.parser import HeaderParser
from pathlib import Path

from ponder.data.prose import prose_paragraphs
from ponder.errors import PonderError

FORMAT = 1
SOURCES = ("python-reference", "package-readme", "stdlib-docstrings")
#: Distributions never read: evaluation data, and this project (not a pinned version).
EXCLUDED_PACKAGES = ("reasoning-gym", "bigbench", "big-bench", "ponder")
#: Standard-library folders without user-facing prose: tests, demos, generated codecs, bundled wheels.
SKIPPED_STDLIB_DIRS = frozenset(
    {"test", "tests", "idlelib", "lib2to3", "turtledemo", "ensurepip", "encodings", "site-packages", "__pycache__"}
)


class CorpusBuildError(PonderError):
    """The real-text corpus cannot be built (no sources found, bad settings)."""


@dataclass
class Unit:
    """One source unit: a topic, a README or a module's docstrings, with where it came from."""

    kind: str
    package: str
    version: str
    file: str  # relative to its root
    name: str  # the unit within the file (topic) or the file itself
    sha256: str  # of the file
    text: str  # raw text; for docstrings, already paragraphs

    @property
    def key(self) -> str:
        """What the split hashes: stable across versions and edits."""
        return f"{self.kind}:{self.package}:{self.name}"


def normalize_name(name: str) -> str:
    """A distribution name as packaging compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def reference_units(stdlib: Path, python_version: str) -> Iterator[Unit]:
    """One unit per ``pydoc`` topic of ``stdlib/pydoc_data/topics.py`` (read with ``ast``, never imported)."""
    path = stdlib / "pydoc_data" / "topics.py"
    if not path.is_file():
        return
    data = path.read_bytes()
    tree = ast.parse(data)
    topics = next(
        (
            ast.literal_eval(node.value)
            for node in tree.body
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "topics" for t in node.targets)
        ),
        {},
    )
    for name in sorted(topics):
        yield Unit(
            "python-reference", "python", python_version, "pydoc_data/topics.py", name, _sha256(data), topics[name]
        )


def _readme(metadata: str) -> tuple[dict, str]:
    """(headers, long description) of a METADATA file: the body, or the older ``Description`` header."""
    msg = HeaderParser().parsestr(metadata)
    body = msg.get_payload()
    if not isinstance(body, str) or not body.strip():
        desc = msg.get("Description", "") or ""
        body = re.sub(r"\n {8}\|?", "\n", desc)  # continuation lines are indented 8 spaces (and a bar)
    return msg, body


def readme_units(site_packages: Sequence[Path], excluded: Sequence[str] = EXCLUDED_PACKAGES) -> Iterator[Unit]:
    """One unit per installed distribution's README (``*.dist-info/METADATA``), in name order."""
    skip = {normalize_name(n) for n in excluded}
    seen = set()
    files = sorted(
        (p for root in site_packages for p in root.glob("*.dist-info/METADATA")), key=lambda p: p.parent.name
    )
    for path in files:
        data = path.read_bytes()
        msg, body = _readme(data.decode("utf-8", errors="replace"))
        name = normalize_name(msg.get("Name", "") or path.parent.name.split("-")[0])
        if name in skip or name in seen:  # a distribution installed twice: the first path in sorted order
            continue
        seen.add(name)
        rel = f"{path.parent.name}/METADATA"
        yield Unit("package-readme", name, msg.get("Version", "") or "", rel, name, _sha256(data), body)


def _docstrings(tree: ast.Module) -> list[str]:
    """Module, class and function docstrings in source order (private names skipped)."""
    out = []

    def visit(node, public: bool = True):
        doc = ast.get_docstring(node, clean=True)
        if doc and public:
            out.append(doc)
        for child in getattr(node, "body", []):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, not child.name.startswith("_"))

    visit(tree)
    return out


def docstring_units(stdlib: Path, python_version: str) -> Iterator[Unit]:
    """One unit per standard-library module with docstrings (files that do not parse are skipped)."""
    files = sorted(p for p in stdlib.rglob("*.py") if not SKIPPED_STDLIB_DIRS & set(p.relative_to(stdlib).parts[:-1]))
    for path in files:
        rel = path.relative_to(stdlib).as_posix()
        if rel.startswith("pydoc_data/"):
            continue
        data = path.read_bytes()
        try:
            docs = _docstrings(ast.parse(data))
        except (SyntaxError, ValueError):
            continue
        if docs:
            yield Unit("stdlib-docstrings", "python", python_version, rel, rel, _sha256(data), "\n\n".join(docs))


def chunk_paragraphs(paragraphs: Sequence[str], max_chars: int, min_chars: int) -> list[str]:
    """Consecutive paragraphs joined by blank lines into documents of at most ``max_chars`` (a longer
    paragraph is a document alone); documents shorter than ``min_chars`` are dropped."""
    docs, current = [], []
    for p in paragraphs:
        if current and len("\n\n".join([*current, p])) > max_chars:
            docs.append("\n\n".join(current))
            current = []
        current.append(p)
    if current:
        docs.append("\n\n".join(current))
    return [d for d in docs if len(d) >= min_chars]


def is_heldout(key: str, fraction: float) -> bool:
    """Whether the unit named ``key`` is held out: the first 8 bytes of its sha256 as a fraction of 2^64."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) / 2**64 < fraction


@dataclass(frozen=True)
class CorpusSettings:
    """What the output depends on besides the installed files."""

    heldout_fraction: float = 0.1
    max_chars: int = 2000
    min_chars: int = 200
    max_unit_chars: int = 20000
    sources: tuple[str, ...] = SOURCES

    def check(self) -> None:
        if not 0 < self.heldout_fraction < 1:
            raise CorpusBuildError(f"heldout_fraction must be between 0 and 1 (got {self.heldout_fraction})")
        if not 0 < self.min_chars <= self.max_chars <= self.max_unit_chars:
            raise CorpusBuildError(
                f"need 0 < min_chars <= max_chars <= max_unit_chars "
                f"(got {self.min_chars}, {self.max_chars}, {self.max_unit_chars})"
            )
        unknown = set(self.sources) - set(SOURCES)
        if unknown or not self.sources:
            raise CorpusBuildError(f"unknown or no sources {sorted(unknown)}: choose from {', '.join(SOURCES)}")


def installed_roots() -> tuple[list[Path], Path, str]:
    """This interpreter's ``(site-packages folders, standard library folder, Python version)``."""
    paths = sysconfig.get_paths()
    site = sorted({Path(paths["purelib"]), Path(paths["platlib"])})
    return site, Path(paths["stdlib"]), platform.python_version()


def collect_units(
    site_packages: Sequence[Path], stdlib: Path | None, python_version: str, settings: CorpusSettings
) -> list[Unit]:
    """Every unit of the chosen sources, in a fixed order (source, then name)."""
    units: list[Unit] = []
    if "python-reference" in settings.sources and stdlib is not None:
        units += reference_units(stdlib, python_version)
    if "package-readme" in settings.sources:
        units += readme_units(site_packages)
    if "stdlib-docstrings" in settings.sources and stdlib is not None:
        units += docstring_units(stdlib, python_version)
    return units


def fingerprint(manifest: dict) -> str:
    """sha256 over the format, the settings, every source file's identity and hash, and the outputs' hashes."""
    core = {
        "format": manifest["format"],
        "settings": manifest["settings"],
        "sources": manifest["sources"],
        "outputs": {name: split["sha256"] for name, split in manifest["splits"].items()},
    }
    return _sha256(json.dumps(core, sort_keys=True).encode())


def build_corpus(
    out: Path,
    site_packages: Sequence[Path],
    stdlib: Path | None,
    python_version: str,
    settings: CorpusSettings | None = None,
) -> dict:
    """Write ``train.jsonl``, ``heldout.jsonl`` (``{"id", "text"}`` per line) and ``manifest.json`` under ``out``.

    Returns the manifest. Deterministic: the same files and settings give byte-identical output.
    """
    settings = settings or CorpusSettings()
    settings.check()
    units = collect_units(site_packages, stdlib, python_version, settings)
    seen: set[str] = set()
    splits: dict[str, list[str]] = {"train": [], "heldout": []}
    sources = []
    for unit in units:
        paragraphs, chars = [], 0
        for p in prose_paragraphs(unit.text):
            if p in seen:
                continue
            if chars + len(p) > settings.max_unit_chars:
                break
            seen.add(p)
            paragraphs.append(p)
            chars += len(p) + 2  # and the blank line that joins it
        docs = chunk_paragraphs(paragraphs, settings.max_chars, settings.min_chars)
        if not docs:
            continue
        split = "heldout" if is_heldout(unit.key, settings.heldout_fraction) else "train"
        for i, text in enumerate(docs):
            splits[split].append(json.dumps({"id": f"{unit.key}#{i}", "text": text}, ensure_ascii=False))
        sources.append(
            {
                "kind": unit.kind,
                "package": unit.package,
                "version": unit.version,
                "file": unit.file,
                "unit": unit.name,
                "sha256": unit.sha256,
                "split": split,
                "documents": len(docs),
                "chars": sum(len(d) for d in docs),
            }
        )
    if not splits["train"]:
        raise CorpusBuildError("no prose found: check the site-packages and standard-library paths")
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, lines in splits.items():
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        (out / f"{split}.jsonl").write_bytes(data)
        files[split] = {
            "file": f"{split}.jsonl",
            "documents": len(lines),
            "chars": sum(len(json.loads(line)["text"]) for line in lines),
            "sha256": _sha256(data),
        }
    manifest = {"format": FORMAT, "settings": asdict(settings), "splits": files, "sources": sources}
    manifest["fingerprint"] = fingerprint(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest

"""The offline real-text corpus: prose cleaning, determinism, the split, provenance, on a fake installed tree."""

import hashlib
import json
from pathlib import Path

import pytest

from ponder.data.prose import is_prose, prose_paragraphs
from ponder.data.realtext import CorpusBuildError, CorpusSettings, build_corpus, fingerprint, is_heldout

PROSE = "This sentence is here so that the paragraph reads as ordinary prose, as a reader expects."

MARKDOWN = f"""[![PyPI](https://img.shields.io/pypi/v/foo.svg)](https://pypi.org/project/foo/)

# Foo

Foo is a library that makes **widgets**, see the [user guide](https://foo.dev/guide) for more details.

```python
import foo
foo.make_widget(size=3, colour="red", name="a widget with a long name and many words")
```

| column one | column two | column three | column four | column five | six |
| --- | --- | --- | --- | --- | --- |

- The first item of a list explains one more thing about widgets in a sentence.
- The second item of the list is also a sentence about widgets and gadgets.

{PROSE}
"""

RST = f"""Bar
===

Bar parses `documents <https://bar.dev>`_ and calls :func:`bar.parse` on each one of them quietly.

.. code-block:: python

    bar.parse("this is code in a directive and must not appear in the corpus at all")

An example follows, and the block after the double colon is code::

    for word in the_words_of_a_long_sentence_that_would_otherwise_look_like_prose:
        print(word)

{PROSE}
"""

TOPIC = f"""The "widget" statement
**********************

Widget statements are a convenient way to insert widgets into a program, as this shows:

   widget_stmt ::= "widget" expression ["," expression]

The simple form is equivalent to a loop over the widgets, and this sentence has enough words:

   if __debug__:
       if not expression: raise AssertionError("a message with quite a few words in it")

* If the widget is small: the first case of a list, which carries on as a sentence.

  * A nested item under the first case, which is text and not code at all.

{PROSE}
"""

MODULE = '''"""A module docstring that describes what the module does, in one long sentence."""


def public(x):
    """Return the widget for x, computed carefully, with a docstring of many words.

    >>> public(3)
    9
    """


def _private():
    """This docstring belongs to a private helper and is not read into the corpus at all."""


class Thing:
    """A thing that holds widgets, documented in a sentence of enough words to count."""
'''


def _metadata(name: str, version: str, body: str, old_style: bool = False) -> str:
    head = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: s\n"
    if old_style:  # metadata 1.x: the README in a Description header, continuation lines indented 8 spaces
        return head + "Description: " + body.replace("\n", "\n        |") + "\n\n"
    return head + "Description-Content-Type: text/markdown\n\n" + body


def _fake_tree(root: Path, extra_packages: int = 0) -> tuple[Path, Path]:
    site, std = root / "site-packages", root / "stdlib"
    packages = {
        ("foo", "1.0"): MARKDOWN,
        ("bar_baz", "2.0"): RST,
        ("reasoning_gym", "0.1"): f"Puzzles for evaluation only, never to be trained on. {PROSE}",
        ("ponder", "0.1"): f"This project itself, whose README changes with every commit. {PROSE}",
    }
    for i in range(extra_packages):
        packages[(f"pkg{i}", "1.0")] = f"Package number {i} is described by this sentence with several words. {PROSE}"
    for (name, version), body in packages.items():
        d = site / f"{name}-{version}.dist-info"
        d.mkdir(parents=True)
        (d / "METADATA").write_text(_metadata(name, version, body))
    d = site / "old-0.5.dist-info"
    d.mkdir()
    (d / "METADATA").write_text(
        _metadata(
            "old",
            "0.5",
            f"An old package that keeps its README in a header line of its metadata file.\n\n{PROSE}",
            True,
        )
    )
    (std / "pydoc_data").mkdir(parents=True)
    (std / "pydoc_data" / "topics.py").write_text(f"topics = {{'widget': {TOPIC!r}, 'empty': 'x'}}\n")
    (std / "mod.py").write_text(MODULE)
    (std / "test").mkdir()
    (std / "test" / "test_mod.py").write_text(f'"""A test module whose docstring is skipped. {PROSE}"""\n')
    (std / "broken.py").write_text("def (:\n")
    return site, std


def test_prose_keeps_sentences_and_drops_code_tables_markup():
    md = prose_paragraphs(MARKDOWN)
    assert md == [
        "Foo is a library that makes widgets, see the user guide for more details.",
        "The first item of a list explains one more thing about widgets in a sentence.",
        "The second item of the list is also a sentence about widgets and gadgets.",
        PROSE,
    ]
    rst = prose_paragraphs(RST)
    assert rst == [
        "Bar parses documents and calls bar.parse on each one of them quietly.",
        "An example follows, and the block after the double colon is code:",
        PROSE,
    ]
    topic = prose_paragraphs(TOPIC)
    assert "A nested item under the first case, which is text and not code at all." in topic
    assert not any("__debug__" in p or "::=" in p or "*****" in p for p in topic)
    assert is_prose(PROSE) and not is_prose("Too short to count.") and not is_prose(PROSE.rstrip("."))
    assert not is_prose("x = f(a[0], b[1]) + g(c[2], d[3]) * h(e[4]) - k(m[5]) / n(p[6]) % q(r[7]);")


def _read(out: Path) -> dict:
    return {f: (out / f).read_bytes() for f in ("train.jsonl", "heldout.jsonl", "manifest.json")}


def test_build_is_deterministic_and_records_provenance(tmp_path):
    site, std = _fake_tree(tmp_path)
    a = build_corpus(tmp_path / "a", [site], std, "3.11.7", CorpusSettings(heldout_fraction=0.5, min_chars=50))
    b = build_corpus(tmp_path / "b", [site], std, "3.11.7", CorpusSettings(heldout_fraction=0.5, min_chars=50))
    assert _read(tmp_path / "a") == _read(tmp_path / "b") and a == b and a["fingerprint"] == fingerprint(a)
    by_package = {(s["kind"], s["package"]): s for s in a["sources"]}
    assert set(by_package) == {
        ("python-reference", "python"),
        ("package-readme", "foo"),
        ("package-readme", "bar-baz"),
        ("package-readme", "old"),
        ("stdlib-docstrings", "python"),
    }  # reasoning-gym and ponder excluded; the test folder, the unparsable file and the short topic skipped
    foo = by_package[("package-readme", "foo")]
    data = (site / "foo-1.0.dist-info" / "METADATA").read_bytes()
    assert foo["version"] == "1.0" and foo["file"] == "foo-1.0.dist-info/METADATA"
    assert foo["sha256"] == hashlib.sha256(data).hexdigest()
    for split in ("train", "heldout"):
        assert (
            a["splits"][split]["sha256"] == hashlib.sha256((tmp_path / "a" / f"{split}.jsonl").read_bytes()).hexdigest()
        )
    texts = [json.loads(x)["text"] for s in ("train", "heldout") for x in (tmp_path / "a" / f"{s}.jsonl").open()]
    joined = "\n".join(texts)
    assert "Puzzles for evaluation" not in joined and "README changes" not in joined
    assert "A module docstring that describes" in joined and "private helper" not in joined and ">>>" not in joined
    assert "An old package that keeps its README in a header line of its metadata file." in joined
    assert joined.count(PROSE) == 1  # a paragraph seen before is not repeated
    # Any changed input changes its hash and the fingerprint.
    (std / "mod.py").write_text(MODULE.replace("one long sentence", "one longer sentence"))
    c = build_corpus(tmp_path / "c", [site], std, "3.11.7", CorpusSettings(heldout_fraction=0.5, min_chars=50))
    assert c["fingerprint"] != a["fingerprint"]


def test_split_by_unit_name_hash(tmp_path):
    site, std = _fake_tree(tmp_path, extra_packages=60)
    settings = CorpusSettings(heldout_fraction=0.25, min_chars=50, sources=("package-readme",))
    m = build_corpus(tmp_path / "out", [site], std, "3.11.7", settings)
    held = {s["package"] for s in m["sources"] if s["split"] == "heldout"}
    assert 0.1 < len(held) / len(m["sources"]) < 0.4
    for s in m["sources"]:
        assert (s["split"] == "heldout") == is_heldout(f"package-readme:{s['package']}:{s['package']}", 0.25)
    ids = {
        split: [json.loads(x)["id"] for x in (tmp_path / "out" / f"{split}.jsonl").open()]
        for split in ("train", "heldout")
    }
    assert {i.split(":")[1] for i in ids["heldout"]} == held
    assert not held & {i.split(":")[1] for i in ids["train"]}
    # A new version of a package stays on its side: the split hashes the name, not the version or text.
    moved = next(iter(held))
    (site / f"{moved}-1.0.dist-info").rename(site / f"{moved}-9.9.dist-info")
    m2 = build_corpus(tmp_path / "out2", [site], std, "3.11.7", settings)
    assert {s["package"] for s in m2["sources"] if s["split"] == "heldout"} == held


def test_bad_settings_and_empty_trees_are_user_errors(tmp_path):
    with pytest.raises(CorpusBuildError, match="heldout_fraction"):
        CorpusSettings(heldout_fraction=1.0).check()
    with pytest.raises(CorpusBuildError, match="unknown or no sources"):
        CorpusSettings(sources=("wikipedia",)).check()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusBuildError, match="no prose found"):
        build_corpus(tmp_path / "out", [tmp_path / "empty"], None, "3.11.7")


def test_cli_builds_and_counts_tokens(tmp_path):
    from ponder.cli import main
    from ponder.lm.tiny import TinyArch, build_char_tokenizer, build_tiny_model

    site, std = _fake_tree(tmp_path)
    tok = build_char_tokenizer()
    model_dir = tmp_path / "model"
    build_tiny_model(tok, TinyArch(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)).save_pretrained(
        model_dir
    )
    tok.save_pretrained(model_dir)
    out = tmp_path / "corpus"
    args = ["corpus", "build", "--out", str(out), "--site-packages", str(site), "--stdlib", str(std)]
    assert main([*args, "--min-chars", "50", "--tokenizer", str(model_dir)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    assert train["tokens"][str(model_dir)] == train["chars"]  # one token per character
    assert manifest["fingerprint"] == fingerprint(manifest)  # token counts are outside the fingerprint
    assert main([*args, "--max-chars", "10", "--min-chars", "50"]) == 2  # a bad setting: exit code 2

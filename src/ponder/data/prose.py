"""Keep the prose of documentation text: paragraphs of sentences, without code, tables or markup.

Used to build the real-text corpus (:mod:`ponder.data.realtext`) from package READMEs
(Markdown or reStructuredText), Sphinx's plain-text rendering of the Python reference, and
docstrings. The rules, in order:

1. Fenced code blocks (Markdown ``` / ~~~), reST directives with their indented bodies
   (``.. code-block::``, ``.. image::``, comments) and reST literal blocks (the indented block after
   a paragraph ending in ``::``) are removed: they are code, configuration or pictures.
2. The rest is cut into blocks at blank lines; a block that holds an interactive session
   (``>>>``), a table row (``|``, ``+--``, ``===  ===``) or a grammar rule (``::=``) is dropped whole,
   and so is a block indented deeper than the block before it when that one ends in ``:`` (how
   Sphinx's plain text and Markdown show code). Heading underlines and Markdown ``#`` headings are
   dropped (a heading is not a sentence).
3. A block is split into list items at bullet and number markers, each item a paragraph; lines
   are joined and whitespace collapsed (Unicode NFC).
4. Inline markup is reduced to its text: links and reST references keep their label, images,
   HTML tags and bare URLs go, ``**``/backtick emphasis and reST roles are unwrapped.
5. A paragraph is kept when it reads as prose: at least :data:`MIN_WORDS` words, at least
   :data:`MIN_LETTER_SHARE` of its non-space characters letters, and ending like a sentence
   (``. ! ? : ;`` or a closing quote / bracket after one). Code that survived step 1, option
   lists, badges and headings fail one of these.
"""

from __future__ import annotations

import re
import unicodedata

MIN_WORDS = 8
MIN_LETTER_SHARE = 0.75

_FENCE = re.compile(r"^\s*(```|~~~)")
_DIRECTIVE = re.compile(r"^(\s*)\.\.(\s|$)")
_UNDERLINE = re.compile(r"^\s*([=\-~^*+#`'\".:_])\1{2,}\s*$")
_DROP_BLOCK = re.compile(r"^\s*(>>>|\||\+[-=]|={2,}\s+=|\$ )|::=", re.M)
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s")
_BULLET = re.compile(r"^\s*(?:[*+\-•]|\d{1,3}[.)]|#\.)\s+")
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)|!\[[^\]]*\]\[[^\]]*\]")
_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)|\[([^\]]*)\]\[[^\]]*\]")
_RST_REF = re.compile(r"`([^`<]*?)\s*<[^>]*>`_{1,2}|`([^`]+)`_{1,2}")
_RST_ROLE = re.compile(r":[\w:.+-]+:`~?([^`]*)`")
_LINK_DEF = re.compile(r"^\s*(\[[^\]]+\]:|\.\. _[^:]*:)\s*\S+", re.M)
_HTML = re.compile(r"<[^>\n]+>")
_URL = re.compile(r"https?://\S+")
_EMPHASIS = re.compile(r"\*\*|__|``|`")
_STAR = re.compile(r"(?<![\w*])\*(\S(?:[^*]*\S)?)\*(?![\w*])")
_SENTENCE_END = re.compile(r"[.!?:;][\"'”’)\]]*$")
_WORD = re.compile(r"[^\W\d_]{2,}")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def strip_code(text: str) -> list[str]:
    """Rule 1: the lines of ``text`` without fenced code, reST directives and literal blocks."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4).split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            fence = line.strip()[:3]
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                i += 1
            i += 1
            continue
        directive = _DIRECTIVE.match(line)
        literal = line.rstrip().endswith("::") and not directive
        if directive or literal:
            base = _indent(line)
            if literal:  # "Example::" keeps its sentence with one colon; the block after it goes
                out.append(line.rstrip()[:-1])
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
                i += 1
            out.append("")
            continue
        out.append(line)
        i += 1
    return out


def _inline(text: str) -> str:
    """Rule 4: inline markup reduced to its text."""
    text = _IMAGE.sub("", text)
    text = _MD_LINK.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), text)
    text = _RST_REF.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), text)
    text = _RST_ROLE.sub(r"\1", text)
    text = _HTML.sub("", text)
    text = _URL.sub("", text)
    text = _EMPHASIS.sub("", text)
    text = _STAR.sub(r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def is_prose(paragraph: str) -> bool:
    """Rule 5: enough words, mostly letters, ending like a sentence."""
    chars = paragraph.replace(" ", "")
    if not chars or len(_WORD.findall(paragraph)) < MIN_WORDS:
        return False
    letters = sum(c.isalpha() for c in chars)
    return letters / len(chars) >= MIN_LETTER_SHARE and bool(_SENTENCE_END.search(paragraph))


def _items(block: list[str]) -> list[list[str]]:
    """Rule 3: a block's lines grouped into list items (a block without markers is one item)."""
    items: list[list[str]] = []
    for line in block:
        bullet = _BULLET.match(line)
        if bullet or not items:
            items.append([])
        items[-1].append(line[bullet.end() :] if bullet else line)
    return items


def prose_paragraphs(text: str) -> list[str]:
    """The prose paragraphs of a Markdown, reST or plain-text document, in order (rules in the module docstring)."""
    text = unicodedata.normalize("NFC", text)
    text = _LINK_DEF.sub("", text)
    lines = strip_code(text)
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    out = []
    prev_indent, prev_colon = 0, False
    for block in blocks:
        if not block:
            continue
        indent = min(_indent(x) for x in block)
        code = prev_colon and indent > prev_indent and not _BULLET.match(block[0])  # a nested list is text
        if not code:  # a code block's lines do not change where the text around it is indented
            prev_indent, prev_colon = indent, block[-1].rstrip().endswith(":")
        if code or _DROP_BLOCK.search("\n".join(block)):
            continue
        kept = [x for x in block if not _UNDERLINE.match(x) and not _MD_HEADING.match(x)]
        for item in _items(kept):
            paragraph = _inline(" ".join(x.strip() for x in item))
            if is_prose(paragraph):
                out.append(paragraph)
    return out

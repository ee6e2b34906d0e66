"""Markup is not text (DESIGN section 6): HTML cleaned out of plain-text sources, markup left in concepts counted.

Cleaned: the `text` field of plain-text sources (JSONL and Parquet records), which may carry HTML
(`<p>..</p>`, `<script>` bodies, `&amp;`). `clean_html` turns it into plain text with BeautifulSoup
on the stdlib "html.parser" backend, block elements becoming paragraph breaks; text without HTML is
left alone (None) so that char offsets into it stay valid. MediaWiki XML dumps are not cleaned here:
their wikitext is already turned into text by mwparserfromhell in the MediaWiki source.

Only detected: `markup_kinds` names the kinds of markup a concept's text still carries (HTML tags,
wiki markup, entities, URLs); the text_quality gate grades the share of concepts carrying any.
"""

from __future__ import annotations

import html.entities
import re

from bs4 import BeautifulSoup, NavigableString

MARKUP_KINDS = ("html", "wiki", "entity", "url")

# contents dropped entirely (not text a reader sees)
_DROPPED_TAGS = ("script", "style", "noscript", "template", "head")
# elements that start and end a paragraph
_BLOCK_TAGS = ("p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table", "section", "article",
               "blockquote", "pre", "ul", "ol", "dl", "dt", "dd", "hr", "figure", "figcaption", "header", "footer",
               "main", "nav", "aside", "address", "caption")
# table cells: separated by a space within their row
_CELL_TAGS = ("td", "th")
_PARAGRAPH = "\n\n"
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
_SPACES = re.compile(r"[ \t\r\f\v\xa0]+")

# A character reference the parser should decode: a known entity name with its ";", or a numeric one.
_CHARACTER_REFERENCE = re.compile(r"&(?:(?P<name>[A-Za-z][A-Za-z0-9]{1,31});|#[0-9]{1,7};|#[xX][0-9A-Fa-f]{1,6};)")
_AMPERSAND = re.compile(r"&")

_HTML_TAG = re.compile(
    r"</?[A-Za-z][A-Za-z0-9:-]{0,30}"  # "<" or "</", then a tag name
    r"(?:\s+[A-Za-z_:@][\w:.@-]*(?:\s*=\s*(?:\"[^\"<>]{0,300}\"|'[^'<>]{0,300}'|[^\s\"'=<>`]{1,300}))?){0,20}"
    r"\s*/?>"  # attributes, then ">" or "/>"
)
_WIKI = re.compile(r"\{\{|\}\}|\[\[|\]\]|''|\[https?://|\{\||\|\}")
_URL = re.compile(r"\bhttps?://[^\s<>\"']+|\bwww\.[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")


_OPEN_OR_CLOSE = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]{0,30})\b[^<>]*?(/?)>")
_VOID_TAGS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
                        "track", "wbr"})


def html_nesting_depth(text: str) -> int:
    """How deeply the HTML elements of `text` nest, by one linear scan of its tags (no parser: parsing a deep
    nest with BeautifulSoup takes time quadratic in its depth, 2 s for 8,000 nested <div>s)."""
    depth = deepest = 0
    for match in _OPEN_OR_CLOSE.finditer(text):
        closing, name, self_closing = match.group(1), match.group(2).lower(), match.group(3)
        if closing:
            depth = max(depth - 1, 0)
        elif not self_closing and name not in _VOID_TAGS:
            depth += 1
            deepest = max(deepest, depth)
    return deepest


def clean_html(text: str) -> str | None:
    """Plain text of `text` when it carries HTML (a tag, a comment or a decoded entity); None when it carries none.

    script/style/noscript/template/head contents and comments are dropped; block elements become
    paragraph breaks ("\\n\\n"), inline elements yield just their text. Within a paragraph, non-breaking
    spaces become spaces and runs of spaces/tabs one space; empty paragraphs are dropped. "" when no
    text is left.
    """
    if "<" not in text and "&" not in text:
        return None
    soup = BeautifulSoup(_escape_stray_ampersands(text), "html.parser")
    has_markup = any(type(node) is not NavigableString for node in soup.descendants)  # tags, comments, doctypes
    if not has_markup and "".join(soup.strings) == text:  # nothing parsed as markup and no entity decoded
        return None
    for tag in soup.find_all(_DROPPED_TAGS):
        tag.decompose()
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.insert_before(_PARAGRAPH)
        tag.insert_after(_PARAGRAPH)
    for tag in soup.find_all(_CELL_TAGS):
        tag.insert_after(" ")
    plain = "".join(node for node in soup.descendants if type(node) is NavigableString)
    return _normalise(plain)


def _escape_stray_ampersands(text: str) -> str:
    """`&` escaped as `&amp;` unless it starts a character reference (`&amp;`, `&#39;`).

    The stdlib parser otherwise mangles literal ampersands ("AT&T" at the end of a text loses its
    "&", "R&D;" its ";") and decodes legacy references without ";" ("&copy 2020") in plain prose.
    """
    if "&" not in text:
        return text
    return _AMPERSAND.sub(lambda m: "&" if _is_character_reference(text, m.start()) else "&amp;", text)


def _is_character_reference(text: str, position: int) -> bool:
    match = _CHARACTER_REFERENCE.match(text, position)
    return bool(match) and (match["name"] is None or match["name"] + ";" in html.entities.html5)


def _normalise(text: str) -> str:
    """Paragraphs split at blank lines; lines with single spaces, stripped; empty lines and paragraphs dropped."""
    paragraphs = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        lines = [line for raw in paragraph.split("\n") if (line := _SPACES.sub(" ", raw).strip())]
        if lines:
            paragraphs.append("\n".join(lines))
    return _PARAGRAPH.join(paragraphs)


def markup_kinds(text: str) -> tuple[str, ...]:
    """The kinds of markup `text` carries, in the order of MARKUP_KINDS: "html" tags (`<p>`, `</a>`, `<br/>`),
    "wiki" markup (`{{`, `[[`, `''`, `[http…`, `{|`), "entity" references (`&amp;`, `&#39;`), "url"s."""
    found = {
        "html": "<" in text and _HTML_TAG.search(text) is not None,
        "wiki": _WIKI.search(text) is not None,
        "entity": "&" in text and any(_is_character_reference(text, m.start()) for m in _AMPERSAND.finditer(text)),
        "url": _URL.search(text) is not None,
    }
    return tuple(kind for kind in MARKUP_KINDS if found[kind])

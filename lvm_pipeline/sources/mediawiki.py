"""MediaWiki XML export dumps (`.xml`, `.xml.gz`, `.xml.bz2`): main-namespace pages as plain text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple
from xml.etree.ElementTree import ParseError

import mwparserfromhell
import mwxml
from mwparserfromhell.nodes import ExternalLink, Heading, HTMLEntity, Node, Tag, Text, Wikilink
from mwparserfromhell.wikicode import Wikicode
from mwxml.element_iterator import ElementIterator
from mwxml.errors import MalformedXML

from lvm_pipeline.sources.compression import DECOMPRESSION_ERRORS, open_decompressed
from lvm_pipeline.sources.records import Article, Rejected, corrupt_file, to_article
from lvm_pipeline.text import excerpt

# Sections dropped with their subsections (matched case-insensitively).
BOILERPLATE_SECTIONS = frozenset({"references", "external links", "see also", "further reading", "notes",
                                  "bibliography", "sources"})
# Tags whose inner text is visible prose; every other tag (ref, gallery, math, table, ...) is dropped.
FORMATTING_TAGS = frozenset({
    "b", "i", "u", "s", "strike", "em", "strong", "small", "big", "sub", "sup", "span", "font", "code", "tt",
    "kbd", "samp", "var", "abbr", "dfn", "cite", "q", "mark", "del", "ins", "bdi", "bdo", "blockquote",
    "center", "div", "p", "poem", "pre", "nowiki", "ul", "ol", "dl",
})
LIST_ITEM_TAGS = frozenset({"li", "dt", "dd"})
HIDDEN_LINK_PREFIXES = frozenset({"file", "image", "media", "category"})
_INTERLANGUAGE = re.compile(r"[a-z]{2,3}(-[a-z0-9]+)*")
_LEFTOVER_MARKUP = re.compile(r"__[A-Z]+__|'{2,}")  # magic words, unbalanced bold/italic quotes
_EMPTY_PARENS = re.compile(r"\(\s*[,;:]*\s*\)")
_LOOSE_SPACE = re.compile(r"(?<=\() +| +(?=[,.;:!?)])")  # left where markup was removed: "( Byron) ."
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_CORRUPTION = (*DECOMPRESSION_ERRORS, ParseError)  # the stream breaks off or is not XML
# What mwxml raises for well-formed XML that is not a well-formed dump element (`<ns>x</ns>`, no `<title>`, ...).
_MALFORMED = (MalformedXML, AssertionError, AttributeError, LookupError, TypeError, ValueError)


def read_mediawiki(path: Path, max_article_chars: int, clean_html: bool = True) -> Iterator[Article | Rejected]:
    """Yield one Article or Rejected per main-namespace, non-redirect page ("page N 'Title'").

    A page mwxml cannot read (`<ns>x</ns>`, no `<title>`) is one Rejected ("page N"), and reading
    carries on. A truncated or corrupt file ends the iteration with one Rejected ("after page N"). HTML
    tags in wikitext are parsed by mwparserfromhell with the rest of the markup, so `clean_html` changes nothing.
    """
    with open_decompressed(path) as f:
        for read in _pages(f):
            if isinstance(read, Rejected):
                yield read
            elif read.page.namespace == 0 and read.page.redirect is None:
                yield _page_article(read.page, read.revision, max_article_chars,
                                    f"page {read.number} {read.page.title!r}")


class _Page(NamedTuple):
    number: int  # 1-based, in the file
    page: mwxml.Page
    revision: mwxml.Revision | None  # the latest


def _pages(f: BinaryIO) -> Iterator[_Page | Rejected]:
    """Each `<page>`, read whole, or the Rejected saying why it cannot be read; where the file breaks
    off, a last Rejected ("after page N").

    mwxml.Dump.from_file, unrolled: to carry on past a malformed page, and to keep the root, which
    mwxml leaves every emptied page attached to (it would grow with the number of pages).
    """
    number = completed = 0  # pages begun, pages read whole
    try:
        root = ElementIterator.from_file(f)
        if root.tag != "mediawiki":
            raise MalformedXML(f"the root element is <{root.tag}>, not <mediawiki>")
        namespaces = None  # name -> mwxml.Namespace, for titles without an <ns>
        for element in root:
            if element.tag == "siteinfo":
                namespaces = {ns.name: ns for ns in mwxml.SiteInfo.from_element(element).namespaces or ()}
            elif element.tag == "page":
                number += 1
                try:
                    page = mwxml.Page.from_element(element, namespaces)
                    read = _Page(number, page, _latest_revision(page))
                except _MALFORMED as error:
                    read = Rejected(locator=f"page {number}", excerpt="",
                                    reason=f"malformed page: {type(error).__name__}: {error}")
                completed = number
                yield read
            root.element.clear()
    except _CORRUPTION + _MALFORMED as error:  # _MALFORMED here: the root or <siteinfo>
        yield corrupt_file(f"page {completed}", error)


def _latest_revision(page: mwxml.Page) -> mwxml.Revision | None:
    latest = None
    for revision in page:
        latest = revision
    return latest


def _page_article(page: mwxml.Page, revision: mwxml.Revision | None, max_article_chars: int,
                  locator: str) -> Article | Rejected:
    wikitext = (revision.text if revision is not None else None) or ""
    try:
        text = wikitext_to_plain(wikitext)
    except RecursionError:  # mwparserfromhell builds its tree recursively, a level per nested template or link
        return Rejected(locator=locator, reason="malformed wikitext: nested too deeply to parse",
                        excerpt=excerpt(wikitext), article_id=str(page.id))
    if not text:
        return Rejected(locator=locator, reason="empty text: no text left after removing markup",
                        excerpt=excerpt(wikitext), article_id=str(page.id))
    record = {"id": page.id, "title": page.title, "text": text,
              "revision_id": revision.id if revision is not None else None}
    return to_article(record, locator, max_article_chars, raw=wikitext)


def wikitext_to_plain(wikitext: str) -> str:
    """Plain prose of a page: markup removed, one paragraph per block, separated by a blank line."""
    parts: list[str] = []
    skip_level: int | None = None  # inside a boilerplate section of this heading level
    for node in mwparserfromhell.parse(wikitext).nodes:
        if isinstance(node, Heading):
            if skip_level is not None and node.level > skip_level:
                continue
            title = node.title.strip_code().strip().lower()
            skip_level = node.level if title in BOILERPLATE_SECTIONS else None
        if skip_level is None:
            parts.append(_node_text(node))
    return _paragraphs("".join(parts))


def _render(code: Wikicode | None) -> str:
    return "".join(_node_text(node) for node in code.nodes) if code is not None else ""


def _node_text(node: Node) -> str:
    """The visible text of one node."""
    if isinstance(node, Text):
        return node.value
    if isinstance(node, Wikilink):
        return _wikilink_text(node)
    if isinstance(node, ExternalLink):
        if node.title is not None:
            return _render(node.title)
        return "" if node.brackets else str(node.url)
    if isinstance(node, Tag):
        if str(node.tag).lower() == "br":
            return "\n"
        if str(node.tag).lower() in LIST_ITEM_TAGS:  # "* item" / "# item" / <li>: a paragraph of its own
            return "\n\n" + _render(node.contents)
        return _render(node.contents) if str(node.tag).lower() in FORMATTING_TAGS else ""
    if isinstance(node, HTMLEntity):
        return node.normalize()
    if isinstance(node, Heading):
        return "\n\n"
    return ""  # templates, comments, template arguments, ...


def _wikilink_text(link: Wikilink) -> str:
    title = str(link.title).strip()
    prefix, colon, rest = title.partition(":")
    interlanguage = _INTERLANGUAGE.fullmatch(prefix) and not rest.startswith(" ")  # [[fr:Paris]], not [[Zen: The Art]]
    if colon and (prefix.strip().lower() in HIDDEN_LINK_PREFIXES or interlanguage):
        return ""  # an image, a category, or an interlanguage link: not part of the prose
    if link.text is not None and str(link.text).strip():
        return _render(link.text)
    return _render(link.title).lstrip(":")


def _paragraphs(text: str) -> str:
    text = _LEFTOVER_MARKUP.sub("", text)
    paragraphs = (_LOOSE_SPACE.sub("", " ".join(_EMPTY_PARENS.sub("", block).split()))
                  for block in _PARAGRAPH_BREAK.split(text))
    return "\n\n".join(p for p in paragraphs if p)

"""MediaWiki XML dumps -> plain-text Articles (dumps built in the test, plain, gzip and bz2)."""

from __future__ import annotations

import bz2
import gzip
from xml.sax.saxutils import escape

from lvm_pipeline.sources import Article, Rejected, read_batch
from lvm_pipeline.sources.mediawiki import wikitext_to_plain

HEADER = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>enwiki</dbname>
    <base>https://en.wikipedia.org/wiki/Main_Page</base>
    <generator>MediaWiki 1.41.0</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Talk</namespace>
      <namespace key="6" case="first-letter">File</namespace>
      <namespace key="14" case="first-letter">Category</namespace>
    </namespaces>
  </siteinfo>
"""

ADA = """{{Short description|English mathematician}}
{{Infobox person
| name = Ada Lovelace
| birth_date = {{birth date|1815|12|10}}
}}
'''Augusta Ada King''' ({{lang|en|née}} Byron) was an English [[mathematician]] and [[Writer|writer]],<ref name="b">{{cite book|title=Secret Ref Title}}</ref> known for her work on [[Charles Babbage]]'s proposed [[Analytical Engine|''Analytical Engine'']].
See [https://example.org/notes her notes] and <span class="x">the ''Notes''</span>.<!-- editor comment -->
[[File:Ada Lovelace portrait.jpg|thumb|Portrait caption text]]

{| class="wikitable"
|-
! Year !! Event
|-
| 1843 || Secret table cell
|}
== Early life ==
Ada was born in [[London]] &amp; raised there.<ref>Another secret ref.</ref> <math>E = mc^2</math>
* Her mother was [[Lady Byron]].
* Her father was '''Lord Byron'''.

=== Education ===
She was tutored by [[Mary Somerville]].<gallery>
Image:Somerville.jpg|Secret gallery caption
</gallery>
== See also ==
* [[Secret See Also Link]]
=== Sub-list ===
Secret sub-section text.
== References ==
{{Reflist}}
== External links ==
* [https://example.org Secret external]
[[Category:English mathematicians]]
[[fr:Ada Lovelace]]
"""

ADA_PLAIN = (
    "Augusta Ada King (Byron) was an English mathematician and writer, known for her work on "
    "Charles Babbage's proposed Analytical Engine. See her notes and the Notes.\n\n"
    "Ada was born in London & raised there.\n\nHer mother was Lady Byron.\n\nHer father was Lord Byron.\n\n"
    "She was tutored by Mary Somerville."
)


def page(page_id: int, title: str, text: str, ns: int = 0, redirect: str | None = None) -> str:
    redirect_tag = f'<redirect title="{escape(redirect)}" />' if redirect else ""
    return f"""  <page>
    <title>{escape(title)}</title>
    <ns>{ns}</ns>
    <id>{page_id}</id>{redirect_tag}
    <revision>
      <id>{page_id * 100}</id>
      <timestamp>2024-01-01T00:00:00Z</timestamp>
      <contributor><username>Editor</username><id>1</id></contributor>
      <model>wikitext</model>
      <format>text/x-wiki</format>
      <text bytes="{len(text.encode())}" xml:space="preserve">{escape(text)}</text>
      <sha1>0</sha1>
    </revision>
  </page>
"""


def dump(*pages: str) -> bytes:
    return (HEADER + "".join(pages) + "</mediawiki>\n").encode("utf-8")


def test_wikitext_becomes_plain_paragraphs():
    plain = wikitext_to_plain(ADA)
    assert plain == ADA_PLAIN
    for hidden in ("Secret", "Infobox", "Portrait caption", "1815", "mc^2", "English mathematicians",
                   "'''", "{{", "[[", "<ref", "*"):
        assert hidden not in plain


def test_dump_yields_main_namespace_articles_and_rejects_empty_pages(tmp_path):
    path = tmp_path / "enwiki.xml"
    path.write_bytes(dump(
        page(12, "Ada Lovelace", ADA),
        page(13, "Lovelace", "#REDIRECT [[Ada Lovelace]]", redirect="Ada Lovelace"),
        page(14, "Talk:Ada Lovelace", "Talk page text.", ns=1),
        page(15, "Only templates", "{{Infobox|a=b}}\n[[Category:Empty]]\n<ref>x</ref>"),
        page(16, "Short", "A '''short''' [[page]]."),
    ))
    items = list(read_batch(path))
    assert items == [
        Article("12", "Ada Lovelace", ADA_PLAIN, metadata={"revision_id": 1200}, locator="page 1 'Ada Lovelace'"),
        Rejected(locator="page 4 'Only templates'", reason="empty text: no text left after removing markup",
                 excerpt="{{Infobox|a=b}} [[Category:Empty]] <ref>x</ref>", article_id="15"),
        Article("16", "Short", "A short page.", metadata={"revision_id": 1600}, locator="page 5 'Short'"),
    ]


def test_compressed_dump_reads_and_long_pages_are_rejected(tmp_path):
    path = tmp_path / "enwiki.xml.bz2"
    path.write_bytes(bz2.compress(dump(page(1, "Long", "word " * 50), page(2, "Fine", "Fine text."))))
    long, fine = read_batch(path, max_article_chars=100)
    assert long.reason == "article too long: 249 characters, over the 100 limit" and long.article_id == "1"
    assert fine == Article("2", "Fine", "Fine text.", metadata={"revision_id": 200}, locator="page 2 'Fine'")


def test_truncated_bz2_yields_the_pages_before_the_damage_then_one_rejection(tmp_path):
    pages = [page(i, f"Page {i}", f"Body of page {i}. " * 600) for i in range(1, 31)]
    # compresslevel=1: 100 kB blocks, so the intact blocks before the cut can be decompressed
    data = bz2.compress(dump(*pages), compresslevel=1)
    path = tmp_path / "cut.xml.bz2"
    path.write_bytes(data[: len(data) * 6 // 10])
    items = list(read_batch(path))
    *articles, last = items
    assert 5 <= len(articles) < 30
    assert [a.article_id for a in articles] == [str(i) for i in range(1, len(articles) + 1)]
    assert all(isinstance(a, Article) and a.text.startswith(f"Body of page {a.article_id}.") for a in articles)
    assert last.locator == f"after page {len(articles)}"
    assert last.reason.startswith("truncated or corrupt file: EOFError: Compressed file ended")


def test_malformed_xml_yields_the_pages_before_the_damage_then_one_rejection(tmp_path):
    path = tmp_path / "bad.xml"
    path.write_bytes(dump(page(1, "One", "First."), page(2, "Two", "Second.")).replace(b"<title>Two", b"<title>Two<x>"))
    one, bad = read_batch(path)
    assert one.text == "First."
    assert bad.locator == "after page 1" and bad.reason.startswith("truncated or corrupt file: ParseError: mismatched tag")


def test_colon_titles_stay_and_list_items_become_paragraphs():
    from lvm_pipeline.sources.mediawiki import wikitext_to_plain

    text = wikitext_to_plain("He read [[Mao: The Unknown Story]] today.[[fr:Paris]]\nFruits:\n* Apple\n* Banana")
    assert text == "He read Mao: The Unknown Story today. Fruits:\n\nApple\n\nBanana"


def test_gzipped_dump_reads_like_its_plain_version(tmp_path):
    data = dump(page(12, "Ada Lovelace", ADA), page(15, "Only templates", "{{Infobox}}"), page(16, "Short", "Short."))
    plain, packed = tmp_path / "enwiki.xml", tmp_path / "enwiki.xml.gz"
    plain.write_bytes(data)
    packed.write_bytes(gzip.compress(data))
    assert list(read_batch(packed)) == list(read_batch(plain))
    assert [item.locator for item in read_batch(packed)] == ["page 1 'Ada Lovelace'", "page 2 'Only templates'",
                                                            "page 3 'Short'"]


def test_truncated_gzip_dump_yields_the_pages_before_the_damage_then_one_rejection(tmp_path):
    data = gzip.compress(dump(*[page(i, f"Page {i}", f"Body of page {i}. " * 600) for i in range(1, 31)]))
    path = tmp_path / "cut.xml.gz"
    path.write_bytes(data[: len(data) * 6 // 10])
    *articles, last = read_batch(path)
    assert 5 <= len(articles) < 30
    assert [a.article_id for a in articles] == [str(i) for i in range(1, len(articles) + 1)]
    assert last.locator == f"after page {len(articles)}"
    assert last.reason.startswith("truncated or corrupt file: EOFError: Compressed file ended")


def test_a_page_mwxml_cannot_read_is_rejected_and_the_next_page_read(tmp_path):
    path = tmp_path / "fields.xml"
    path.write_bytes(dump(page(1, "One", "First."), page(2, "Two", "Second."), page(3, "Three", "Third."))
                     .replace(b"<ns>0</ns>\n    <id>2</id>", b"<ns>zero</ns>\n    <id>2</id>"))
    one, two, three = read_batch(path)
    assert (one.text, three.text, three.locator) == ("First.", "Third.", "page 3 'Three'")
    assert two == Rejected(locator="page 2", excerpt="",
                           reason="malformed page: ValueError: invalid literal for int() with base 10: 'zero'")


def test_wikitext_nested_too_deeply_to_parse_is_rejected(tmp_path):
    path = tmp_path / "deep.xml"
    path.write_bytes(dump(page(1, "Deep", "{{" * 5_000 + "x" + "}}" * 5_000), page(2, "Fine", "Fine text.")))
    deep, fine = read_batch(path)
    assert deep.reason == "malformed wikitext: nested too deeply to parse" and deep.article_id == "1"
    assert fine.text == "Fine text."

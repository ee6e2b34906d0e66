"""Fuzzing the landing readers with hypothesis: whatever the file holds, `read_batch` yields only Articles and
Rejected records, or raises SourceError; never another exception, and every Article is a valid one.

Bounded and reproducible: few examples each, derandomized, no example database (files in tempfile folders).
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvm_pipeline.sources import Article, Rejected, SourceError, read_batch
from lvm_pipeline.sources.records import MAX_NESTING
from lvm_pipeline.text import EXCERPT_CHARS, UNSTORABLE

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_LOCATOR = re.compile(r"(after )?(line|row|page) \d+( .+)?", re.DOTALL)  # "page 3 'Title'"


def read_all(name: str, data: bytes, gzipped: bool = False) -> list[Article | Rejected]:
    """Everything `read_batch` yields for a file `name` holding `data` ([] if it raises SourceError), checked.

    `gzipped`: the file is `name` + ".gz", holding `data` compressed.
    """
    if gzipped:
        name, data = f"{name}.gz", gzip.compress(data)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            items = list(read_batch(path, max_article_chars=10_000))
        except SourceError:
            return []
    for item in items:
        assert type(item) in (Article, Rejected), item
        assert _LOCATOR.fullmatch(item.locator), item.locator
        if isinstance(item, Article):
            assert_valid_article(item)
        else:
            assert re.fullmatch(r"[\w -]+: .+", item.reason, re.DOTALL), item.reason
            assert len(item.excerpt) <= EXCERPT_CHARS and not UNSTORABLE.search(item.excerpt + item.reason)
    return items


def assert_valid_article(article: Article) -> None:
    assert article.article_id and article.article_id == article.article_id.strip()
    assert article.title and article.title == article.title.strip()
    assert article.text.strip() and len(article.text) <= 10_000
    assert not UNSTORABLE.search(article.article_id + article.title + article.text + (article.url or ""))
    json.dumps(article.metadata, allow_nan=False)  # strict JSON, what PostgreSQL jsonb takes


def non_blank_lines(data: bytes) -> int:
    return sum(1 for chunk in data.split(b"\n") if chunk.strip())


# -- JSON Lines ------------------------------------------------------------------------------
ODD_TEXT = st.text(st.characters(exclude_categories=()), max_size=20)  # NUL, lone surrogates, controls too
JSON_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(10**40), max_value=10**40) | st.floats()
                | ODD_TEXT)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(ODD_TEXT, inner, max_size=4), max_leaves=20)
TEXT = st.text(min_size=1, max_size=200) | st.sampled_from(["<p>a &amp; <b>b</b></p><script>x</script>", "<br>", " "])
FIELDS = {"url": ODD_TEXT | JSON_VALUES, "meta": JSON_VALUES, "description": ODD_TEXT}
RECORDS = (st.fixed_dictionaries({"id": st.integers() | st.text(min_size=1), "title": st.text(min_size=1), "text": TEXT},
                                 optional=FIELDS)  # mostly articles
           | st.fixed_dictionaries({}, optional={"id": JSON_VALUES, "title": JSON_VALUES, "text": TEXT | JSON_VALUES,
                                                 **FIELDS}))


def deep(depth: int, opener: str) -> str:
    """`depth` nested arrays (`[`) or objects (`{`) as a JSON text."""
    return "[" * depth + "]" * depth if opener == "[" else '{"a":' * depth + "1" + "}" * depth


def json_line(value: object, ascii_only: bool) -> bytes:
    # a lone surrogate written raw is not UTF-8: "surrogatepass" makes the invalid bytes a reader must reject
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


LINES = st.one_of(
    st.builds(json_line, RECORDS | JSON_VALUES, st.booleans()),
    st.builds(lambda depth, opener: deep(depth, opener).encode(), st.integers(0, 3_000), st.sampled_from("[{")),
    st.integers(4_000, 5_000).map(lambda digits: b'{"id": 1, "title": "t", "text": "x", "n": ' + b"9" * digits + b"}"),
    st.binary(max_size=60),
)


@FUZZ
@given(st.binary(max_size=2_000), st.booleans())
def test_any_bytes_as_jsonl(data, compressed):
    items = read_all("b.jsonl", data, compressed)
    assert len(items) == non_blank_lines(data)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([b"", b"\x1f\x8b", b"\x1f\x8b\x08"]))
def test_any_bytes_as_gzip_jsonl(data, signature):
    read_all("b.jsonl.gz", signature + data)


@settings(FUZZ, max_examples=120)
@given(st.lists(LINES, min_size=1, max_size=8), st.booleans())
def test_any_json_values_one_per_line(lines, compressed):
    data = b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n"
    items = read_all("b.jsonl", data, compressed)
    assert len(items) == non_blank_lines(data)
    assert [item.locator for item in items] == [f"line {n}" for n, chunk in enumerate(data.split(b"\n"), 1)
                                                if chunk.strip()]


@FUZZ
@given(st.integers(1, 400), st.integers(0, 10_000))
def test_truncated_gzip_jsonl_keeps_a_prefix_then_one_rejection(n_lines, cut):
    data = b"".join(json_line({"id": i, "title": "T", "text": f"text {i} " * 5}, True) + b"\n" for i in range(n_lines))
    packed = gzip.compress(data)
    items = read_all("b.jsonl.gz", packed[: cut % len(packed)])
    *articles, last = items or [None]
    assert [a.article_id for a in articles] == [str(i) for i in range(len(articles))]
    assert last is None or (last.locator == f"after line {len(articles)}" and last.reason.startswith("truncated"))


@FUZZ
@given(st.integers(1, 3_000))
def test_nesting_is_kept_up_to_the_limit_and_rejected_past_it(depth):
    meta = deep(depth, "[")
    (item,) = read_all("b.jsonl", f'{{"id": "d", "title": "T", "text": "x", "meta": {meta}}}\n'.encode())
    assert isinstance(item, Article) == (depth + 1 <= MAX_NESTING)


# -- Parquet ---------------------------------------------------------------------------------
ARROW_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)  # Arrow strings are UTF-8: no surrogates
INT64 = st.integers(-(2**63), 2**63 - 1)
COLUMN_KINDS = [  # (Arrow type, its values)
    (pa.int64(), INT64), (pa.int8(), st.integers(-128, 127)), (pa.uint64(), st.integers(0, 2**64 - 1)),
    (pa.float64(), st.floats()), (pa.bool_(), st.booleans()), (pa.null(), st.none()),
    (pa.string(), ARROW_TEXT), (pa.large_string(), ARROW_TEXT),
    (pa.binary(), st.binary(max_size=30)), (pa.large_binary(), st.binary(max_size=30)),
    (pa.list_(pa.int64()), st.lists(INT64, max_size=3)),
    (pa.list_(pa.list_(pa.string())), st.lists(st.lists(ARROW_TEXT, max_size=2), max_size=2)),
    (pa.struct([("a", pa.int64()), ("b", pa.string())]), st.fixed_dictionaries({"a": INT64, "b": ARROW_TEXT})),
    (pa.map_(pa.string(), pa.float64()), st.lists(st.tuples(ARROW_TEXT, st.floats()), max_size=2)),
    (pa.date32(), st.integers(-(2**31), 2**31 - 1)),
    (pa.decimal128(10, 2), st.decimals(min_value=-10**7, max_value=10**7, places=2, allow_nan=False)),
    *[(pa.timestamp(unit, tz), INT64) for unit in ("ms", "us", "ns") for tz in (None, "UTC", "Asia/Tokyo")],
    (pa.timestamp("s"), st.integers(-(2**63 // 1000), 2**63 // 1000)),  # Parquet stores seconds as milliseconds
    (pa.duration("s"), INT64),
]


@st.composite
def arrow_tables(draw) -> pa.Table:
    n_rows = draw(st.integers(0, 6))
    required = [name for name in ("id", "title", "text") if draw(st.integers(0, 9))]  # each there 9 times in 10
    names_or_repeats = ARROW_TEXT | ARROW_TEXT | ARROW_TEXT | st.sampled_from(["id", "title", "text", "url"])
    extra = draw(st.lists(names_or_repeats, max_size=3))  # a repeated name: the last column of that name counts
    names = [*required, *extra]
    return pa.Table.from_arrays([draw(arrow_columns(n_rows, name in required)) for name in names], names=names)


@st.composite
def arrow_columns(draw, n_rows: int, required: bool) -> pa.Array:
    """A column of any kind; a required one mostly of the type it should have (non-blank strings)."""
    kind = draw(st.integers(0, 9))
    if kind == 0:  # a dictionary-encoded string column
        values = draw(st.lists(ARROW_TEXT | st.none(), min_size=n_rows, max_size=n_rows))
        return pa.array(values, pa.string()).dictionary_encode()
    if kind < 8 and required:
        pa_type, values = pa.string(), ARROW_TEXT.map("a".__add__)
    else:
        pa_type, strategy = draw(st.sampled_from(COLUMN_KINDS))
        values = strategy | st.none()
    return pa.array(draw(st.lists(values, min_size=n_rows, max_size=n_rows)), pa_type)


@settings(FUZZ, max_examples=150)
@given(arrow_tables())
def test_any_parquet_table(table):
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=3)
    items = read_all("b.parquet", sink.getvalue().to_pybytes())
    if items:
        assert [item.locator for item in items] == [f"row {n}" for n in range(1, table.num_rows + 1)]


@FUZZ
@given(arrow_tables(), st.integers(0, 100_000), st.integers(1, 255), st.sampled_from(["snappy", "gzip", "none"]))
def test_a_parquet_file_with_a_byte_changed_anywhere(table, position, flip, compression):
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=2, compression=compression)
    data = bytearray(sink.getvalue().to_pybytes())
    data[position % len(data)] ^= flip
    read_all("b.parquet", bytes(data))


@FUZZ
@given(st.binary(max_size=500), st.booleans())
def test_any_bytes_as_parquet(data, framed):
    read_all("b.parquet", b"PAR1" + data + b"PAR1" if framed else data)  # framed: past the magic-bytes check


# -- MediaWiki XML ---------------------------------------------------------------------------
HEADER = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">
  <siteinfo><sitename>W</sitename><namespaces><namespace key="0" case="first-letter" />
  <namespace key="14" case="first-letter">Category</namespace></namespaces></siteinfo>
"""
MARKUP = st.sampled_from(["{{", "}}", "{{{", "}}}", "[[", "]]", "|", "[http://example.org ", "]", "'''", "''", "==",
                          "\n", "\n\n", "*", "#", ":", ";", "<ref>", "</ref>", "<b>", "</b>", "<br/>", "<!--", "-->",
                          "&amp;", "&nbsp;", "&#x41;", "{|", "|-", "|}", "__TOC__", "File:", "Category:", "fr:",
                          "<nowiki>", "</nowiki>", "<table>", "<li>", "= References =", "~~~~", "----"])
# what XML 1.0 text may hold
XML_CHARS = st.characters(exclude_categories=["Cs", "Cc"], exclude_characters="\ufffe\uffff") | st.sampled_from("\t\n")
WIKITEXT = st.lists(MARKUP | st.text(XML_CHARS, max_size=8), max_size=40).map("".join)
DEEP_WIKITEXT = st.builds(lambda opener, n: opener * n, st.sampled_from(["{{", "[[a|", "<b>", "{{{", "[http://x "]),
                          st.integers(0, 2_000))


def xml_page(page_id: int, title: str, ns: str, wikitext: str) -> str:
    return (f"<page><title>{escape(title)}</title><ns>{ns}</ns><id>{page_id}</id><revision><id>{page_id}</id>"
            f"<timestamp>2024-01-01T00:00:00Z</timestamp><text xml:space=\"preserve\">{escape(wikitext)}</text>"
            f"</revision></page>\n")


def dump(pages: list[tuple[str, str, str]]) -> bytes:
    """A MediaWiki export of (title, ns, wikitext) pages."""
    return (HEADER + "".join(xml_page(i, *p) for i, p in enumerate(pages, 1)) + "</mediawiki>\n").encode()


PAGES = st.lists(st.tuples(st.text(XML_CHARS, min_size=1, max_size=12), st.sampled_from([*"000000", "1", "14", "x", ""]),
                           WIKITEXT | DEEP_WIKITEXT), max_size=5)


@settings(FUZZ, max_examples=120)
@given(PAGES, st.booleans())
def test_any_wikitext_in_a_valid_dump(pages, compressed):
    items = read_all("d.xml", dump(pages), compressed)
    assert not any(item.reason.startswith("truncated or corrupt file") for item in items if isinstance(item, Rejected))


@FUZZ
@given(PAGES, st.integers(0, 100_000), st.booleans())
def test_a_dump_cut_anywhere(pages, cut, compressed):
    data = gzip.compress(dump(pages)) if compressed else dump(pages)
    read_all("d.xml.gz" if compressed else "d.xml", data[: cut % (len(data) + 1)])


@FUZZ
@given(st.binary(max_size=1_000), st.booleans())
def test_any_bytes_as_xml(data, compressed):
    read_all("d.xml", data, compressed)


@FUZZ
@given(st.binary(max_size=500))
def test_any_bytes_as_the_wikitext_of_a_page(data):
    text = data.replace(b"&", b"&amp;").replace(b"<", b"&lt;")
    read_all("d.xml", dump([("Page", "0", "")]).replace(b'preserve"></text>', b'preserve">' + text + b"</text>"))


DUMP_TAGS = st.sampled_from(["page", "title", "ns", "id", "redirect", "revision", "timestamp", "text", "contributor",
                             "username", "siteinfo", "namespaces", "namespace", "logitem", "comment", "model", "x"])
# well-formed XML of dump elements nested at random: <page><ns>12</ns><revision><text>T</text>...
DUMP_ELEMENTS = st.recursive(
    st.sampled_from(["", "0", "12", "T", "x", "2024-01-01T00:00:00Z", " "]),
    lambda inner: st.builds(lambda tag, children: f"<{tag}>{''.join(children)}</{tag}>", DUMP_TAGS,
                            st.lists(inner, max_size=4)), max_leaves=30)


@FUZZ
@given(st.lists(DUMP_ELEMENTS, max_size=4).map("".join), st.booleans())
def test_any_elements_inside_the_mediawiki_root(body, with_siteinfo):
    read_all("d.xml", ((HEADER if with_siteinfo else "<mediawiki>") + body + "</mediawiki>").encode())

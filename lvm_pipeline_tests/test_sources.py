"""JSONL and Parquet landing files -> Articles and Rejected records (real files in tmp_path)."""

from __future__ import annotations

import bz2
import gzip
import json
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lvm_pipeline.landing import scan_landing
from lvm_pipeline.sources import (
    SUPPORTED_SUFFIXES,
    Article,
    EmptySourceError,
    Rejected,
    SourceError,
    UnsupportedSourceError,
    read_batch,
    source_format,
)
from lvm_pipeline.sources.records import MAX_NESTING, NESTED_TOO_DEEPLY, to_article
from lvm_pipeline.text import EXCERPT_CHARS


def good(i: int, **extra) -> dict:
    return {"id": f"a{i}", "title": f"Title {i}", "text": f"Text of article {i}.", **extra}


def line(record: object) -> bytes:
    return json.dumps(record).encode() + b"\n"


def by_locator(items) -> dict:
    return {item.locator: item for item in items}


def test_source_format_by_suffix_case_insensitive():
    assert [source_format(f"b{s.upper()}") for s in SUPPORTED_SUFFIXES] == ["jsonl", "jsonl", "jsonl", "parquet",
                                                                           "mediawiki", "mediawiki", "mediawiki"]
    assert source_format("dump.XML.BZ2") == "mediawiki" and source_format("b.jsonl.gz") == "jsonl"
    assert source_format("b.parquet.gz") is None and source_format("b.gz") is None
    assert source_format("notes.txt") is None and source_format("x.json") is None


def test_jsonl_good_records_become_articles(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_bytes(line(good(1, url=" https://x/1 ", topic="Arts", extra=None))
                     + b"\n  \n" + line({"id": 7, "title": " T7 ", "text": "  spaced  "}).rstrip(b"\n"))
    first, second = read_batch(path)
    assert first == Article("a1", "Title 1", "Text of article 1.", url="https://x/1",
                            metadata={"topic": "Arts"}, locator="line 1")
    # int id -> str, title stripped, text kept as given; blank lines counted, a last line without newline read
    assert second == Article("7", "T7", "  spaced  ", locator="line 4")


def test_jsonl_every_bad_line_is_rejected_with_its_reason_and_the_good_ones_kept(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"".join([
        line(good(1)),
        b'{"id": "a2", "title": "T" "text": "x"}\n',  # 2: malformed JSON
        line({"id": "a3", "title": "T3"}),  # 3: missing text
        line({"id": "a4", "title": "T4", "text": " \n\t "}),  # 4: whitespace-only text
        b'{"id": "a5", "title": "T5", "text": "caf\xff"}\n',  # 5: invalid UTF-8
        line(good(6)),
        line({"id": "a7", "title": "T7", "text": "x" * 101}),  # 7: too long for max 100
        line({"id": "a8", "title": "T8", "text": "a\u0000b"}),  # 8: NUL (json escape)
        line({"id": "a9", "title": "T9", "text": "ok", "note": "\ud800"}),  # 9: lone surrogate in metadata
        line(["not", "an", "object"]),  # 10
        line({"id": "  ", "title": "T", "text": "x"}),  # 11: blank id
        line({"id": "a12", "title": "", "text": "x"}),  # 12: empty title
        line({"id": "a13", "title": "T13", "text": 42}),  # 13: text not a string
        line(good(14)),
    ]))
    items = by_locator(read_batch(path, max_article_chars=100))
    assert [loc for loc, item in items.items() if isinstance(item, Article)] == ["line 1", "line 6", "line 14"]
    reasons = {loc: item.reason for loc, item in items.items() if isinstance(item, Rejected)}
    assert reasons == {
        "line 2": "malformed JSON: Expecting ',' delimiter (column 27)",
        "line 3": "missing text: the record has no 'text' field",
        "line 4": "empty text: the 'text' field is blank",
        "line 5": "invalid UTF-8: byte 0xff at position 40 of the line",
        "line 7": "article too long: 101 characters, over the 100 limit",
        "line 8": "invalid text: the 'text' field contains a NUL character at position 1 "
                  "(PostgreSQL text cannot store it)",
        "line 9": "invalid text: the 'note' field contains an unpaired surrogate U+D800 at position 0 "
                  "(PostgreSQL text cannot store it)",
        "line 10": "not an object: expected a JSON object, got an array",
        "line 11": "missing id: the 'id' field is missing or blank",
        "line 12": "missing title: the 'title' field is missing or blank",
        "line 13": "invalid text: the 'text' field is a number, not a string",
    }
    assert items["line 5"].excerpt == '{"id": "a5", "title": "T5", "text": "caf\ufffd"}'
    assert items["line 3"].article_id == "a3" and items["line 2"].article_id is None
    assert all(len(item.excerpt) <= EXCERPT_CHARS and "\x00" not in item.excerpt for item in items.values()
               if isinstance(item, Rejected))


def test_jsonl_default_limit_rejects_an_absurdly_long_article(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_bytes(line(good(1)) + line({"id": "big", "title": "Big", "text": "x" * 3_000_000}) + line(good(3)))
    first, big, third = read_batch(path)
    assert isinstance(first, Article) and isinstance(third, Article) and third.locator == "line 3"
    assert big.reason == "article too long: 3,000,000 characters, over the 1,000,000 limit"
    assert big.excerpt.startswith('{"id": "big"') and len(big.excerpt) == EXCERPT_CHARS


def test_jsonl_a_line_too_long_to_hold_is_skipped_through(tmp_path):
    path = tmp_path / "huge.jsonl"
    path.write_bytes(line(good(1)) + b'{"text": "' + b"y" * 1_200_000 + b'"}\n' + line(good(3)))
    first, huge, third = read_batch(path, max_article_chars=10)
    assert (first.article_id, third.article_id, third.locator) == ("a1", "a3", "line 3")
    assert huge.reason == ("article too long: the line is 1,200,013 bytes, over the 1,048,696-byte limit "
                           "for 10-character articles")
    assert huge.excerpt.startswith('{"text": "yyy')


def test_jsonl_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + line(good(1)))
    assert [a.article_id for a in read_batch(path)] == ["a1"]


@pytest.mark.parametrize("name", ["notes.txt", "data.csv", "dump.json"])
def test_unknown_file_type_raises_eagerly(tmp_path, name):
    path = tmp_path / name
    path.write_text("whatever")
    with pytest.raises(UnsupportedSourceError) as error:
        read_batch(path)  # no next(): the call itself raises
    assert name in str(error.value) and all(s in str(error.value) for s in SUPPORTED_SUFFIXES)


@pytest.mark.parametrize("content", [b"", b"  \n\n\t \r\n"])
@pytest.mark.parametrize("name", ["empty.jsonl", "empty.parquet", "empty.xml"])
def test_empty_file_raises_eagerly(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(EmptySourceError, match=name):
        read_batch(path)


def test_missing_file_raises_eagerly(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_batch(tmp_path / "gone.jsonl")


def write_parquet(path, columns: dict) -> None:
    pq.write_table(pa.table(columns), path, row_group_size=2)  # several row groups: exercises streaming


def test_parquet_rows_become_articles_and_bad_rows_are_rejected(tmp_path):
    path = tmp_path / "b.parquet"
    write_parquet(path, {
        "id": pa.array([1, 2, 3, 4, 5], pa.int64()),
        "title": ["T1", "T2", "T3", None, "T5"],
        "text": pa.array([b"one", b"", b"caf\xff", b"four", b"x" * 50], pa.binary()),
        "topic": ["Arts", None, "x", "y", "z"],
    })
    items = list(read_batch(path, max_article_chars=20))
    assert items[0] == Article("1", "T1", "one", metadata={"topic": "Arts"}, locator="row 1")
    assert [(r.locator, r.reason) for r in items[1:]] == [
        ("row 2", "empty text: the 'text' field is blank"),
        ("row 3", "invalid UTF-8: byte 0xff at position 3 of column 'text'"),
        ("row 4", "missing title: the 'title' field is missing or blank"),
        ("row 5", "article too long: 50 characters, over the 20 limit"),
    ]
    assert "caf\ufffd" in items[2].excerpt


def test_parquet_streams_many_rows_in_order(tmp_path):
    path = tmp_path / "many.parquet"
    n = 2_500
    write_parquet(path, {"id": [f"a{i}" for i in range(n)], "title": ["T"] * n, "text": ["body"] * n})
    items = list(read_batch(path))
    assert [a.article_id for a in items] == [f"a{i}" for i in range(n)] and items[-1].locator == f"row {n}"


def test_parquet_missing_required_column_raises_eagerly_naming_the_columns(tmp_path):
    path = tmp_path / "nocol.parquet"
    write_parquet(path, {"id": ["a"], "title": ["T"], "body": ["x"]})
    with pytest.raises(SourceError, match=r"missing required column\(s\) text; found: id, title, body"):
        read_batch(path)


def test_not_a_parquet_file_raises_eagerly(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text('{"id": 1}\n')
    with pytest.raises(SourceError, match="not a readable Parquet file"):
        read_batch(path)


def test_to_article_keeps_json_safe_metadata():
    article = to_article({"id": "x", "title": "T", "text": "t", "when": pa.scalar(1).type, "tags": ("a", 1)},
                         "row 1", 100)
    assert article.metadata == {"when": "int64", "tags": ["a", 1]}
    json.dumps(article.metadata)


TOO_DEEP = "malformed JSON: nested too deeply (more than 100 levels of arrays and objects)"


def nested(depth: int, leaf: object = 1) -> object:
    """`leaf` inside `depth` lists, built without recursion."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize("deep", [
    b"[" * 200_000 + b"]" * 200_000,  # the stdlib parser gives up (RecursionError)
    b'{"a":' * 200_000 + b"1" + b"}" * 200_000,
    b'{"id": "d", "title": "T", "text": "x", "meta": ' + b"[" * 900 + b"]" * 900 + b"}",  # parses; the walks recursed
])
def test_jsonl_a_line_nested_too_deeply_is_rejected_and_the_next_line_read(tmp_path, deep):
    path = tmp_path / "deep.jsonl"
    path.write_bytes(line(good(1)) + deep + b"\n" + line(good(3)))
    first, rejected, third = read_batch(path)
    assert (first.article_id, third.article_id, third.locator) == ("a1", "a3", "line 3")
    assert rejected == Rejected(locator="line 2", reason=TOO_DEEP, excerpt=rejected.excerpt)
    assert len(rejected.excerpt) <= EXCERPT_CHARS


def test_jsonl_nesting_limit_is_exact(tmp_path):
    path = tmp_path / "limit.jsonl"
    # the record is the first level: its field holds the other MAX_NESTING - 1, then one too many
    path.write_bytes(line(good(1, meta=nested(MAX_NESTING - 1))) + line(good(2, meta=nested(MAX_NESTING))))
    kept, rejected = read_batch(path)
    assert kept.metadata == {"meta": nested(MAX_NESTING - 1)} and rejected.reason == TOO_DEEP


def test_to_article_rejects_a_record_nested_too_deeply_without_recursing():
    rejected = to_article(good(1, meta=nested(50_000)), "row 1", 100)  # no JSON text: a Parquet-like record
    assert rejected.reason == NESTED_TOO_DEEPLY and rejected.article_id == "a1"
    assert rejected.excerpt.startswith('{"id": "a1"') and len(rejected.excerpt) <= EXCERPT_CHARS
    not_an_object = to_article(nested(50_000), "row 2", 100)
    assert not_an_object.reason == "not an object: expected a JSON object, got an array"


def test_jsonl_an_integer_too_long_to_convert_is_rejected(tmp_path):
    path = tmp_path / "bigint.jsonl"
    path.write_bytes(b'{"id": "a1", "title": "T", "text": "x", "n": ' + b"9" * 5_000 + b"}\n" + line(good(2)))
    rejected, kept = read_batch(path)
    assert rejected.reason == "malformed JSON: an integer of more than 4,300 digits" and kept.article_id == "a2"


def test_metadata_is_strict_json_without_nan_or_infinities(tmp_path):
    path = tmp_path / "nan.jsonl"
    path.write_bytes(b'{"id": "a1", "title": "T", "text": "x", "score": NaN, "big": 1e400, "v": [-Infinity, 0.5]}\n')
    (article,) = read_batch(path)
    assert article.metadata == {"score": "nan", "big": "inf", "v": ["-inf", 0.5]}
    json.dumps(article.metadata, allow_nan=False)  # what PostgreSQL jsonb accepts


def test_parquet_a_value_python_cannot_hold_rejects_its_row_only(tmp_path):
    path = tmp_path / "ts.parquet"
    write_parquet(path, {"id": ["a", "b", "c"], "title": ["T"] * 3, "text": ["x"] * 3,
                         "seen": pa.array([0, 10**15, 1], pa.timestamp("s"))})  # row 2: far past year 9999
    first, bad, third = read_batch(path)
    assert (first.article_id, third.article_id, third.locator) == ("a", "c", "row 3")
    assert bad.locator == "row 2" and bad.reason.startswith(
        "unreadable value: column 'seen' holds a value Python cannot represent: OverflowError")


def test_parquet_column_names_that_are_not_utf8_raise_eagerly(tmp_path):
    path = tmp_path / "names.parquet"
    write_parquet(path, {"id": ["a"], "title": ["T"], "text": ["x"], "café": [1]})
    path.write_bytes(path.read_bytes().replace("café".encode(), b"caf\xff\xff"))  # the footer's schema, damaged
    with pytest.raises(SourceError, match="not a readable Parquet file: 'utf-8' codec can't decode byte 0xff"):
        read_batch(path)


def gzip_batch(path, data: bytes) -> None:
    path.write_bytes(gzip.compress(data))


@pytest.mark.parametrize(("suffix", "compress"), [(".jsonl.gz", gzip.compress), (".jsonl.bz2", bz2.compress)])
def test_compressed_jsonl_reads_like_its_plain_version(tmp_path, suffix, compress):
    data = b"".join([line(good(1)), b"\n", b"{oops\n", line(good(4))])
    plain, packed = tmp_path / "b.jsonl", tmp_path / f"b{suffix}"
    plain.write_bytes(data)
    packed.write_bytes(compress(data))
    assert list(read_batch(packed)) == list(read_batch(plain))
    assert [item.locator for item in read_batch(packed)] == ["line 1", "line 3", "line 4"]


def test_gzipped_jsonl_is_streamed_not_decompressed_whole(tmp_path):
    path = tmp_path / "big.jsonl.gz"
    n = 4_000
    gzip_batch(path, b"".join(line(good(i, text="word " * 400)) for i in range(n)))  # 8 MB decompressed
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_batch(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == n and peak < 2_000_000


def test_truncated_gzip_jsonl_keeps_the_lines_before_the_break_then_one_rejection(tmp_path):
    data = gzip.compress(b"".join(line(good(i, text=f"Body {i} " * 50)) for i in range(1, 2_001)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) * 6 // 10])
    *articles, last = read_batch(path)
    assert 100 < len(articles) < 2_000
    assert [a.article_id for a in articles] == [f"a{i}" for i in range(1, len(articles) + 1)]
    assert all(isinstance(a, Article) for a in articles)  # the line cut by the break is not one of them
    assert last.locator == f"after line {len(articles)}"
    assert last.reason.startswith("truncated or corrupt file: EOFError: Compressed file ended")


@pytest.mark.parametrize(("name", "kind"), [("b.jsonl.gz", "gzip"), ("b.xml.gz", "gzip"), ("b.jsonl.bz2", "bzip2")])
def test_a_compressed_suffix_on_an_uncompressed_file_raises_eagerly(tmp_path, name, kind):
    path = tmp_path / name
    path.write_bytes(line(good(1)))
    with pytest.raises(SourceError, match=rf"{name}: not a {kind} file"):
        read_batch(path)  # no next(): the call itself raises


@pytest.mark.parametrize("content", [b"", b"  \n\n\t \r\n"])
@pytest.mark.parametrize("name", ["empty.jsonl.gz", "empty.xml.gz", "empty.jsonl.bz2", "empty.xml.bz2"])
def test_an_empty_compressed_file_raises_eagerly(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(bz2.compress(content) if name.endswith(".bz2") else gzip.compress(content))
    with pytest.raises(EmptySourceError, match=name):
        read_batch(path)


def test_landing_scan_picks_up_compressed_batches(tmp_path):
    gzip_batch(tmp_path / "b.jsonl.gz", line(good(1)))
    (tmp_path / "b.parquet.gz").write_bytes(b"x")
    scan = scan_landing(tmp_path, {})
    assert [name for name, _ in scan.new] == ["b.jsonl.gz"]
    assert [name for name, _ in scan.skipped] == ["b.parquet.gz"]

"""Segmentation: exact offsets, full coverage, packing bounds, sentence boundaries, edge cases."""

from __future__ import annotations

import random
import re

import pytest

from lvm_pipeline.segmentation import Chunk, segment, split_sentences
from lvm_pipeline.sources.vital_articles import load_vital_articles

PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")
SIZES = [(250, 400), (80, 150), (1, 1)]


@pytest.fixture(scope="module")
def articles() -> list[str]:
    """~400 real Wikipedia lead sections: every 40th, plus every one with a newline (paragraphs)."""
    texts = [record["text"] for record in load_vital_articles()]
    picked = [t for i, t in enumerate(texts) if i % 40 == 0 or "\n" in t]
    assert len(picked) > 300 and any("\n\n" in t for t in picked)
    return picked


def sentences_of(text: str) -> list[str]:
    return [text[start:end] for start, end in split_sentences(text)]


def assert_exact_cover(text: str, chunks: list[Chunk]) -> None:
    """Offsets exact, text trimmed, seq consecutive; chunks tile every non-whitespace char once."""
    prev_end = 0
    for seq, chunk in enumerate(chunks):
        assert chunk.seq == seq
        assert chunk.text == text[chunk.start:chunk.end]
        assert chunk.text and chunk.text == chunk.text.strip()
        assert chunk.n_sentences >= 1
        assert prev_end <= chunk.start and text[prev_end:chunk.start].strip() == ""
        prev_end = chunk.end
    assert text[prev_end:].strip() == ""


def in_same_paragraph(text: str, end: int, start: int) -> bool:
    return not PARAGRAPH_BREAK.search(text, end, start)


def sentence_spans_by_chunk(text: str, chunks: list[Chunk]) -> list[list[tuple[int, int]]]:
    spans = iter(split_sentences(text))
    return [[next(spans) for _ in range(chunk.n_sentences)] for chunk in chunks]


# -- corpus properties ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sentence", "packed"])
def test_offsets_exact_and_every_character_covered_once_on_corpus(articles, mode):
    for text in articles:
        assert_exact_cover(text, segment(text, mode))


def test_split_sentences_matches_sentence_mode_on_corpus(articles):
    for text in articles:
        spans = split_sentences(text)
        chunks = segment(text, "sentence")
        assert [(c.start, c.end) for c in chunks] == spans
        assert all(c.n_sentences == 1 for c in chunks)
        assert all(text[s:e] == text[s:e].strip() and s < e for s, e in spans)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


@pytest.mark.parametrize(("min_chars", "max_chars"), SIZES)
def test_packed_chunks_are_runs_of_whole_sentences(articles, min_chars, max_chars):
    for text in articles:
        chunks = segment(text, "packed", min_chars=min_chars, max_chars=max_chars)
        assert sum(c.n_sentences for c in chunks) == len(split_sentences(text))
        for chunk, group in zip(chunks, sentence_spans_by_chunk(text, chunks)):
            assert (chunk.start, chunk.end) == (group[0][0], group[-1][1])
            assert all(in_same_paragraph(text, a[1], b[0]) for a, b in zip(group, group[1:]))


@pytest.mark.parametrize(("min_chars", "max_chars"), SIZES)
def test_packing_bounds_on_corpus(articles, min_chars, max_chars):
    for text in articles:
        chunks = segment(text, "packed", min_chars=min_chars, max_chars=max_chars)
        groups = sentence_spans_by_chunk(text, chunks)
        for i, (chunk, group) in enumerate(zip(chunks, groups)):
            width = chunk.end - chunk.start
            assert width <= max_chars or chunk.n_sentences == 1
            nxt = groups[i + 1][0] if i + 1 < len(groups) else None
            continues = nxt is not None and in_same_paragraph(text, chunk.end, nxt[0])
            prev = groups[i - 1][0] if i > 0 and in_same_paragraph(text, groups[i - 1][-1][1], chunk.start) else None
            if width < min_chars:  # short: the next sentence overflows, or a tail that cannot merge
                if continues:
                    assert nxt[1] - chunk.start > max_chars
                else:
                    assert prev is None or chunk.end - prev[0] > max_chars
            if len(group) > 1 and continues:  # closed as soon as it reached min_chars, not later
                assert group[-2][1] - group[0][0] < min_chars


def test_packed_with_unit_sizes_is_sentence_mode(articles):
    for text in articles[:50]:
        assert segment(text, "packed", min_chars=1, max_chars=1) == segment(text, "sentence")


def test_packed_chunks_mostly_in_range_on_corpus(articles):
    widths = [len(c.text) for text in articles for c in segment(text)]
    assert sum(250 <= w <= 400 for w in widths) / len(widths) > 0.5
    assert sum(w > 400 for w in widths) / len(widths) < 0.02


# -- packing, by hand ----------------------------------------------------------------------------
def sentence(n: int) -> str:
    """A sentence of exactly n characters."""
    return "Word" + "s" * (n - 5) + "."


def lengths(chunks: list[Chunk]) -> list[tuple[int, int]]:
    return [(len(c.text), c.n_sentences) for c in chunks]


@pytest.mark.parametrize(("sizes", "expected"), [
    ([60, 20], [(81, 2)]),  # short tail merged: 60 + 1 + 20 <= 100
    ([60, 45], [(60, 1), (45, 1)]),  # tail kept short: merging would give 106 > 100
    ([30, 30, 30], [(92, 3)]),  # 30+30 reaches 50 and closes; the 30 tail fits
    ([45, 60], [(45, 1), (60, 1)]),  # closed below min_chars: the next sentence overflows
    ([20, 250, 20], [(20, 1), (250, 1), (20, 1)]),  # a huge sentence alone, never split
    ([10] * 8, [(87, 8)]),  # 54-char chunk (5 sentences) + 32-char tail (3) fit in 100
    ([40, 40, 40, 40, 30], [(81, 2), (81, 2), (30, 1)]),  # only the last chunk may take the tail
])
def test_greedy_packing_and_tail_rule(sizes, expected):
    text = " ".join(sentence(n) for n in sizes)
    assert [len(s) for s in sentences_of(text)] == sizes
    assert lengths(segment(text, min_chars=50, max_chars=100)) == expected


def test_packed_chunks_never_cross_a_paragraph_break():
    text = f"{sentence(30)}\n\n{sentence(30)} {sentence(30)}"
    assert lengths(segment(text, min_chars=50, max_chars=100)) == [(30, 1), (61, 2)]


def test_single_huge_sentence_is_one_chunk():
    text = "The list goes on, " + "and on, " * 1000 + "until it ends."
    for mode in ("sentence", "packed"):
        (chunk,) = segment(text, mode)
        assert (chunk.start, chunk.end, chunk.n_sentences) == (0, len(text), 1)


# -- sentence boundaries -------------------------------------------------------------------------
@pytest.mark.parametrize("expected", [
    ["Dr. Smith moved to the U.S. in 1990.", "He lived there, e.g. in New York and St. Louis."],
    ["Many cities, e.g. New York and Boston, are large.", "Some (i.e. Paris) are old."],
    ["The painting dates from c. 1500 and hangs in St. Petersburg.", "It is famous."],
    ["The novel was published in 1937.", "J. R. R. Tolkien wrote it.", "It sold well."],
    ["The Hobbit is a novel by J. R. R. Tolkien.", "It was published in 1937."],
    ["The rate rose to 3.5 percent in 2001 and 4.25 percent later.", "It then fell."],
    ["He paused...", "Then he spoke again.", "The list goes on... and on."],
    ['She said, "I will go."', "Then she left."],
    ["The claim was disputed.", "(This was later confirmed.)", "Later sources agree."],
    ["The city (pop. 50,000) is large.", "Symphony No. 9 in D minor, Op. 125, is famous."],
    ["Martin Luther King Jr. was born in Atlanta.", "Mr. and Mrs. Smith arrived at 5 p.m. on Monday."],
    ["He was born in Lyon in 1840.", "Émile Zola was his friend.", "Ça va?"],
    ["Is it true?", "Yes, it is!", "Nobody knows."],
])
def test_sentence_boundaries_on_wikipedia_style_english(expected):
    assert sentences_of(" ".join(expected)) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("He was born in the U.S.\n\nHe moved", ["He was born in the U.S.", "He moved"]),
    ("A heading without a stop\n\nThe body.", ["A heading without a stop", "The body."]),
    ("First part \n \t\n\n\nsecond part.", ["First part", "second part."]),
    ("Windows lines, no stop\r\n\r\nNext line.", ["Windows lines, no stop", "Next line."]),
    ("A line that wraps in the \nmiddle of a sentence.", ["A line that wraps in the \nmiddle of a sentence."]),
])
def test_paragraph_breaks_always_end_a_sentence(text, expected):
    assert sentences_of(text) == expected
    assert [c.text for c in segment(text)] == expected


# -- edge cases ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["", " ", "\n\n\t \n", "\u3000\xa0"])
def test_empty_or_whitespace_text_gives_nothing(text):
    assert split_sentences(text) == []
    assert segment(text, "sentence") == segment(text, "packed") == []


def test_text_without_final_punctuation():
    assert sentences_of("This has no final stop") == ["This has no final stop"]
    assert sentences_of("  First one. Second one without a stop  ") == ["First one.", "Second one without a stop"]
    (chunk,) = segment("  First one. Second one without a stop  ")
    assert (chunk.start, chunk.n_sentences, chunk.text) == (2, 2, "First one. Second one without a stop")


def test_unicode_offsets_are_code_point_offsets():
    text = "Café au lait coûte 3,5 €. Émojis 🎉🎉 rock! 東京は日本の首都です。大阪は大きい。 Ωmega is last 🙂."
    expected = ["Café au lait coûte 3,5 €.", "Émojis 🎉🎉 rock!", "東京は日本の首都です。", "大阪は大きい。",
                "Ωmega is last 🙂."]
    assert sentences_of(text) == expected
    for mode in ("sentence", "packed"):
        assert_exact_cover(text, segment(text, mode, min_chars=10, max_chars=40))


def test_random_noisy_text_is_covered_exactly():
    """Control, zero-width, combining and odd space characters, NULs, stray punctuation: nothing lost."""
    alphabet = list("abcXYZ .?!\"')(\n\t\r\x00\x01\x85\xa0\u2009\u2028\u200b\u200d\ufeff\u0301é東🎉…—") + [
        "Dr.", "U.S.", "J. ", ". ", "\n\n", "3.5", "e.g. "]
    rng = random.Random(7)
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
        for mode in ("sentence", "packed"):
            assert_exact_cover(text, segment(text, mode, min_chars=5, max_chars=20))


# -- arguments -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": "paragraph"}, "unknown segmentation mode 'paragraph'"),
    ({"min_chars": 500, "max_chars": 400}, r"min_chars \(500\) must not exceed max_chars \(400\)"),
    ({"min_chars": 0}, "must be positive"),
    ({"max_chars": -1, "min_chars": -5}, "must be positive"),
])
def test_invalid_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        segment("Some text.", **kwargs)

"""Article text -> ordered concepts (chunks of whole sentences) with exact character offsets.

Sentence boundaries come from BlingFire (pip `blingfire`, Microsoft's finite-state tokenizer): it
keeps Wikipedia-style abbreviations ("Dr.", "U.S.", "e.g.", "St.", "c. 1500", "No. 5"), initials,
decimals, ellipses and closing quotes/brackets inside their sentence, at ~50,000 sentences/s on
one core.
Only its sentence *ends* are used: each sentence runs from the previous end to the next one,
trimmed of whitespace, so every non-whitespace character of the source (even ones BlingFire
drops, such as control characters) lands in exactly one sentence. Two rules sit on top:

- a paragraph break (two or more newlines, possibly with blanks between) always ends a sentence,
  and packed chunks never cross one;
- a lone initial ("J.") is never a sentence of its own, and "e.g."/"i.e." never end one:
  BlingFire cuts "1937. J. R. R. Tolkien wrote" after each initial and "cities, e.g. New York"
  after "e.g." (before two capitalised words).

Accented Latin-1 capitals are shown to BlingFire unaccented ("Émile" -> "Emile"), which it
otherwise does not take for a sentence start. Known misses (two sentences kept as one): a
sentence opening with a digit ("1946 was"), an emoji or a lowercase letter ("iOS"), and a missing
space after the period ("end.Next").
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal, get_args

import blingfire

SegmentationMode = Literal["sentence", "packed"]
Span = tuple[int, int]
DEFAULT_MODE: SegmentationMode = "packed"  # full articles; the demo's short leads use "sentence"
DEFAULT_MIN_CHARS = 250  # packed chunks grow toward min..max characters (the predecessor's range)
DEFAULT_MAX_CHARS = 400

_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
# BlingFire does not take most precomposed Latin-1 capitals ("É", "Ç", "Ñ") for capitals, so it
# is shown their unaccented letter instead (one code point for one: offsets do not move).
_PLAIN_CAPITALS = {cp: unicodedata.normalize("NFD", chr(cp))[0] for cp in range(0xC0, 0xDF)
                   if chr(cp).isupper() and len(unicodedata.normalize("NFD", chr(cp))) > 1}


@dataclass(frozen=True, slots=True)
class Chunk:
    """One concept: whole consecutive sentences, `text == source[start:end]`."""

    seq: int
    start: int
    end: int
    text: str
    n_sentences: int


def split_sentences(text: str) -> list[Span]:
    """Sentence `(start, end)` spans of `text`: in order, non-overlapping, whitespace-trimmed."""
    return [span for start, end in _paragraphs(text) for span in _sentences(text, start, end)]


def segment(text: str, mode: SegmentationMode = DEFAULT_MODE, *, min_chars: int = DEFAULT_MIN_CHARS,
            max_chars: int = DEFAULT_MAX_CHARS) -> list[Chunk]:
    """Ordered chunks of `text`; `[]` when it is empty or whitespace only.

    `sentence`: one chunk per sentence. `packed`, paragraph by paragraph: add whole consecutive
    sentences to the chunk while it (`source[start:end]`, inner whitespace included) stays
    <= `max_chars`; close it once it has reached `min_chars`, when the next sentence would push it
    over `max_chars`, or at the end of the paragraph. A sentence longer than `max_chars` is a
    chunk of its own, never split.
    Tail rule: a paragraph's last chunk shorter than `min_chars` is merged into the chunk before
    it (same paragraph) when the merged span stays <= `max_chars`; otherwise it stays short.
    Raises ValueError for an unknown mode, a non-positive size, or `min_chars > max_chars`.
    """
    _check_arguments(mode, min_chars, max_chars)
    groups: list[list[Span]] = []
    for start, end in _paragraphs(text):
        sentences = _sentences(text, start, end)
        if mode == "sentence":
            groups.extend([span] for span in sentences)
        else:
            groups.extend(_pack(sentences, min_chars, max_chars))
    return [_chunk(text, seq, group) for seq, group in enumerate(groups)]


def _check_arguments(mode: str, min_chars: int, max_chars: int) -> None:
    modes = get_args(SegmentationMode)
    if mode not in modes:
        raise ValueError(f"unknown segmentation mode {mode!r}; expected one of {modes}")
    if min_chars <= 0 or max_chars <= 0:
        raise ValueError(f"min_chars and max_chars must be positive, got {min_chars} and {max_chars}")
    if min_chars > max_chars:
        raise ValueError(f"min_chars ({min_chars}) must not exceed max_chars ({max_chars})")


def _paragraphs(text: str) -> list[Span]:
    """Spans between paragraph breaks (edge whitespace included)."""
    spans, start = [], 0
    for brk in _PARAGRAPH_BREAK.finditer(text):
        spans.append((start, brk.start()))
        start = brk.end()
    spans.append((start, len(text)))
    return spans


def _sentences(text: str, start: int, end: int) -> list[Span]:
    """Sentence spans of the paragraph `text[start:end]`, cut at BlingFire's sentence ends."""
    para = text[start:end]
    body = para.strip()
    if not body:
        return []
    offset = start + len(para) - len(para.lstrip())
    shown = body if body.isascii() else body.translate(_PLAIN_CAPITALS)
    ends = [offset + e for _, e in blingfire.text_to_sentences_and_offsets(shown)[1][:-1]]
    spans, prev = [], offset
    for piece_start, cut in zip([offset, *ends], ends):
        if cut > prev and not _is_false_end(text[piece_start:cut].strip()):
            spans.append(_trim(text, prev, cut))
            prev = cut
    spans.append(_trim(text, prev, offset + len(body)))
    return [span for span in spans if span[0] < span[1]]


def _is_false_end(piece: str) -> bool:
    """A BlingFire sentence that is a lone initial ("J.") or ends with "e.g."/"i.e."."""
    return (len(piece) == 2 and piece[0].isupper() and piece[1] == ".") or piece.endswith(("e.g.", "i.e."))


def _trim(text: str, start: int, end: int) -> Span:
    piece = text[start:end]
    stripped = piece.lstrip()
    start += len(piece) - len(stripped)
    return start, start + len(stripped.rstrip())


def _pack(sentences: list[Span], min_chars: int, max_chars: int) -> list[list[Span]]:
    """Greedy packing of one paragraph's sentences, then the tail rule (see `segment`)."""
    groups: list[list[Span]] = []
    for span in sentences:
        if groups and _width(groups[-1]) < min_chars and span[1] - groups[-1][0][0] <= max_chars:
            groups[-1].append(span)
        else:
            groups.append([span])
    if len(groups) >= 2 and _width(groups[-1]) < min_chars and groups[-1][-1][1] - groups[-2][0][0] <= max_chars:
        groups[-2:] = [groups[-2] + groups[-1]]
    return groups


def _width(group: list[Span]) -> int:
    return group[-1][1] - group[0][0]


def _chunk(text: str, seq: int, group: list[Span]) -> Chunk:
    start, end = group[0][0], group[-1][1]
    return Chunk(seq=seq, start=start, end=end, text=text[start:end], n_sentences=len(group))

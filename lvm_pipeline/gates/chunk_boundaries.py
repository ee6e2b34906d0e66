"""Chunk boundaries: chunks should end where a sentence ends and have a usable length for their mode.

Lengths are graded per segmentation mode: packed chunks aim at 250-400 characters, single
sentences are shorter (the demo's: mean 134, 1st percentile 39). Short and long chunks are graded
as shares, not one by one: a single 40-character chunk in a batch of 2,000 is not worth an alert
(the demo's packed batches had 1-5 each), a batch made of them is. Only a low share of
sentence-complete endings STOPs a batch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

import numpy as np

from lvm_pipeline.gates.result import GateResult, Rule, at_least, at_most, below, judge, mean_or_none
from lvm_pipeline.segmentation import DEFAULT_MAX_CHARS, DEFAULT_MIN_CHARS, DEFAULT_MODE, SegmentationMode
from lvm_pipeline.text import excerpt

GATE = "chunk_boundaries"
MAX_WORST = 10
ENDING_CHARS = 40
# ., !, ? or an ellipsis, optionally followed by closing quotes/brackets
_COMPLETE_END = re.compile(r"[.!?…][\"'”’»)\]]*$")


@dataclass(frozen=True)
class ChunkBoundaryThresholds:
    go_complete_share: float = 0.7  # share of sentence-complete endings; WARN below
    stop_complete_share: float = 0.5  # STOP below
    go_short_share: float = 0.02  # share of short chunks; WARN above (demo batches: at most 0.3%)
    go_long_share: float = 0.02  # share of long chunks; WARN above (demo batches: 0)
    packed_mean_min: float = DEFAULT_MIN_CHARS  # packed mode: GO mean length range (the packer's target) ...
    packed_mean_max: float = DEFAULT_MAX_CHARS
    packed_short_chars: int = 50  # ... and what is short / long
    packed_long_chars: int = 1000
    sentence_mean_min: float = 60  # sentence mode: the same
    sentence_mean_max: float = 250
    sentence_short_chars: int = 20
    sentence_long_chars: int = 600


@dataclass(frozen=True)
class LengthRange:
    mean_min: float
    mean_max: float
    short_chars: int  # shorter is "short"
    long_chars: int  # longer is "long"


def length_range(t: ChunkBoundaryThresholds, mode: str) -> LengthRange:
    """The length thresholds of a segmentation mode ("packed" or "sentence")."""
    if mode not in get_args(SegmentationMode):
        raise ValueError(f"unknown segmentation mode {mode!r}")
    return LengthRange(*(getattr(t, f"{mode}_{name}") for name in ("mean_min", "mean_max", "short_chars", "long_chars")))


def is_sentence_complete(text: str) -> bool:
    """True when `text` ends with . ! ? or … (closing quotes/brackets after it allowed)."""
    return bool(_COMPLETE_END.search(text.rstrip()))


def check_chunk_boundaries(texts: Sequence[str], mode: str | None = None, titles: Sequence[str] | None = None,
                           thresholds: ChunkBoundaryThresholds = ChunkBoundaryThresholds()) -> GateResult:
    """Endings and lengths of a batch's chunks, cut in `mode` (default: the default mode).

    `titles` (per chunk) only label the worst examples.
    """
    t, mode = thresholds, mode or DEFAULT_MODE
    r = length_range(t, mode)
    lengths = np.array([len(x) for x in texts], dtype=np.int64)
    complete = np.array([is_sentence_complete(x) for x in texts], dtype=bool)
    short, long = lengths < r.short_chars, lengths > r.long_chars
    figures = {
        "n_chunks": len(texts),
        "complete_share": mean_or_none(complete), "mean_chars": mean_or_none(lengths),
        "median_chars": float(np.median(lengths)) if len(texts) else None,
        "min_chars": int(lengths.min()) if len(texts) else None,
        "max_chars": int(lengths.max()) if len(texts) else None,
        "n_short": int(short.sum()), "n_long": int(long.sum()),
        "short_share": mean_or_none(short), "long_share": mean_or_none(long),
    }
    rules = {
        "complete_share": Rule((at_least(t.go_complete_share),), below(t.stop_complete_share)),
        "mean_chars": Rule((at_least(r.mean_min), at_most(r.mean_max))),
        "short_share": Rule((at_most(t.go_short_share),)), "long_share": Rule((at_most(t.go_long_share),)),
    }
    settings = {"mode": mode, "short_chars": f"< {r.short_chars}", "long_chars": f"> {r.long_chars}"}
    sizes = dict.fromkeys(("complete_share", "short_share", "long_share"), len(texts))
    return judge(GATE, figures, rules, settings=settings, worst=_worst(texts, titles, lengths, complete, r),
                 sizes=sizes, not_graded="the batch has no concepts")


def _worst(texts: Sequence[str], titles: Sequence[str] | None, lengths: np.ndarray, complete: np.ndarray,
           r: LengthRange) -> list[dict]:
    """Chunks with a problem: the most extreme lengths first, then incomplete endings in order."""
    overshoot = np.maximum(r.short_chars - lengths, lengths - r.long_chars)
    bad = np.flatnonzero((overshoot > 0) | ~complete)
    order = bad[np.argsort(-np.maximum(overshoot[bad], 0), kind="stable")][:MAX_WORST]
    return [{**({"title": titles[i]} if titles is not None else {}),
             "problem": _problem(int(lengths[i]), bool(complete[i]), r), "chars": int(lengths[i]),
             "ending": texts[i].rstrip()[-ENDING_CHARS:], "text": excerpt(texts[i])} for i in order]


def _problem(length: int, complete: bool, r: LengthRange) -> str:
    found = [name for name, hit in (("short", length < r.short_chars), ("long", length > r.long_chars),
                                    ("incomplete ending", not complete)) if hit]
    return "; ".join(found)

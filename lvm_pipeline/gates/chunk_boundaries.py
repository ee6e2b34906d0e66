"""Chunk boundaries: chunks should end where a sentence ends and have a usable length.

The length range (250-400 chars) is the packed mode's target; single-sentence chunks (mean ~130
chars) grade WARN on length, never STOP: only a low share of sentence-complete endings stops a batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lvm_pipeline.gates.result import GateResult, Rule, at_least, at_most, below, judge, mean_or_none
from lvm_pipeline.markdown import excerpt

GATE = "chunk_boundaries"
MAX_WORST = 10
ENDING_CHARS = 40
# ., !, ? or an ellipsis, optionally followed by closing quotes/brackets
_COMPLETE_END = re.compile(r"[.!?…][\"'”’»)\]]*$")


@dataclass(frozen=True)
class ChunkBoundaryThresholds:
    go_complete_share: float = 0.7  # share of sentence-complete endings; WARN below
    stop_complete_share: float = 0.5  # STOP below
    go_mean_chars_min: float = 250
    go_mean_chars_max: float = 400
    short_chars: int = 50  # a chunk shorter than this is "short" (GO: none)
    long_chars: int = 1000  # a chunk longer than this is "long" (GO: none)


def is_sentence_complete(text: str) -> bool:
    """True when `text` ends with . ! ? or … (closing quotes/brackets after it allowed)."""
    return bool(_COMPLETE_END.search(text.rstrip()))


def check_chunk_boundaries(texts: Sequence[str], titles: Sequence[str] | None = None,
                           thresholds: ChunkBoundaryThresholds = ChunkBoundaryThresholds()) -> GateResult:
    """Endings and lengths of a batch's chunks; `titles` (per chunk) only label the worst examples."""
    t = thresholds
    lengths = np.array([len(x) for x in texts], dtype=np.int64)
    complete = np.array([is_sentence_complete(x) for x in texts], dtype=bool)
    short, long = lengths < t.short_chars, lengths > t.long_chars
    figures = {
        "n_chunks": len(texts),
        "complete_share": mean_or_none(complete), "mean_chars": mean_or_none(lengths),
        "median_chars": float(np.median(lengths)) if len(texts) else None,
        "min_chars": int(lengths.min()) if len(texts) else None,
        "max_chars": int(lengths.max()) if len(texts) else None,
        "n_short": int(short.sum()), "n_long": int(long.sum()),
    }
    rules = {
        "n_chunks": Rule((at_least(1),)),
        "complete_share": Rule((at_least(t.go_complete_share),), below(t.stop_complete_share)),
        "mean_chars": Rule((at_least(t.go_mean_chars_min), at_most(t.go_mean_chars_max))),
        "n_short": Rule((at_most(0),)), "n_long": Rule((at_most(0),)),
    }
    settings = {"short_chars": f"< {t.short_chars}", "long_chars": f"> {t.long_chars}"}
    return judge(GATE, figures, rules, settings=settings, worst=_worst(texts, titles, lengths, complete, t))


def _worst(texts: Sequence[str], titles: Sequence[str] | None, lengths: np.ndarray, complete: np.ndarray,
           t: ChunkBoundaryThresholds) -> list[dict]:
    """Chunks with a problem: the most extreme lengths first, then incomplete endings in order."""
    overshoot = np.maximum(t.short_chars - lengths, lengths - t.long_chars)
    bad = np.flatnonzero((overshoot > 0) | ~complete)
    order = bad[np.argsort(-np.maximum(overshoot[bad], 0), kind="stable")][:MAX_WORST]
    return [{**({"title": titles[i]} if titles is not None else {}),
             "problem": _problem(int(lengths[i]), bool(complete[i]), t), "chars": int(lengths[i]),
             "ending": texts[i].rstrip()[-ENDING_CHARS:], "text": excerpt(texts[i])} for i in order]


def _problem(length: int, complete: bool, t: ChunkBoundaryThresholds) -> str:
    found = [name for name, hit in (("short", length < t.short_chars), ("long", length > t.long_chars),
                                    ("incomplete ending", not complete)) if hit]
    return "; ".join(found)

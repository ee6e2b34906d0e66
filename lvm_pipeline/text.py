"""Short, storable, one-line excerpts of text (what quarantine rows, gate examples and UI tables show), and BLEU
of decoded texts against their references."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from sacrebleu.metrics import BLEU

EXCERPT_CHARS = 200
# PostgreSQL `text` cannot store NUL; a lone surrogate is not valid UTF-8 (json.loads lets both through).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def excerpt(raw: Any, limit: int = EXCERPT_CHARS) -> str:
    """At most `limit` characters of `raw` on one line, ending in "…" when cut.

    Bytes are decoded leniently; undecodable bytes, NUL and lone surrogates become U+FFFD.
    """
    if isinstance(raw, bytes):
        raw = raw[: limit * 8].decode("utf-8", errors="replace")
    text = " ".join(UNSTORABLE.sub("\ufffd", str(raw)[: limit * 8]).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_BLEU1 = BLEU(max_ngram_order=1, effective_order=True)
_BLEU4 = BLEU(max_ngram_order=4, effective_order=True)


def bleu_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per pair: sacrebleu sentence BLEU-1 and BLEU-4 (0-1) of the hypothesis against its reference."""
    pairs = list(zip(hypotheses, references, strict=True))
    return {"bleu1": np.array([_bleu(_BLEU1, hyp, ref) for hyp, ref in pairs]),
            "bleu4": np.array([_bleu(_BLEU4, hyp, ref) for hyp, ref in pairs])}


def _bleu(metric: BLEU, hypothesis: str, reference: str) -> float:
    return min(metric.sentence_score(hypothesis, [reference]).score / 100, 1.0)

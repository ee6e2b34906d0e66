"""Decoding (DESIGN.md section 7): a predicted vector read back as text, as its nearest concepts in the bank
(retrieval) or by vec2text inversion (`decoders`), with the echo loop (re-encode the decoded text: how close does
it land to the prediction?)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lvm_pipeline.arrays import row_cosines
from lvm_pipeline.evaluation.retrieval import BankIndex


@dataclass(frozen=True)
class Decoded:
    """The k nearest bank concepts of each of n predictions, nearest first."""

    rows: np.ndarray  # [n, k] bank rows
    scores: np.ndarray  # [n, k] cosine of the prediction to each row
    texts: list[list[str]]  # [n][k] their texts

    @property
    def top_texts(self) -> list[str]:
        return [texts[0] for texts in self.texts]


def retrieval_decode(index: BankIndex, texts: Sequence[str], predictions: np.ndarray, k: int = 5) -> Decoded:
    """The k nearest concepts of each prediction (n, D) in `index`, with their texts (`texts[bank row]`); row -1
    and text "" where an IVF index reached fewer than k rows."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores, ids = index.search(np.atleast_2d(predictions), min(k, index.size))
    rows = ids if index.rows is None else np.where(ids >= 0, index.rows[ids], -1)
    return Decoded(rows, scores, [[str(texts[row]) if row >= 0 else "" for row in found] for found in rows])


def echo_similarity(encode: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str], predictions: np.ndarray) -> np.ndarray:
    """cos(prediction, encode(its decoded text)) per prediction: 1 when the text says what the vector says."""
    return row_cosines(np.atleast_2d(predictions), encode(list(texts)))

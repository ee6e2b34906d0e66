"""Next-concept queries and the `Predictor` interface every baseline and model implements.

A query asks: given the concepts of one article before position t (at most C of them), which
vector comes next? Everything is an index into one bank of vectors (rows ordered by article and
position), never a copy: query i predicts bank row `target[i]` from rows
`context_start[i] .. target[i] - 1` of the same article (DESIGN.md section 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Queries:
    target: np.ndarray  # int64 (n,): bank row of the concept to predict
    context_start: np.ndarray  # int64 (n,): first bank row of its context, in the same article
    article: np.ndarray  # int64 (n,): the article of the query (the cluster of the bootstrap)

    def __post_init__(self):
        if not (len(self.target) == len(self.context_start) == len(self.article)):
            raise ValueError("target, context_start and article must have one entry per query")
        if len(self.target) and np.any(self.context_start >= self.target):
            raise ValueError("every query needs at least one context concept (context_start < target)")

    def __len__(self) -> int:
        return len(self.target)

    @property
    def context_length(self) -> np.ndarray:
        return self.target - self.context_start

    @property
    def last(self) -> np.ndarray:
        """Bank row of each query's last context concept."""
        return self.target - 1

    def subset(self, index: np.ndarray) -> Queries:
        return Queries(self.target[index], self.context_start[index], self.article[index])

    def contexts(self, vectors: np.ndarray, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(n, L, D) float32 contexts, left-padded with zeros, and the (n, L) bool mask of real positions.

        L is `width` (the most recent `width` concepts are kept) or else the longest context. For
        batches of queries: memory is n x L x D.
        """
        lengths = self.context_length if width is None else np.minimum(self.context_length, width)
        width = width or int(lengths.max(initial=1))
        offsets = np.arange(-width, 0)  # positions relative to the target
        rows = self.target[:, None] + offsets[None, :]
        mask = offsets[None, :] >= -lengths[:, None]
        out = np.zeros((len(self), width, vectors.shape[1]), dtype=np.float32)
        out[mask] = vectors[rows[mask]]
        return out, mask


def article_queries(article_bounds: np.ndarray, article_index: np.ndarray | None = None,
                    max_context: int | None = None) -> Queries:
    """Every position t >= 1 of each article [start, end) in `article_bounds` (n_articles, 2) is one
    query; its context is the article's concepts before t, at most `max_context` of them."""
    bounds = np.asarray(article_bounds, dtype=np.int64).reshape(-1, 2)
    ids = np.arange(len(bounds)) if article_index is None else np.asarray(article_index, dtype=np.int64)
    sizes = np.maximum(bounds[:, 1] - bounds[:, 0] - 1, 0)  # queries per article
    article = np.repeat(ids, sizes)
    starts = np.repeat(bounds[:, 0], sizes)
    offset = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # 0.. within each article
    target = starts + offset + 1
    context_start = starts if max_context is None else np.maximum(starts, target - max_context)
    return Queries(target.astype(np.int64), context_start.astype(np.int64), article)


class Predictor(Protocol):
    """Context vectors (+ TMD) -> the predicted next vector, for a batch of queries.

    `vectors` is the bank (an array or a read-only memory map), `tmd` the (n_bank, 16) TMD vectors
    or None. Returns (len(queries), D) float32; it need not be normalised (retrieval normalises).
    """

    name: str

    def predict(self, vectors: np.ndarray, queries: Queries, tmd: np.ndarray | None = None) -> np.ndarray:
        ...


class Ranker(Protocol):
    """A baseline that ranks the bank's rows for each query instead of predicting a vector (e.g. BM25 on texts).

    `search(queries, depth)` returns (n, depth) scores and bank rows, best first (-1 pads); the query's own
    context rows are in the bank and may be ranked, as for every predictor.
    """

    name: str

    def search(self, queries: Queries, depth: int) -> tuple[np.ndarray, np.ndarray]:
        ...


def is_ranker(predictor: Predictor | Ranker) -> bool:
    return not hasattr(predictor, "predict") and hasattr(predictor, "search")

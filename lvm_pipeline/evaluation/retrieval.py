"""Retrieval metrics against the full concept bank (DESIGN.md section 7): Hit@K, Hit@K with the query's own
context removed from the bank, and the rank of the target within its own article.

The bank is searched with FAISS inner product on L2-normalised float32 rows: exact (`IndexFlatIP`) up to
`ivf_above` rows, an inverted file (`IndexIVFFlat`) above (DESIGN.md section 9). The bank may be a
read-only memory map: it is read in row batches, never copied whole outside the index.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import faiss
import numpy as np

from lvm_pipeline.arrays import row_slices, unit_rows
from lvm_pipeline.evaluation.queries import Queries

log = logging.getLogger(__name__)

IVF_ABOVE = 1_000_000
NPROBE = 32
ADD_BATCH_ROWS = 65_536
TRAIN_POINTS_PER_LIST = 40  # k-means sample per inverted list (FAISS warns below 39)
# Hit@K with the context removed searches K + (context length) deep; a longer context only adds this many
# extra results. Such a query's no-context hit is then a lower bound: it can be wrong (a hit counted as a
# miss) only when more than MAX_CONTEXT_DEPTH of its own context concepts are nearer the prediction than the
# target (`retrieval_ranks` logs how many queries that could have affected).
MAX_CONTEXT_DEPTH = 1024
_NOT_FOUND = np.iinfo(np.int64).max


def _unit_float32(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(unit_rows(rows, dtype=np.float32))


class BankIndex:
    """FAISS inner product over the L2-normalised rows of a bank, or of the bank rows `rows` only.

    Search results are positions in the index: bank rows when `rows` is None, else positions in `rows`.
    Above `ivf_above` rows an `IndexIVFFlat` with nlist ~ 4 sqrt(N) lists (at most N / 40), trained by
    k-means on a seeded sample of 40 rows per list, probing `nprobe` lists per query.
    """

    def __init__(self, vectors: np.ndarray, rows: np.ndarray | None = None, *, ivf_above: int = IVF_ABOVE,
                 nprobe: int = NPROBE, seed: int = 0, batch_rows: int = ADD_BATCH_ROWS):
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        size = len(vectors) if self.rows is None else len(self.rows)
        dim = vectors.shape[1]
        if size > ivf_above:
            self.nlist = max(1, min(round(4 * math.sqrt(size)), size // TRAIN_POINTS_PER_LIST))
            self._quantizer = faiss.IndexFlatIP(dim)  # the IVF index keeps a pointer to it
            self.index = faiss.IndexIVFFlat(self._quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
            sample = np.random.default_rng(seed).choice(size, min(size, TRAIN_POINTS_PER_LIST * self.nlist), replace=False)
            sample_rows = np.sort(sample if self.rows is None else self.rows[sample])  # sorted: sequential reads
            self.index.train(_unit_float32(vectors[sample_rows]))
            self.nprobe = nprobe
        else:
            self.nlist = None
            self.index = faiss.IndexFlatIP(dim)
        for batch in row_slices(size, batch_rows):
            self.index.add(_unit_float32(vectors[batch] if self.rows is None else vectors[self.rows[batch]]))

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def nprobe(self) -> int | None:
        return None if self.nlist is None else int(self.index.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.nlist is None:
            raise ValueError("a flat index has no nprobe")
        self.index.nprobe = max(1, min(int(value), self.nlist))

    def search(self, predicted: np.ndarray, k: int, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """(n, k) cosines and ids of the k nearest rows to each prediction, best first; id -1 pads where
        fewer than k rows were reachable. Predictions are normalised (a zero prediction scores 0 everywhere)."""
        predicted = np.asarray(predicted)
        scores = np.empty((len(predicted), k), dtype=np.float32)
        ids = np.empty((len(predicted), k), dtype=np.int64)
        for batch in row_slices(len(predicted), batch_size):
            scores[batch], ids[batch] = self.index.search(_unit_float32(predicted[batch]), k)
        return scores, ids


def chance_at_k(bank_size: int, k: int) -> float:
    """Hit@K of a prediction that ignores its query: k / bank size."""
    return k / bank_size


def retrieval_ranks(index: BankIndex, predicted: np.ndarray, queries: Queries, ks: Sequence[int] = (1, 5, 10),
                    batch_size: int = 4096, max_context_depth: int = MAX_CONTEXT_DEPTH) -> dict[str, np.ndarray]:
    """Per-query hits (n,) float 0/1: `hit_at_{k}`: the target row is among the k nearest rows of the full bank;
    `hit_at_{k}_no_context`: the same with the query's context rows [context_start, target) removed.

    Exact on a flat index (up to ties) except for contexts longer than `max_context_depth` (see
    MAX_CONTEXT_DEPTH); `ranked_hits` does the counting.
    """
    if index.rows is not None:
        raise ValueError("retrieval_ranks needs an index over the whole bank (ids = bank rows)")
    predicted = np.asarray(predicted)
    if len(predicted) != len(queries):
        raise ValueError(f"{len(predicted)} predictions for {len(queries)} queries")
    return ranked_hits(lambda rows, depth: index.search(predicted[rows], depth, batch_size)[1], queries, index.size, ks,
                       batch_size, max_context_depth)


def ranked_hits(search: Callable[[np.ndarray, int], np.ndarray], queries: Queries, bank_size: int,
                ks: Sequence[int] = (1, 5, 10), batch_size: int = 4096,
                max_context_depth: int = MAX_CONTEXT_DEPTH) -> dict[str, np.ndarray]:
    """`retrieval_ranks`'s hits for any ranker: `search(query indices, depth)` -> (n, depth) bank rows, best first
    (-1 pads). One search per query, K + (context length) deep, gives both variants. Queries are sorted by that
    depth and searched in full batches at the deepest depth of each batch (on a flat index the depth costs little,
    the batch size a lot)."""
    ks = sorted({int(k) for k in ks})
    full_rank = np.full(len(queries), _NOT_FOUND, dtype=np.int64)  # 0-based; _NOT_FOUND beyond the search depth
    no_context_rank = full_rank.copy()
    depths = np.minimum(ks[-1] + np.minimum(queries.context_length, max_context_depth), bank_size)
    capped = queries.context_length > max_context_depth
    by_depth = np.argsort(depths, kind="stable")
    undetermined = 0
    for batch in row_slices(len(by_depth), batch_size):
        rows = by_depth[batch]
        depth = int(depths[rows].max())
        ids = search(rows, depth)
        target, context_start = queries.target[rows, None], queries.context_start[rows, None]
        is_target = ids == target
        found = is_target.any(axis=1)
        position = np.where(found, is_target.argmax(axis=1), _NOT_FOUND)
        in_context = (ids >= context_start) & (ids < target)
        context_before = (in_context & (np.arange(depth) < position[:, None])).sum(axis=1)
        full_rank[rows] = position
        no_context_rank[rows] = np.where(found, position - context_before, _NOT_FOUND)
        if depth < bank_size:
            others_seen = ((ids >= 0) & ~in_context).sum(axis=1)
            undetermined += int(np.sum(capped[rows] & ~found & (others_seen < ks[-1])))
    if undetermined:
        log.warning("%d queries with contexts over %d concepts: their no-context Hit@%d is a lower bound",
                    undetermined, max_context_depth, ks[-1])
    hits = {}
    for k in ks:
        hits[f"hit_at_{k}"] = (full_rank < k).astype(np.float64)
        hits[f"hit_at_{k}_no_context"] = (no_context_rank < k).astype(np.float64)
    return hits


def within_article_rank(predicted: np.ndarray, vectors: np.ndarray, queries: Queries, article_bounds: np.ndarray,
                        batch_rows: int = ADD_BATCH_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Per query: the 1-based rank of the target among all concepts of its own article by cosine to the
    prediction (ties count against it: rank = number of the article's concepts at least as similar as the
    target, so a zero prediction ranks last), and the article's size.

    `article_bounds` (n_articles, 2) are the [start, end) bank rows of each article, in row order
    (`arrays.article_bounds`). The bank is read in spans of whole articles of about `batch_rows` rows.
    """
    bounds = np.asarray(article_bounds, dtype=np.int64).reshape(-1, 2)
    if np.any(bounds[1:, 0] < bounds[:-1, 1]):
        raise ValueError("article_bounds must be in row order and must not overlap")
    article = np.searchsorted(bounds[:, 0], queries.target, side="right") - 1
    if np.any(article < 0) or np.any(queries.target >= bounds[np.maximum(article, 0), 1]):
        raise ValueError("a query's target lies in no article of article_bounds")
    unit_predicted = _unit_float32(predicted)
    order = np.argsort(article, kind="stable")
    articles, first = np.unique(article[order], return_index=True)
    last = np.append(first[1:], len(order))
    ends = bounds[articles, 1]
    rank = np.empty(len(queries), dtype=np.int64)
    span_start = span_end = 0
    span = None
    for i, a in enumerate(articles):
        start, end = bounds[a]
        if span is None or end > span_end:  # read this article and the following ones that fit
            span_start = start
            span_end = ends[max(i, np.searchsorted(ends, start + batch_rows, side="right") - 1)]
            span = _unit_float32(vectors[span_start:span_end])
        members = order[first[i]:last[i]]
        sims = unit_predicted[members] @ span[start - span_start:end - span_start].T
        target_sims = sims[np.arange(len(members)), queries.target[members] - start]
        rank[members] = (sims >= target_sims[:, None]).sum(axis=1)
    return rank, bounds[article, 1] - bounds[article, 0]

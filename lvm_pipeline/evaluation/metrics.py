"""Per-query next-vector metrics (DESIGN.md section 7): cosine, L2, margin, CA and PAR.

Each metric is an (n,) float64 array, one value per query, for the cluster bootstrap to average.
Bank rows are L2-normalised as they are read: the bank may be a read-only memory map and its rows
need not be unit-norm. A zero prediction has cosine 0 to everything (never NaN).
"""

from __future__ import annotations

import numpy as np

from lvm_pipeline.arrays import unit_rows
from lvm_pipeline.evaluation.queries import Queries

METRICS = ("cosine", "l2", "margin", "ca", "par")
TIE_TOLERANCE = 1e-5  # CA: a concept this close to the target's cosine (e.g. a duplicate of its text) is not "farther"
_COSINES_AT_ONCE = 1 << 24  # CA: query-batch x bank-chunk float32 cosines held at once (64 MiB)


def next_vector_metrics(predicted: np.ndarray, vectors: np.ndarray, queries: Queries, bank_article: np.ndarray,
                        batch_size: int = 1024) -> dict[str, np.ndarray]:
    """Per-query metrics of `predicted` (n, D), one row per query, against the bank `vectors` (N, D).

    - cosine: cos(pred, target).
    - l2: Euclidean distance between the L2-normalised prediction and the L2-normalised target.
    - margin: cos(pred, target) - cos(pred, last context vector), the last context vector being row target - 1.
    - ca: share of bank concepts of other articles whose cosine to pred is lower than the target's.
    - par: max cos(pred, context) / max cos(target, context); > 1 means pred copies its context more than
      the truth does (NaN where the target has no positive cosine to its context: the ratio is undefined).

    `bank_article` (N,) is the article index of every bank row, in the SAME numbering as `queries.article`
    (checked: bank_article[target] must equal article). CA compares every query with the whole bank, in
    batches of `batch_size` queries against chunks of bank rows, in float32; ties within TIE_TOLERANCE of the
    target's cosine do not count as farther.
    """
    predicted = np.asarray(predicted)
    bank_article = np.asarray(bank_article, dtype=np.int64)
    n, dim = len(queries), vectors.shape[1]
    if predicted.shape != (n, dim):
        raise ValueError(f"predicted must be (n_queries, D) = {(n, dim)}, got {predicted.shape}")
    if bank_article.shape != (len(vectors),):
        raise ValueError(f"bank_article must have one entry per bank row ({len(vectors)}), got {bank_article.shape}")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if n and not np.array_equal(bank_article[queries.target], queries.article):
        raise ValueError("queries.article must number articles as bank_article does (bank_article[target] == article)")

    chunk_rows = max(1, _COSINES_AT_ONCE // batch_size)
    other_article_rows = _other_article_rows(bank_article, queries.article)
    bank_inverse_norm = _inverse_norms(vectors, chunk_rows)
    metrics = {name: np.empty(n, dtype=np.float64) for name in METRICS}
    for start in range(0, n, batch_size):
        batch = slice(start, min(start + batch_size, n))
        batch_queries = queries.subset(np.arange(batch.start, batch.stop))
        pred = unit_rows(predicted[batch])
        target = unit_rows(vectors[batch_queries.target])
        cosine = _row_dot(pred, target)
        metrics["cosine"][batch] = cosine
        metrics["l2"][batch] = np.linalg.norm(pred - target, axis=1)
        metrics["margin"][batch] = cosine - _row_dot(pred, unit_rows(vectors[batch_queries.last]))
        farther = _count_farther_other_article(pred, cosine, vectors, bank_inverse_norm, bank_article,
                                               batch_queries.article, chunk_rows)
        metrics["ca"][batch] = farther / other_article_rows[batch]
        metrics["par"][batch] = _context_copying_ratio(pred, target, vectors, batch_queries)
    return metrics


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", a, b)


def _inverse_norms(vectors: np.ndarray, chunk_rows: int) -> np.ndarray:
    """1 / ||row|| for every bank row (0 for a zero row), float32, read chunk by chunk."""
    inverse = np.zeros(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), chunk_rows):
        norms = np.linalg.norm(np.asarray(vectors[start:start + chunk_rows], dtype=np.float64), axis=1)
        np.divide(1.0, norms, out=norms, where=norms > 0)
        inverse[start:start + len(norms)] = norms
    return inverse


def _other_article_rows(bank_article: np.ndarray, query_article: np.ndarray) -> np.ndarray:
    """Number of bank rows outside each query's article (the denominator of CA)."""
    articles, sizes = np.unique(bank_article, return_counts=True)
    other = len(bank_article) - sizes[np.searchsorted(articles, query_article)]
    if np.any(other == 0):
        raise ValueError("CA needs bank concepts from at least one article other than the query's")
    return other


def _count_farther_other_article(pred: np.ndarray, target_cosine: np.ndarray, vectors: np.ndarray,
                                 bank_inverse_norm: np.ndarray, bank_article: np.ndarray,
                                 query_article: np.ndarray, chunk_rows: int) -> np.ndarray:
    """Per query: bank rows of other articles whose cosine to pred is below the target's (minus the tie tolerance)."""
    pred32 = pred.astype(np.float32)
    threshold = (target_cosine - TIE_TOLERANCE).astype(np.float32)[:, None]
    farther = np.zeros(len(pred), dtype=np.int64)
    for start in range(0, len(vectors), chunk_rows):
        rows = slice(start, start + chunk_rows)
        cosines = pred32 @ np.asarray(vectors[rows], dtype=np.float32).T
        cosines *= bank_inverse_norm[rows]
        other_article = bank_article[rows][None, :] != query_article[:, None]
        farther += np.count_nonzero((cosines < threshold) & other_article, axis=1)
    return farther


def _context_copying_ratio(pred: np.ndarray, target: np.ndarray, vectors: np.ndarray, queries: Queries) -> np.ndarray:
    """PAR: max cos(pred, context) / max cos(target, context), over each query's context rows."""
    lengths = queries.context_length
    first = np.cumsum(lengths) - lengths  # each query's first position in the flattened contexts
    owner = np.repeat(np.arange(len(queries)), lengths)
    rows = queries.context_start[owner] + np.arange(lengths.sum()) - first[owner]
    context = unit_rows(vectors[rows])
    pred_max = np.maximum.reduceat(_row_dot(pred[owner], context), first)
    target_max = np.maximum.reduceat(_row_dot(target[owner], context), first)
    return np.divide(pred_max, target_max, out=np.full(len(queries), np.nan), where=target_max > 0)

"""Index pairs of rows ordered by (article, seq): neighbours within an article, random pairs across articles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lvm_pipeline.arrays import article_runs

_MAX_ROUNDS = 50


def pairs_at(article_ids: Sequence, k: int) -> np.ndarray:
    """Rows t such that t and t+k are in the same article."""
    runs = article_runs(article_ids)
    return np.flatnonzero(runs[:-k] == runs[k:]) if k < runs.size else np.zeros(0, dtype=np.int64)


def centres_at(article_ids: Sequence, k: int) -> np.ndarray:
    """Rows t such that t-k, t and t+k are all in the same article."""
    runs = article_runs(article_ids)
    if 2 * k >= runs.size:
        return np.zeros(0, dtype=np.int64)
    t = np.arange(k, runs.size - k)
    return t[(runs[t - k] == runs[t]) & (runs[t] == runs[t + k])]


def cross_article_pairs(article_ids: Sequence, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `n` random row pairs from different articles, by rejection sampling.

    Fewer when the batch has a single article (none) or one article holds nearly all rows.
    """
    runs = article_runs(article_ids)
    rng = np.random.default_rng(seed)
    if runs.size == 0 or runs[-1] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    found_i, found_j, count = [], [], 0
    for _ in range(_MAX_ROUNDS):
        if count >= n:
            break
        i, j = rng.integers(0, runs.size, size=(2, 2 * n))
        keep = runs[i] != runs[j]
        found_i.append(i[keep])
        found_j.append(j[keep])
        count += int(keep.sum())
    return np.concatenate(found_i)[:n], np.concatenate(found_j)[:n]

"""Array helpers shared by the gates, TMD labelling and the datasets: unit rows, cosines, article runs.

Rows are concepts in (article, position) order; an article's concepts are one contiguous run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def unit_rows(vectors: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    v = np.asarray(vectors, dtype=dtype)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


def cosines(unit: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """cos(unit[i], unit[j]) for each index pair (rows already unit-norm)."""
    return np.einsum("nd,nd->n", unit[i], unit[j])


def article_runs(article_ids: Sequence) -> np.ndarray:
    """Run number of each row: consecutive rows with the same article id share one."""
    ids = np.asarray(article_ids)
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(([0], np.cumsum(ids[1:] != ids[:-1])))


def article_bounds(article_ids: Sequence) -> np.ndarray:
    """(n_runs, 2) [start, end) row range of each article run, in order."""
    runs = article_runs(article_ids)
    starts = np.flatnonzero(np.diff(runs, prepend=-1))
    return np.stack([starts, np.append(starts[1:], runs.size)], axis=1) if runs.size else np.zeros((0, 2), np.int64)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(a[n], b[n]) for each row pair (rows of any norm; zero rows give 0)."""
    return np.einsum("nd,nd->n", unit_rows(a), unit_rows(b))


def row_slices(n: int, size: int):
    """Consecutive slices of at most `size` rows covering 0..n."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def right_padded(array: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int | None = None) -> np.ndarray:
    """(n, width, d) float32: rows [starts[i], starts[i] + lengths[i]) of `array` (an array or a memory map),
    right-padded with zeros to `width` (default: the longest)."""
    width = int(lengths.max(initial=0)) if width is None else width
    positions = np.arange(width)
    real = positions[None, :] < lengths[:, None]
    out = np.zeros((len(starts), width, array.shape[1]), dtype=np.float32)
    out[real] = array[(starts[:, None] + positions[None, :])[real]]
    return out

"""The baselines every model must beat on the same queries (DESIGN.md section 7). All are deterministic
`Predictor`s; they read the bank (an array or a read-only memory map) in batches of queries."""

from __future__ import annotations

import numpy as np

from lvm_pipeline.arrays import row_cosines, row_slices, unit_rows
from lvm_pipeline.evaluation.queries import Queries
from lvm_pipeline.evaluation.retrieval import IVF_ABOVE, BankIndex

BATCH_QUERIES = 8192


def _covered_rows(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Sorted bank rows of the union of the ranges [start, end)."""
    order = np.argsort(starts, kind="stable")
    starts, reach = starts[order], np.maximum.accumulate(ends[order])
    opens = np.flatnonzero(np.r_[True, starts[1:] > reach[:-1]])  # first range of each merged run
    run_start, run_end = starts[opens], reach[np.r_[opens[1:] - 1, len(starts) - 1]]
    lengths = run_end - run_start
    return np.repeat(run_start - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())


def context_means(vectors: np.ndarray, queries: Queries, batch_size: int = BATCH_QUERIES) -> np.ndarray:
    """(n, D) float64 mean of each query's context rows: differences of cumulative sums over the bank rows
    that a batch of queries (taken in target order) covers."""
    means = np.empty((len(queries), vectors.shape[1]), dtype=np.float64)
    order = np.argsort(queries.target, kind="stable")
    for batch in row_slices(len(order), batch_size):
        members = order[batch]
        start, target = queries.context_start[members], queries.target[members]
        rows = _covered_rows(start, target)
        sums = np.zeros((len(rows) + 1, vectors.shape[1]), dtype=np.float64)
        np.cumsum(vectors[rows], axis=0, dtype=np.float64, out=sums[1:])
        first, stop = np.searchsorted(rows, start), np.searchsorted(rows, target)  # [first, stop) = the context
        means[members] = (sums[stop] - sums[first]) / (stop - first)[:, None]
    return means


def _mean_cosine(predicted: np.ndarray, target: np.ndarray) -> float:
    return float(row_cosines(predicted, target).mean())


def _subsample(queries: Queries, limit: int, rng: np.random.Generator) -> Queries:
    return queries if len(queries) <= limit else queries.subset(np.sort(rng.choice(len(queries), limit, replace=False)))


class CopyLast:
    """Predicts the last context vector."""

    name = "copy_last"

    def predict(self, vectors: np.ndarray, queries: Queries, tmd: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(vectors[queries.last], dtype=np.float32)


class MeanContext:
    """Predicts the mean of the context vectors."""

    name = "mean_context"

    def predict(self, vectors: np.ndarray, queries: Queries, tmd: np.ndarray | None = None) -> np.ndarray:
        return context_means(vectors, queries).astype(np.float32)


class Ridge:
    """Linear ridge regression to the target from the last `context_length` context vectors (zeros left-pad
    shorter contexts) and the unit mean of the whole context, lambda chosen by mean cosine on validation queries.

    Lambda is added to the diagonal of the centred X^T X summed (not averaged) over the training queries.
    After `fit`: `coef` (F, D), `intercept` (D,), `chosen_lambda`, `val_cosine` {lambda: mean val cosine}.
    """

    name = "ridge"

    def __init__(self, context_length: int = 3, max_train: int = 200_000, max_val: int = 50_000, seed: int = 0,
                 batch_size: int = BATCH_QUERIES):
        self.context_length = context_length
        self.max_train, self.max_val, self.seed, self.batch_size = max_train, max_val, seed, batch_size
        self.coef: np.ndarray | None = None
        self.intercept: np.ndarray | None = None
        self.chosen_lambda: float | None = None
        self.val_cosine: dict[float, float] = {}

    def features(self, vectors: np.ndarray, queries: Queries) -> np.ndarray:
        """(n, (context_length + 1) * D) float64: the last context vectors, oldest first, then the unit context mean."""
        recent, _ = queries.contexts(vectors, self.context_length)
        blocks = np.zeros((len(queries), self.context_length + 1, vectors.shape[1]), dtype=np.float64)
        blocks[:, self.context_length - recent.shape[1]:self.context_length] = recent
        blocks[:, self.context_length] = unit_rows(context_means(vectors, queries, self.batch_size))
        return blocks.reshape(len(queries), -1)

    def _batched(self, vectors: np.ndarray, queries: Queries):
        """(slice, features, target rows) per batch of queries."""
        for batch in row_slices(len(queries), self.batch_size):
            part = queries.subset(np.arange(batch.start, batch.stop))
            yield batch, self.features(vectors, part), part.target

    def fit(self, vectors: np.ndarray, train_queries: Queries, val_queries: Queries,
            lambdas=(0.1, 1, 10, 100, 1000)) -> Ridge:
        """Closed form on centred features: one eigendecomposition of X^T X serves every lambda."""
        if not len(train_queries) or not len(val_queries):
            raise ValueError("Ridge.fit needs train and validation queries")
        rng = np.random.default_rng(self.seed)
        train, val = _subsample(train_queries, self.max_train, rng), _subsample(val_queries, self.max_val, rng)
        n_features, dim = (self.context_length + 1) * vectors.shape[1], vectors.shape[1]
        xtx, xty = np.zeros((n_features, n_features)), np.zeros((n_features, dim))
        x_sum, y_sum = np.zeros(n_features), np.zeros(dim)
        for _, x, target in self._batched(vectors, train):
            y = np.asarray(vectors[target], dtype=np.float64)
            xtx += x.T @ x
            xty += x.T @ y
            x_sum += x.sum(axis=0)
            y_sum += y.sum(axis=0)
        x_mean, y_mean = x_sum / len(train), y_sum / len(train)
        xtx -= len(train) * np.outer(x_mean, x_mean)
        xty -= len(train) * np.outer(x_mean, y_mean)
        eigenvalues, eigenvectors = np.linalg.eigh(xtx)
        eigenvalues = np.maximum(eigenvalues, 0.0)
        rotated_xty = eigenvectors.T @ xty  # coef(lambda) = Q diag(1 / (eigenvalue + lambda)) Q^T X^T y

        cosine_sums = dict.fromkeys(lambdas, 0.0)
        for _, x, target in self._batched(vectors, val):
            y = np.asarray(vectors[target], dtype=np.float64)
            rotated_x = (x - x_mean) @ eigenvectors
            for lam in lambdas:
                predicted = rotated_x @ (rotated_xty / (eigenvalues + lam)[:, None]) + y_mean
                cosine_sums[lam] += _mean_cosine(predicted, y) * len(y)
        self.val_cosine = {lam: total / len(val) for lam, total in cosine_sums.items()}
        self.chosen_lambda = max(lambdas, key=self.val_cosine.__getitem__)
        self.coef = eigenvectors @ (rotated_xty / (eigenvalues + self.chosen_lambda)[:, None])
        self.intercept = y_mean - x_mean @ self.coef
        return self

    def predict(self, vectors: np.ndarray, queries: Queries, tmd: np.ndarray | None = None) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("Ridge.predict before fit")
        predicted = np.empty((len(queries), vectors.shape[1]), dtype=np.float32)
        for batch, x, _ in self._batched(vectors, queries):
            predicted[batch] = x @ self.coef + self.intercept
        return predicted


class SuccessorKNN:
    """Predicts the mean of the successors, within their train articles, of the k train concepts nearest to
    the last context vector; a query never uses its own last row as a neighbour.

    `fit` indexes the (last, target) pairs of the train queries by bank row; `predict` reads the successors
    from the bank it is given, which must be the bank `fit` saw.
    """

    name = "successor_knn"

    def __init__(self, k: int = 5, ivf_above: int = IVF_ABOVE, batch_size: int = 4096):
        self.k, self.ivf_above, self.batch_size = k, ivf_above, batch_size
        self.predecessors: np.ndarray | None = None  # sorted bank rows, the index's ids are positions here
        self.successors: np.ndarray | None = None
        self.index: BankIndex | None = None

    def fit(self, vectors: np.ndarray, train_queries: Queries) -> SuccessorKNN:
        self.predecessors, first = np.unique(train_queries.last, return_index=True)
        self.successors = train_queries.target[first]
        self.index = BankIndex(vectors, rows=self.predecessors, ivf_above=self.ivf_above)
        return self

    def predict(self, vectors: np.ndarray, queries: Queries, tmd: np.ndarray | None = None) -> np.ndarray:
        if self.index is None:
            raise RuntimeError("SuccessorKNN.predict before fit")
        predicted = np.zeros((len(queries), vectors.shape[1]), dtype=np.float32)
        for batch in row_slices(len(queries), self.batch_size):
            last = queries.last[batch]
            _, neighbours = self.index.search(vectors[last], self.k + 1)  # one spare for the query's own row
            valid = neighbours >= 0
            keep = valid & (self.predecessors[np.where(valid, neighbours, 0)] != last[:, None])
            keep &= np.cumsum(keep, axis=1) <= self.k
            successors = self.successors[np.where(keep, neighbours, 0)]
            successor_vectors = np.asarray(vectors[successors.ravel()], dtype=np.float32).reshape(*successors.shape, -1)
            counts = np.maximum(keep.sum(axis=1), 1)[:, None]
            predicted[batch] = np.einsum("qk,qkd->qd", keep.astype(np.float32), successor_vectors) / counts
        return predicted

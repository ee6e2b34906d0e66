"""Scoring vectors against labels that each have one or more embedded prototype texts.

A label's score for a vector is the mean cosine of its `top_k` nearest prototypes: with several
prototypes per label, one prototype matching by accident (a shared word) counts for less than two
agreeing. With `hubness`, each prototype's cosine is first lowered by its mean cosine to all the
other prototypes, so a generic phrase ("Invention", "Scientific theory") that sits near
everything does not win by default: the cross-domain similarity local scaling of Conneau et al.
(2018), computed on the prototypes alone (no data, no labels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SCORE_ROWS = 8_192  # vectors scored per matrix product (bounds memory for large batches)


class PrototypeScorer:
    """(n, n_labels) scores of unit vectors against the embedded prototypes of each label."""

    def __init__(self, encoder, prototypes: Sequence[tuple[int, str]], n_labels: int, *, top_k: int = 1,
                 hubness: bool = False):
        owners = np.array([label for label, _ in prototypes], dtype=np.int64)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if set(owners.tolist()) != set(range(n_labels)):
            raise ValueError(f"every label 0..{n_labels - 1} needs at least one prototype")
        order = np.argsort(owners, kind="stable")  # each label's prototypes contiguous, labels in order
        self.owners = owners[order]
        self.vectors = encoder.encode([prototypes[i][1] for i in order])
        self.n_labels, self.top_k = n_labels, top_k
        self.starts = np.searchsorted(self.owners, np.arange(n_labels))
        self.offsets = np.zeros(len(self.owners), dtype=np.float32)
        if hubness and len(self.owners) > 1:
            similarity = self.vectors @ self.vectors.T
            self.offsets = ((similarity.sum(axis=1) - np.diag(similarity)) / (len(self.owners) - 1)).astype(np.float32)

    @property
    def dimension(self) -> int:
        return self.vectors.shape[1]

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """float32 (n, n_labels); ValueError if the vectors are not (n, dimension)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise ValueError(f"vectors must be (n, {self.dimension}), got {vectors.shape}")
        out = np.empty((len(vectors), self.n_labels), dtype=np.float32)
        for start in range(0, len(vectors), SCORE_ROWS):
            out[start:start + SCORE_ROWS] = self._label_scores(vectors[start:start + SCORE_ROWS])
        return out

    def _label_scores(self, vectors: np.ndarray) -> np.ndarray:
        cosines = vectors @ self.vectors.T - self.offsets
        if len(self.owners) == self.n_labels:  # one prototype per label: its cosine is the score
            return cosines
        return np.stack([_mean_top(part, self.top_k) for part in np.split(cosines, self.starts[1:], axis=1)], axis=1)


def _mean_top(cosines: np.ndarray, k: int) -> np.ndarray:
    """Row-wise mean of the k largest values (all of them if there are fewer)."""
    if cosines.shape[1] <= k:
        return cosines.mean(axis=1)
    return np.partition(cosines, -k, axis=1)[:, -k:].mean(axis=1)

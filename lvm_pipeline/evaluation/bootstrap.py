"""Cluster-bootstrap confidence intervals by article, and paired differences (DESIGN.md section 7).

Queries of one article are correlated, so the bootstrap resamples articles (clusters) with
replacement, not queries. One set of resamples is drawn per `ClusterBootstrap` and reused for every
metric and predictor, so a model - baseline difference is paired: both means move together on the
same resampled articles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean over queries with its bootstrap confidence interval."""

    value: float
    ci_low: float
    ci_high: float

    @property
    def excludes_zero(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0

    def to_json(self) -> dict[str, float]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high}


class ClusterBootstrap:
    """Percentile CIs of per-query means, resampling the distinct `clusters` (one id per query) with replacement.

    A resampled mean is sum_c count_c * S_c / sum_c count_c * N_c, with S_c and N_c the sum and number
    of queries of cluster c and count_c how often the resample drew it; the (n_resamples, n_clusters)
    counts are drawn once, at construction.
    """

    def __init__(self, clusters: np.ndarray, n_resamples: int = 1000, seed: int = 0, level: float = 0.95):
        clusters = np.asarray(clusters)
        if clusters.ndim != 1 or clusters.size == 0:
            raise ValueError("clusters must be a non-empty 1-d array, one cluster id per query")
        if n_resamples < 1:
            raise ValueError("n_resamples must be at least 1")
        if not 0 < level < 1:
            raise ValueError("level must be between 0 and 1")
        self.n_resamples = n_resamples
        self.level = level
        _, self._cluster_of_query = np.unique(clusters, return_inverse=True)
        self.n_clusters = int(self._cluster_of_query.max()) + 1
        draws = np.random.default_rng(seed).integers(0, self.n_clusters, size=(n_resamples, self.n_clusters))
        draws += np.arange(n_resamples)[:, None] * self.n_clusters  # one bincount for all resamples
        self._counts = np.bincount(draws.ravel(), minlength=n_resamples * self.n_clusters).reshape(
            n_resamples, self.n_clusters).astype(np.float64)
        self._resampled_sizes = self._counts @ np.bincount(self._cluster_of_query, minlength=self.n_clusters)

    def __len__(self) -> int:
        return len(self._cluster_of_query)

    def resampled_means(self, values: np.ndarray) -> np.ndarray:
        """(n_resamples,) mean of `values` over the queries of each resample of clusters."""
        values = self._checked(values)
        cluster_sums = np.bincount(self._cluster_of_query, weights=values, minlength=self.n_clusters)
        return self._counts @ cluster_sums / self._resampled_sizes

    def estimate(self, values: np.ndarray) -> Estimate:
        """Plain mean of all queries, with the percentile interval of the resampled means."""
        values = self._checked(values)
        tail = (1 - self.level) / 2
        low, high = np.quantile(self.resampled_means(values), [tail, 1 - tail])
        return Estimate(float(values.mean()), float(low), float(high))

    def difference(self, a: np.ndarray, b: np.ndarray) -> Estimate:
        """mean(a) - mean(b) on the same queries and the same resamples (the paired bootstrap)."""
        return self.estimate(self._checked(a) - self._checked(b))

    def _checked(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (len(self),):
            raise ValueError(f"expected one value per query ({len(self)}), got shape {values.shape}")
        undefined = np.count_nonzero(~np.isfinite(values))
        if undefined:
            raise ValueError(f"{undefined} NaN or infinite values: a metric undefined for some queries cannot be "
                             "averaged; fix or drop those queries first (with a bootstrap over the remaining ones)")
        return values

"""An ensemble `Predictor`: the weighted sum of its members' unit predictions, weights chosen on val (never test).

Members are any predictors (trained models, and the encode_context baseline: fusing a model with what the encoder
gives for free is an ensemble of two). The prediction is sum_i w_i unit(p_i); its cosine ranking of the bank is
then linear in the members' cosines, so `fit` scores a weighting on val without searching the bank again: each val
query's candidates are the union of its members' CANDIDATES nearest rows and its target, and Hit@5 is counted
among them (a row outside every member's candidates seldom reaches a weighted top 5). The weights are found by
coordinate ascent over GRID, starting from equal weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lvm_pipeline.arrays import unit_rows
from lvm_pipeline.evaluation.queries import Predictor, Queries
from lvm_pipeline.evaluation.retrieval import BankIndex

GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
CANDIDATES = 50
ROUNDS = 3
MAX_VAL_QUERIES = 4000


class Ensemble:
    """unit(sum_i w_i unit(member_i's prediction)); `weights` sum to 1 (`fit` chooses them)."""

    def __init__(self, members: Sequence[Predictor], weights: Sequence[float] | None = None, name: str = "ensemble"):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members, self.name = list(members), name
        self.weights = np.full(len(members), 1 / len(members)) if weights is None else _normalised(weights)
        self.uses_tmd = any(getattr(m, "uses_tmd", False) for m in self.members)
        self.val_hit_at_5: float | None = None

    def predict(self, vectors: np.ndarray, queries: Queries, tmd: np.ndarray | None = None) -> np.ndarray:
        return combine(self._member_predictions(vectors, queries, tmd), self.weights)

    def _member_predictions(self, vectors, queries, tmd) -> list[np.ndarray]:
        return [m.predict(vectors, queries, tmd if getattr(m, "uses_tmd", False) else None)
                for m in self.members]

    def fit(self, vectors: np.ndarray, val_queries: Queries, index: BankIndex, tmd: np.ndarray | None = None,
            seed: int = 0) -> Ensemble:
        """Choose the weights that maximise Hit@5 on (a seeded subset of) the val queries."""
        if not len(val_queries):
            raise ValueError("Ensemble.fit needs validation queries")
        if len(val_queries) > MAX_VAL_QUERIES:
            keep = np.sort(np.random.default_rng(seed).choice(len(val_queries), MAX_VAL_QUERIES, replace=False))
            val_queries = val_queries.subset(keep)
        scores, target_scores = member_scores(self._member_predictions(vectors, val_queries, tmd), vectors,
                                              val_queries.target, index)
        self.weights, self.val_hit_at_5 = coordinate_ascent(scores, target_scores)
        return self

    def describe(self) -> str:
        """e.g. 'gru 0.40 + encode_context 0.60'."""
        return " + ".join(f"{m.name} {w:.2f}" for m, w in zip(self.members, self.weights) if w > 0)


def combine(predictions: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    total = np.zeros_like(predictions[0], dtype=np.float64)
    for prediction, weight in zip(predictions, weights):
        if weight:
            total += weight * unit_rows(prediction)
    return unit_rows(total).astype(np.float32)


def member_scores(predictions: Sequence[np.ndarray], vectors: np.ndarray, targets: np.ndarray,
                  index: BankIndex) -> tuple[np.ndarray, np.ndarray]:
    """Each member's cosines to each query's candidates (n, members, candidates; -inf pads) and to its target
    (n, members). Candidates: the union of the members' CANDIDATES nearest bank rows, the target left out."""
    units = [unit_rows(p).astype(np.float32) for p in predictions]
    nearest = np.concatenate([index.search(u, CANDIDATES)[1] for u in units], axis=1)
    n, width = len(targets), nearest.shape[1]
    nearest = np.where(nearest == targets[:, None], -1, nearest)
    nearest.sort(axis=1)
    duplicate = np.zeros_like(nearest, dtype=bool)
    duplicate[:, 1:] = nearest[:, 1:] == nearest[:, :-1]
    nearest[duplicate] = -1
    valid = nearest >= 0
    candidate_vectors = unit_rows(np.asarray(vectors[np.where(valid, nearest, 0).ravel()])).astype(np.float32)
    candidate_vectors = candidate_vectors.reshape(n, width, -1)
    target_vectors = unit_rows(np.asarray(vectors[targets])).astype(np.float32)
    scores = np.stack([np.einsum("nd,ncd->nc", u, candidate_vectors) for u in units], axis=1)
    scores[~np.broadcast_to(valid[:, None, :], scores.shape)] = -np.inf
    target_scores = np.stack([np.einsum("nd,nd->n", u, target_vectors) for u in units], axis=1)
    return scores, target_scores


def hit_at_5(weights: np.ndarray, scores: np.ndarray, target_scores: np.ndarray) -> float:
    """Share of queries whose target has fewer than 5 candidates scoring above it under `weights`."""
    combined = np.einsum("m,nmc->nc", weights, np.where(np.isfinite(scores), scores, 0.0))
    combined[~np.isfinite(scores[:, 0, :])] = -np.inf
    target = target_scores @ weights
    return float(np.mean((combined > target[:, None]).sum(axis=1) < 5))


def coordinate_ascent(scores: np.ndarray, target_scores: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights (summing to 1) from GRID, one member at a time, ROUNDS times; ties keep the current weight."""
    weights = np.ones(scores.shape[1])
    best = hit_at_5(weights, scores, target_scores)
    for _ in range(ROUNDS):
        improved = False
        for member in range(len(weights)):
            for value in GRID:
                trial = weights.copy()
                trial[member] = value
                if not trial.any():
                    continue
                figure = hit_at_5(trial, scores, target_scores)
                if figure > best:
                    weights, best, improved = trial, figure, True
        if not improved:
            break
    return _normalised(weights), best


def _normalised(weights: Sequence[float]) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or np.any(weights < 0) or not weights.sum() > 0:
        raise ValueError(f"ensemble weights must be non-negative with a positive sum, got {weights.tolist()}")
    return weights / weights.sum()


def fit_ensemble(models: Sequence[Predictor], baselines: Sequence, vectors: np.ndarray, val_queries: Queries,
                 index: BankIndex, tmd: np.ndarray | None = None, seed: int = 0) -> Ensemble | None:
    """The trained models and, where it is among the baselines, encode_context in one `Ensemble` weighted on val;
    None with fewer than two members (nothing to combine) or when val gives the models no weight."""
    members = [*models, *(b for b in baselines if b.name == "encode_context")]
    if len(members) < 2 or not models:
        return None
    ensemble = Ensemble(members).fit(vectors, val_queries, index, tmd, seed)
    # all the weight on encode_context: the ensemble is that baseline again, not a model
    return ensemble if ensemble.weights[:len(models)].any() else None

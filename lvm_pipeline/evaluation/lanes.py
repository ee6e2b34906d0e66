"""TMD lanes on the yardstick: Hit@5 per domain lane, and the predecessor's "quick win" re-ranking.

A query's lane is the TMD domain of its last context concept, which is its article's domain (codes are
assigned per article, from its title, description, first sentence and mean vector, before any split):
the lane of the text being written, known at prediction time the way its topic is. Re-ranking takes the
`RERANK_DEPTH` nearest bank concepts of a prediction and orders them by
`(1 - LANE_WEIGHT) * cosine + LANE_WEIGHT * [concept's lane == query's lane]`; a query in no lane
(domain unknown) keeps the cosine order.
"""

from __future__ import annotations

import numpy as np

from lvm_pipeline.evaluation.queries import Queries
from lvm_pipeline.evaluation.retrieval import BankIndex
from lvm_pipeline.tmd.schema import DOMAINS

LANE_WEIGHT = 0.3  # the predecessor's 0.7 cos + 0.3 lane alignment
RERANK_DEPTH = 100  # nearest concepts re-ranked per query


def query_lanes(domain_codes: np.ndarray, queries: Queries) -> np.ndarray:
    """(n,) the lane (domain code, negative when unknown) of each query: its last context concept's."""
    return np.asarray(domain_codes, dtype=np.int64)[queries.last]


def lane_name(lane: int) -> str:
    return DOMAINS[lane].name if lane >= 0 else "unknown"


def reranked_hits(index: BankIndex, predicted: np.ndarray, queries: Queries, domain_codes: np.ndarray,
                  k: int = 5, depth: int = RERANK_DEPTH, weight: float = LANE_WEIGHT) -> np.ndarray:
    """(n,) 0/1: the target is among the top k of the prediction's `depth` nearest concepts re-ranked by lane."""
    if index.rows is not None:
        raise ValueError("re-ranking needs an index over the whole bank (ids = bank rows)")
    domain_codes = np.asarray(domain_codes, dtype=np.int64)
    scores, ids = index.search(predicted, min(depth, index.size))
    lanes = query_lanes(domain_codes, queries)
    aligned = (domain_codes[np.maximum(ids, 0)] == lanes[:, None]) & (lanes[:, None] >= 0) & (ids >= 0)
    combined = np.where(ids >= 0, (1 - weight) * scores + weight * aligned, -np.inf)
    order = np.argsort(-combined, axis=1, kind="stable")[:, :k]  # stable: ties keep the cosine order
    top = np.take_along_axis(ids, order, axis=1)
    return (top == queries.target[:, None]).any(axis=1).astype(np.float64)

"""Hard negatives mined from the bank for InfoNCE: for each train target, the train concepts of OTHER articles
nearest to it (never its own article: negatives from the query's own context punish on-topic predictions and
cut Hit@5 by more than half; never val/test concepts: training must not read them)."""

from __future__ import annotations

import numpy as np
import torch

from lvm_pipeline.evaluation.retrieval import BankIndex

DUPLICATE_COSINE = 0.999  # a neighbour this close is the same text (or nearly): not a negative
SEARCH_MARGIN = 32  # neighbours searched beyond k, to skip the target's own article and its duplicates


class HardNegatives:
    """Bank row -> the bank rows of its `k` hardest negatives (-1 where fewer were found)."""

    def __init__(self, vectors: np.ndarray, bank_article: np.ndarray, train_rows: np.ndarray, k: int):
        train_rows = np.asarray(train_rows, dtype=np.int64)
        self.vectors, self.k = vectors, k
        self.table = np.full((len(vectors), k), -1, dtype=np.int64)
        index = BankIndex(vectors, rows=train_rows)
        scores, found = index.search(vectors[train_rows], min(k + SEARCH_MARGIN, len(train_rows)))
        neighbours = np.where(found >= 0, train_rows[np.maximum(found, 0)], -1)
        usable = (neighbours >= 0) & (bank_article[neighbours] != bank_article[train_rows][:, None])
        usable &= scores < DUPLICATE_COSINE
        slot = np.cumsum(usable, axis=1) - 1  # each usable neighbour's place among its row's, nearest first
        i, j = np.nonzero(usable & (slot < k))
        self.table[train_rows[i], slot[i, j]] = neighbours[i, j]

    def for_targets(self, target_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([n, k, D] vectors, [n, k] bool: a negative was found) for the bank rows `target_rows` [n]."""
        rows = self.table[target_rows.cpu().numpy()]
        found = rows >= 0
        vectors = np.asarray(self.vectors[np.where(found, rows, 0).ravel()], dtype=np.float32)
        return (torch.from_numpy(vectors.reshape(*rows.shape, -1)).to(target_rows.device),
                torch.from_numpy(found).to(target_rows.device))

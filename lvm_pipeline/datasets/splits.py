"""Article-level splits: a stable hash of the article id decides train / val / test, once and for all.

The same article lands in the same split on every machine and every run, whatever else is in the
bank, so a growing corpus never moves an article from test into train (DESIGN.md section 7).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitRatios:
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    salt: str = "lvm-split-v1"  # changing it reshuffles every article: a new dataset version

    def __post_init__(self):
        ratios = (self.train, self.val, self.test)
        if min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-9 or self.train == 0:
            raise ValueError(f"split ratios must be >= 0, sum to 1 and leave some training data; got {ratios}")


def article_unit(article_id: str, salt: str) -> float:
    """A uniform number in [0, 1) from sha256(salt, article id)."""
    digest = hashlib.sha256(f"{salt}\x1f{article_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(article_ids: Sequence[str], ratios: SplitRatios | None = None) -> np.ndarray:
    """(n,) int8 split of each article: 0 train, 1 val, 2 test (the index into SPLITS)."""
    ratios = ratios or SplitRatios()
    units = np.array([article_unit(str(a), ratios.salt) for a in article_ids], dtype=np.float64)
    return np.searchsorted([ratios.train, ratios.train + ratios.val], units, side="right").astype(np.int8)

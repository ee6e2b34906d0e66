"""Leakage: no article in two splits, no val/test target that is a train text, no window across two articles.

The predecessor split windows at random, so validation targets sat inside training contexts and
its figures measured memory. Any leak is a STOP: the training_sequences check blocks what follows.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations

import numpy as np

from lvm_pipeline.gates.result import GateResult, Rule, above, at_most, judge
from lvm_pipeline.text import excerpt

GATE = "leakage"
MAX_WORST = 10
NONE_ALLOWED = Rule((at_most(0),), above(0))


def check_leakage(article_ids: Mapping[str, np.ndarray], target_texts: Mapping[str, np.ndarray],
                  train_texts: np.ndarray, window_articles: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  dropped_duplicates: Mapping[str, int]) -> GateResult:
    """Leaks between the splits of a set of training sequences.

    `article_ids`: split -> ids of its articles; `target_texts`: split -> target text of each
    window; `train_texts`: every concept text of the train articles; `window_articles`: split ->
    (article of each window's first context row, article of its target row); `dropped_duplicates`:
    split -> windows already dropped because their target text is a train text (reported).
    """
    worst: list[dict] = []
    shared = 0
    for a, b in combinations(article_ids, 2):
        common = np.intersect1d(article_ids[a], article_ids[b])
        shared += len(common)
        worst += [{"problem": f"article in {a} and {b}", "example": excerpt(x)} for x in common[:MAX_WORST]]
    train = set(np.asarray(train_texts).tolist())
    duplicates = 0
    for split, texts in target_texts.items():
        if split == "train":
            continue
        found = [t for t in np.asarray(texts).tolist() if t in train]
        duplicates += len(found)
        worst += [{"problem": f"{split} target is a train text", "example": excerpt(t)} for t in found[:MAX_WORST]]
    crossing = 0
    for split, (first, target) in window_articles.items():
        bad = np.flatnonzero(np.asarray(first) != np.asarray(target))
        crossing += len(bad)
        worst += [{"problem": f"{split} window crosses articles", "example": f"window {i}"} for i in bad[:MAX_WORST]]
    figures = {"n_shared_articles": shared, "n_duplicate_targets": duplicates, "n_crossing_windows": crossing,
               **{f"n_articles_{s}": len(ids) for s, ids in article_ids.items()},
               **{f"n_windows_{s}": len(texts) for s, texts in target_texts.items()},
               **{f"dropped_duplicates_{s}": n for s, n in dropped_duplicates.items() if s != "train"}}
    rules = {"n_shared_articles": NONE_ALLOWED, "n_duplicate_targets": NONE_ALLOWED, "n_crossing_windows": NONE_ALLOWED}
    return judge(GATE, figures, rules, worst=worst[:MAX_WORST],
                 note=f"{sum(dropped_duplicates.values())} val/test windows dropped: their target is a train text")

"""Coherence: consecutive concepts of an article must be more similar than random concepts.

The absolute thresholds were set for GTR-T5; every figure is also reported for random
cross-article pairs (the encoder's baseline), and a within-article mean that is not clearly above
that baseline is a STOP whatever the encoder: it is what a batch shuffled across articles looks like.
A batch of a single article has no baseline: its gap is None and not graded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lvm_pipeline.arrays import cosines, unit_rows
from lvm_pipeline.gates._pairs import cross_article_pairs, pairs_at
from lvm_pipeline.gates.result import GateResult, Rule, at_least, at_most, below, fmt, judge
from lvm_pipeline.text import excerpt

GATE = "coherence"
MAX_WORST = 10


@dataclass(frozen=True)
class CoherenceThresholds:
    go_mean: float = 0.3  # mean adjacent cosine; WARN below
    stop_mean: float = 0.2  # STOP below
    high_cut: float = 0.3  # a pair is "high" when cos >= high_cut
    low_cut: float = 0.1  # a pair is "low" when cos < low_cut
    go_high_share: float = 0.6  # share of high pairs; WARN below
    go_low_share: float = 0.2  # share of low pairs; WARN above
    go_min_gap: float = 0.10  # mean adjacent cos - mean random cross-article cos; WARN below
    stop_min_gap: float = 0.05  # STOP below


def check_coherence(article_ids: Sequence, titles: Sequence[str], texts: Sequence[str], vectors: np.ndarray,
                    seed: int = 0, n_random_pairs: int = 2000,
                    thresholds: CoherenceThresholds = CoherenceThresholds()) -> GateResult:
    """Adjacent-pair coherence of rows ordered by (article, seq), against random cross-article pairs."""
    t = thresholds
    unit = unit_rows(vectors)
    i = pairs_at(article_ids, 1)
    adjacent = cosines(unit, i, i + 1)
    random = cosines(unit, *cross_article_pairs(article_ids, n_random_pairs, seed))
    within, baseline = _summary(adjacent, t), _summary(random, t)
    figures = {"n_articles": len(set(article_ids)), **within,
               **{f"random_{k}": v for k, v in baseline.items()},
               "gap": _difference(within["mean_cos"], baseline["mean_cos"])}
    rules = {
        "mean_cos": Rule((at_least(t.go_mean),), below(t.stop_mean)),
        "high_share": Rule((at_least(t.go_high_share),)),
        "low_share": Rule((at_most(t.go_low_share),)),
        "gap": Rule((at_least(t.go_min_gap),), below(t.stop_min_gap)),
    }
    worst = [{"title": titles[a], "text": excerpt(texts[a]), "next_text": excerpt(texts[a + 1]), "cos": float(c)}
             for a, c in sorted(zip(i.tolist(), adjacent.tolist()), key=lambda p: p[1])[:MAX_WORST]]
    return judge(GATE, figures, rules, worst=worst,
                 settings={"high_cut": f">= {t.high_cut:g}", "low_cut": f"< {t.low_cut:g}", "seed": seed},
                 note=f"random cross-article baseline {fmt(baseline['mean_cos'])} over {baseline['n_pairs']} pairs",
                 sizes={"high_share": within["n_pairs"], "low_share": within["n_pairs"]},
                 not_graded="no two consecutive concepts in one article")


def _summary(cos: np.ndarray, t: CoherenceThresholds) -> dict[str, float | int | None]:
    """Count, mean, median and high/low shares of pair cosines (None when there are no pairs)."""
    if cos.size == 0:
        return {"n_pairs": 0, "mean_cos": None, "median_cos": None, "high_share": None, "low_share": None}
    return {"n_pairs": int(cos.size), "mean_cos": float(cos.mean()), "median_cos": float(np.median(cos)),
            "high_share": float((cos >= t.high_cut).mean()), "low_share": float((cos < t.low_cut).mean())}


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b

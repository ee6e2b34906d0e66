"""Directionality: is the next concept closer to the current one than the previous concept is?

For each distance k, over the centres t that have both c_{t-k} and c_{t+k} in their article:
forward(k) = mean cos(c_t, c_{t+k}), backward(k) = mean cos(c_t, c_{t-k}), delta = forward - backward,
all on the same t and at the same distance (never distance 2 forward against distance 1 backward,
which the predecessor compared). Cosine is symmetric, so over ALL pairs at distance k forward and
backward would be the same number; on the shared centres the backward pairs are the forward pairs
shifted k places earlier, and delta > 0 says that concepts grow more alike along an article, so
that the future of a concept is more predictable from it than its past. Reported for every k;
WARN when delta <= 0 at the graded k (1); never STOP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lvm_pipeline.gates._pairs import article_runs, centres_at, cosines, unit_rows
from lvm_pipeline.gates.result import GateResult, Rule, above, at_least, judge, mean_or_none

GATE = "directionality"
MAX_WORST = 10


@dataclass(frozen=True)
class DirectionalityThresholds:
    graded_k: int = 1  # the distance whose delta decides
    go_min_delta: float = 0.0  # GO when forward - backward > this at graded_k


def check_directionality(article_ids: Sequence, vectors: np.ndarray, ks: Sequence[int] = (1, 2, 3),
                         thresholds: DirectionalityThresholds = DirectionalityThresholds()) -> GateResult:
    """Forward vs backward cosine at equal distances, rows ordered by (article, seq)."""
    t = thresholds
    unit = unit_rows(vectors)
    figures: dict[str, float | int | None] = {}
    worst: list[dict] = []
    for k in sorted(set(ks) | {t.graded_k}):
        centres = centres_at(article_ids, k)
        forward, backward = cosines(unit, centres, centres + k), cosines(unit, centres, centres - k)
        figures |= _figures(k, forward, backward)
        if k == t.graded_k:
            worst = _worst_articles(np.asarray(article_ids), centres, forward - backward, k)
    g = t.graded_k
    rules = {f"n_k{g}": Rule((at_least(1),)), f"delta_k{g}": Rule((above(t.go_min_delta),))}
    return judge(GATE, figures, rules, worst=worst, settings={"ks": ",".join(map(str, ks))},
                 note="delta = mean cos(c_t, c_t+k) - mean cos(c_t, c_t-k) over the same centres t")


def _figures(k: int, forward: np.ndarray, backward: np.ndarray) -> dict[str, float | int | None]:
    """Per-distance figures; the means are None when no row has neighbours at distance k both sides."""
    return {f"n_k{k}": int(forward.size), f"forward_k{k}": mean_or_none(forward),
            f"backward_k{k}": mean_or_none(backward), f"delta_k{k}": mean_or_none(forward - backward),
            f"forward_wins_k{k}": mean_or_none(forward > backward)}


def _worst_articles(article_ids: np.ndarray, centres: np.ndarray, delta: np.ndarray, k: int) -> list[dict]:
    """Articles with the most negative mean delta at distance k."""
    if centres.size == 0:
        return []
    runs = article_runs(article_ids)[centres]
    n = np.bincount(runs)
    present = np.flatnonzero(n)
    mean_delta = np.bincount(runs, weights=delta)[present] / n[present]
    first_centre = dict(zip(runs[::-1].tolist(), centres[::-1].tolist()))
    return [{"article_id": str(article_ids[first_centre[run]]), "n_centres": int(n[run]), f"delta_k{k}": d}
            for run, d in sorted(zip(present.tolist(), mean_delta.tolist()), key=lambda p: p[1])[:MAX_WORST]]

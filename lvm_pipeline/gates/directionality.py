"""Directionality (informational): is the next concept closer to the current one than the previous concept is?

For each distance k, over the centres t that have both c_{t-k} and c_{t+k} in their article:
forward(k) = mean cos(c_t, c_{t+k}), backward(k) = mean cos(c_t, c_{t-k}), delta = forward - backward,
all on the same t and at the same distance (never distance 2 forward against distance 1 backward,
which the predecessor compared). Cosine is symmetric, so over ALL pairs at distance k forward and
backward would be the same number; on the shared centres the backward pairs are the forward pairs
shifted k places earlier, and delta > 0 says that concepts grow more alike along an article.

It is a property of the text, not a fault: Wikipedia lead sections point back to their first
sentence (delta_k1 is about -0.08 on every demo batch). So the figures are reported (check
metadata, phase report) and never graded: the gate is always GO and never alerts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lvm_pipeline.arrays import article_runs, cosines, unit_rows
from lvm_pipeline.gates._pairs import centres_at
from lvm_pipeline.gates.result import GateResult, fmt, judge, mean_or_none

GATE = "directionality"
MAX_WORST = 10


@dataclass(frozen=True)
class DirectionalityThresholds:
    max_k: int = 3  # distances 1..max_k are reported
    example_k: int = 1  # the distance whose most backward-looking articles are listed


def check_directionality(article_ids: Sequence, vectors: np.ndarray,
                         thresholds: DirectionalityThresholds = DirectionalityThresholds()) -> GateResult:
    """Forward vs backward cosine at equal distances, rows ordered by (article, seq); not graded."""
    t = thresholds
    unit = unit_rows(vectors)
    figures: dict[str, float | int | None] = {}
    worst: list[dict] = []
    for k in sorted(set(range(1, t.max_k + 1)) | {t.example_k}):
        centres = centres_at(article_ids, k)
        forward, backward = cosines(unit, centres, centres + k), cosines(unit, centres, centres - k)
        figures |= _figures(k, forward, backward)
        if k == t.example_k:
            worst = _worst_articles(np.asarray(article_ids), centres, forward - backward, k)
    deltas = ", ".join(f"delta_k{k}={fmt(figures[f'delta_k{k}'])}" for k in range(1, t.max_k + 1))
    return judge(GATE, figures, {}, worst=worst, settings={"max_k": t.max_k},
                 note=f"informational: {deltas} (delta = mean cos(c_t, c_t+k) - mean cos(c_t, c_t-k), same centres t)")


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

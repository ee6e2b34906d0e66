"""Data integrity: every concept has one finite, unit-norm vector of the encoder's dimension,
non-empty text and a unique id, all from one encoder. Any violation is a STOP.

A batch with no concepts is a STOP here unless records were quarantined: then the quarantine
gate has already STOPped it, for the reason, and this gate says "not graded" (one failure, one alert).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lvm_pipeline.gates.result import Bound, GateResult, Rule, above, at_least, at_most, below, judge
from lvm_pipeline.text import excerpt

GATE = "data_integrity"
MAX_WORST = 10
NONE_ALLOWED = Rule((at_most(0),), above(0))


@dataclass(frozen=True)
class DataIntegrityThresholds:
    norm_tolerance: float = 1e-3  # | ||v|| - 1 | allowed


def check_data_integrity(cpe_ids: Sequence[str], texts: Sequence[str | None], vectors: np.ndarray,
                         n_concepts: int, n_vectors: int, expected_dim: int,
                         encoder_fingerprints: Iterable[str], n_quarantined: int = 0,
                         thresholds: DataIntegrityThresholds = DataIntegrityThresholds()) -> GateResult:
    """Integrity of one batch.

    `cpe_ids`, `texts` and the rows of `vectors` (n, D) are the batch's concepts, a concept without
    a vector being a NaN row; `n_concepts` / `n_vectors` are the stored row counts (coverage),
    `encoder_fingerprints` the distinct fingerprints recorded with the batch's vectors, `n_quarantined`
    the records of the batch's file that were quarantined.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or not len(cpe_ids) == len(texts) == len(vectors):
        raise ValueError(f"need {len(cpe_ids)} ids, texts and rows of a 2-D vector array; got "
                         f"{len(texts)} texts and vectors of shape {vectors.shape}")
    fingerprints = sorted(set(encoder_fingerprints))
    finite = np.isfinite(vectors).all(axis=1)
    norm_error = np.abs(np.linalg.norm(vectors, axis=1) - 1.0)  # NaN for non-finite rows
    bad_norm = finite & (norm_error > thresholds.norm_tolerance)
    problems = _row_problems(cpe_ids, texts, finite, bad_norm)
    counts = Counter(p for row in problems.values() for p in row)
    figures = {
        "n_concepts": n_concepts, "n_vectors": n_vectors,
        "coverage": n_vectors / n_concepts if n_concepts else None,
        "dim": vectors.shape[1], "n_non_finite": counts["non-finite vector"],
        "n_bad_norm": counts["norm off 1"], "max_norm_error": float(norm_error[finite].max(initial=0.0)),
        "n_empty_text": counts["empty text"], "n_duplicate_ids": counts["duplicate id"],
        "n_fingerprints": len(fingerprints),
    }
    rules = {
        "n_concepts": Rule((at_least(1),), below(1)),
        "coverage": _exactly(1), "dim": _exactly(expected_dim),
        "n_non_finite": NONE_ALLOWED, "n_bad_norm": NONE_ALLOWED, "n_empty_text": NONE_ALLOWED,
        "n_duplicate_ids": NONE_ALLOWED, "n_fingerprints": _exactly(1),
    }
    if not n_concepts:  # nothing to check but the emptiness itself, and not that either when quarantine explains it
        rules = {} if n_quarantined else {"n_concepts": rules["n_concepts"]}
    worst = [{"cpe_id": str(cpe_ids[i]), "text": excerpt(texts[i] or ""), "problem": "; ".join(p),
              "norm_error": float(norm_error[i])} for i, p in list(problems.items())[:MAX_WORST]]
    return judge(GATE, figures, rules, worst=worst,
                 settings={"norm_tolerance": thresholds.norm_tolerance, "expected_dim": expected_dim},
                 note=f"fingerprints: {', '.join(fingerprints) or 'none'}",
                 not_graded=f"no concepts: all {n_quarantined} record(s) read were quarantined (see the quarantine gate)")


def _exactly(x: float) -> Rule:
    return Rule((Bound("==", x),), Bound("!=", x))


def _row_problems(cpe_ids: Sequence[str], texts: Sequence[str | None], finite: np.ndarray,
                  bad_norm: np.ndarray) -> dict[int, list[str]]:
    """Row index -> its problems, in row order (rows without a problem left out)."""
    seen: set[str] = set()
    problems: dict[int, list[str]] = {}
    for i, (cpe_id, text) in enumerate(zip(cpe_ids, texts)):
        row = [name for name, hit in (("non-finite vector", not finite[i]), ("norm off 1", bad_norm[i]),
                                      ("empty text", not (text or "").strip()),
                                      ("duplicate id", cpe_id in seen)) if hit]
        seen.add(cpe_id)
        if row:
            problems[i] = row
    return problems

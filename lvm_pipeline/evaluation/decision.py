"""The benchmark's GO / WARN / STOP rule: does the best model beat the best baseline on full-bank Hit@5?

"Best" is the highest mean Hit@5, and the baselines are all of them, vector and text-aware. The comparison is a
paired 95% cluster bootstrap (by article) of model minus baseline on the same queries (DESIGN.md section 7).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lvm_pipeline.evaluation.bootstrap import ClusterBootstrap, Estimate

RULE = ("GO only if the best model beats the best of all baselines (vector and text-aware) on full-bank Hit@5 with a "
        "paired 95% cluster-bootstrap CI (by article) that excludes zero; WARN if it beats it without significance; "
        "STOP otherwise.")
RULE_LEVEL = 0.95


@dataclass(frozen=True)
class Decision:
    decision: Literal["GO", "WARN", "STOP"]
    rule: str
    reason: str
    best_baseline: str
    best_model: str | None
    difference: Estimate | None  # best model - best baseline, Hit@5 as a fraction

    def to_json(self) -> dict:
        return {"decision": self.decision, "rule": self.rule, "reason": self.reason,
                "best_baseline": self.best_baseline, "best_model": self.best_model,
                "difference": self.difference.to_json() if self.difference else None}


def decide(hit_at_5: Mapping[str, np.ndarray], baselines: Sequence[str], models: Sequence[str],
           bootstrap: ClusterBootstrap) -> Decision:
    """Apply RULE to per-query 0/1 full-bank Hit@5 arrays (name -> (n,)), all on the bootstrap's queries."""
    if not baselines:
        raise ValueError("the rule needs at least one baseline")
    if not np.isclose(bootstrap.level, RULE_LEVEL):
        raise ValueError(f"the rule is defined with a {RULE_LEVEL:.0%} interval, the bootstrap has {bootstrap.level:.0%}")
    hits = {name: _hit_array(hit_at_5, name, len(bootstrap)) for name in [*baselines, *models]}
    baseline = max(baselines, key=lambda name: hits[name].mean())
    if not models:
        return Decision("STOP", RULE, f"No model has been trained yet; the best baseline is {baseline} with full-bank "
                                      f"Hit@5 {_percent(hits[baseline].mean())}.", baseline, None, None)
    model = max(models, key=lambda name: hits[name].mean())
    difference = bootstrap.difference(hits[model], hits[baseline])
    comparison = (f"{model} vs {baseline}: full-bank Hit@5 {_percent(hits[model].mean())} vs "
                  f"{_percent(hits[baseline].mean())}, {_points(difference)}")
    if difference.value > 0 and difference.ci_low > 0:
        decision, verdict = "GO", "the best model beats the best baseline and the interval excludes zero"
    elif difference.value > 0:
        decision, verdict = "WARN", "the best model beats the best baseline, but the interval includes zero"
    else:
        decision, verdict = "STOP", "the best model does not beat the best baseline"
    return Decision(decision, RULE, f"{comparison}: {verdict}.", baseline, model, difference)


def _hit_array(hit_at_5: Mapping[str, np.ndarray], name: str, n_queries: int) -> np.ndarray:
    if name not in hit_at_5:
        raise ValueError(f"no Hit@5 for predictor {name!r}")
    hits = np.asarray(hit_at_5[name], dtype=np.float64)
    if hits.shape != (n_queries,):
        raise ValueError(f"Hit@5 of {name!r} has shape {hits.shape}, the bootstrap has {n_queries} queries")
    if not np.isin(hits, (0.0, 1.0)).all():
        raise ValueError(f"Hit@5 of {name!r} must be per-query 0/1 values")
    return hits


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def _points(difference: Estimate) -> str:
    """e.g. '+3.1 points (95% CI +1.2 to +5.0)'."""
    return (f"{100 * difference.value:+.1f} points ({RULE_LEVEL:.0%} CI {100 * difference.ci_low:+.1f} "
            f"to {100 * difference.ci_high:+.1f})")

"""Quarantine share: how much of a batch's file could not become articles.

Bad records are quarantined one by one and never sink a batch, so a file that is half broken
would otherwise enter training data with every other gate GO. This gate grades the share of
records quarantined (records read: articles plus rejections), lists the reasons with a count and
an example each, and warns when the file broke off (the pages before the break were kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lvm_pipeline.gates.result import GateResult, Rule, above, at_most, judge

GATE = "quarantine"
TRUNCATED = "truncated or corrupt file"  # the reason kind of `sources.records.corrupt_file`


@dataclass(frozen=True)
class QuarantineThresholds:
    go_share: float = 0.02  # share of records quarantined; GO at or below (DESIGN section 6)
    stop_share: float = 0.20  # STOP above; WARN in between


@dataclass(frozen=True)
class QuarantineReason:
    """One kind of rejection in a batch: how many, and the first example."""

    kind: str
    count: int
    locator: str
    reason: str
    excerpt: str


def check_quarantine(n_records: int, reasons: Sequence[QuarantineReason],
                     thresholds: QuarantineThresholds = QuarantineThresholds()) -> GateResult:
    """Grade the share of a batch's `n_records` records that were quarantined, with its `reasons`."""
    t = thresholds
    n_quarantined = sum(r.count for r in reasons)
    truncated = next((r for r in reasons if r.kind == TRUNCATED), None)
    figures = {"n_records": n_records, "n_quarantined": n_quarantined,
               "quarantined_share": n_quarantined / n_records if n_records else None,
               "file_truncated": int(truncated is not None) if n_records else None}
    rules = {"quarantined_share": Rule((at_most(t.go_share),), above(t.stop_share)),
             "file_truncated": Rule((at_most(0),))}
    worst = [{"reason": r.kind, "records": r.count, "share": r.count / n_records, "first at": r.locator,
              "example": r.reason, "excerpt": r.excerpt} for r in sorted(reasons, key=lambda r: -r.count)]
    note = f"the file breaks off {truncated.locator} ({truncated.reason}); the records before it were kept" \
        if truncated else ""
    return judge(GATE, figures, rules, worst=worst, note=note, sizes={"quarantined_share": n_records},
                 not_graded="no records read from the file")

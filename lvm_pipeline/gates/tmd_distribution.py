"""TMD distribution: a batch's domains must be spread out and mostly known.

Unknown is the explicit code UNKNOWN (-1, confidence below threshold), never domain 0 (Science); a
concept not labelled yet (NOT_ASSIGNED, -2) counts as unknown too. Shares are of all concepts,
unknown ones included. The domain is set per article, so the shares are graded with the number of
articles as their sample size: a batch of 5 articles says little about its spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lvm_pipeline.gates.result import GateResult, Rule, above, at_least, below, judge
from lvm_pipeline.tmd.schema import NOT_ASSIGNED, UNKNOWN

GATE = "tmd_distribution"


@dataclass(frozen=True)
class TmdDistributionThresholds:
    go_top_share: float = 0.5  # GO below
    stop_top_share: float = 0.7  # STOP above
    go_unknown_share: float = 0.3  # GO below
    stop_unknown_share: float = 0.5  # STOP above
    domain_share: float = 0.05  # a domain "counts" above this share
    go_min_domains: int = 5  # GO with at least this many counting domains ...
    domain_count_min_articles: int = 50  # ... graded from this many articles up (5 articles cannot show a spread)


def check_tmd_distribution(domain_codes: Sequence[int], domain_names: Sequence[str], n_articles: int | None = None,
                           thresholds: TmdDistributionThresholds = TmdDistributionThresholds()) -> GateResult:
    """Spread of domain codes (0..len(domain_names)-1, UNKNOWN or NOT_ASSIGNED) over one batch's concepts,
    from `n_articles` articles (the shares' sample size; None: as many as concepts)."""
    t = thresholds
    codes = np.asarray(domain_codes, dtype=np.int64)
    if codes.size and (codes.min() < NOT_ASSIGNED or codes.max() >= len(domain_names)):
        raise ValueError(f"domain codes must lie in {NOT_ASSIGNED}..{len(domain_names) - 1}, "
                         f"got {codes.min()}..{codes.max()}")
    counts = np.bincount(codes[codes >= 0], minlength=len(domain_names))
    n = int(codes.size)
    shares = counts / n if n else np.zeros(len(domain_names))
    top = int(counts.argmax())
    figures = {
        "n_concepts": n, "n_articles": n if n_articles is None else n_articles, "n_unknown": n - int(counts.sum()),
        "unknown_share": (n - int(counts.sum())) / n if n else None,
        "top_share": float(shares[top]) if n else None,
        "n_domains_over_share": int((shares > t.domain_share).sum()) if n else None,
    }
    rules = {
        "top_share": Rule((below(t.go_top_share),), above(t.stop_top_share)),
        "unknown_share": Rule((below(t.go_unknown_share),), above(t.stop_unknown_share)),
    }
    if figures["n_articles"] >= t.domain_count_min_articles:
        rules["n_domains_over_share"] = Rule((at_least(t.go_min_domains),))
    table = [("unknown", UNKNOWN, figures["n_unknown"])] + [
        (domain_names[c], c, int(counts[c])) for c in range(len(domain_names))]
    worst = [{"domain": name, "code": code, "count": count, "share": count / n}
             for name, code, count in sorted(table, key=lambda row: -row[2]) if count]
    sizes = dict.fromkeys(("top_share", "unknown_share"), figures["n_articles"])
    settings = {"domain_share": f"> {t.domain_share:g}", "domain_count_graded_from": f"{t.domain_count_min_articles} articles"}
    return judge(GATE, figures, rules, worst=worst, settings=settings, sizes=sizes,
                 note=f"top domain {domain_names[top]}" if counts.any() else "" if not n else "no known domain",
                 not_graded="the batch has no concepts")

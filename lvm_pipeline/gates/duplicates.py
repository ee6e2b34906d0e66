"""Duplicates: a batch must bring new text, not copies of what the bank (or the batch itself) already holds.

Article ids are unique across batches, but the same article under a new id and title passes that
rule: a batch of 300 demo articles repeated four times under new ids once entered training data
with every gate GO, and every copy of a text in two splits is a leak. Two figures are graded:
the share of concepts whose normalised text already occurs earlier in the batch or in an earlier
batch (exact: by hash, in PostgreSQL), and the share of articles that are near-copies of an
earlier one (MinHash, `lvm_pipeline.near_duplicates`). Copies come an article at a time, so both
shares are graded with the number of articles as their sample size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lvm_pipeline.gates.result import GateResult, Rule, above, at_most, judge
from lvm_pipeline.near_duplicates import NearDuplicate
from lvm_pipeline.text import excerpt

GATE = "duplicates"
MAX_WORST = 10


@dataclass(frozen=True)
class DuplicatesThresholds:
    go_share: float = 0.02  # GO at or below, for both shares (DESIGN section 6)
    stop_share: float = 0.10  # STOP above; WARN in between


@dataclass(frozen=True)
class ConceptCopy:
    """A concept whose normalised text occurs before it: earlier in its batch, or in `held_by` (another batch)."""

    title: str
    text: str
    earlier_title: str
    held_by: str | None  # the other batch holding the text; None: earlier in this batch


def check_duplicates(n_concepts: int, n_articles: int, copies: Sequence[ConceptCopy],
                     near_copies: Sequence[NearDuplicate], titles: dict[str, str] | None = None,
                     thresholds: DuplicatesThresholds = DuplicatesThresholds()) -> GateResult:
    """Grade a batch's exact concept copies and near-duplicate articles (`titles`: article id -> title, for examples)."""
    t, titles = thresholds, titles or {}
    in_bank = sum(c.held_by is not None for c in copies)
    figures = {"n_concepts": n_concepts, "n_articles": n_articles,
               "n_repeated_in_batch": len(copies) - in_bank, "n_already_in_bank": in_bank,
               "duplicate_concept_share": len(copies) / n_concepts if n_concepts else None,
               "n_near_duplicate_articles": len(near_copies),
               "near_duplicate_article_share": len(near_copies) / n_articles if n_articles else None}
    share = Rule((at_most(t.go_share),), above(t.stop_share))
    rules = {"duplicate_concept_share": share, "near_duplicate_article_share": share}
    worst = [{"kind": "near-duplicate article", "title": titles.get(d.key, d.key), "copy of": titles.get(d.of, d.of),
              "similarity": d.similarity, "text": ""}
             for d in sorted(near_copies, key=lambda d: -d.similarity)[:MAX_WORST]]
    worst += [{"kind": f"text already in batch {c.held_by}" if c.held_by else "text repeated in this batch",
               "title": c.title, "copy of": c.earlier_title, "similarity": 1.0, "text": excerpt(c.text)}
              for c in copies[:MAX_WORST]]
    sizes = dict.fromkeys(rules, n_articles)
    return judge(GATE, figures, rules, worst=worst, sizes=sizes, not_graded="the batch has no concepts",
                 settings={"normalised": "lower case, runs of non-alphanumerics as one space",
                           "near_duplicate": "MinHash Jaccard of word 5-shingles >= 0.8"})

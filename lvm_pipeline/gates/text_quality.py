"""Text quality: concepts should be text, not markup (DESIGN section 6, "Markup is not text").

A JSONL batch whose text carried `<p>..</p><script>x</script>` once passed every gate: the vectors
were finite and normalised, the chunks ended in full stops. This gate grades the share of concepts
still carrying HTML tags, wiki markup, entities or URLs (`lvm_pipeline.markup.markup_kinds`) and
lists the worst of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lvm_pipeline.gates.result import GateResult, Rule, above, at_most, judge
from lvm_pipeline.markup import MARKUP_KINDS, markup_kinds
from lvm_pipeline.text import excerpt

GATE = "text_quality"
MAX_WORST = 10


@dataclass(frozen=True)
class TextQualityThresholds:
    go_markup_share: float = 0.01  # share of concepts carrying any markup; GO at or below
    stop_markup_share: float = 0.05  # STOP above; WARN in between


def check_text_quality(texts: Sequence[str], titles: Sequence[str] | None = None,
                       thresholds: TextQualityThresholds = TextQualityThresholds()) -> GateResult:
    """Share of a batch's concepts carrying markup, overall and per kind; `titles` (per concept) only label
    the worst examples."""
    t = thresholds
    kinds = [markup_kinds(text) for text in texts]
    n_concepts, n_markup = len(texts), sum(1 for found in kinds if found)
    figures = {"n_concepts": n_concepts, "n_markup": n_markup,
               "markup_share": n_markup / n_concepts if n_concepts else None}
    for kind in MARKUP_KINDS:
        figures[f"{kind}_share"] = sum(kind in found for found in kinds) / n_concepts if n_concepts else None
    rules = {
        "markup_share": Rule((at_most(t.go_markup_share),), above(t.stop_markup_share)),
    }
    settings = {"kinds": "html tags (<p>, </a>), wiki markup ({{, [[, ''), entities (&amp;, &#39;), URLs"}
    return judge(GATE, figures, rules, settings=settings, worst=_worst(texts, titles, kinds),
                 sizes={"markup_share": n_concepts}, not_graded="the batch has no concepts")


def _worst(texts: Sequence[str], titles: Sequence[str] | None, kinds: list[tuple[str, ...]]) -> list[dict]:
    """Concepts carrying markup: those with the most kinds first, then in order."""
    flagged = sorted((i for i, found in enumerate(kinds) if found), key=lambda i: -len(kinds[i]))[:MAX_WORST]
    return [{**({"title": titles[i]} if titles is not None else {}), "kinds": ", ".join(kinds[i]),
             "text": excerpt(texts[i])} for i in flagged]

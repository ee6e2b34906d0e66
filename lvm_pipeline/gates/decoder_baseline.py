"""Decoder baseline: retrieval decoding round trip, text -> vector -> nearest stored concept -> text.

The caller re-encodes the text of sampled concepts (`query_vectors`, timing it as `latency_s`);
each query decodes to the text of its nearest stored vector (FAISS inner product). A stored vector
that sits next to the wrong text (vectors misaligned with their texts) decodes to the wrong text.
BLEU is sacrebleu's sentence BLEU (exp smoothing, effective order, 13a tokens) of the decoded text
against the source text, averaged over queries, on a 0-1 scale. The leave-one-out figures decode to
the nearest OTHER concept: how close the bank's neighbours are (bank density), for information only.
With an `Inversion` (vec2text's texts for some stored vectors, re-encoded by the caller) the same
figures are measured for vec2text (`v2t_` prefix) and held to the same thresholds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import faiss
import numpy as np
from sacrebleu.metrics import BLEU

from lvm_pipeline.gates._pairs import unit_rows
from lvm_pipeline.gates.result import GateResult, Rule, at_least, judge, mean_or_none
from lvm_pipeline.markdown import excerpt

GATE = "decoder_baseline"
MAX_WORST = 10
_BLEU1 = BLEU(max_ngram_order=1, effective_order=True)
_BLEU4 = BLEU(max_ngram_order=4, effective_order=True)


@dataclass(frozen=True)
class Inversion:
    """vec2text output: the stored vector of `texts[index[i]]` was inverted to `inverted[i]`, re-encoded as `vectors[i]`."""

    index: np.ndarray
    inverted: list[str]
    vectors: np.ndarray
    latency_s: float


@dataclass(frozen=True)
class DecoderBaselineThresholds:
    go_bleu4: float = 0.15  # mean sentence BLEU-4 (0-1); WARN below
    go_cos: float = 0.7  # mean cos(query, decoded stored vector); WARN below


def check_decoder_baseline(texts: Sequence[str], stored_vectors: np.ndarray, query_vectors: np.ndarray,
                           latency_s: float, query_index: Sequence[int] | None = None,
                           inversion: Inversion | None = None,
                           thresholds: DecoderBaselineThresholds = DecoderBaselineThresholds()) -> GateResult:
    """Round trip of the queries through a bank of `stored_vectors` labelled by `texts`.

    `query_vectors[q]` is the fresh encoding of `texts[query_index[q]]`; without `query_index` the
    queries are all the concepts, in order. `latency_s` is the time the caller took to encode them.
    """
    stored = np.ascontiguousarray(stored_vectors, dtype=np.float32)
    queries = np.ascontiguousarray(query_vectors, dtype=np.float32)
    source = np.arange(len(queries)) if query_index is None else np.asarray(query_index, dtype=np.int64)
    if not len(stored) or len(stored) != len(texts) or len(source) != len(queries):
        raise ValueError(f"need a non-empty bank and one text per stored vector, one index per query; got "
                         f"{len(texts)} texts, {len(stored)} stored vectors, {len(queries)} queries, "
                         f"{len(source)} query indices")
    started = time.perf_counter()
    index = faiss.IndexFlatIP(stored.shape[1])
    index.add(stored)
    _, neighbours = index.search(queries, min(2, len(stored)))
    search_s = time.perf_counter() - started
    nearest = neighbours[:, 0]
    decoded = _retrieval(texts, stored, queries, source, nearest)
    has_other = len(stored) > 1  # the nearest OTHER concept needs a second one
    other = np.where(nearest == source, neighbours[:, -1], nearest)[: len(queries) * has_other]
    left_out = _retrieval(texts, stored, queries[: len(other)], source[: len(other)], other)
    n = len(queries)
    figures = {
        "n_bank": len(stored), "n_queries": n,
        **{k: mean_or_none(v) for k, v in decoded.items()},
        **{f"loo_{k}": mean_or_none(v) for k, v in left_out.items()},
        "encode_ms_per_query": 1000 * latency_s / n if n else None,
        "search_ms_per_query": 1000 * search_s / n if n else None,
    }
    rules = {"n_queries": Rule((at_least(1),)), "bleu4": Rule((at_least(thresholds.go_bleu4),)),
             "mean_cos": Rule((at_least(thresholds.go_cos),))}
    if inversion is not None:
        references = [texts[i] for i in np.asarray(inversion.index).tolist()]
        scores = _scores(inversion.inverted, references, inversion.vectors, stored[np.asarray(inversion.index)])
        figures |= {"v2t_n": len(references), **{f"v2t_{k}": mean_or_none(v) for k, v in scores.items()},
                    "v2t_ms_per_query": 1000 * inversion.latency_s / len(references) if references else None}
        rules |= {"v2t_bleu4": Rule((at_least(thresholds.go_bleu4),)), "v2t_mean_cos": Rule((at_least(thresholds.go_cos),))}
    return judge(GATE, figures, rules, worst=_worst(texts, source, nearest, decoded),
                 settings={"bleu": "sacrebleu sentence BLEU, averaged, 0-1"},
                 note=_note(figures, thresholds))


def _note(figures: dict, t: DecoderBaselineThresholds) -> str:
    """Exact-match rate, and the misalignment hint: queries find their vectors, but not their texts."""
    if not figures["n_queries"]:
        return ""
    note = f"exact match {figures['exact_match']:.1%}"
    if figures["mean_cos"] >= t.go_cos and figures["bleu4"] < t.go_bleu4:
        note += "; decoded vectors match the queries but carry other texts: vectors misaligned with texts?"
    return note


def _retrieval(texts: Sequence[str], stored: np.ndarray, queries: np.ndarray, source: np.ndarray,
               decoded: np.ndarray) -> dict[str, np.ndarray]:
    """Per query: scores of the decoded stored concept against the query's own concept."""
    return _scores([texts[d] for d in decoded.tolist()], [texts[s] for s in source.tolist()], queries, stored[decoded])


def _scores(hypotheses: Sequence[str], references: Sequence[str], a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Per pair: exact text match, cos(a, b), BLEU-1 and BLEU-4 of hypothesis against reference."""
    pairs = list(zip(hypotheses, references))
    return {
        "exact_match": np.array([hyp == ref for hyp, ref in pairs], dtype=np.float64),
        "mean_cos": np.einsum("nd,nd->n", unit_rows(a), unit_rows(b)),
        "bleu1": np.array([_bleu(_BLEU1, hyp, ref) for hyp, ref in pairs]),
        "bleu4": np.array([_bleu(_BLEU4, hyp, ref) for hyp, ref in pairs]),
    }


def _bleu(metric: BLEU, hypothesis: str, reference: str) -> float:
    return min(metric.sentence_score(hypothesis, [reference]).score / 100, 1.0)


def _worst(texts: Sequence[str], source: np.ndarray, nearest: np.ndarray, decoded: dict[str, np.ndarray]) -> list[dict]:
    """Non-exact decodes, lowest BLEU-4 first."""
    missed = np.flatnonzero(decoded["exact_match"] == 0)
    order = missed[np.lexsort((decoded["mean_cos"][missed], decoded["bleu4"][missed]))][:MAX_WORST]
    return [{"source": excerpt(texts[source[q]]), "decoded": excerpt(texts[nearest[q]]),
             "cos": float(decoded["mean_cos"][q]), "bleu4": float(decoded["bleu4"][q])} for q in order]

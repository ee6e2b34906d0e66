"""Decoder baseline: leave-one-out retrieval decoding, text -> vector -> nearest OTHER stored concept -> text.

Retrieval decoding of a stored text against a bank that holds that same text is always perfect
(BLEU 1, cosine 1): a gate that cannot fail. So the round trip is leave-one-out: each sampled
concept's text is encoded afresh (`query_vectors`) and decoded to the nearest stored concept that
is neither the concept itself nor an exact duplicate of its text. That measures what retrieval
decoding gives for a vector whose text is not in the bank, the case of every model prediction.

Figures, averaged over queries: BLEU-1/4 of the decoded text against the source text (sacrebleu
sentence BLEU, exp smoothing, effective order, 13a tokens, on a 0-1 scale); `stored_cos`, the
cosine of the query to the decoded stored vector; `text_cos`, the cosine of the query to the
decoded TEXT encoded afresh (`reencode`); and `random_cos`, the query against a random other
concept (the encoder's floor). `text_cos` is graded: it falls to the floor when the bank is too
sparse to decode anything near (a handful of unrelated concepts) or when stored vectors sit next
to the wrong texts (then `stored_cos` stays high: the summary says so).
With an `Inversion` (vec2text's texts for some stored vectors, re-encoded by the caller) the
vec2text round trip is measured too (`v2t_` prefix) and graded by DESIGN.md's BLEU-4 / cosine bars.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from lvm_pipeline.arrays import row_cosines
from lvm_pipeline.gates.result import GateResult, Rule, at_least, judge, mean_or_none
from lvm_pipeline.text import bleu_scores, excerpt

GATE = "decoder_baseline"
MAX_WORST = 10
CANDIDATES = 16  # nearest neighbours searched per query, to skip the query and duplicates of its text


@dataclass(frozen=True)
class Inversion:
    """vec2text output: the stored vector of `texts[index[i]]` was inverted to `inverted[i]`, re-encoded as `vectors[i]`."""

    index: np.ndarray
    inverted: list[str]
    vectors: np.ndarray
    latency_s: float


@dataclass(frozen=True)
class DecoderBaselineThresholds:
    go_text_cos: float = 0.45  # leave-one-out: mean cos(query, decoded text re-encoded); WARN below
    go_v2t_bleu4: float = 0.15  # vec2text round trip (when configured): mean sentence BLEU-4 (0-1); WARN below
    go_v2t_cos: float = 0.7  # vec2text: mean cos(query, inverted text re-encoded); WARN below


def check_decoder_baseline(texts: Sequence[str], stored_vectors: np.ndarray, query_vectors: np.ndarray,
                           latency_s: float, reencode: Callable[[list[str]], np.ndarray],
                           query_index: Sequence[int] | None = None, inversion: Inversion | None = None,
                           thresholds: DecoderBaselineThresholds = DecoderBaselineThresholds(),
                           seed: int = 0) -> GateResult:
    """Leave-one-out round trip of the queries through a bank of `stored_vectors` labelled by `texts`.

    `query_vectors[q]` is the fresh encoding of `texts[query_index[q]]` (default: every concept, in
    order), encoded in `latency_s`; `reencode` encodes the decoded texts.
    """
    stored = np.ascontiguousarray(stored_vectors, dtype=np.float32)
    queries = np.ascontiguousarray(query_vectors, dtype=np.float32)
    source = np.arange(len(queries)) if query_index is None else np.asarray(query_index, dtype=np.int64)
    if len(stored) != len(texts) or len(source) != len(queries):
        raise ValueError(f"need one text per stored vector and one index per query; got "
                         f"{len(texts)} texts, {len(stored)} stored vectors, {len(queries)} queries, "
                         f"{len(source)} query indices")
    started = time.perf_counter()
    decoded = leave_one_out_nearest(texts, stored, queries, source)
    search_s = time.perf_counter() - started
    found = decoded >= 0
    queries, source, decoded = queries[found], source[found], decoded[found]
    decoded_texts = [texts[j] for j in decoded.tolist()]
    source_texts = [texts[s] for s in source.tolist()]
    fresh = reencode(decoded_texts) if decoded_texts else np.zeros((0, stored.shape[1]), np.float32)
    scores = bleu_scores(decoded_texts, source_texts) | {
        "stored_cos": row_cosines(queries, stored[decoded]), "text_cos": row_cosines(queries, fresh),
        "random_cos": row_cosines(queries, stored[_random_others(source, len(stored), seed)])}
    n = int(found.sum())
    figures = {"n_bank": len(stored), "n_queries": len(found), "n_decoded": n,
               **{name: mean_or_none(values) for name, values in scores.items()},
               "encode_ms_per_query": 1000 * latency_s / len(found) if len(found) else None,
               "search_ms_per_query": 1000 * search_s / len(found) if len(found) else None}
    rules = {"text_cos": Rule((at_least(thresholds.go_text_cos),))}
    if inversion is not None:
        references = [texts[i] for i in np.asarray(inversion.index).tolist()]
        v2t = bleu_scores(inversion.inverted, references) | {
            "exact_match": np.array([a == b for a, b in zip(inversion.inverted, references)], dtype=np.float64),
            "cos": row_cosines(inversion.vectors, stored[np.asarray(inversion.index)])}
        figures |= {"v2t_n": len(references), **{f"v2t_{k}": mean_or_none(v) for k, v in v2t.items()},
                    "v2t_ms_per_query": 1000 * inversion.latency_s / len(references) if references else None}
        rules |= {"v2t_bleu4": Rule((at_least(thresholds.go_v2t_bleu4),)),
                  "v2t_cos": Rule((at_least(thresholds.go_v2t_cos),))}
    worst = _worst(source_texts, decoded_texts, scores)
    return judge(GATE, figures, rules, worst=worst, note=_note(figures, thresholds), not_graded="nothing to decode",
                 settings={"bleu": "sacrebleu sentence BLEU, averaged, 0-1",
                           "leave_one_out": "the query's own concept and exact duplicates of its text left out"})


def leave_one_out_nearest(texts: Sequence[str], stored: np.ndarray, queries: np.ndarray,
                          source: np.ndarray) -> np.ndarray:
    """Per query, the nearest stored concept that is not `source` and has another text; -1 if none is in reach."""
    if not len(stored) or not len(queries):
        return np.full(len(queries), -1, dtype=np.int64)
    index = faiss.IndexFlatIP(stored.shape[1])
    index.add(stored)
    _, neighbours = index.search(queries, min(CANDIDATES, len(stored)))
    decoded = np.full(len(queries), -1, dtype=np.int64)
    for q, (s, row) in enumerate(zip(source.tolist(), neighbours.tolist())):
        decoded[q] = next((j for j in row if j >= 0 and j != s and texts[j] != texts[s]), -1)
    return decoded


def _note(figures: dict, t: DecoderBaselineThresholds) -> str:
    """The encoder's floor, and the misalignment hint: vectors near the query whose texts are not."""
    if not figures["n_decoded"]:
        return "no query had another concept to decode to"
    note = f"random-concept floor {figures['random_cos']:.3g}"
    if figures["text_cos"] < t.go_text_cos <= figures["stored_cos"]:
        note += "; the nearest stored vectors match the queries but their texts do not: vectors misaligned with texts?"
    return note


def _random_others(source: np.ndarray, n_bank: int, seed: int) -> np.ndarray:
    """A random stored concept other than each query's own (itself when the bank has one concept)."""
    if n_bank < 2:
        return source.copy()
    offset = np.random.default_rng(seed).integers(1, n_bank, size=len(source))
    return (source + offset) % n_bank


def _worst(sources: list[str], decoded: list[str], scores: dict[str, np.ndarray]) -> list[dict]:
    """The decodes furthest from their source text (lowest text cosine) first."""
    order = np.argsort(scores["text_cos"], kind="stable")[:MAX_WORST]
    return [{"source": excerpt(sources[q]), "decoded": excerpt(decoded[q]), "text_cos": float(scores["text_cos"][q]),
             "stored_cos": float(scores["stored_cos"][q]), "bleu4": float(scores["bleu4"][q])} for q in order]

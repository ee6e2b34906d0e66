"""Gates: decisions on real (encoded demo corpus) and synthetic batches, and the result's JSON/markdown."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from lvm_pipeline.gates import (
    CoherenceThresholds,
    GateResult,
    Inversion,
    check_chunk_boundaries,
    check_coherence,
    check_data_integrity,
    check_decoder_baseline,
    check_directionality,
    check_text_quality,
    check_tmd_distribution,
)
from lvm_pipeline.gates.chunk_boundaries import is_sentence_complete
from lvm_pipeline.gates.decoder_baseline import leave_one_out_nearest
from lvm_pipeline.gates.duplicates import ConceptCopy, check_duplicates
from lvm_pipeline.gates.quarantine import QuarantineReason, check_quarantine
from lvm_pipeline.gates.result import Rule, above, below, judge, wilson_interval
from lvm_pipeline.near_duplicates import find_near_duplicates, signature
from lvm_pipeline.segmentation import segment

DOMAINS = ["Science", "Mathematics", "Technology", "Engineering", "Medicine", "Psychology", "Philosophy",
           "History", "Literature", "Art", "Economics", "Law", "Politics", "Education", "Environment", "Software"]


@pytest.fixture(scope="module")
def real_batch(encoder, vital_records) -> dict:
    """Sentence concepts of 60 real articles, ordered (article, seq), with their vectors."""
    rows = [(r["id"], r["title"], c.text) for r in vital_records for c in segment(r["text"], "sentence")]
    ids, titles, texts = map(list, zip(*rows))
    return {"ids": np.array(ids), "titles": titles, "texts": texts, "vectors": encoder.encode(texts)}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --- coherence -------------------------------------------------------------------------------------

def test_ordered_real_articles_are_coherent(real_batch):
    b = real_batch
    result = check_coherence(b["ids"], b["titles"], b["texts"], b["vectors"])
    assert result.decision in ("GO", "WARN")
    assert result.figures["gap"] > 0.2
    assert result.figures["random_mean_cos"] < result.figures["mean_cos"]
    assert len(result.worst) == 10 and result.worst[0]["cos"] <= result.worst[-1]["cos"]


def test_concepts_shuffled_across_articles_stop(real_batch):
    b = real_batch
    perm = np.random.default_rng(1).permutation(len(b["texts"]))
    result = check_coherence(b["ids"], b["titles"], [b["texts"][i] for i in perm], b["vectors"][perm])
    assert result.decision == "STOP"
    assert result.status["gap"] == "STOP"


def test_shuffle_stops_even_when_the_encoders_baseline_is_high():
    rng = np.random.default_rng(0)
    vectors = _unit(3.0 + rng.normal(size=(200, 32)))  # every pair has cos ~0.9: absolute figures say GO
    ids = np.repeat(np.arange(40), 5)
    result = check_coherence(ids, [str(i) for i in ids], ["x"] * 200, vectors)
    assert result.status["mean_cos"] == "GO" and result.status["gap"] == "STOP"
    assert result.decision == "STOP"


def test_coherence_thresholds_are_configurable(real_batch):
    b = real_batch
    strict = CoherenceThresholds(go_mean=0.95, stop_mean=0.9)
    assert check_coherence(b["ids"], b["titles"], b["texts"], b["vectors"], thresholds=strict).decision == "STOP"


# --- data integrity --------------------------------------------------------------------------------

def _clean_integrity(n: int = 20, dim: int = 8) -> dict:
    vectors = _unit(np.random.default_rng(0).normal(size=(n, dim)))
    return {"cpe_ids": [f"c{i}" for i in range(n)], "texts": [f"Sentence {i}." for i in range(n)],
            "vectors": vectors, "n_concepts": n, "n_vectors": n, "expected_dim": dim,
            "encoder_fingerprints": {"abc"}}


def _nan_vector(a):
    a["vectors"][3] = np.nan


def _wrong_dim(a):
    a["vectors"] = np.hstack([a["vectors"], np.zeros((len(a["vectors"]), 1))])


def _non_unit(a):
    a["vectors"][5] *= 1.01


def _missing_vectors(a):
    a["n_vectors"] -= 1


def _duplicate_id(a):
    a["cpe_ids"][7] = a["cpe_ids"][2]


def _empty_text(a):
    a["texts"][4] = "  \n"


def _two_fingerprints(a):
    a["encoder_fingerprints"] = ["abc", "def"]


@pytest.mark.parametrize("breaks, figure", [
    (_nan_vector, "n_non_finite"), (_wrong_dim, "dim"), (_non_unit, "n_bad_norm"),
    (_missing_vectors, "coverage"), (_duplicate_id, "n_duplicate_ids"), (_empty_text, "n_empty_text"),
    (_two_fingerprints, "n_fingerprints"),
])
def test_each_integrity_violation_stops(breaks, figure):
    args = _clean_integrity()
    breaks(args)
    result = check_data_integrity(**args)
    assert result.decision == "STOP" and not result.passed
    assert [name for name, s in result.status.items() if s == "STOP"] == [figure]


def test_clean_integrity_goes_and_offending_rows_are_shown():
    assert check_data_integrity(**_clean_integrity()).decision == "GO"
    args = _clean_integrity()
    _nan_vector(args)
    _empty_text(args)
    worst = check_data_integrity(**args).worst
    assert [(w["cpe_id"], w["problem"]) for w in worst] == [("c3", "non-finite vector"), ("c4", "empty text")]


# --- chunk boundaries ------------------------------------------------------------------------------

def test_sentence_complete_endings():
    assert all(map(is_sentence_complete, ["A cat.", "Really?", 'He said "no."', "(See above.)", "Wait… "]))
    assert not any(map(is_sentence_complete, ["A list:", "and then", "Figure 3"]))


def _chunk(chars: int, end: str = ".") -> str:
    return ("word " * chars)[: chars - 1] + end


def test_chunk_boundaries_thresholds():
    assert check_chunk_boundaries([_chunk(300)] * 100).decision == "GO"
    assert check_chunk_boundaries([_chunk(300)] * 90 + [_chunk(1200)] * 10).status["long_share"] == "WARN"
    incomplete = check_chunk_boundaries([_chunk(300)] * 60 + [_chunk(300, ",")] * 40)
    assert incomplete.decision == "WARN" and incomplete.status["complete_share"] == "WARN"
    broken = check_chunk_boundaries([_chunk(300)] * 40 + [_chunk(300, ",")] * 60, titles=["T"] * 100)
    assert broken.decision == "STOP"
    assert broken.worst[0]["problem"] == "incomplete ending" and broken.worst[0]["title"] == "T"
    with pytest.raises(ValueError, match="segmentation mode"):
        check_chunk_boundaries([_chunk(300)], "paragraph")


def test_chunk_lengths_are_graded_per_mode():
    sentences = [_chunk(130)] * 10
    assert check_chunk_boundaries(sentences, "sentence").decision == "GO"
    packed = check_chunk_boundaries(sentences, "packed")
    assert packed.decision == "WARN" and packed.status["mean_chars"] == "WARN"
    assert check_chunk_boundaries([_chunk(300)] * 10, "sentence").status["mean_chars"] == "WARN"


def test_a_few_short_chunks_are_not_an_alert_a_batch_of_them_is():
    one_in_100 = [_chunk(300)] * 99 + [_chunk(30)]
    assert check_chunk_boundaries(one_in_100, "packed").decision == "GO"  # 1% short
    tiny = check_chunk_boundaries([_chunk(40)] * 50, "packed")  # every concept under 50 characters
    assert tiny.decision == "WARN" and tiny.status["short_share"] == "WARN" and tiny.figures["short_share"] == 1
    assert check_chunk_boundaries([_chunk(40)] * 50, "sentence").status["mean_chars"] == "WARN"


def test_real_sentence_chunks_go_in_sentence_mode(real_batch):
    result = check_chunk_boundaries(real_batch["texts"], "sentence")
    assert result.decision == "GO", result.summary


# --- TMD distribution ------------------------------------------------------------------------------

def test_tmd_distribution_decisions():
    balanced = np.tile(np.arange(8), 25)
    assert check_tmd_distribution(balanced, DOMAINS).decision == "GO"
    assert check_tmd_distribution(np.full(100, 7), DOMAINS).decision == "STOP"
    unknown = check_tmd_distribution(np.r_[np.full(60, -1), np.arange(40) % 8], DOMAINS)
    assert unknown.decision == "STOP" and unknown.status["unknown_share"] == "STOP"
    skewed = check_tmd_distribution(np.r_[np.full(60, 2), np.arange(40) % 8], DOMAINS)
    assert skewed.decision == "WARN" and skewed.worst[0] == {"domain": "Technology", "code": 2, "count": 65,
                                                             "share": 0.65}
    with pytest.raises(ValueError):
        check_tmd_distribution([16], DOMAINS)


# --- directionality --------------------------------------------------------------------------------

def _drifting_articles(n_articles: int = 30, length: int = 8, reverse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Random walks whose steps shrink along each article: later neighbours are more alike."""
    rng = np.random.default_rng(0)
    articles = []
    for _ in range(n_articles):
        steps = rng.normal(size=(length, 64)) * np.linspace(1.5, 0.2, length)[:, None]
        walk = np.cumsum(steps, axis=0) + rng.normal(size=64)
        articles.append(walk[::-1] if reverse else walk)
    return np.repeat(np.arange(n_articles), length), _unit(np.concatenate(articles))


def test_directionality_is_reported_never_graded():
    forward = check_directionality(*_drifting_articles())
    assert forward.figures["forward_k1"] > forward.figures["backward_k1"]
    assert {f"delta_k{k}" for k in (1, 2, 3)} <= forward.figures.keys()
    backward = check_directionality(*_drifting_articles(reverse=True))
    assert backward.figures["delta_k1"] < 0 and backward.worst[0]["delta_k1"] < 0
    # a property of the text, not a fault: both directions are GO, with the figures in the summary
    assert forward.decision == backward.decision == "GO" and not backward.status
    assert "informational" in backward.summary and f"delta_k1={backward.figures['delta_k1']:.4g}" in backward.summary


def test_directionality_compares_the_same_centres_within_articles():
    ids = np.array([0, 0, 0, 1, 1, 1, 1])  # centres k=1: rows 1, 4, 5; k=2: none
    result = check_directionality(ids, _unit(np.random.default_rng(0).normal(size=(7, 4))))
    assert result.figures["n_k1"] == 3 and result.figures["n_k2"] == 0
    assert result.figures["delta_k2"] is None and result.decision != "STOP"


# --- decoder baseline ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def decoder_queries(encoder, real_batch) -> dict:
    sample = np.random.default_rng(0).choice(len(real_batch["texts"]), size=40, replace=False)
    started = time.perf_counter()
    queries = encoder.encode([real_batch["texts"][i] for i in sample])
    return {"index": sample, "vectors": queries, "latency_s": time.perf_counter() - started}


def test_decoder_round_trip_is_leave_one_out(encoder, real_batch, decoder_queries):
    q, texts = decoder_queries, real_batch["texts"]
    result = check_decoder_baseline(texts, real_batch["vectors"], q["vectors"], q["latency_s"], encoder.encode,
                                    query_index=q["index"])
    assert result.decision == "GO", result.summary
    # never the query's own concept, never a copy of its text: not the perfect 1.0 a self-lookup gives
    assert all(row["decoded"] != row["source"] for row in result.worst)
    assert 0.3 < result.figures["text_cos"] < 0.95 and result.figures["bleu4"] < 0.5
    assert result.figures["text_cos"] > result.figures["random_cos"] + 0.2


def test_duplicates_of_the_query_text_are_left_out_of_the_bank(real_batch):
    texts = real_batch["texts"][:30] * 2  # every text twice
    vectors = np.concatenate([real_batch["vectors"][:30]] * 2)
    decoded = leave_one_out_nearest(texts, vectors, vectors[:30], np.arange(30))
    assert all(j >= 0 and texts[j] != texts[i] for i, j in enumerate(decoded))


def test_decoder_catches_vectors_misaligned_with_texts(encoder, real_batch, decoder_queries):
    q = decoder_queries
    rolled = np.roll(real_batch["vectors"], 1, axis=0)
    result = check_decoder_baseline(real_batch["texts"], rolled, q["vectors"], q["latency_s"], encoder.encode,
                                    query_index=q["index"])
    assert result.decision == "WARN" and result.status["text_cos"] == "WARN"
    assert result.figures["stored_cos"] > 0.9  # the vectors are found, their texts are someone else's
    assert "misaligned" in result.summary
    assert len(result.worst) == 10 and result.worst[0]["source"] != result.worst[0]["decoded"]


def test_decoder_warns_on_a_bank_too_sparse_to_decode(encoder, real_batch):
    firsts = np.flatnonzero(np.r_[True, real_batch["ids"][1:] != real_batch["ids"][:-1]])[:40]
    texts = [real_batch["texts"][i] for i in firsts]  # one concept from each of 40 unrelated articles
    result = check_decoder_baseline(texts, real_batch["vectors"][firsts], encoder.encode(texts), 0.1, encoder.encode)
    assert result.decision == "WARN" and result.status["text_cos"] == "WARN"


def test_a_vec2text_inversion_is_graded_like_retrieval(encoder, real_batch, decoder_queries):
    """vec2text cannot run here (no weights); its output is graded from texts and their re-encodings."""
    q, texts, stored = decoder_queries, real_batch["texts"], real_batch["vectors"]
    index = q["index"][:10]
    faithful = [texts[i] for i in index]  # an inversion that got every text back
    good = check_decoder_baseline(texts, stored, q["vectors"], q["latency_s"], encoder.encode, query_index=q["index"],
                                  inversion=Inversion(index, faithful, encoder.encode(faithful), 2.0))
    assert good.decision == "GO" and good.figures["v2t_bleu4"] == 1.0 and good.figures["v2t_cos"] > 0.99
    assert good.figures["v2t_exact_match"] == 1.0
    assert good.figures["v2t_ms_per_query"] == pytest.approx(200.0)
    garbled = ["the of and a in to is was " * 3 for _ in index]
    bad = check_decoder_baseline(texts, stored, q["vectors"], q["latency_s"], encoder.encode, query_index=q["index"],
                                 inversion=Inversion(index, garbled, encoder.encode(garbled), 2.0))
    assert bad.decision == "WARN" and bad.status["v2t_bleu4"] == "WARN" and bad.status["v2t_cos"] == "WARN"
    assert bad.status["text_cos"] == "GO"  # retrieval itself is still fine


# --- the result type -------------------------------------------------------------------------------

def _every_gate() -> list[GateResult]:
    ids, vectors = _drifting_articles(n_articles=5, length=6)
    texts = [f"Concept {i} of its article." for i in range(len(ids))]
    titles = [f"Article {a}" for a in ids]
    return [
        check_data_integrity(list(map(str, range(len(ids)))), texts, vectors, len(ids), len(ids), 64, ["fp"]),
        check_coherence(ids, titles, texts, vectors),
        check_chunk_boundaries(texts, "packed", titles),
        check_tmd_distribution(np.r_[ids, -1, -2], DOMAINS),
        check_directionality(ids, vectors),
        check_decoder_baseline(texts, vectors, vectors[:4], 0.01, lambda batch: vectors[: len(batch)],
                               query_index=range(4)),
        check_text_quality(texts + ["<p>left over</p>"], titles + ["Markup"]),
        check_quarantine(40, [QuarantineReason("malformed JSON", 3, "line 4", "malformed JSON: x", "{")]),
        check_duplicates(len(ids), 5, [ConceptCopy("Article 1", texts[0], "Article 0", "other.jsonl")], []),
        check_tmd_distribution([], DOMAINS),
    ]


@pytest.mark.parametrize("result", _every_gate(), ids=lambda r: r.gate)
def test_result_serialises_and_reads(result):
    assert json.loads(json.dumps(result.to_json(), allow_nan=False)) == result.to_json()
    text = result.markdown()
    assert result.summary in text and (result.decision if result.graded else "not graded") in text
    assert all(f"| {name} |" in text for name in result.figures)
    assert result.passed == (result.decision != "STOP")


def test_decoder_on_an_empty_batch_is_not_graded_instead_of_crashing():
    result = check_decoder_baseline([], np.zeros((0, 8), np.float32), np.zeros((0, 8), np.float32), 0.0,
                                    lambda texts: np.zeros((len(texts), 8), np.float32))
    assert not result.graded and result.summary.startswith("not graded") and result.figures["n_decoded"] == 0


# --- shares judged with their sample size; empty batches ---------------------------------------------

def test_a_share_is_graded_on_its_interval_so_small_samples_do_not_alert():
    assert wilson_interval(0.8, 5)[0] == pytest.approx(0.435, abs=1e-3)  # 4 of 5: could well be under 0.5
    top = Rule((below(0.5),), above(0.7))
    assert top.grade(0.8, wilson_interval(0.8, 5)) == "GO"
    assert top.grade(0.8, wilson_interval(0.8, 40)) == "WARN"  # clearly over 0.5, not clearly over 0.7
    assert top.grade(0.8, wilson_interval(0.8, 1000)) == "STOP"
    assert top.grade(0.8) == "STOP"  # without a sample size: the point value, as before
    result = judge("g", {"share": 0.8, "n": 5}, {"share": top}, sizes={"share": 5})
    assert result.decision == "GO" and result.intervals["share"][2] == 5
    assert "(n=5)" in result.markdown() and "on the 95% interval" in result.thresholds["share"]


def test_tmd_distribution_judges_its_shares_by_articles_not_concepts():
    single_topic = np.r_[np.full(36, 7), np.full(4, 2)]  # 90% history over 40 articles: STOP
    assert check_tmd_distribution(single_topic, DOMAINS, n_articles=40).decision == "STOP"
    codes = np.r_[np.full(28, 7), np.full(12, 2)]  # 70% of the concepts of 5 articles (the daily delta)
    few = check_tmd_distribution(codes, DOMAINS, n_articles=5)
    assert few.decision == "GO" and few.figures["n_articles"] == 5 and "n_domains_over_share" not in few.status
    assert check_tmd_distribution(codes, DOMAINS, n_articles=1000).decision == "WARN"  # the same share, well measured


def test_an_empty_batch_is_not_graded_except_by_the_gate_that_says_why():
    empty = np.zeros((0, 8), np.float32)
    results = [check_coherence([], [], [], empty), check_chunk_boundaries([]), check_text_quality([]),
               check_tmd_distribution([], DOMAINS), check_duplicates(0, 0, [], [])]
    assert all(not r.graded and r.summary.startswith("not graded") for r in results), [r.summary for r in results]
    nothing = check_data_integrity([], [], empty, 0, 0, 8, [])
    assert nothing.decision == "STOP" and nothing.status == {"n_concepts": "STOP"}
    quarantined = check_data_integrity([], [], empty, 0, 0, 8, [], n_quarantined=3)
    assert not quarantined.graded and "quarantine gate" in quarantined.summary  # that gate gives the one alert


def test_quarantine_share_thresholds_and_truncation():
    reasons = [QuarantineReason("malformed JSON", 100, "line 2", "malformed JSON: Expecting value", "{"),
               QuarantineReason("empty text", 50, "line 9", "empty text: the 'text' field is blank", "{}")]
    half = check_quarantine(301, reasons)
    assert half.decision == "STOP" and half.figures["quarantined_share"] == pytest.approx(150 / 301)
    assert [row["reason"] for row in half.worst] == ["malformed JSON", "empty text"]  # most frequent first
    assert check_quarantine(1000, [QuarantineReason("empty text", 2, "line 1", "empty text", "")]).decision == "GO"
    assert check_quarantine(1000, [QuarantineReason("empty text", 60, "line 1", "empty text", "")]).decision == "WARN"
    truncated = check_quarantine(500, [QuarantineReason("truncated or corrupt file", 1, "after page 499",
                                                        "truncated or corrupt file: EOFError", "")])
    assert truncated.decision == "WARN" and truncated.status["file_truncated"] == "WARN"
    assert "breaks off after page 499" in truncated.summary
    assert not check_quarantine(0, []).graded


def test_duplicates_grades_exact_copies_and_near_copies():
    copies = [ConceptCopy("B", f"Sentence {i}.", "A", "a.jsonl") for i in range(30)]
    stop = check_duplicates(100, 20, copies, [])
    assert stop.decision == "STOP" and stop.figures["n_already_in_bank"] == 30
    assert stop.worst[0]["kind"] == "text already in batch a.jsonl"
    assert check_duplicates(10_000, 1_000, copies[:5], []).decision == "GO"
    assert check_duplicates(0, 0, [], []).summary.startswith("not graded")


def test_minhash_finds_a_lightly_edited_copy_and_not_a_different_article(vital_records):
    texts = [r["text"] for r in vital_records if len(r["text"].split()) > 80][:6]
    edited = " ".join("zzz" if i == 40 else w for i, w in enumerate(texts[0].split()))  # one word of 80+
    earlier = [(f"a{i}", signature(t)) for i, t in enumerate(texts[:5])]
    found = find_near_duplicates(earlier, [("copy", signature(edited)), ("other", signature(texts[5])),
                                           ("again", signature(texts[5]))])
    assert [(d.key, d.of) for d in found] == [("copy", "a0"), ("again", "other")]  # earlier in the batch counts too
    assert found[0].similarity > 0.8 and found[1].similarity == 1.0

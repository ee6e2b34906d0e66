"""The text-aware baselines on hand-built banks: the context's text (recent sentences kept), its cached
embedding (encode_context), BM25 as a ranker, the ensemble's val-only weights, and the decision against them."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_pipeline.datasets.bank import write_bank
from lvm_pipeline.datasets.sequences import WindowSpec, build_sequences
from lvm_pipeline.evaluation.benchmark import VECTOR_BASELINES, run_benchmark
from lvm_pipeline.evaluation.context_text import (
    BM25,
    ContextEmbeddings,
    EncodeContext,
    context_embeddings,
    joined_texts,
    kept_starts,
)
from lvm_pipeline.evaluation.ensemble import Ensemble
from lvm_pipeline.evaluation.queries import Queries
from lvm_pipeline.evaluation.retrieval import BankIndex, ranked_hits


class Counting:
    """The real encoder, counting the texts it is asked to encode (and optionally another fingerprint)."""

    def __init__(self, encoder, fingerprint: str | None = None):
        self.encoder, self.texts = encoder, []
        self.fingerprint = fingerprint or encoder.fingerprint
        self.max_tokens = encoder.max_tokens

    def encode(self, texts):
        self.texts += list(texts)
        return self.encoder.encode(texts)

    def token_counts(self, texts):
        return self.encoder.token_counts(texts)


ARTICLES = [
    ["The river Oyapock rises in the highlands.", "It flows north through dense forest.",
     "The Oyapock reaches the Atlantic near a small town.", "Fishing boats crowd the estuary of the Oyapock."],
    ["Marzipan is a confection of sugar and almonds.", "Bakers shape marzipan into small fruits.",
     "Lübeck is famous for its marzipan.", "Marzipan pigs are a New Year gift in Germany."],
    ["A violin has four strings tuned in fifths.", "Its body is carved from spruce and maple.",
     "Stradivari built the most prized violins.", "A violin bow is strung with horsehair."],
    ["Granite is an igneous rock rich in quartz.", "It cools slowly deep underground.",
     "Granite countertops are polished slabs.", "Quarries cut granite with wire saws."],
]


def text_bank(directory, encoder, articles=ARTICLES):
    texts = [t for article in articles for t in article]
    ids = [f"article-{a}" for a, article in enumerate(articles) for _ in article]
    n = len(texts)
    return write_bank(directory, encoder.encode(texts), {
        "cpe_id": [f"c{i}" for i in range(n)], "batch_id": ["b"] * n, "article_id": ids,
        "seq_in_article": [i for article in articles for i in range(len(article))], "concept_text": texts,
        "tmd_bits": [-1] * n, "domain_code": [-1] * n}, encoder_fingerprint=encoder.fingerprint)


def test_the_context_text_keeps_the_most_recent_sentences_within_the_token_limit():
    counts = np.array([5, 5, 5, 5, 30])
    # a separator costs one token: the last two of rows 0..3 are 5 + 1 + 5 = 11 tokens
    assert kept_starts(counts, np.array([0]), np.array([4]), max_tokens=11).tolist() == [2]
    assert kept_starts(counts, np.array([0]), np.array([4]), max_tokens=10).tolist() == [3]
    assert kept_starts(counts, np.array([0]), np.array([4]), max_tokens=100).tolist() == [0]
    assert kept_starts(counts, np.array([1]), np.array([4]), max_tokens=100).tolist() == [1]  # never before the start
    assert kept_starts(counts, np.array([0]), np.array([5]), max_tokens=10).tolist() == [4]  # the last, however long
    texts = np.array(["a", "b", "c", "d", "e"], dtype=object)
    assert joined_texts(texts, np.array([1, 3]), np.array([3, 5])) == ["b c", "d e"]


def test_encode_context_is_the_encoder_on_the_recent_joined_text_and_reuses_its_cache(tmp_path, encoder):
    bank = text_bank(tmp_path / "bank", encoder)
    counting = Counting(encoder)
    key = {"sequences_version": "v1", "max_context": 3}
    embeddings = ContextEmbeddings(bank.vectors, bank.texts, counting, tmp_path / "cache", key)
    starts, ends = np.array([0, 0, 4, 1]), np.array([1, 3, 7, 4])
    vectors = embeddings(starts, ends)
    # one concept: its bank vector, nothing encoded; longer: the encoder on the joined text
    np.testing.assert_allclose(vectors[0], bank.vectors[0], atol=1e-6)
    assert set(counting.texts) == {" ".join(ARTICLES[0][:3]), " ".join(ARTICLES[1][:3]), " ".join(ARTICLES[0][1:4])}
    expected = encoder.encode([" ".join(ARTICLES[0][:3])])[0]
    np.testing.assert_allclose(vectors[1], expected, atol=1e-5)
    assert embeddings.cost["encoded"] == 3 and embeddings.cost["seconds"] > 0

    again = Counting(encoder)  # a new process: the file is read, nothing is encoded again
    np.testing.assert_allclose(ContextEmbeddings(bank.vectors, bank.texts, again, tmp_path / "cache", key)(starts, ends),
                               vectors, atol=1e-6)
    assert again.texts == []

    for changed in (Counting(encoder, fingerprint="another-encoder"), Counting(encoder)):
        changed_key = key if changed.fingerprint == "another-encoder" else {**key, "sequences_version": "v2"}
        ContextEmbeddings(bank.vectors, bank.texts, changed, tmp_path / "cache", changed_key)(starts, ends)
        assert len(changed.texts) == 3  # another encoder or other sequences: encoded anew
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1  # the stale files are removed


def test_encode_context_truncates_from_the_start_when_the_context_is_too_long(tmp_path, encoder):
    bank = text_bank(tmp_path / "bank", encoder)
    short = Counting(encoder)
    short.max_tokens = int(encoder.token_counts([ARTICLES[0][2]])[0] + encoder.token_counts([ARTICLES[0][1]])[0] + 1)
    embeddings = ContextEmbeddings(bank.vectors, bank.texts, short, tmp_path / "cache", {"k": 1})
    embeddings(np.array([0]), np.array([3]))
    assert short.texts == [" ".join(ARTICLES[0][1:3])]  # the oldest sentence dropped, the two most recent kept
    assert embeddings.cost["truncated"] == 1


def test_bm25_ranks_the_lexical_match_first_and_its_hits_count_the_context(tmp_path, encoder):
    bank = text_bank(tmp_path / "bank", encoder)
    bm25 = BM25(bank.texts)
    _, rows = bm25.search_texts(["Who makes marzipan?", "the strings of a violin, and its bow"], 3)
    assert rows[0, 0] in (4, 5, 6, 7) and bank.texts[rows[0, 0]].lower().count("marzipan")
    assert rows[1, 0] in (8, 11)
    assert bm25.search_texts(["zzzz qqqq"], 2)[0].max() == 0  # no known word: every score 0
    # the context "Granite ... quartz" + "It cools ..." -> its own rows rank first; the no-context variant skips them
    queries = Queries(np.array([14]), np.array([12]), np.array([3]))
    _, ranked = bm25.search(queries, 4)
    assert set(ranked[0, :2].tolist()) == {12, 13}
    hits = ranked_hits(lambda rows, depth: bm25.search(queries.subset(rows), depth)[1], queries, len(bank), ks=(1, 2))
    assert hits["hit_at_1"][0] == 0 and hits["hit_at_1_no_context"][0] == (ranked[0, 2] == 14)


def test_the_decision_stops_when_a_text_baseline_beats_the_model(tmp_path, encoder):
    """Texts that chain (each sentence shares a rare word with the next), vectors that say nothing: bm25 finds the
    next sentence, a vector model cannot; the decision weighs the model against bm25 and says STOP."""
    rng = np.random.default_rng(0)
    words = [f"w{rng.integers(10**9)}" for _ in range(400 * 5)]
    articles = [[f"{words[a * 5 + i]} then {words[a * 5 + i + 1]}" for i in range(4)] for a in range(400)]
    texts = [t for article in articles for t in article]
    n = len(texts)
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    bank = write_bank(tmp_path / "bank", vectors, {
        "cpe_id": [f"c{i}" for i in range(n)], "batch_id": ["b"] * n,
        "article_id": [f"a{a}" for a in range(400) for _ in range(4)],
        "seq_in_article": [i for _ in range(400) for i in range(4)],
        "concept_text": texts, "tmd_bits": [-1] * n, "domain_code": [-1] * n})
    sequences = build_sequences(bank, spec=WindowSpec(max_context=2))

    class Mean:
        name = "mean_model"

        def predict(self, vectors, queries, tmd=None):
            return np.asarray(vectors[queries.target - 1]) + np.asarray(vectors[queries.context_start])

    result = run_benchmark(sequences, models=[Mean()], n_resamples=200)
    assert set(result.results) == {*VECTOR_BASELINES, "bm25", "mean_model"}
    assert result.decision.best_baseline == "bm25" and result.decision.decision == "STOP", result.decision.reason
    assert result.results["bm25"].estimates["hit_at_5_no_context"].value > 0.9
    assert "cosine" not in result.results["bm25"].estimates  # a ranker has no vector figures


def test_encode_context_enters_the_benchmark_with_the_banks_encoder(tmp_path, encoder):
    articles = ARTICLES * 30  # 120 articles: every split has queries
    texts = [f"{t} ({a})" for a, article in enumerate(articles) for t in article]
    ids = [f"article-{a}" for a, article in enumerate(articles) for _ in article]
    n = len(texts)
    bank = write_bank(tmp_path / "bank", encoder.encode(texts), {
        "cpe_id": [f"c{i}" for i in range(n)], "batch_id": ["b"] * n, "article_id": ids,
        "seq_in_article": [i for article in articles for i in range(len(article))], "concept_text": texts,
        "tmd_bits": [-1] * n, "domain_code": [-1] * n}, encoder_fingerprint=encoder.fingerprint)
    sequences = build_sequences(bank, spec=WindowSpec(max_context=3))
    result = run_benchmark(sequences, n_resamples=100, encoder=encoder, cache_dir=tmp_path / "cache")
    assert {"encode_context", "bm25"} <= set(result.results)
    queries = result.queries
    expected = context_embeddings(sequences, encoder, tmp_path / "cache")(queries.context_start, queries.target)
    single = queries.context_length == 1
    np.testing.assert_allclose(expected[single], bank.vectors[queries.target[single] - 1], atol=1e-6)
    assert list((tmp_path / "cache").glob("context_embeddings-*.npz"))


def test_ensemble_weights_are_chosen_on_val_and_a_test_only_signal_cannot_move_them(tmp_path):
    """Two members: one right on val and test alike, one right on test only (a planted leak). Fitted on val, the
    ensemble puts its weight on the first; the second's test-only knowledge never reaches the weights."""
    from lvm_pipeline_tests.test_datasets import synthetic_bank

    bank = synthetic_bank(tmp_path, [6] * 300, dim=32)
    sequences = build_sequences(bank, spec=WindowSpec(max_context=4))
    val_articles = set(sequences.articles["val"].tolist())

    class NoisyTarget:
        def __init__(self, name, scale_val, scale_test):
            self.name, self.scales = name, (scale_val, scale_test)

        def predict(self, vectors, queries, tmd=None):
            target = np.asarray(vectors[queries.target])
            on_val = np.isin(queries.article, list(val_articles))[:, None]
            scale = np.where(on_val, *self.scales)
            return target + scale * np.random.default_rng(0).normal(size=target.shape).astype(np.float32)

    honest, leaky = NoisyTarget("honest", 0.15, 0.15), NoisyTarget("test_only", 3.0, 0.0)
    index = BankIndex(bank.vectors)
    ensemble = Ensemble([honest, leaky]).fit(bank.vectors, sequences.windows["val"], index)
    assert ensemble.weights[0] > 0.75, ensemble.describe()
    assert ensemble.val_hit_at_5 > 0.5
    test = sequences.windows["test"]
    np.testing.assert_allclose(ensemble.predict(bank.vectors, test),
                               Ensemble([honest, leaky], ensemble.weights).predict(bank.vectors, test), atol=1e-6)
    with pytest.raises(ValueError):
        Ensemble([honest], [-1.0])


def test_encode_context_predicts_each_querys_context(tmp_path, encoder):
    bank = text_bank(tmp_path / "bank", encoder)
    embeddings = ContextEmbeddings(bank.vectors, bank.texts, encoder, tmp_path / "cache", {"k": 1})
    queries = Queries(np.array([1, 3, 6]), np.array([0, 1, 4]), np.array([0, 0, 1]))
    predicted = EncodeContext(embeddings).predict(bank.vectors, queries)
    np.testing.assert_allclose(predicted[2], encoder.encode([" ".join(ARTICLES[1][:2])])[0], atol=1e-5)
    np.testing.assert_allclose(predicted[0], bank.vectors[0], atol=1e-6)

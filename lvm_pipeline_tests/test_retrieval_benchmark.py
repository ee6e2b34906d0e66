"""The retrieval benchmark: ranx's metrics against ranks computed by hand, fusion weights chosen on val only, the
context never retrieved, lex's token overlap, the BEIR export read back, and the asset on real data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lvm_pipeline.datasets.sequences import WindowSpec, build_sequences
from lvm_pipeline.evaluation.context_text import BM25, context_embeddings
from lvm_pipeline.evaluation.queries import Queries
from lvm_pipeline.evaluation.retrieval import ranked_hits
from lvm_pipeline.evaluation.retrieval_benchmark import (
    TokenOverlap,
    export_beir,
    load_beir_qrels,
    make_qrels,
    make_run,
    per_query_metrics,
    query_ids,
    render_markdown,
    run_retrieval_benchmark,
    without_context,
)
from lvm_pipeline_tests.test_text_baselines import text_bank


class Planted:
    """A 'model' that predicts the target's own vector on the `planted` articles and a random vector elsewhere (the
    same random vector for the same query whatever the articles): a test-only leak when planted on test."""

    def __init__(self, name: str, planted_articles):
        self.name, self.planted = name, np.asarray(sorted(planted_articles), dtype=np.int64)

    def predict(self, vectors, queries: Queries, tmd=None) -> np.ndarray:
        noise = np.stack([np.random.default_rng(int(t)).normal(size=vectors.shape[1]) for t in queries.target])
        on = np.isin(queries.article, self.planted)[:, None]
        return np.where(on, np.asarray(vectors[queries.target]), noise).astype(np.float32)


@pytest.fixture(scope="module")
def small(tmp_path_factory, encoder):
    """A text bank of 120 articles whose sentences chain (each names a rare word of the next: vec and bm25 can find
    it), its sequences, and the benchmark with two planted models, both fused."""
    directory = tmp_path_factory.mktemp("retrieval")
    rng = np.random.default_rng(0)
    words = [f"w{rng.integers(10**6)}" for _ in range(120 * 5)]
    articles = [[f"The {words[a * 5 + i]} meets the {words[a * 5 + i + 1]}." for i in range(4)] for a in range(120)]
    bank = text_bank(directory / "bank", encoder, articles)
    sequences = build_sequences(bank, spec=WindowSpec(max_context=3))
    models = [Planted("leaky", sequences.articles["test"]), Planted("noise", [])]
    result = run_retrieval_benchmark(sequences, encoder, context_embeddings(sequences, encoder, directory / "cache"), models,
                                     n_resamples=200, latency_queries=0)
    return sequences, result, directory


def test_ranx_metrics_match_the_ranks_computed_by_hand():
    queries = Queries(np.array([10, 20, 30]), np.array([9, 19, 29]), np.array([0, 1, 2]))
    ids = query_ids("q", 3)
    # the target at rank 1, at rank 3 (its 40 scores all tied: the order given must hold), and absent
    others = np.arange(100, 140)
    rows = np.stack([np.r_[10, others[1:]], np.r_[others[:2], 20, others[3:]], others])
    scores = np.stack([np.linspace(1, 0, 40), np.full(40, 0.5), np.linspace(1, 0, 40)])
    values = per_query_metrics(make_qrels(ids, queries), make_run(ids, scores, rows, "hand"), ids)
    expected = {"recall_at_1": [1, 0, 0], "recall_at_5": [1, 1, 0], "recall_at_10": [1, 1, 0],
                "mrr_at_10": [1, 1 / 3, 0], "ndcg_at_10": [1, 1 / np.log2(4), 0]}  # one relevant: IDCG = 1
    assert set(values) == set(expected)
    for metric, want in expected.items():
        np.testing.assert_allclose(values[metric], want, atol=1e-9, err_msg=metric)


def test_without_context_drops_the_querys_own_rows_and_the_pads():
    queries = Queries(np.array([5]), np.array([3]), np.array([0]))  # context rows 3 and 4
    scores, rows = without_context(np.array([[9.0, 8, 7, 6, 5, 4]]), np.array([[4, 7, 3, 5, -1, 2]]), queries, 3)
    assert rows.tolist() == [[7, 5, 2]] and scores.tolist() == [[8, 6, 4]]
    _, padded = without_context(np.array([[9.0, 8]]), np.array([[3, 6]]), queries, 3)
    assert padded.tolist() == [[6, -1, -1]]


def test_the_context_rows_never_appear_in_a_run(small):
    sequences, result, _ = small
    queries, ids = result.queries, query_ids("test", len(result.queries))
    assert {"vec", "bm25", "lex", "leaky", "noise"} <= set(result.runs) and any(k == "hybrid" for k in result.kinds.values())
    for name, run in result.runs.items():
        for qid, start, target in zip(ids, queries.context_start.tolist(), queries.target.tolist()):
            retrieved = {int(doc) for doc in run[qid]}
            assert retrieved and not retrieved & set(range(start, target)), (name, qid)
    # ranx's Recall@K is the evaluation's Hit@K with the context removed (lvm_pipeline.evaluation.retrieval)
    bm25 = BM25(sequences.bank.texts)
    hits = ranked_hits(lambda rows, depth: bm25.search(queries.subset(rows), depth)[1], queries, len(sequences.bank))
    for k in (1, 5, 10):
        np.testing.assert_array_equal(result.per_query["bm25"][f"recall_at_{k}"], hits[f"hit_at_{k}_no_context"])
    # unremoved, the context ranks first (it is the query's own text): it was there to remove
    _, first = TokenOverlap(sequences.bank.texts).search(queries, 1)
    assert np.mean((first[:, 0] >= queries.context_start) & (first[:, 0] < queries.target)) > 0.9


def test_the_fusion_weight_is_chosen_on_val_and_a_test_only_signal_cannot_move_it(small):
    """`leaky` is perfect on test and random on val, `noise` random on both (the same on val): fitted on val, both
    get the same weights; chosen on test, the leak would take the weight."""
    _, result, _ = small
    assert result.estimates["leaky"]["recall_at_1"].value == 1.0 and result.estimates["noise"]["recall_at_10"].value < 0.5
    weights = {(f.model, f.partner): f.model_weight for f in result.fusions if f.method == "wsum"}
    assert set(weights) == {(m, p) for m in ("leaky", "noise") for p in ("vec", "bm25")}
    for partner in ("vec", "bm25"):
        assert weights["leaky", partner] == weights["noise", partner] < 0.5, weights
    assert {f.name for f in result.fusions} == {f"{m}+{p} {method}" for m in ("leaky", "noise") for p in ("vec", "bm25")
                                                for method in ("rrf", "wsum")}


def test_lex_ranks_the_passage_with_the_most_shared_tokens_first():
    texts = np.array(["red fish", "red blue fish", "green sea", "red blue fish tank", "Red BLUE fish, tank!"], dtype=object)
    lex = TokenOverlap(texts)
    scores, rows = lex.search_texts(["A red blue fish tank"], 5)  # "a": one letter, not a token
    assert rows[0].tolist() == [3, 4, 1, 0, 2]  # 4 shared tokens (a tie: the lower row first), then 3, 2, 0
    np.testing.assert_allclose(scores[0], [1.0, 1.0, 0.75, 0.5, 0.0])
    _, by_context = lex.search(Queries(np.array([2]), np.array([1]), np.array([0])), 2)
    assert by_context[0].tolist() == [1, 3]  # the query is row 1's text: itself first, then the lower of the ties
    assert lex.nbytes > 0


def test_the_beir_export_loads_back_as_the_same_qrels(small):
    sequences, result, directory = small
    files = export_beir(sequences.bank, result.queries, directory / "beir")
    ids = query_ids("test", len(result.queries))
    assert load_beir_qrels(files["qrels"]).to_dict() == make_qrels(ids, result.queries).to_dict()
    corpus = [json.loads(line) for line in files["corpus"].read_text().splitlines()]
    assert len(corpus) == len(sequences.bank) and set(corpus[0]) >= {"_id", "title", "text"}
    assert corpus[5]["text"] == sequences.bank.texts[5] and corpus[5]["title"] == sequences.bank.article_ids[5]
    queries = [json.loads(line) for line in files["queries"].read_text().splitlines()]
    first = result.queries.subset(np.array([0]))
    assert queries[0]["_id"] == ids[0]
    assert queries[0]["metadata"]["context_ids"] == [str(r) for r in range(first.context_start[0], first.target[0])]
    assert queries[0]["text"] == " ".join(sequences.bank.texts[first.context_start[0]:first.target[0]])


def test_the_report_states_the_target_and_the_chosen_weights(small):
    _, result, _ = small
    text = render_markdown(result, {})
    assert "The predecessor's target" in text and ("): met**" in text or "): not met**" in text)
    assert "| leaky+vec wsum |" in text and "| vec | vec |" in text and "never on test" in text
    target = result.target
    assert target["best"] in {n for n, k in result.kinds.items() if k in ("lvm", "hybrid")}
    assert target["met"] == (target["best_value"] > target["reference_value"] + 0.05)


def test_the_asset_writes_the_report_and_the_beir_export(database_url, dagster_instance, vital_records):
    from dagster import materialize

    from lvm_pipeline.config import settings
    from lvm_pipeline.defs import resources
    from lvm_pipeline.defs.datasets import current_sequences, ordered_vectors, training_sequences
    from lvm_pipeline.defs.retrieval import retrieval_benchmark
    from lvm_pipeline_tests.test_validation import run_batch

    assert run_batch(dagster_instance, "b.jsonl", vital_records, mode="sentence").success
    assert materialize([ordered_vectors, training_sequences], instance=dagster_instance, resources=resources()).success
    config = {"n_resamples": 100, "latency_queries": 3, "latency_batch": 8}
    result = materialize([retrieval_benchmark], instance=dagster_instance, resources=resources(),
                         run_config={"ops": {"retrieval_benchmark": {"config": config}}})
    meta = result.asset_materializations_for_node("retrieval_benchmark")[0].metadata
    assert meta["best"].value == "none (no model)" and meta["target_met"].value is False
    report = json.loads(open(meta["json"].value).read())
    assert set(report["backends"]) == {"vec", "bm25", "lex"} and report["n_queries"] == meta["queries"].value
    assert set(report["latency_ms"]) == {"vec", "bm25", "lex"} and report["latency_ms"]["vec"]["batch_size"] == 8
    assert "| vec | vec |" in meta["report"].value
    test = current_sequences().windows["test"]
    assert load_beir_qrels(settings().exports_dir / "beir" / "qrels" / "test.tsv").to_dict() == make_qrels(
        query_ids("test", len(test)), test).to_dict()


def test_a_text_view_model_reads_its_views_and_is_timed_from_text(small, encoder):
    """An untrained text-view model predicts its view, the context's encode_context embedding: on the bank it ranks as
    vec does, and its latency runs from text (the views encoded from the joined sentences)."""
    from lvm_pipeline.evaluation.context_text import model_views
    from lvm_pipeline.models.base import build_model, registered_configs
    from lvm_pipeline.models.predictor import ModelPredictor

    sequences, _, directory = small
    model = build_model(registered_configs()["toy_gru_text"](), sequences.bank.vectors.shape[1])
    viewed = ModelPredictor(model, "viewed", views=model_views(model, sequences, encoder, directory / "cache"))
    assert viewed.uses_view
    result = run_retrieval_benchmark(sequences, encoder, context_embeddings(sequences, encoder, directory / "cache"),
                                     [viewed], n_resamples=50, fused_models=1, latency_queries=2, latency_batch=4)
    for metric, values in result.per_query["vec"].items():
        np.testing.assert_array_equal(result.per_query["viewed"][metric], values, err_msg=metric)
    assert set(result.latency) == {"vec", "bm25", "lex", "viewed"}
    assert result.latency["viewed"].single_p50_ms > 0 and result.latency["viewed"].batch_size == 4

"""The whole yardstick on synthetic banks with a planted rule, the report files, and the assets on real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dagster import materialize

from lvm_pipeline.datasets.sequences import WindowSpec, build_sequences
from lvm_pipeline.evaluation.baselines import CopyLast
from lvm_pipeline.evaluation.benchmark import V2T_SAMPLE, VECTOR_BASELINES, run_benchmark
from lvm_pipeline.evaluation.decoding import retrieval_decode
from lvm_pipeline.evaluation.queries import Queries
from lvm_pipeline.evaluation.report import render_markdown, write_report
from lvm_pipeline.evaluation.retrieval import BankIndex
from lvm_pipeline_tests.test_datasets import synthetic_bank

DIM = 32


def planted_bank(directory, n_articles: int = 300, length: int = 6, seed: int = 0):
    """Articles whose every concept after the second is g(the two before it), a rule no baseline can fit:
    linear ridge cannot (elementwise product), successor-kNN cannot (no two articles share a concept)."""
    texts = [f"x{row}" for row in range(n_articles * length)]  # texts that share no word: bm25 learns nothing
    bank = synthetic_bank(directory, [length] * n_articles, dim=DIM, seed=seed, texts=texts)
    vectors = np.load(directory / "bank_vectors.npy")
    for a in range(n_articles):
        for t in range(2, length):
            row = a * length + t
            vectors[row] = rule(vectors[row - 2], vectors[row - 1])
    np.save(directory / "bank_vectors.npy", vectors)
    return type(bank)(directory)


def rule(before_last: np.ndarray, last: np.ndarray) -> np.ndarray:
    v = before_last * last
    return (v / np.linalg.norm(v)).astype(np.float32)


class KnowsTheRule:
    """A 'model' that applies the planted rule where it can (context of two or more)."""

    name = "knows_the_rule"

    def predict(self, vectors, queries: Queries, tmd=None) -> np.ndarray:
        last = np.asarray(vectors[queries.target - 1])
        out = last.copy()
        two = queries.context_length >= 2
        before = np.asarray(vectors[queries.target[two] - 2])
        out[two] = np.stack([rule(b, a) for b, a in zip(before, last[two])]) if two.any() else out[two]
        return out


class NoisyCopyLast:
    """copy-last plus noise: what the predecessor's models amounted to."""

    name = "noisy_copy_last"

    def predict(self, vectors, queries: Queries, tmd=None) -> np.ndarray:
        last = CopyLast().predict(vectors, queries)
        return last + np.random.default_rng(0).normal(scale=0.15, size=last.shape).astype(np.float32)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    directory = tmp_path_factory.mktemp("planted")
    return build_sequences(planted_bank(directory), spec=WindowSpec(max_context=4))


def test_a_model_that_knows_the_rule_is_go_and_copy_last_plus_noise_is_stop(planted):
    good = run_benchmark(planted, models=[KnowsTheRule()], n_resamples=400)
    assert good.decision.decision == "GO", good.decision.reason
    assert good.decision.best_model == "knows_the_rule" and good.differences["knows_the_rule"].ci_low > 0
    assert set(good.results) == {*VECTOR_BASELINES, "bm25", "knows_the_rule"}  # encode_context needs an encoder
    bad = run_benchmark(planted, models=[NoisyCopyLast()], n_resamples=400)
    assert bad.decision.decision == "STOP", bad.decision.reason
    assert bad.differences["noisy_copy_last"].value <= 0
    none = run_benchmark(planted, n_resamples=400)
    assert none.decision.decision == "STOP" and "No model" in none.decision.reason


def test_the_same_queries_and_bank_for_every_predictor(planted):
    result = run_benchmark(planted, models=[KnowsTheRule()], n_resamples=200)
    n = len(planted.windows["test"])
    assert len(result.queries) == n and result.bank_size == len(planted.bank)  # the full bank, all splits
    for r in result.results.values():
        assert all(len(values) == n for values in r.per_query.values())
        for estimate in r.estimates.values():
            assert estimate.ci_low - 1e-12 <= estimate.value <= estimate.ci_high + 1e-12 or not np.isfinite(estimate.value)
    assert result.chance[5] == pytest.approx(5 / len(planted.bank))
    # context length 1 has nothing to apply the rule to: the model is only as good as copy-last there
    by_length = dict((label, e) for label, _, e in result.by_context_length["knows_the_rule"])
    assert by_length["2"].value > by_length["1"].value
    # a bank without TMD lanes: one "unknown" lane, and re-ranking by lane changes nothing
    assert [(label, count) for label, count, _ in result.by_lane["knows_the_rule"]] == [("unknown", n)]
    assert all(gain.value == 0 for gain in result.rerank_gain.values())


class NoisyOracle:
    """The target plus enough noise that it is often not among the 5 nearest."""

    name = "noisy_oracle"

    def predict(self, vectors, queries: Queries, tmd=None) -> np.ndarray:
        target = np.asarray(vectors[queries.target])
        return target + np.random.default_rng(1).normal(scale=0.25, size=target.shape).astype(np.float32)


def test_hit_at_5_by_lane_and_reranking_by_lane_on_a_bank_with_lanes(tmp_path):
    n_articles = 300
    bank = synthetic_bank(tmp_path, [6] * n_articles, dim=DIM, article_domains=[a % 3 for a in range(n_articles)])
    sequences = build_sequences(bank, spec=WindowSpec(max_context=4))
    result = run_benchmark(sequences, models=[NoisyOracle()], n_resamples=200)
    lanes = result.by_lane["noisy_oracle"]
    assert [label for label, _, _ in lanes] == ["Science", "Mathematics", "Technology"]  # DOMAINS 0, 1, 2
    assert sum(count for _, count, _ in lanes) == len(result.queries)
    plain = result.results["noisy_oracle"].estimates["hit_at_5"].value
    gain = result.rerank_gain["noisy_oracle"]
    assert 0.1 < plain < 0.9 and gain.ci_low > 0  # the target is always in the query's lane: the lane helps
    assert result.results["noisy_oracle"].estimates["hit_at_5_lane_reranked"].value == pytest.approx(plain + gain.value)


class Oracle:
    """Predicts the target itself: decodes to the target's text."""

    name = "oracle"

    def predict(self, vectors, queries: Queries, tmd=None) -> np.ndarray:
        return np.asarray(vectors[queries.target])


def test_predictions_decode_back_to_text_with_bleu_and_the_echo_loop(planted):
    texts = list(planted.bank.texts)
    row_of = {text: row for row, text in enumerate(texts)}

    def encode(batch):  # the synthetic bank's texts have no encoder: a text encodes to its own stored vector
        return np.asarray(planted.bank.vectors[[row_of[t] for t in batch]])

    result = run_benchmark(planted, models=[Oracle()], n_resamples=100, encode=encode)
    oracle, copy_last = result.results["oracle"], result.results["copy_last"]
    assert oracle.estimates["decode_bleu1"].value == pytest.approx(1.0)
    assert oracle.estimates["decode_bleu4"].value == pytest.approx(1.0)
    assert copy_last.estimates["decode_bleu4"].value < 0.9  # "Sentence 41." decoded for "Sentence 42."
    assert oracle.estimates["echo"].value == pytest.approx(1.0, abs=1e-5)
    assert copy_last.estimates["echo"].value == pytest.approx(1.0, abs=1e-5)  # it decodes to its own last concept
    assert result.results["mean_context"].estimates["echo"].value < 0.99
    targets = planted.windows["test"].target[result.examples]
    assert oracle.decoded.rows.shape == (len(targets), 5) and oracle.decoded.rows[:, 0].tolist() == targets.tolist()
    assert "echo" not in run_benchmark(planted, n_resamples=50).results["copy_last"].estimates  # no encoder, no echo


def test_the_vec2text_round_trip_inverts_the_models_predictions_on_a_sample(planted):
    """vec2text cannot run here (weights from a hub): a stand-in inverter that reads a vector as the text of its
    nearest bank concept, so an oracle's round trip is perfect and the figures can be checked."""
    texts = list(planted.bank.texts)
    row_of = {text: row for row, text in enumerate(texts)}
    index = BankIndex(planted.bank.vectors)
    inverted_rows = []

    def invert(vectors):
        inverted_rows.append(len(vectors))
        return retrieval_decode(index, texts, vectors, k=1).top_texts

    def encode(batch):
        return np.asarray(planted.bank.vectors[[row_of[t] for t in batch]])

    result = run_benchmark(planted, models=[Oracle(), KnowsTheRule()], n_resamples=100, encode=encode, invert=invert)
    assert inverted_rows == [V2T_SAMPLE, V2T_SAMPLE]  # the models only, on the sample
    oracle = result.results["oracle"].estimates
    assert oracle["v2t_bleu4"].value == pytest.approx(1.0) and oracle["v2t_echo"].value == pytest.approx(1.0, abs=1e-5)
    assert result.results["knows_the_rule"].estimates["v2t_bleu4"].value < 1.0  # it misses at context length 1
    assert not any(key.startswith("v2t_") for key in result.results["copy_last"].estimates)
    text = render_markdown(result, planted.bank.texts, {})
    assert "| predictor | decode_bleu1 | decode_bleu4 | echo | v2t_bleu1 | v2t_bleu4 | v2t_echo |" in text
    with pytest.raises(ValueError, match="needs `encode`"):
        run_benchmark(planted, n_resamples=50, invert=invert)


def test_the_report_renders_with_its_plots_and_the_json_schema(planted, tmp_path):
    result = run_benchmark(planted, models=[KnowsTheRule()], n_resamples=200)
    files = write_report(result, planted.bank.texts, tmp_path / "reports", {"bank_version": planted.bank.version})
    text = files.markdown.read_text()
    assert "## Decision: **GO**" in text and "Rule: GO only if" in text
    for name in (*VECTOR_BASELINES, "bm25", "knows_the_rule"):
        assert f"| {name} |" in text
    assert "## Hit@5 by context length" in text and "**Example 1**" in text and "- target:" in text
    assert "## Decoding back to text" in text and "| knows_the_rule | " in text
    assert "vec2text: not configured" in text
    assert "## TMD lanes" in text and "| unknown |" in text and "0.3 [same lane as the query]" in text
    assert "  5. " in text  # a model's example shows its five decoded texts with their cosines
    for path in files.plots.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
        assert f"]({path.name})" in text
    assert "data:image/png;base64," in files.text  # the UI's copy embeds the plots
    report = json.loads(files.json.read_text())
    assert {"bank_size", "n_queries", "n_articles", "chance_hit_at_5", "predictors", "decision"} <= set(report)
    for name in (*VECTOR_BASELINES, "bm25", "knows_the_rule"):
        for metric in ("hit_at_1", "hit_at_5", "hit_at_10", "cosine") if name != "bm25" else ("hit_at_5", "decode_bleu1"):
            assert set(report["predictors"][name][metric]) == {"value", "ci_low", "ci_high"}
    assert "cosine" not in report["predictors"]["bm25"]  # a ranker: no vector figures
    assert report["decision"]["decision"] == "GO" and report["decision"]["rule"].startswith("GO only if")


def test_the_bank_sequences_leakage_check_and_report_run_as_assets(database_url, dagster_instance, vital_records,
                                                                   monkeypatch, tmp_path):
    from lvm_pipeline.decoders import Vec2TextUnavailable
    from lvm_pipeline.defs import resources
    from lvm_pipeline.defs.benchmark import benchmark_report, downstream_assets, downstream_checks
    from lvm_pipeline_tests.test_validation import run_batch

    assert run_batch(dagster_instance, "b.jsonl", vital_records, mode="sentence").success
    result = materialize([*downstream_assets, *downstream_checks], instance=dagster_instance, resources=resources())
    (leakage,) = result.get_asset_check_evaluations()
    assert leakage.passed and leakage.metadata["n_shared_articles"].value == 0
    sequences = result.asset_materializations_for_node("training_sequences")[0].metadata
    assert sequences["train_windows"].value > sequences["test_windows"].value > 0
    assert "| context length |" in sequences["context_lengths"].value
    report = result.asset_materializations_for_node("benchmark_report")[0].metadata
    assert report["decision"].value == "STOP" and "No model has been trained yet" in report["report"].value
    assert json.loads(open(report["json"].value).read())["bank_size"] == report["bank_size"].value
    monkeypatch.setenv("LVM_VEC2TEXT_INVERSION", str(tmp_path))  # vec2text configured: it inverts GTR-T5 only
    monkeypatch.setenv("LVM_VEC2TEXT_CORRECTOR", str(tmp_path))
    with pytest.raises(Vec2TextUnavailable, match="768-D GTR-T5-base"):
        materialize([benchmark_report, *downstream_assets[:2]], selection=[benchmark_report.key],
                    instance=dagster_instance, resources=resources())


def test_a_trained_checkpoint_enters_the_report_beside_the_baselines(database_url, dagster_instance, vital_records):
    from lvm_pipeline.defs import resources
    from lvm_pipeline.defs.benchmark import benchmark_report, downstream_checks
    from lvm_pipeline.defs.datasets import ordered_vectors, training_sequences
    from lvm_pipeline.defs.training import LvmCheckpointConfig, beats_copy_last, lvm_checkpoint, training_loss
    from lvm_pipeline_tests.test_validation import run_batch

    assert run_batch(dagster_instance, "b.jsonl", vital_records, mode="sentence").success
    assert materialize([ordered_vectors, training_sequences, *downstream_checks], instance=dagster_instance,
                       resources=resources()).success
    toy = LvmCheckpointConfig(model="toy_gru", epochs=3, patience=10)
    trained = materialize([lvm_checkpoint, training_loss, beats_copy_last], partition_key="gru", instance=dagster_instance,
                          resources=resources(), run_config={"ops": {"lvm_checkpoint": {"config": toy.model_dump()}}},
                          raise_on_error=False)
    meta = trained.asset_materializations_for_node("lvm_checkpoint")[0].metadata
    assert meta["model"].value == "gru" and meta["epochs"].value == 3
    assert meta["config"].value["text_view"] and meta["train_config"].value["hard_negatives"] == 8  # the default recipe
    assert meta["train_config"].value["epochs"] == 3 and meta["train_config"].value["decay_over"] == "epochs"
    assert "| epoch |" in meta["history"].value
    checks = {c.check_name: c for c in trained.get_asset_check_evaluations()}
    assert set(checks) == {"training_loss", "beats_copy_last"} and checks["training_loss"].passed
    report = materialize([benchmark_report], instance=dagster_instance, resources=resources())
    text = report.asset_materializations_for_node("benchmark_report")[0].metadata["report"].value
    assert "| gru | model |" in text and "training_curves" in text
    report_json = json.loads(open(report.asset_materializations_for_node("benchmark_report")[0].metadata["json"].value).read())
    assert {"encode_context", "bm25", "ensemble"} <= set(report_json["predictors"])  # all six baselines, and the ensemble
    meta = report.asset_materializations_for_node("benchmark_report")[0].metadata
    assert meta["context_embeddings"].value > 0 and meta["context_embeddings_cost"].value["seconds"] > 0
    assert report_json["kinds"]["encode_context"] == "baseline" and report_json["kinds"]["ensemble"] == "model"
    echo = report_json["predictors"]["gru"]["echo"]  # the real encoder re-encoded the decoded texts
    assert 0 < echo["ci_low"] <= echo["value"] <= echo["ci_high"] <= 1 + 1e-6

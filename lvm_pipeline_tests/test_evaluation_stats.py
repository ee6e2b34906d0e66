"""Evaluation statistics: next-vector metrics on hand-computed banks, the cluster bootstrap's coverage and
pairing on synthetic clustered data, and the GO / WARN / STOP rule."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lvm_pipeline.evaluation import metrics as metrics_module
from lvm_pipeline.evaluation.bootstrap import ClusterBootstrap, Estimate
from lvm_pipeline.evaluation.decision import RULE, decide
from lvm_pipeline.evaluation.metrics import METRICS, next_vector_metrics
from lvm_pipeline.evaluation.queries import Queries, article_queries

SQRT2 = math.sqrt(2)

# Two articles of 2-d concepts, deliberately not unit-norm; their unit vectors are in the comments.
HAND_BANK = np.array([
    [2, 0],    # 0 article 0: (1, 0)
    [0, 3],    # 1            (0, 1)
    [1, 1],    # 2            (1, 1) / sqrt2
    [3, 4],    # 3            (0.6, 0.8)
    [-1, 0],   # 4 article 1: (-1, 0)
    [0, -2],   # 5            (0, -1)
    [4, -3],   # 6            (0.8, -0.6)
], dtype=np.float32)
HAND_ARTICLE = np.array([0, 0, 0, 0, 1, 1, 1])
HAND_QUERIES = Queries(target=np.array([3, 2, 6]), context_start=np.array([1, 0, 4]), article=np.array([0, 0, 1]))
HAND_PREDICTED = np.array([
    [5, 0],   # query 0: (1, 0), target (0.6, 0.8), context rows 1, 2
    [0, 3],   # query 1: copy of its last context row 1, target (1, 1) / sqrt2, context rows 0, 1
    [0, 0],   # query 2: a zero prediction, target (0.8, -0.6), context rows 4, 5
], dtype=np.float32)


@pytest.fixture(scope="module")
def hand_metrics() -> dict[str, np.ndarray]:
    return next_vector_metrics(HAND_PREDICTED, HAND_BANK, HAND_QUERIES, HAND_ARTICLE)


def test_cosine_and_l2_by_hand(hand_metrics):
    np.testing.assert_allclose(hand_metrics["cosine"], [0.6, 1 / SQRT2, 0.0])
    np.testing.assert_allclose(hand_metrics["l2"], [math.sqrt(0.4 ** 2 + 0.8 ** 2), math.sqrt(2 - SQRT2), 1.0])


def test_margin_by_hand_and_copy_last(hand_metrics):
    # query 1 predicts its last context vector: margin = cos(target, last) - 1
    np.testing.assert_allclose(hand_metrics["margin"], [0.6 - 1 / SQRT2, 1 / SQRT2 - 1, 0.0], atol=1e-12)


def test_contrastive_accuracy_counts_only_other_articles(hand_metrics):
    # query 0: pred (1, 0), target cos 0.6; article 1's cosines -1, 0, 0.8 -> 2 of 3 lower
    #   (counting its own article too, rows 0..3 at 1, 0, 0.71, 0.6, would give 3 of 6)
    # query 1: pred (0, 1), target cos 0.71; article 1's cosines 0, -1, -0.6 -> 3 of 3
    # query 2: zero prediction, every cosine 0 = the target's: none lower
    np.testing.assert_allclose(hand_metrics["ca"], [2 / 3, 1.0, 0.0])


def test_par_by_hand_and_copy_last_at_least_one(hand_metrics):
    # query 0: max cos(pred, ctx) = 1/sqrt2, max cos(target, ctx) = max(0.8, 1.4/sqrt2) -> 1/1.4
    # query 1 copies its last context row: max cos(pred, ctx) = 1 >= the target's 1/sqrt2
    # query 2: a zero prediction has cosine 0 to its context; the target's max is 0.6
    np.testing.assert_allclose(hand_metrics["par"], [1 / 1.4, SQRT2, 0.0])
    assert hand_metrics["par"][1] >= 1


def test_zero_prediction_gives_no_nan(hand_metrics):
    assert set(hand_metrics) == set(METRICS)
    for name, values in hand_metrics.items():
        assert values.dtype == np.float64 and values.shape == (3,), name
        assert np.isfinite(values).all(), name


def test_par_is_undefined_when_the_target_has_no_positive_cosine_to_its_context():
    queries = Queries(target=np.array([5]), context_start=np.array([4]), article=np.array([1]))  # (0,-1) after (-1,0)
    result = next_vector_metrics(np.array([[1.0, 1.0]]), HAND_BANK, queries, HAND_ARTICLE)
    assert math.isnan(result["par"][0])
    assert np.isfinite([result[name][0] for name in ("cosine", "l2", "margin", "ca")]).all()


def test_memmap_bank_gives_the_same_metrics(tmp_path, hand_metrics):
    np.save(tmp_path / "bank.npy", HAND_BANK)
    bank = np.load(tmp_path / "bank.npy", mmap_mode="r")
    assert isinstance(bank, np.memmap) and not bank.flags.writeable
    result = next_vector_metrics(HAND_PREDICTED, bank, HAND_QUERIES, HAND_ARTICLE)
    for name in METRICS:
        np.testing.assert_allclose(result[name], hand_metrics[name], err_msg=name)


def _brute_force_ca(predicted, vectors, queries, bank_article) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    pred = predicted / np.linalg.norm(predicted, axis=1, keepdims=True)
    shares = []
    for i in range(len(queries)):
        cosines = unit @ pred[i]
        other = bank_article != queries.article[i]
        shares.append(np.mean(cosines[other] < cosines[queries.target[i]]))
    return np.array(shares)


def test_batches_and_bank_chunks_do_not_change_the_metrics(monkeypatch):
    rng = np.random.default_rng(1)
    sizes = rng.integers(2, 9, size=12)
    bank_article = np.repeat(np.arange(12), sizes)
    bounds = np.stack([np.cumsum(sizes) - sizes, np.cumsum(sizes)], axis=1)
    vectors = rng.normal(size=(len(bank_article), 8)) * rng.uniform(0.5, 3, size=(len(bank_article), 1))
    queries = article_queries(bounds, max_context=3)
    predicted = rng.normal(size=(len(queries), 8))
    whole = next_vector_metrics(predicted, vectors, queries, bank_article)
    np.testing.assert_allclose(whole["ca"], _brute_force_ca(predicted, vectors, queries, bank_article))
    monkeypatch.setattr(metrics_module, "_COSINES_AT_ONCE", 3 * 5)  # 5 queries x 3 bank rows at a time
    batched = next_vector_metrics(predicted, vectors, queries, bank_article, batch_size=5)
    for name in METRICS:
        np.testing.assert_allclose(batched[name], whole[name], rtol=1e-6, err_msg=name)


def test_article_numbering_must_match_the_bank():
    with pytest.raises(ValueError, match="numbering|number"):
        next_vector_metrics(HAND_PREDICTED, HAND_BANK, HAND_QUERIES, HAND_ARTICLE + 10)
    with pytest.raises(ValueError, match="predicted"):
        next_vector_metrics(HAND_PREDICTED[:2], HAND_BANK, HAND_QUERIES, HAND_ARTICLE)


# --- cluster bootstrap ---------------------------------------------------------------------------------------


def _clustered(rng, n_clusters: int, per_cluster: int, cluster_sd: float = 1.0, noise_sd: float = 0.5):
    """(repetitions of) values with a shared effect per cluster; the true mean is 0."""
    clusters = np.repeat(np.arange(n_clusters), per_cluster)
    effect = rng.normal(0, cluster_sd, size=n_clusters)
    return clusters, effect[clusters] + rng.normal(0, noise_sd, size=clusters.size)


def test_cluster_bootstrap_covers_the_true_mean_and_a_query_bootstrap_does_not():
    rng = np.random.default_rng(7)
    repetitions, covered, naive_covered, widths, naive_widths = 300, 0, 0, [], []
    for repetition in range(repetitions):
        clusters, values = _clustered(rng, n_clusters=60, per_cluster=5)
        by_article = ClusterBootstrap(clusters, n_resamples=400, seed=repetition).estimate(values)
        by_query = ClusterBootstrap(np.arange(values.size), n_resamples=400, seed=repetition).estimate(values)
        covered += by_article.ci_low <= 0 <= by_article.ci_high
        naive_covered += by_query.ci_low <= 0 <= by_query.ci_high
        widths.append(by_article.ci_high - by_article.ci_low)
        naive_widths.append(by_query.ci_high - by_query.ci_low)
    assert 0.88 <= covered / repetitions <= 0.99
    assert naive_covered / repetitions < 0.85  # ignoring the clusters undercovers
    assert np.mean(widths) > 1.5 * np.mean(naive_widths)


def test_estimate_is_the_plain_mean_and_one_cluster_has_no_spread():
    rng = np.random.default_rng(3)
    values = rng.normal(size=40)
    estimate = ClusterBootstrap(np.zeros(40, dtype=int)).estimate(values)  # every resample draws the same cluster
    assert estimate.value == pytest.approx(values.mean())
    assert estimate.ci_low == pytest.approx(values.mean()) and estimate.ci_high == pytest.approx(values.mean())
    spread = ClusterBootstrap(np.arange(40)).estimate(values)
    assert spread.value == pytest.approx(values.mean()) and spread.ci_low < values.mean() < spread.ci_high


def test_resampled_means_weight_clusters_by_their_size():
    # cluster "a" holds three queries of 0, "b" and "c" one query of 1 each (ids need not be integers).
    # A resample draws 3 clusters with replacement; with j draws of "a" its mean is (3 - j) / (3j + 3 - j),
    # i.e. 1, 2/5, 1/7, 0 for j = 0..3 (averaging cluster means instead would give 1, 2/3, 1/3, 0),
    # and j is Binomial(3, 1/3).
    clusters = np.array(["b", "a", "a", "a", "c"])
    values = np.array([1.0, 0.0, 0.0, 0.0, 1.0])
    means = ClusterBootstrap(clusters, n_resamples=4000, seed=5).resampled_means(values)
    possible = np.array([1, 2 / 5, 1 / 7, 0])
    draws_of_a = np.abs(means[:, None] - possible[None, :]).argmin(axis=1)
    np.testing.assert_allclose(means, possible[draws_of_a], atol=1e-12)
    frequencies = np.bincount(draws_of_a, minlength=4) / means.size
    np.testing.assert_allclose(frequencies, [math.comb(3, j) * 2 ** (3 - j) / 27 for j in range(4)], atol=0.03)


def test_paired_difference_detects_a_small_shift_that_separate_intervals_do_not():
    rng = np.random.default_rng(11)
    clusters, a = _clustered(rng, n_clusters=100, per_cluster=5, cluster_sd=1.0, noise_sd=0.3)
    b = a - 0.02 + rng.normal(0, 0.01, size=a.size)
    bootstrap = ClusterBootstrap(clusters, n_resamples=1000, seed=0)
    estimate_a, estimate_b = bootstrap.estimate(a), bootstrap.estimate(b)
    assert estimate_a.ci_low < estimate_b.ci_high and estimate_b.ci_low < estimate_a.ci_high  # they overlap
    difference = bootstrap.difference(a, b)
    assert difference.value == pytest.approx(a.mean() - b.mean())
    assert difference.excludes_zero and difference.ci_low > 0
    # paired: the same resamples for both, so the interval is that of the per-resample differences
    paired = bootstrap.resampled_means(a) - bootstrap.resampled_means(b)
    np.testing.assert_allclose([difference.ci_low, difference.ci_high], np.quantile(paired, [0.025, 0.975]))


def test_bootstrap_rejects_mismatched_lengths_and_nan():
    bootstrap = ClusterBootstrap(np.repeat(np.arange(4), 3))
    with pytest.raises(ValueError, match="one value per query"):
        bootstrap.estimate(np.zeros(11))
    with pytest.raises(ValueError, match="one value per query"):
        bootstrap.difference(np.zeros(12), np.zeros(13))
    with pytest.raises(ValueError, match="NaN"):
        bootstrap.estimate(np.r_[np.zeros(11), np.nan])


def test_estimate_json_and_excludes_zero():
    assert Estimate(0.1, 0.05, 0.2).excludes_zero and Estimate(-0.1, -0.2, -0.05).excludes_zero
    assert not Estimate(0.1, -0.05, 0.2).excludes_zero
    assert json.loads(json.dumps(Estimate(0.1, 0.05, 0.2).to_json())) == {"value": 0.1, "ci_low": 0.05, "ci_high": 0.2}


# --- the decision rule -----------------------------------------------------------------------------------------


N_ARTICLES, PER_ARTICLE = 200, 5


@pytest.fixture(scope="module")
def article_bootstrap() -> ClusterBootstrap:
    return ClusterBootstrap(np.repeat(np.arange(N_ARTICLES), PER_ARTICLE), n_resamples=1000, seed=0)


def _hits(rng, rate: float) -> np.ndarray:
    """Per-query 0/1 hits whose rate varies by article (correlated queries)."""
    article_rate = np.clip(rate + rng.normal(0, 0.1, size=N_ARTICLES), 0, 1)
    return (rng.random(N_ARTICLES * PER_ARTICLE) < np.repeat(article_rate, PER_ARTICLE)).astype(np.int8)


@pytest.fixture(scope="module")
def baseline_hits() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {"copy_last": _hits(rng, 0.30), "mean_context": _hits(rng, 0.20)}


def test_copy_last_plus_noise_is_stopped(article_bootstrap, baseline_hits):
    copy_last = baseline_hits["copy_last"]
    noisy = copy_last * (np.random.default_rng(4).random(copy_last.size) > 0.2)  # loses some of copy_last's hits
    assert noisy.mean() < copy_last.mean()
    result = decide({**baseline_hits, "noisy_copy": noisy}, ["copy_last", "mean_context"], ["noisy_copy"],
                    article_bootstrap)
    assert result.decision == "STOP"
    assert (result.best_model, result.best_baseline) == ("noisy_copy", "copy_last")
    assert result.difference.value == pytest.approx(noisy.mean() - copy_last.mean())
    assert "noisy_copy" in result.reason and "copy_last" in result.reason and "points" in result.reason


def test_a_clearly_better_model_goes(article_bootstrap, baseline_hits):
    good, weak = _hits(np.random.default_rng(5), 0.50), _hits(np.random.default_rng(6), 0.10)
    result = decide({**baseline_hits, "good": good, "weak": weak}, ["copy_last", "mean_context"], ["weak", "good"],
                    article_bootstrap)
    assert result.decision == "GO" and result.best_model == "good" and result.best_baseline == "copy_last"
    assert result.difference.excludes_zero and result.difference.ci_low > 0
    points = 100 * (good.mean() - baseline_hits["copy_last"].mean())
    assert f"{points:+.1f} points (95% CI {100 * result.difference.ci_low:+.1f} to " in result.reason


def test_a_tiny_insignificant_gain_warns(article_bootstrap, baseline_hits):
    rng = np.random.default_rng(8)
    copy_last = baseline_hits["copy_last"]
    hits, misses = np.flatnonzero(copy_last == 1), np.flatnonzero(copy_last == 0)
    tweaked = copy_last.copy()
    tweaked[rng.choice(hits, 40, replace=False)] = 0  # 40 hits lost, 42 gained: +0.2 points, noisy
    tweaked[rng.choice(misses, 42, replace=False)] = 1
    result = decide({**baseline_hits, "tweaked": tweaked}, ["copy_last", "mean_context"], ["tweaked"],
                    article_bootstrap)
    assert result.decision == "WARN"
    assert result.difference.value > 0 and result.difference.ci_low < 0 < result.difference.ci_high


def test_the_best_baseline_is_the_one_with_the_highest_hit_rate(article_bootstrap, baseline_hits):
    swapped = {"copy_last": baseline_hits["mean_context"], "mean_context": baseline_hits["copy_last"]}
    result = decide(swapped, ["copy_last", "mean_context"], [], article_bootstrap)
    assert result.best_baseline == "mean_context"


def test_no_model_stops_and_names_the_best_baseline(article_bootstrap, baseline_hits):
    result = decide(baseline_hits, ["copy_last", "mean_context"], [], article_bootstrap)
    assert result.decision == "STOP" and result.best_model is None and result.difference is None
    assert "no model has been trained" in result.reason.lower()
    assert "copy_last" in result.reason and f"{100 * baseline_hits['copy_last'].mean():.1f}%" in result.reason
    assert json.loads(json.dumps(result.to_json()))["difference"] is None


def test_the_rule_text_is_the_same_for_every_decision(article_bootstrap, baseline_hits):
    rng = np.random.default_rng(9)
    candidates = {"none": [], "better": ["better"], "worse": ["worse"]}
    hits = {**baseline_hits, "better": _hits(rng, 0.6), "worse": _hits(rng, 0.05)}
    results = [decide(hits, ["copy_last", "mean_context"], models, article_bootstrap) for models in candidates.values()]
    assert {r.decision for r in results} == {"STOP", "GO"}
    assert {r.rule for r in results} == {RULE}
    assert {r.to_json()["rule"] for r in results} == {RULE}


def test_decide_rejects_bad_inputs(article_bootstrap, baseline_hits):
    with pytest.raises(ValueError, match="baseline"):
        decide(baseline_hits, [], [], article_bootstrap)
    with pytest.raises(ValueError, match="missing|no Hit@5"):
        decide(baseline_hits, ["copy_last"], ["absent"], article_bootstrap)
    with pytest.raises(ValueError, match="0/1"):
        decide({**baseline_hits, "scores": np.full(N_ARTICLES * PER_ARTICLE, 0.5)}, ["copy_last"], ["scores"],
               article_bootstrap)

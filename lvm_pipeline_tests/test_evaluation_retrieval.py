"""Retrieval metrics (Hit@K on the full bank and without the query's context, within-article rank) and the
four baselines, against hand computation and brute-force numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_pipeline.arrays import unit_rows
from lvm_pipeline.evaluation.baselines import CopyLast, MeanContext, Ridge, SuccessorKNN, context_means
from lvm_pipeline.evaluation.lanes import reranked_hits
from lvm_pipeline.evaluation.queries import Queries, article_queries
from lvm_pipeline.evaluation.retrieval import BankIndex, chance_at_k, retrieval_ranks, within_article_rank

KS = (1, 5, 10)


def angles(*degrees: float) -> np.ndarray:
    """Unit vectors in the plane at the given angles."""
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def one_query(target: int, context_start: int) -> Queries:
    return Queries(np.array([target]), np.array([context_start]), np.array([0]))


def random_bounds(rng: np.random.Generator, n_rows: int, low: int, high: int) -> np.ndarray:
    sizes = rng.integers(low, high, size=n_rows // low)
    ends = np.cumsum(sizes)
    ends = ends[ends < n_rows]
    starts = np.r_[0, ends]
    return np.stack([starts, np.r_[ends, n_rows]], axis=1)


@pytest.fixture(scope="module")
def random_case():
    """A 2,000 x 32 bank in articles of 5..60 concepts, each an AR(1) walk (neighbouring concepts are similar);
    300 queries with whole-article contexts; half the predictions are noisy targets, half noisy copies of the
    last context vector (so removing the context matters)."""
    rng = np.random.default_rng(7)
    bank = rng.standard_normal((2000, 32)).astype(np.float32)
    bounds = random_bounds(rng, len(bank), 5, 60)
    for start, end in bounds:
        for row in range(start + 1, end):
            bank[row] = 0.8 * bank[row - 1] + 0.6 * bank[row]
    queries = article_queries(bounds)
    queries = queries.subset(np.sort(rng.choice(len(queries), 300, replace=False)))
    source = np.where(rng.random(len(queries)) < 0.5, queries.target, queries.last)
    noise = rng.standard_normal((len(queries), 32)) * rng.uniform(0.05, 1.5, size=(len(queries), 1))
    predicted = (unit_rows(bank[source]) * np.sqrt(32) + noise * np.sqrt(32) / 4).astype(np.float32)
    return bank, bounds, queries, predicted


def reference_hits(bank: np.ndarray, predicted: np.ndarray, queries: Queries, ks=KS) -> dict[str, np.ndarray]:
    """Brute force: argsort of the cosines to every bank row, with and without the context rows."""
    cosines = unit_rows(predicted) @ unit_rows(bank).T
    columns = np.arange(len(bank))
    in_context = (columns >= queries.context_start[:, None]) & (columns < queries.target[:, None])
    hits = {}
    for suffix, scores in (("", cosines), ("_no_context", np.where(in_context, -np.inf, cosines))):
        rank = np.argmax(np.argsort(-scores, axis=1) == queries.target[:, None], axis=1)
        for k in ks:
            hits[f"hit_at_{k}{suffix}"] = (rank < k).astype(float)
    return hits


# --- Hit@K ---------------------------------------------------------------------------------------------

def test_prediction_equal_to_target_hits_at_1():
    bank = angles(*range(0, 360, 15))
    queries = Queries(np.array([3, 10, 20]), np.array([0, 8, 19]), np.array([0, 0, 0]))
    hits = retrieval_ranks(BankIndex(bank), bank[queries.target], queries)
    for k in KS:
        assert hits[f"hit_at_{k}"].tolist() == [1.0, 1.0, 1.0]
        assert hits[f"hit_at_{k}_no_context"].tolist() == [1.0, 1.0, 1.0]


def test_prediction_equal_to_another_row_ranks_by_cosine():
    # 12 rows; the prediction is row 0 (0 deg): row 2 (25 deg) is its 3rd nearest, row 11 (180 deg) its 12th
    bank = angles(0, 10, 25, 45, 60, 80, 100, 120, 140, 155, 170, 180)
    queries = Queries(np.array([2, 11]), np.array([1, 10]), np.array([0, 0]))
    hits = retrieval_ranks(BankIndex(bank), bank[[0, 0]], queries)
    assert hits["hit_at_1"].tolist() == [0.0, 0.0]
    assert hits["hit_at_5"].tolist() == [1.0, 0.0]
    assert hits["hit_at_10"].tolist() == [1.0, 0.0]
    # without its context (row 1, 10 deg) row 2 is 2nd nearest; row 11 is 11th of 11
    assert hits["hit_at_1_no_context"].tolist() == [0.0, 0.0]
    assert hits["hit_at_5_no_context"].tolist() == [1.0, 0.0]


def test_copy_last_misses_on_full_bank_but_hits_without_its_context():
    # article rows 0..2 at 90, 0, 10 deg; others far. Copy-last predicts row 1: its nearest row is itself,
    # then the target row 2. Removing the context (rows 0, 1) leaves the target nearest.
    bank = angles(90, 0, 10, 200, 250, 300, 330)
    queries = one_query(target=2, context_start=0)
    predicted = CopyLast().predict(bank, queries)
    hits = retrieval_ranks(BankIndex(bank), predicted, queries)
    assert hits["hit_at_1"].tolist() == [0.0]
    assert hits["hit_at_5"].tolist() == [1.0]
    assert hits["hit_at_1_no_context"].tolist() == [1.0]


def test_context_removal_only_removes_the_query_own_context():
    # row 1 (0 deg) is nearest but is not in the context [2, 3): removing the context changes nothing
    bank = angles(90, 0, 200, 10, 250)
    hits = retrieval_ranks(BankIndex(bank), angles(0), one_query(target=3, context_start=2))
    assert hits["hit_at_1"].tolist() == hits["hit_at_1_no_context"].tolist() == [0.0]
    assert hits["hit_at_5_no_context"].tolist() == [1.0]


def test_hits_equal_brute_force(random_case):
    bank, _, queries, predicted = random_case
    hits = retrieval_ranks(BankIndex(bank), predicted, queries, batch_size=64)
    expected = reference_hits(bank, predicted, queries)
    assert hits.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(hits[name], expected[name], err_msg=name)
    # the case exercises what it claims: misses, hits, and hits that only appear without the context
    assert 0.1 < hits["hit_at_1"].mean() < 0.9
    assert np.any(hits["hit_at_1_no_context"] > hits["hit_at_1"])


def test_ivf_with_every_list_probed_equals_flat(random_case):
    bank, _, queries, predicted = random_case
    ivf = BankIndex(bank, ivf_above=500)
    assert ivf.nlist is not None and BankIndex(bank).nlist is None
    ivf.nprobe = ivf.nlist
    assert ivf.size == len(bank)
    flat_hits = retrieval_ranks(BankIndex(bank), predicted, queries)
    for name, values in retrieval_ranks(ivf, predicted, queries).items():
        np.testing.assert_array_equal(values, flat_hits[name], err_msg=name)


def test_capped_context_depth_gives_a_lower_bound(random_case):
    bank, _, queries, predicted = random_case
    index = BankIndex(bank)
    exact = retrieval_ranks(index, predicted, queries)
    capped = retrieval_ranks(index, predicted, queries, max_context_depth=2)
    short = queries.context_length <= 2
    assert np.any(capped["hit_at_10_no_context"] < exact["hit_at_10_no_context"])  # the cap does bite here
    for k in KS:
        name = f"hit_at_{k}_no_context"
        assert np.all(capped[name] <= exact[name])
        np.testing.assert_array_equal(capped[name][short], exact[name][short])
        np.testing.assert_array_equal(capped[f"hit_at_{k}"], exact[f"hit_at_{k}"])


def test_zero_prediction_does_not_crash():
    bank = angles(0, 90, 180)
    scores, ids = BankIndex(bank).search(np.zeros((1, 2), np.float32), 2)
    assert np.all(scores == 0) and set(ids[0]) <= {0, 1, 2}
    hits = retrieval_ranks(BankIndex(bank), np.zeros((1, 2)), one_query(target=2, context_start=1))
    assert set(hits) == {f"hit_at_{k}{s}" for k in KS for s in ("", "_no_context")}


def test_chance():
    assert chance_at_k(2000, 5) == 0.0025


# --- within-article rank -------------------------------------------------------------------------------

def test_within_article_rank_by_hand():
    # article A rows 0..3 at 0, 30, 60, 90 deg; article B rows 4..6 at 0, 45, 180 deg
    bank = angles(0, 30, 60, 90, 0, 45, 180)
    bounds = np.array([[0, 4], [4, 7]])
    queries = Queries(np.array([2, 2, 6, 1]), np.array([0, 0, 4, 0]), np.array([0, 0, 1, 0]))
    predicted = np.concatenate([angles(50, 20, 0), np.zeros((1, 2), np.float32)])
    rank, size = within_article_rank(predicted, bank, queries, bounds)
    # 50 deg: row 2 nearest -> 1; 20 deg: rows 1, 0 nearer -> 3; row 6 is farthest from 0 deg in B -> 3;
    # a zero prediction ties with everything and ranks last
    assert rank.tolist() == [1, 3, 3, 4]
    assert size.tolist() == [4, 4, 3, 4]


def test_within_article_rank_reads_in_spans_like_brute_force(random_case):
    bank, bounds, queries, predicted = random_case
    rank, size = within_article_rank(predicted, bank, queries, bounds, batch_rows=50)
    assert np.array_equal((rank, size), within_article_rank(predicted, bank, queries, bounds))
    unit_bank, unit_predicted = unit_rows(bank), unit_rows(predicted)
    for i, target in enumerate(queries.target):
        start, end = bounds[np.searchsorted(bounds[:, 0], target, side="right") - 1]
        cosines = unit_bank[start:end] @ unit_predicted[i]
        assert rank[i] == 1 + np.sum(cosines > cosines[target - start])
        assert size[i] == end - start


# --- baselines -----------------------------------------------------------------------------------------

def test_copy_last_and_mean_context_by_hand():
    bank = np.arange(12, dtype=np.float32).reshape(6, 2)  # row r = (2r, 2r + 1)
    queries = Queries(np.array([3, 1, 5]), np.array([1, 0, 4]), np.array([0, 0, 1]))
    np.testing.assert_array_equal(CopyLast().predict(bank, queries), [[4, 5], [0, 1], [8, 9]])
    np.testing.assert_allclose(MeanContext().predict(bank, queries), [[3, 4], [0, 1], [8, 9]])
    assert CopyLast().predict(bank, queries).dtype == MeanContext().predict(bank, queries).dtype == np.float32


def test_context_means_batched_over_gaps_equal_a_loop():
    rng = np.random.default_rng(1)
    bank = rng.standard_normal((3000, 8)).astype(np.float32)
    queries = article_queries(random_bounds(rng, len(bank), 3, 80), max_context=30)
    queries = queries.subset(rng.permutation(len(queries))[:500])  # sparse, unordered: batches span gaps
    expected = [bank[start:target].mean(axis=0) for start, target in zip(queries.context_start, queries.target)]
    np.testing.assert_allclose(context_means(bank, queries, batch_size=37), expected, rtol=1e-5, atol=1e-6)


def affine_articles(rng: np.random.Generator, n_articles: int, length: int, dim: int, noise: float):
    """Articles following v_t = m + R (v_{t-1} - m) + noise (R orthogonal): the target is affine in the last vector."""
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    offset = 2 * unit_rows(rng.standard_normal((1, dim)))[0]
    rows = []
    for _ in range(n_articles):
        state = unit_rows(rng.standard_normal((1, dim)))[0]
        for _ in range(length):
            rows.append(offset + state + noise * rng.standard_normal(dim))
            state = rotation @ state
    return np.asarray(rows, dtype=np.float32)


def split_queries(n_articles: int, length: int, n_train: int, n_val: int) -> tuple[Queries, Queries, Queries]:
    bounds = np.stack([np.arange(n_articles) * length, np.arange(1, n_articles + 1) * length], axis=1)
    train_end, val_end = n_train * (length - 1), (n_train + n_val) * (length - 1)
    queries = article_queries(bounds, max_context=6)
    pick = np.arange(len(queries))
    return queries.subset(pick[:train_end]), queries.subset(pick[train_end:val_end]), queries.subset(pick[val_end:])


def test_ridge_recovers_a_planted_linear_rule():
    rng = np.random.default_rng(2)
    bank = affine_articles(rng, n_articles=80, length=12, dim=16, noise=0.01)
    train, val, test = split_queries(80, 12, n_train=40, n_val=20)
    ridge = Ridge(batch_size=100).fit(bank, train, val)
    predicted = ridge.predict(bank, test)
    assert predicted.dtype == np.float32 and predicted.shape == (len(test), 16)
    cosines = np.einsum("nd,nd->n", unit_rows(predicted), unit_rows(bank[test.target]))
    assert cosines.mean() > 0.95
    assert set(ridge.val_cosine) == {0.1, 1, 10, 100, 1000}
    assert ridge.chosen_lambda <= 1 and ridge.val_cosine[ridge.chosen_lambda] > ridge.val_cosine[1000]


def test_ridge_picks_a_large_lambda_for_pure_noise_targets():
    rng = np.random.default_rng(3)
    dim = 16
    bank = (np.ones(dim) / 2 + rng.standard_normal((100 * 6, dim)) / np.sqrt(dim)).astype(np.float32)
    train, val, _ = split_queries(100, 6, n_train=30, n_val=60)
    ridge = Ridge().fit(bank, train, val)
    assert ridge.chosen_lambda >= 100
    assert ridge.val_cosine[1000] > ridge.val_cosine[0.1]


def test_ridge_subsamples_train_queries_reproducibly():
    rng = np.random.default_rng(4)
    bank = affine_articles(rng, n_articles=30, length=10, dim=8, noise=0.05)
    train, val, test = split_queries(30, 10, n_train=20, n_val=5)
    first, second = (Ridge(max_train=60, seed=5).fit(bank, train, val) for _ in range(2))
    np.testing.assert_array_equal(first.predict(bank, test), second.predict(bank, test))
    assert not np.allclose(first.coef, Ridge(max_train=60, seed=6).fit(bank, train, val).coef)


def prototype_articles(rng: np.random.Generator, n_articles: int, n_prototypes: int, dim: int, noise: float):
    """Each article walks the fixed cycle of prototypes from a random start, with noise: (bank, prototype of each row)."""
    prototypes = unit_rows(rng.standard_normal((n_prototypes, dim)))
    which = np.concatenate([(rng.integers(n_prototypes) + np.arange(n_prototypes)) % n_prototypes
                            for _ in range(n_articles)])
    bank = (prototypes[which] + noise * rng.standard_normal((len(which), dim))).astype(np.float32)
    return bank, prototypes, which


def test_successor_knn_predicts_the_successor_prototype():
    rng = np.random.default_rng(5)
    bank, prototypes, which = prototype_articles(rng, n_articles=40, n_prototypes=8, dim=32, noise=0.05)
    train, _, test = split_queries(40, 8, n_train=30, n_val=0)
    knn = SuccessorKNN(k=5).fit(bank, train)
    predicted = knn.predict(bank, test)
    assert predicted.dtype == np.float32 and predicted.shape == (len(test), 32)
    successor = prototypes[(which[test.last] + 1) % 8]
    assert np.einsum("nd,nd->n", unit_rows(predicted), successor).min() > 0.9


def test_successor_knn_never_looks_up_its_own_answer():
    rng = np.random.default_rng(6)
    bank, _, _ = prototype_articles(rng, n_articles=20, n_prototypes=6, dim=16, noise=0.05)
    train, _, _ = split_queries(20, 6, n_train=20, n_val=0)
    predicted = SuccessorKNN(k=1).fit(bank, train).predict(bank, train)
    # reference: the successor of the nearest train predecessor other than the query's own last row
    cosines = unit_rows(bank[train.last]) @ unit_rows(bank[train.last]).T
    np.fill_diagonal(cosines, -np.inf)
    np.testing.assert_allclose(predicted, bank[train.target[np.argmax(cosines, axis=1)]])
    assert not np.any(np.all(predicted == bank[train.target], axis=1))


def test_baseline_names():
    assert [p.name for p in (CopyLast(), MeanContext(), Ridge(), SuccessorKNN())] == [
        "copy_last", "mean_context", "ridge", "successor_knn"]


def test_everything_reads_a_read_only_memory_map(random_case, tmp_path):
    bank, bounds, queries, predicted = random_case
    np.save(tmp_path / "bank.npy", bank)
    mapped = np.load(tmp_path / "bank.npy", mmap_mode="r")
    in_memory = retrieval_ranks(BankIndex(bank), predicted, queries)
    for name, hits in retrieval_ranks(BankIndex(mapped, batch_rows=300), predicted, queries).items():
        np.testing.assert_array_equal(hits, in_memory[name], err_msg=name)
    np.testing.assert_array_equal(within_article_rank(predicted, mapped, queries, bounds),
                                  within_article_rank(predicted, bank, queries, bounds))
    train, val = queries.subset(np.arange(200)), queries.subset(np.arange(200, 300))
    for predictor in (CopyLast(), MeanContext(), Ridge().fit(bank, train, val), SuccessorKNN().fit(bank, train)):
        np.testing.assert_allclose(predictor.predict(mapped, val), predictor.predict(bank, val), err_msg=predictor.name)


# --- TMD lanes -------------------------------------------------------------------------------------------

def test_lane_reranking_lifts_an_in_lane_target_over_nearer_concepts_of_other_lanes():
    # the prediction at 0 degrees; five other-lane concepts nearer (10..18) than the in-lane target (30)
    bank = angles(90, 30, 10, 12, 14, 16, 18)
    lanes = np.array([3, 3, 5, 5, 5, 5, 5])
    query, predicted = one_query(target=1, context_start=0), angles(0)
    index = BankIndex(bank)
    assert retrieval_ranks(index, predicted, query, (5,))["hit_at_5"].tolist() == [0.0]
    assert reranked_hits(index, predicted, query, lanes).tolist() == [1.0]  # 0.7 cos 30 + 0.3 > 0.7 cos 10
    assert reranked_hits(index, predicted, query, lanes, weight=0.05).tolist() == [0.0]  # too light to lift it
    assert reranked_hits(index, predicted, query, lanes, depth=5).tolist() == [0.0]  # beyond the shortlist
    unknown = np.where(np.arange(len(bank)) == 0, -1, lanes)  # the query's lane is its last context concept's
    assert reranked_hits(index, predicted, query, unknown).tolist() == [0.0]


def test_lane_reranking_without_lane_information_is_the_plain_cosine_order(random_case):
    bank, _, queries, predicted = random_case
    index = BankIndex(bank)
    plain = retrieval_ranks(index, predicted, queries, (5,))["hit_at_5"]
    lanes = np.random.default_rng(0).integers(0, 16, size=len(bank))
    assert 0 < plain.mean() < 1
    np.testing.assert_array_equal(reranked_hits(index, predicted, queries, lanes, weight=0.0), plain)
    np.testing.assert_array_equal(reranked_hits(index, predicted, queries, np.full(len(bank), 7)), plain)  # one lane
    np.testing.assert_array_equal(reranked_hits(index, predicted, queries, np.full(len(bank), -1)), plain)  # none
    assert not np.array_equal(reranked_hits(index, predicted, queries, lanes), plain)

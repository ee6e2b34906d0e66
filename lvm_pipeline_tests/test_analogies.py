"""Vector arithmetic: the analogy set as parsed, planted analogies whose answer is known (and whose nearest vector
is an input), the arithmetic within planted articles, the real encoder on the real set, and the asset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lvm_pipeline.datasets.bank import write_bank
from lvm_pipeline.datasets.sequences import WindowSpec, build_sequences
from lvm_pipeline.evaluation.analogies import (
    Arithmetic,
    VectorArithmetic,
    arithmetic_queries,
    offset_queries,
    parse_analogies,
    questions_words,
    render_markdown,
    result_json,
    within_articles,
    word_analogies,
)
from lvm_pipeline.evaluation.queries import Queries

DIM = 24
SECTIONS = ("capital-common-countries", "capital-world", "currency", "city-in-state", "family",
            "gram1-adjective-to-adverb", "gram2-opposite", "gram3-comparative", "gram4-superlative",
            "gram5-present-participle", "gram6-nationality-adjective", "gram7-past-tense", "gram8-plural",
            "gram9-plural-verbs")


pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: faster on one thread than on two contended cores


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def rectangle(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    """(4, dim) unit vectors a, b, c, d with b - a + c = d exactly: a rectangle inscribed in a circle of the unit
    sphere (centre m, orthogonal half-sides x, y, all orthogonal to m)."""
    basis, _ = np.linalg.qr(rng.normal(size=(dim, 3)))
    m, x, y = basis.T
    centre, half_x = 0.6 * m, 0.8 * np.cos(0.7) * x
    half_y = 0.8 * np.sin(0.7) * y
    return np.stack([centre + half_x + half_y, centre + half_x - half_y, centre - half_x + half_y,
                     centre - half_x - half_y])


class PlantedEncoder:
    """A TextEncoder that returns planted vectors for planted words (a test input, not a model)."""

    fingerprint, max_tokens = "planted", 16

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors, self.asked = vectors, []

    def encode(self, texts):
        self.asked += list(texts)
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)

    def token_counts(self, texts):
        return np.ones(len(texts), dtype=np.int64)


# ---------------------------------------------------------------- the analogy set


def test_the_questions_words_set_parses_into_its_14_sections():
    analogies = questions_words()
    assert len(analogies) == 19_544 and analogies.sections == SECTIONS and len(analogies.vocabulary) == 905
    first = [analogies.vocabulary[i] for i in analogies.questions[0]]
    assert first == ["athens", "greece", "baghdad", "iraq"] and analogies.section[0] == 0
    assert all(word == word.lower() for word in analogies.vocabulary)
    sizes = np.bincount(analogies.section)
    assert sizes[0] == 506 and sizes[SECTIONS.index("capital-world")] == 4524 and sizes[-1] == 870
    groups = analogies.groups()
    assert len(groups["semantic"]) == sizes[:5].sum() == 8869 and len(groups["syntactic"]) == 10_675
    assert np.array_equal(groups["semantic"], np.flatnonzero(analogies.section < 5))
    assert list(groups)[3:] == list(SECTIONS)


def test_parsing_refuses_a_question_outside_a_section_or_of_three_words():
    assert len(parse_analogies([": s", "A b c D", "", "a b e f"]).vocabulary) == 6
    with pytest.raises(ValueError, match="line 1"):
        parse_analogies(["a b c d"])
    with pytest.raises(ValueError, match="line 2"):
        parse_analogies([": s", "a b c"])


def test_a_capped_set_keeps_a_seeded_sample_of_each_section_and_the_whole_vocabulary():
    analogies = questions_words()
    capped = analogies.capped(7, seed=3)
    assert len(capped) == 7 * 14 and np.all(np.bincount(capped.section) == 7)
    assert capped.vocabulary == analogies.vocabulary
    assert np.array_equal(capped.questions, analogies.capped(7, seed=3).questions)
    assert not np.array_equal(capped.questions, analogies.capped(7, seed=4).questions)
    assert analogies.capped(None) is analogies


# ---------------------------------------------------------------- planted analogies


def planted_set(rng: np.random.Generator, n_questions: int = 12):
    """Questions qi_a qi_b qi_c qi_d in two sections whose vectors are exact rectangles: each question's
    distractors are the other questions' words."""
    vectors, lines = {}, [": family"]
    for i in range(n_questions):
        if i == n_questions // 2:
            lines.append(": gram8-plural")
        words = [f"q{i}{letter}" for letter in "abcd"]
        vectors |= dict(zip(words, rectangle(rng)))
        lines.append(" ".join(words))
    lines.append(": unused")  # an empty section, reported nowhere
    return parse_analogies(lines, source="planted rectangles"), PlantedEncoder(vectors)


def test_planted_analogies_are_answered_and_the_chance_level_is_k_over_v_minus_3():
    analogies, encoder = planted_set(np.random.default_rng(0))
    result = word_analogies(encoder, analogies, n_resamples=200)
    assert sorted(encoder.asked) == sorted(analogies.vocabulary)  # every word embedded once
    assert np.all(result.ranks == 1)
    names = [g.name for g in result.groups]
    assert names == ["all", "semantic", "syntactic", "family", "gram8-plural"]
    for group in result.groups:
        assert group.estimates["hit_at_1"].value == group.estimates["hit_at_1"].ci_low == 1.0
    assert result.vocabulary_size == 12 * 4
    assert result.chance == {1: 1 / (48 - 3), 3: 3 / (48 - 3)}


def test_the_exclusion_of_the_inputs_is_what_makes_the_nearest_word_right():
    """b is a small step from a; d is c moved three such steps: the query is nearer c than d. The second question
    brings random distractor words into the vocabulary."""
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(rng.normal(size=(DIM, 3)))
    a, c, step = basis.T
    vectors = {"a": a, "b": unit(a + 0.05 * step), "c": c, "d": unit(c + 0.15 * step),
               **{f"x{j}": unit(rng.normal(size=DIM)) for j in range(32)}}
    query = offset_queries(a[None], vectors["b"][None], c[None])[0]
    assert query @ vectors["c"] > query @ vectors["d"] > max(query @ vectors[f"x{j}"] for j in range(32))
    distractors = [" ".join(f"x{j}" for j in range(i, i + 4)) for i in range(0, 32, 4)]
    result = word_analogies(PlantedEncoder(vectors), parse_analogies([": s", "a b c d", ": t", *distractors]),
                            n_resamples=10)
    assert result.vocabulary_size == 36 and result.ranks[0] == 1


def test_random_word_vectors_on_the_whole_set_score_near_chance():
    analogies = questions_words()
    rng = np.random.default_rng(2)
    encoder = PlantedEncoder({word: unit(rng.normal(size=64)) for word in analogies.vocabulary})
    result = word_analogies(encoder, n_resamples=200)
    overall = result.groups[0].estimates
    assert result.groups[0].n_questions == 19_544 and result.seconds["rank"] < 30
    for k in (1, 3):
        assert 0.3 * result.chance[k] < overall[f"hit_at_{k}"].value < 2 * result.chance[k]


def test_the_real_encoder_solves_many_real_analogies(real_encoder):
    result = word_analogies(real_encoder, max_per_section=40, n_resamples=200)
    groups = {g.name: g.estimates for g in result.groups}
    assert len(result.analogies) == 40 * 14
    assert groups["all"]["hit_at_1"].ci_low > 100 * result.chance[1]
    assert groups["gram8-plural"]["hit_at_3"].value > 0.8  # plurals: the easiest section


# ---------------------------------------------------------------- within articles


def articles_bank(directory, articles: list[np.ndarray], fingerprint: str = "planted"):
    """A bank of the given articles ((n_i, D) rows each), each row a distinct text."""
    vectors = np.concatenate(articles)
    n = len(vectors)
    return write_bank(directory, vectors, {
        "cpe_id": [f"c{i}" for i in range(n)], "batch_id": ["b"] * n,
        "article_id": [f"article-{a}" for a, rows in enumerate(articles) for _ in rows],
        "seq_in_article": [i for rows in articles for i in range(len(rows))],
        "concept_text": [f"Sentence {i}." for i in range(n)], "tmd_bits": [-1] * n}, encoder_fingerprint=fingerprint)


class Oracle:
    """Predicts each query's true target, and keeps the queries it was asked."""

    name = "oracle"

    def __init__(self):
        self.asked: list[Queries] = []

    def predict(self, vectors, queries, tmd=None):
        self.asked.append(queries)
        return np.asarray(vectors[queries.target], dtype=np.float32)


def test_exact_arithmetic_within_articles_hits_every_target(tmp_path):
    rng = np.random.default_rng(3)
    bank = articles_bank(tmp_path, [rectangle(rng) for _ in range(300)])
    sequences = build_sequences(bank)
    result = within_articles(sequences, [Oracle()], n_resamples=100)
    assert len(result.queries) == result.n_articles == len(sequences.articles["test"]) >= 20  # i = 0 of each
    for name in ("arithmetic", "oracle"):
        assert result.lines[name].estimates["hit_at_1"].value == 1.0
    assert result.lines["oracle"].minus_arithmetic["hit_at_1"].value == 0.0
    assert result.chance == {k: k / 1200 for k in (1, 5, 10)}


def test_random_articles_score_near_chance_and_a_predictor_of_the_target_scores_one(tmp_path):
    rng = np.random.default_rng(4)
    articles = [unit(rng.normal(size=(size, DIM))) for size in rng.integers(1, 15, size=400)]
    sequences = build_sequences(articles_bank(tmp_path, articles), spec=WindowSpec(max_context=5))
    oracle = Oracle()
    result = within_articles(sequences, [oracle], n_resamples=200)
    queries, bounds = result.queries, sequences.bank.article_bounds
    position = queries.target - bounds[queries.article, 0]
    test_sizes = np.diff(bounds[sequences.articles["test"]], axis=1).ravel()
    assert len(queries) == np.maximum(test_sizes - 3, 0).sum() > 100 and position.min() == 3
    assert np.array_equal(queries.context_length, np.minimum(position, 5))  # the window's context, capped at C
    assert np.array_equal(oracle.asked[0].target, queries.target)
    arithmetic = result.lines["arithmetic"].estimates
    assert arithmetic["hit_at_10"].value < 0.03 and arithmetic["hit_at_1"].value < 0.02  # chance: 10 / ~3000
    assert result.lines["oracle"].estimates["hit_at_1"].value == 1.0
    gain = result.lines["oracle"].minus_arithmetic["hit_at_1"]
    assert gain.value > 0.97 and gain.excludes_zero


def test_the_three_inputs_are_excluded_from_the_bank(tmp_path):
    """Articles drift by small steps: copy_last's prediction v[i+2] is itself in the bank at cosine 1; only its
    exclusion lets the target v[i+3], one step away, be first."""
    rng = np.random.default_rng(5)
    articles = []
    for _ in range(300):
        rows = [unit(rng.normal(size=DIM))]
        for _ in range(3):
            rows.append(unit(rows[-1] + 0.05 * unit(rng.normal(size=DIM))))
        articles.append(np.stack(rows))
    result = within_articles(build_sequences(articles_bank(tmp_path, articles)), n_resamples=50)
    assert list(result.lines) == ["arithmetic", "copy_last"]
    assert result.lines["copy_last"].estimates["hit_at_1"].value == 1.0
    assert result.lines["arithmetic"].estimates["hit_at_1"].value == 1.0


def test_the_arithmetic_needs_three_context_concepts():
    queries = Queries(np.array([2]), np.array([0]), np.array([0]))
    with pytest.raises(ValueError, match="3 context concepts"):
        Arithmetic().predict(np.eye(4, dtype=np.float32), queries)


def test_the_report_states_the_set_the_vocabulary_the_chance_levels_and_the_cis(tmp_path):
    rng = np.random.default_rng(6)
    analogies, encoder = planted_set(rng)
    bank = articles_bank(tmp_path, [rectangle(rng) for _ in range(100)])
    sequences = build_sequences(bank)
    result = VectorArithmetic(word_analogies(encoder, analogies, n_resamples=50),
                              within_articles(sequences, [Oracle()], n_resamples=50))
    text = render_markdown(result, {"bank_version": bank.version})
    assert "Set: planted rectangles, **12** questions in 3 sections" in text and "V = **48** words" in text
    assert "top-1 2.22%, top-3 6.67%" in text
    assert "| all | 12 | 100.0% [100.0, 100.0] | 100.0% [100.0, 100.0] |" in text
    assert f"full bank of **{len(bank)}** concepts" in text and "Hit@1 0.25%" in text
    assert "| oracle | 100.0% [100.0, 100.0] |" in text and "+0.0 pts [+0.0, +0.0]" in text
    assert f"bank_version: {bank.version}" in text
    document = result_json(result)
    assert document["analogies"]["vocabulary_size"] == 48
    assert document["analogies"]["groups"]["all"]["n_questions"] == 12
    assert set(document["within_articles"]["predictors"]) == {"arithmetic", "copy_last", "oracle"}
    assert set(document["within_articles"]["minus_arithmetic"]) == {"copy_last", "oracle"}
    without = render_markdown(VectorArithmetic(None, result.within_articles))
    assert "Left out: the configured encoder is not the bank's" in without and "V = " not in without
    assert arithmetic_queries(sequences).target.tolist() == result.within_articles.queries.target.tolist()


# ---------------------------------------------------------------- the real encoder and the asset


@pytest.fixture(scope="module")
def real_encoder():
    """The project's default encoder, loaded as the asset's resource loads it (one load for both)."""
    from lvm_pipeline.defs.resources import EncoderResource

    return EncoderResource().get()


def test_the_asset_writes_the_report_with_the_current_models(tmp_path, monkeypatch, real_encoder, vital_records):
    from dagster import DagsterInstance, materialize

    from lvm_pipeline.datasets.sequences import save_sequences
    from lvm_pipeline.defs.analogies import vector_arithmetic
    from lvm_pipeline.defs.resources import EncoderResource
    from lvm_pipeline.segmentation import segment
    from lvm_pipeline.training import TrainConfig, train
    from lvm_pipeline.training.runs import set_current

    data = tmp_path / "data"
    monkeypatch.setenv("LVM_DATA_DIR", str(data))
    concepts = [(r["id"], seq, chunk.text) for r in vital_records[:40]
                for seq, chunk in enumerate(segment(r["text"], "sentence"))]
    articles, seqs, texts = (list(column) for column in zip(*concepts))
    bank = write_bank(data / "exports", real_encoder.encode(texts), {
        "cpe_id": [f"c{i}" for i in range(len(texts))], "batch_id": ["b"] * len(texts), "article_id": articles,
        "seq_in_article": seqs, "concept_text": texts, "tmd_bits": [-1] * len(texts)},
        encoder_fingerprint=real_encoder.fingerprint)
    sequences = build_sequences(bank, spec=WindowSpec(max_context=8))
    save_sequences(sequences, data / "exports" / "sequences")
    config = TrainConfig(epochs=1, batch_size=8, max_len=8, patience=None, num_threads=1)
    train("toy_gru", sequences, data / "checkpoints" / "gru" / "run1", config, model_name="gru", progress=False)
    set_current(data / "checkpoints" / "gru" / "run1")
    (data / "checkpoints" / "lstm" / "run1").mkdir(parents=True)  # a current run without a checkpoint
    set_current(data / "checkpoints" / "lstm" / "run1")
    run_config = {"ops": {"vector_arithmetic": {"config": {"max_questions_per_section": 10, "n_resamples": 50}}}}
    instance = DagsterInstance.ephemeral()
    result = materialize([vector_arithmetic], instance=instance, resources={"encoder": EncoderResource()},
                         run_config=run_config)
    meta = result.asset_materializations_for_node("vector_arithmetic")[0].metadata
    assert meta["analogy_questions"].value == 140 and meta["vocabulary_size"].value == 905 and meta["models"].value == 1
    report = json.loads((data / "reports" / "vector_arithmetic.json").read_text())
    assert set(report["within_articles"]["predictors"]) == {"arithmetic", "copy_last", "gru"}
    assert report["within_articles"]["n_queries"] == meta["article_queries"].value > 0
    assert report["sequences_version"] == sequences.version
    assert (data / "reports" / "vector_arithmetic.md").read_text() == meta["report"].value
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(message.startswith("lstm: no checkpoint in") for message in logged)  # left out, with a log line
    assert any(message.startswith("transformer: not trained yet") for message in logged)

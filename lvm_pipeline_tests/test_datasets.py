"""The bank, article splits, window and article views, the leakage check, and the legacy exports."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_pipeline import ingest
from lvm_pipeline.datasets.bank import Bank, export_bank, open_bank, write_bank, write_legacy_npz
from lvm_pipeline.datasets.sequences import (
    SPLITS,
    SplitRatios,
    WindowSpec,
    build_sequences,
    leakage_inputs,
    load_sequences,
    save_sequences,
    write_legacy_sequences,
)
from lvm_pipeline.datasets.splits import assign_splits
from lvm_pipeline.gates.leakage import check_leakage
from lvm_pipeline_tests.conftest import write_jsonl


def synthetic_bank(directory, article_sizes: list[int], dim: int = 8, seed: int = 0, texts=None,
                   article_domains: list[int] | None = None) -> Bank:
    """A bank on disk in the exported format: articles of the given sizes, random unit vectors, in the
    given TMD domains (lanes; unknown when not given)."""
    rng = np.random.default_rng(seed)
    n = sum(article_sizes)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    articles = [f"article-{a}" for a, size in enumerate(article_sizes) for _ in range(size)]
    seqs = [i for size in article_sizes for i in range(size)]
    texts = texts or [f"Sentence {i} of {a}." for a, i in zip(articles, seqs)]
    domains = np.repeat(article_domains or [-1] * len(article_sizes), article_sizes).tolist()
    return write_bank(directory, vectors, {"cpe_id": [f"c{seed}-{i}" for i in range(n)], "batch_id": ["b"] * n,
                                           "article_id": articles, "seq_in_article": seqs, "concept_text": texts,
                                           "tmd_bits": [-1] * n,
                                           "domain_code": domains})


def test_the_bank_is_streamed_from_postgres_in_order_and_memory_mapped(conn, tmp_path, encoder, vital_records):
    for name, records in (("b1.jsonl", vital_records[:5]), ("b2.jsonl", vital_records[5:9])):
        path = write_jsonl(tmp_path / name, records)
        ingest.parse_batch(conn, path)
        ingest.chunk_batch(conn, name, "sentence")
        ingest.embed_batch(conn, name, encoder)
    with conn.cursor() as cur:  # one batch labelled (its TMD lane), the other not yet
        cur.execute("UPDATE cpe_entry SET domain_code = 4 WHERE batch_id = %s", ("b2.jsonl",))
    conn.commit()
    export = export_bank(conn, [("b2.jsonl", "h2"), ("b1.jsonl", "h1")], tmp_path / "bank", legacy_npz=True,
                         page_size=7)  # pages smaller than an article: order must survive paging
    bank = open_bank(tmp_path / "bank")
    assert bank.domain_codes.tolist() == [4 if b == "b2.jsonl" else -1 for b in bank.column("batch_id")]
    assert isinstance(bank.vectors, np.memmap) and bank.vectors.dtype == np.float32
    assert len(bank) == export.n_concepts and bank.vectors.shape[1] == encoder.dimension
    batches = bank.column("batch_id")
    assert batches[0] == "b2.jsonl" and batches[-1] == "b1.jsonl"  # in the order asked
    first = bank.article_bounds[0]
    assert bank.column("seq_in_article")[first[0]:first[1]].tolist() == list(range(first[1] - first[0]))
    np.testing.assert_allclose(bank.vectors[0], encoder.encode([bank.texts[0]])[0], atol=1e-5)
    with np.load(tmp_path / "bank" / "ordered_vectors.npz") as npz:  # no allow_pickle needed
        assert set(npz.files) == {"cpe_ids", "concept_texts", "vectors", "tmd_codes", "batch_ids", "seq_in_article",
                                  "article_ids"}
        np.testing.assert_array_equal(npz["vectors"], bank.vectors)
        assert npz["concept_texts"].tolist() == bank.texts.tolist()
    again = export_bank(conn, [("b2.jsonl", "h2"), ("b1.jsonl", "h1")], tmp_path / "bank")
    assert again.version == export.version  # the same content is the same version
    assert export_bank(conn, [("b1.jsonl", "h1")], tmp_path / "bank").version != export.version


def test_splits_are_stable_and_follow_the_ratios():
    ids = [f"article {i}" for i in range(20_000)]
    splits = assign_splits(ids)
    assert np.allclose(np.bincount(splits) / len(ids), [0.8, 0.1, 0.1], atol=0.01)
    assert assign_splits(ids[5000:5010]).tolist() == splits[5000:5010].tolist()  # independent of the rest
    other = assign_splits(ids, SplitRatios(0.5, 0.25, 0.25, salt="another"))
    assert np.allclose(np.bincount(other) / len(ids), [0.5, 0.25, 0.25], atol=0.01)
    with pytest.raises(ValueError, match="sum to 1"):
        SplitRatios(0.8, 0.3, 0.1)


def test_windows_never_cross_articles_and_cost_the_same_at_any_context_length(tmp_path):
    bank = synthetic_bank(tmp_path, [1, 2, 5, 30, 3] * 40)
    sizes = {}
    for c in (1, 5, 1000):
        sequences = build_sequences(bank, spec=WindowSpec(max_context=c))
        for split in SPLITS:
            w = sequences.windows[split]
            assert np.all(bank.bank_article[w.context_start] == bank.bank_article[w.target])
            assert np.all(w.context_length <= c) and np.all(w.context_length >= 1)
            # every position t >= 1 of each article of the split is a window
            bounds = sequences.article_bounds(split)
            assert len(w) + sequences.dropped_duplicates[split] == int((bounds[:, 1] - bounds[:, 0] - 1).sum())
        sizes[c] = save_sequences(sequences, tmp_path / f"seq{c}").stat().st_size
    assert sizes[1000] == sizes[5] == sizes[1]  # index arrays: storage does not grow with C
    strided = build_sequences(bank, spec=WindowSpec(max_context=5, stride=2)).windows["train"]
    full = build_sequences(bank, spec=WindowSpec(max_context=5)).windows["train"]
    assert 0.4 < len(strided) / len(full) < 0.7


def test_a_window_view_equals_the_exported_legacy_npz(tmp_path):
    bank = synthetic_bank(tmp_path, [4, 6, 3] * 30)
    sequences = build_sequences(bank, spec=WindowSpec(max_context=3))
    path = write_legacy_sequences(sequences, "train", tmp_path / "train.npz")
    w = sequences.windows["train"]
    with np.load(path) as npz:
        assert npz["context_sequences"].shape == (len(w), 3, 8)
        for i in np.random.default_rng(0).choice(len(w), 20, replace=False):
            length = w.context_length[i]
            np.testing.assert_array_equal(npz["context_sequences"][i, 3 - length:], bank.vectors[w.context_start[i]:w.target[i]])
            assert not npz["context_sequences"][i, :3 - length].any()
            np.testing.assert_array_equal(npz["target_vectors"][i], bank.vectors[w.target[i]])
            assert npz["target_texts"][i] == bank.texts[w.target[i]]
            assert npz["sequence_positions"][i] == bank.column("seq_in_article")[w.target[i]]


def test_saved_sequences_load_back_and_refuse_another_bank(tmp_path):
    bank = synthetic_bank(tmp_path, [3, 4, 5] * 20)
    sequences = build_sequences(bank)
    save_sequences(sequences, tmp_path / "seq")
    loaded = load_sequences(bank, tmp_path / "seq")
    assert loaded.version == sequences.version
    for split in SPLITS:
        np.testing.assert_array_equal(loaded.windows[split].target, sequences.windows[split].target)
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="cut from bank"):
        load_sequences(synthetic_bank(tmp_path / "other", [3, 4], seed=1), tmp_path / "seq")


def test_the_leakage_check_passes_clean_sequences_and_catches_planted_leaks(tmp_path):
    texts = [f"Sentence {i}." for i in range(5 * 60)]
    texts[7] = "A sentence that also stands in another article."
    bank = synthetic_bank(tmp_path, [5] * 60, texts=texts)
    sequences = build_sequences(bank)
    clean = check_leakage(**leakage_inputs(sequences))
    assert clean.decision == "GO", clean.summary

    inputs = leakage_inputs(sequences)
    train_article = inputs["article_ids"]["train"][0]
    inputs["article_ids"]["test"] = np.append(inputs["article_ids"]["test"], train_article)  # a shared article
    shared = check_leakage(**inputs)
    assert shared.decision == "STOP" and shared.figures["n_shared_articles"] == 1
    assert any(train_article in row["example"] for row in shared.worst)

    inputs = leakage_inputs(sequences)
    train_text = inputs["train_texts"][3]
    inputs["target_texts"]["val"] = np.append(inputs["target_texts"]["val"], train_text)  # a duplicated text
    duplicated = check_leakage(**inputs)
    assert duplicated.decision == "STOP" and duplicated.figures["n_duplicate_targets"] == 1

    inputs = leakage_inputs(sequences)
    first, target = inputs["window_articles"]["train"]
    inputs["window_articles"]["train"] = (first, np.roll(target, 1))  # windows that start in another article
    assert check_leakage(**inputs).figures["n_crossing_windows"] > 0


def test_val_and_test_targets_identical_to_a_train_text_are_dropped_and_counted(tmp_path):
    n_articles = 200
    texts = [f"Sentence {i}." for i in range(4 * n_articles)]
    for a in range(n_articles):  # the second sentence of every article is the same boilerplate
        texts[4 * a + 1] = "See also the list of related topics."
    bank = synthetic_bank(tmp_path, [4] * n_articles, texts=texts)
    sequences = build_sequences(bank)
    dropped = sequences.dropped_duplicates
    assert dropped["train"] == 0
    assert dropped["val"] == len(sequences.articles["val"]) and dropped["test"] == len(sequences.articles["test"])
    for split in ("val", "test"):
        assert "See also the list of related topics." not in bank.texts[sequences.windows[split].target]
    assert check_leakage(**leakage_inputs(sequences)).decision == "GO"


def test_the_legacy_ordered_npz_loads_without_pickle(tmp_path):
    bank = synthetic_bank(tmp_path, [2, 3])
    path = write_legacy_npz(bank, tmp_path / "ordered.npz")
    with np.load(path) as npz:
        assert npz["concept_texts"].dtype.kind == "U" and npz["article_ids"][2] == "article-1"

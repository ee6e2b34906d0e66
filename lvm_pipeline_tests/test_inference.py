"""`lvm-pipeline predict` and the library under it: a real encoder, a bank of real sentences, a trained toy model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lvm_pipeline import cli
from lvm_pipeline.arrays import row_cosines
from lvm_pipeline.cli import main
from lvm_pipeline.datasets.bank import open_bank, write_bank
from lvm_pipeline.datasets.sequences import WindowSpec, build_sequences
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.evaluation.decoding import echo_similarity, retrieval_decode
from lvm_pipeline.evaluation.retrieval import BankIndex
from lvm_pipeline.inference import NextConceptPredictor, report_best_checkpoint
from lvm_pipeline.models.predictor import ModelPredictor
from lvm_pipeline.segmentation import segment
from lvm_pipeline.training import TrainConfig, train
from lvm_pipeline.training.checkpoint import load_checkpoint


def test_a_prediction_decodes_to_the_banks_nearest_texts_with_their_cosines(data_dir, encoder, vital_records):
    bank = open_bank(data_dir / "exports")
    checkpoint = report_best_checkpoint(data_dir / "reports", data_dir / "checkpoints")
    assert checkpoint == data_dir / "checkpoints" / "gru" / "run1" / "best.safetensors"
    predictor = NextConceptPredictor(checkpoint, bank, encoder)
    context = [c.text for c in segment(vital_records[3]["text"], "sentence")[:2]]
    result = predictor(context + ["  "], k=4)  # blank lines are not concepts
    assert result.model == "gru" and result.context == context and len(result.neighbours) == 4
    scores = [n.score for n in result.neighbours]
    assert scores == sorted(scores, reverse=True)
    model, _ = load_checkpoint(checkpoint)
    predicted = ModelPredictor(model, "gru").predict_one(encoder.encode(context))
    texts = list(bank.texts)
    for neighbour in result.neighbours:  # each score is the cosine of the prediction to that bank concept
        row = texts.index(neighbour.text)
        assert bank.article_ids[row] == neighbour.article_id
        assert neighbour.score == pytest.approx(float(row_cosines(predicted[None], bank.vectors[row][None])[0]), abs=1e-4)
    assert set(result.latency_ms) == {"encode", "predict", "decode", "total"} and result.latency_ms["total"] > 0
    with pytest.raises(PipelineError, match="non-empty"):
        predictor([" "])


def test_decoding_a_stored_vector_finds_its_own_text_and_echoes_it(data_dir, encoder):
    bank = open_bank(data_dir / "exports")
    rows = np.array([0, 7, 21])
    decoded = retrieval_decode(BankIndex(bank.vectors), bank.texts, bank.vectors[rows], k=3)
    assert decoded.rows.shape == (3, 3) and decoded.rows[:, 0].tolist() == rows.tolist()
    assert decoded.top_texts == [bank.texts[r] for r in rows]
    np.testing.assert_allclose(echo_similarity(encoder.encode, decoded.top_texts, bank.vectors[rows]), 1.0, atol=1e-4)
    noise = np.random.default_rng(0).standard_normal((2, bank.vectors.shape[1]))
    far = retrieval_decode(BankIndex(bank.vectors), bank.texts, noise).top_texts
    assert np.all(echo_similarity(encoder.encode, far, noise) < 0.5)


def test_the_predict_command_answers_in_text_and_json_and_refuses_what_it_cannot_answer(data_dir, monkeypatch, capsys,
                                                                                       tmp_path):
    monkeypatch.setenv("LVM_DATA_DIR", str(data_dir))
    assert main(["predict", "-k", "2", "--json", "The Moon orbits the Earth.", "It has no atmosphere."]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["model"] == "gru" and len(answer["neighbours"]) == 2 and answer["context"][1] == "It has no atmosphere."
    assert main(["predict", "--family", "gru", "Paris is the capital of France."]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gru (") and "  1. " in out and "latency:" in out and "is far" not in out
    monkeypatch.setattr(cli, "FAR_COSINE", 1.01)  # every nearest text is "far" now: the note says so
    assert main(["predict", "--family", "gru", "Paris is the capital of France."]) == 0
    assert "the nearest text is far" in capsys.readouterr().out

    assert main(["predict", "--family", "lstm", "x"]) == 2
    assert "no trained lstm model yet" in capsys.readouterr().err
    monkeypatch.setenv("LVM_DATA_DIR", str(tmp_path))
    assert main(["predict", "x"]) == 2
    assert "no benchmark report" in capsys.readouterr().err


def test_a_bank_of_another_encoder_is_refused(data_dir, tmp_path, encoder):
    bank = open_bank(data_dir / "exports")
    other = write_bank(tmp_path / "bank", bank.vectors, {name: bank.column(name).tolist() for name in
                       ("cpe_id", "batch_id", "article_id", "seq_in_article", "concept_text", "tmd_bits")},
                       encoder_fingerprint="0123456789abcdef")
    with pytest.raises(PipelineError, match="encoder"):
        NextConceptPredictor(data_dir / "checkpoints" / "gru" / "run1" / "best.safetensors", other, encoder)


def test_a_text_view_model_predicts_free_text_as_it_predicts_the_same_context_in_the_bank(data_dir, encoder, tmp_path):
    """predict computes the views of the sentences it is given; they must be the bank's views of the same context."""
    from lvm_pipeline.datasets.sequences import load_sequences, save_sequences
    from lvm_pipeline.evaluation.context_text import model_views
    from lvm_pipeline.evaluation.queries import Queries
    from lvm_pipeline.models.base import build_model

    bank = open_bank(data_dir / "exports")
    sequences = build_sequences(bank, spec=WindowSpec(max_context=8))
    save_sequences(sequences, tmp_path / "sequences")
    sequences = load_sequences(bank, tmp_path / "sequences")
    views = model_views(build_model("toy_gru_text", bank.vectors.shape[1]), sequences, encoder, tmp_path / "cache")
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-2, max_len=8, patience=None, num_threads=1)
    with pytest.raises(PipelineError, match="text view"):
        train("toy_gru_text", sequences, tmp_path / "no-views", config, progress=False)
    result = train("toy_gru_text", sequences, tmp_path / "run", config, model_name="gru_text", progress=False, views=views)
    start, end = (int(x) for x in next(b for b in bank.article_bounds if b[1] - b[0] >= 4))
    sentences = [str(t) for t in bank.texts[start:start + 3]]
    answer = NextConceptPredictor(result.best_checkpoint, bank, encoder)(sentences, k=3)
    model, _ = load_checkpoint(result.best_checkpoint)
    query = Queries(np.array([start + 3]), np.array([start]), np.array([int(bank.bank_article[start])]))
    expected = retrieval_decode(BankIndex(bank.vectors), bank.texts,
                                ModelPredictor(model, "gru_text", views=views).predict(bank.vectors, query), k=3)
    assert [n.text for n in answer.neighbours] == expected.texts[0]
    np.testing.assert_allclose([n.score for n in answer.neighbours], expected.scores[0], atol=1e-4)

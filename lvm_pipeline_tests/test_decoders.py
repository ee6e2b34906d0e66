"""vec2text's loading code: clear refusals when the package, the weights or the encoder do not fit."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from lvm_pipeline.decoders import Vec2TextInverter, Vec2TextUnavailable, check_invertible


def test_missing_weights_are_named(tmp_path):
    with pytest.raises(Vec2TextUnavailable, match="inversion weights: no directory"):
        Vec2TextInverter(tmp_path / "nope", tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("vec2text") is not None, reason="vec2text is installed here")
def test_missing_package_says_how_to_install(tmp_path):
    (tmp_path / "inv").mkdir()
    (tmp_path / "cor").mkdir()
    with pytest.raises(Vec2TextUnavailable, match=r"pip install 'lvm_pipeline\[vec2text\]'"):
        Vec2TextInverter(tmp_path / "inv", tmp_path / "cor")


def test_only_768_d_gtr_vectors_can_be_inverted():
    check_invertible(np.zeros((2, 768), np.float32))
    with pytest.raises(Vec2TextUnavailable, match="384-D"):
        check_invertible(np.zeros((2, 384), np.float32))


def test_the_decoder_gate_refuses_vec2text_on_a_384_d_bank(database_url, encoder, conn, tmp_path, vital_records, monkeypatch):
    from lvm_pipeline import ingest, validation
    from lvm_pipeline_tests.conftest import write_jsonl

    path = write_jsonl(tmp_path / "b.jsonl", vital_records[:5])
    ingest.parse_batch(conn, path)
    ingest.chunk_batch(conn, "b.jsonl")
    ingest.embed_batch(conn, "b.jsonl", encoder)
    assert validation.evaluate_gate(conn, "b.jsonl", "decoder_baseline", encoder).figures.get("v2t_n") is None
    monkeypatch.setenv("LVM_VEC2TEXT_INVERSION", str(tmp_path))
    monkeypatch.setenv("LVM_VEC2TEXT_CORRECTOR", str(tmp_path))
    with pytest.raises(Vec2TextUnavailable, match="768-D GTR-T5-base"):
        validation.evaluate_gate(conn, "b.jsonl", "decoder_baseline", encoder)

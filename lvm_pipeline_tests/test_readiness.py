"""deployment_readiness: each checklist item and production criterion graded on its figure, the verdict honest, and
the measurement against a real `serve` of the trained toy model."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from lvm_pipeline.datasets.bank import open_bank
from lvm_pipeline.datasets.sequences import WindowSpec, build_sequences
from lvm_pipeline.serving.readiness import DeploymentFigures, grade, measure_deployment


def load(qps: float, p99: float, errors: dict | None = None) -> dict:
    return {"achieved_qps": qps, "p99_ms": p99, "errors": errors or {}}


def passing() -> DeploymentFigures:
    return DeploymentFigures(
        model="gru", backend="torch", workers=1, search="exact", beats_baseline=True, best_baseline="encode_context",
        weights_mb=4.1,
        recall_at_10=0.9, bleu4=0.3, onnx_parity=True, onnx_hit_points=0.0, int8_hit_points=-0.2,
        int8_quantized={"MatMulInteger": 3}, int8_speedup=1.5, api_answers=True, metrics_parse=True,
        mean_batch_size=4.0, load_seconds=10, load=load(1000, 20), texts_load=load(20, 80), peak_rss_mb=900)


def test_every_row_met_and_the_baseline_beaten_is_go():
    readiness = grade(passing())
    assert readiness.verdict == "GO" and all(row.go for row in readiness.rows)
    assert len([r for r in readiness.rows if r.group == "checklist"]) == 7
    assert len([r for r in readiness.rows if r.group == "production"]) == 5


@pytest.mark.parametrize("change, failing", [
    ({"recall_at_10": 0.6}, "Recall@10 > 0.85"),
    ({"bleu4": 0.03}, "BLEU-4 > 0.20"),
    ({"weights_mb": 5000.0}, "weights < 4 GB"),
    ({"onnx_parity": False}, "ONNX export"),
    ({"int8_hit_points": -2.5}, "INT8 quantization"),
    ({"int8_quantized": {}}, "INT8 quantization"),
    ({"mean_batch_size": 1.0}, "batch inference"),
    ({"api_answers": False}, "API"),
    ({"metrics_parse": False}, "monitoring"),
    ({"texts_load": load(20, 650)}, "latency < 500 ms"),
    ({"peak_rss_mb": 9000.0}, "memory < 8 GB"),
])
def test_one_figure_past_its_target_stops_on_that_row_alone(change, failing):
    readiness = grade(replace(passing(), **change))
    assert readiness.verdict == "STOP"
    assert [row.item for row in readiness.rows if not row.go] == [failing]
    assert readiness.reason.startswith("ship the baseline instead (encode_context)") and failing in readiness.reason


def test_a_missed_load_target_fails_the_load_test_and_the_qps_criterion():
    slow = grade(replace(passing(), load=load(1000, 75)))  # the rate, but not the p99
    assert [row.item for row in slow.rows if not row.go] == ["load test at 1,000 QPS (vectors in)"]
    short = grade(replace(passing(), load=load(700, 20, {"timeout": 3})))
    assert [row.item for row in short.rows if not row.go] == ["load test at 1,000 QPS (vectors in)", "1,000 QPS"]


def test_a_model_that_does_not_beat_the_baseline_stops_even_with_every_row_met():
    readiness = grade(replace(passing(), beats_baseline=False))
    assert all(row.go for row in readiness.rows) and readiness.verdict == "STOP"
    assert "gru does not beat encode_context" in readiness.reason
    assert json.loads(readiness.to_json())["verdict"] == "STOP"
    assert "# Deployment readiness: STOP" in readiness.markdown()


def test_the_measurement_serves_the_model_and_loads_it(data_dir, encoder, monkeypatch):
    """A real serve of the trained toy gru: the API answers, batches merge under 1,000 QPS, metrics parse; the toy
    model's report figures fail the production criteria, so the verdict is STOP."""
    monkeypatch.setenv("LVM_DATA_DIR", str(data_dir))
    sequences = build_sequences(open_bank(data_dir / "exports"), spec=WindowSpec(max_context=8))
    checkpoint = data_dir / "checkpoints" / "gru" / "run1" / "best.safetensors"
    report = json.loads((data_dir / "reports" / "benchmark_report.json").read_text())
    figures = measure_deployment(checkpoint, report, sequences, encoder, None, load_seconds=2, texts_qps=10)
    assert figures.api_answers and figures.metrics_parse
    assert figures.load["scheduled"] == 2000 and figures.load["ok"] > 0
    assert figures.mean_batch_size > 1  # a thousand requests a second cannot all run alone
    assert figures.texts_load["scheduled"] == 20 and figures.peak_rss_mb > 100
    assert figures.onnx_parity and figures.int8_quantized
    readiness = grade(figures)
    assert readiness.verdict == "STOP" and not next(r for r in readiness.rows if r.item == "Recall@10 > 0.85").go

"""ONNX export: every toy family equals its PyTorch model at lengths other than the export's, INT8 quantizes what
onnxruntime can, the parity report on a trained checkpoint, and the service on the ONNX backend."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from lvm_pipeline.datasets.bank import open_bank
from lvm_pipeline.datasets.sequences import WindowSpec, build_sequences
from lvm_pipeline.inference import ContextQuery, NextConceptPredictor
from lvm_pipeline.models.base import FAMILIES, TMD_DIM, build_model, registered_configs
from lvm_pipeline.models.onnx import OnnxModel, export_onnx, input_names, quantize_int8
from lvm_pipeline.models.predictor import ModelPredictor
from lvm_pipeline.serving.onnx_export import export_checkpoint, read_report
from lvm_pipeline.training.checkpoint import BACKENDS, backend_paths, load_backend, read_sidecar, save_checkpoint

D = 24
FIXED = 6  # the fixed length a family whose loop unrolls is exported at, here (the pipeline uses the windows' C)
# every toy config of a family with an export (a sampler has none: tested in test_models_lcm.py)
TOYS = sorted(name for name, config in registered_configs().items()
              if name.startswith("toy_") and not FAMILIES[config().family].samples)
# the families whose forward loops over positions in Python: torch.export unrolls them at the example's length
LOOPING = {"toy_memory_gru", "toy_rwkv"}


def random_inputs(model, batch: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    widths = {"x": D, "tmd": TMD_DIM, "view": D}
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(batch, length, widths[name], generator=generator) for name in input_names(model.config)}


def toy(name: str):
    torch.manual_seed(0)
    model = build_model(name, D).eval()
    if model.view_gate is not None:  # the gate starts at 0, where the output is the view alone: open it
        model.view_gate.data.fill_(0.7)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every toy family exported once: name -> (model, OnnxExport)."""
    directory = tmp_path_factory.mktemp("onnx")
    return {name: (model := toy(name), export_onnx(model, directory / f"{name}.onnx", fixed_length=FIXED))
            for name in TOYS}


@pytest.mark.parametrize("name", TOYS)
def test_every_family_exports_and_equals_pytorch_at_other_batch_sizes_and_lengths(exported, name):
    model, export = exported[name]
    onnx_model = OnnxModel(export.path)
    lengths = (1, 3, FIXED) if export.fixed_length else (1, 3, 16)  # the export's example length is 7
    for batch, length in zip((1, 4, 2), lengths):
        inputs = random_inputs(model, batch, length, seed=length)
        with torch.inference_mode():
            expected = model(**inputs)
        got = onnx_model(**inputs)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-5), f"{name} at batch {batch}, length {length}"
    assert export.max_abs_diff < 1e-5


def test_only_the_families_that_loop_over_positions_are_exported_at_a_fixed_length(exported):
    fixed = {name for name, (_, export) in exported.items() if export.fixed_length}
    assert fixed == LOOPING
    model, export = exported["toy_memory_gru"]
    with pytest.raises(ValueError, match=f"at most {FIXED} positions"):
        OnnxModel(export.path)(**random_inputs(model, 1, FIXED + 1, seed=0))


def test_a_fixed_length_export_answers_longer_contexts_from_their_most_recent_concepts(exported):
    """ModelPredictor keeps the last FIXED concepts of a longer context, as it does for max_context."""
    model, export = exported["toy_memory_gru"]
    vectors = np.random.default_rng(0).standard_normal((20, D)).astype(np.float32)
    onnx_answer = ModelPredictor(OnnxModel(export.path), "m").predict_one(vectors)
    torch_answer = ModelPredictor(model, "m", max_context=FIXED).predict_one(vectors)
    np.testing.assert_allclose(onnx_answer, torch_answer, atol=1e-5)


@pytest.mark.parametrize("name, quantized_rnn", [("toy_lstm", "DynamicQuantizeLSTM"), ("toy_gru", None),
                                                 ("toy_transformer", None)])
def test_int8_quantizes_matmuls_and_lstm_but_leaves_the_gru_op_in_float(exported, tmp_path, name, quantized_rnn):
    model, export = exported[name]
    target = tmp_path / f"{name}.int8.onnx"
    quantized = quantize_int8(export.path, target)
    assert quantized.get("MatMulInteger", 0) >= 2  # the input and output projections at least
    assert quantized.get("DynamicQuantizeLSTM", 0) == (2 if quantized_rnn else 0)  # toy sizes stack 2 layers
    int8 = OnnxModel(target)
    if name == "toy_gru":
        assert "GRU" in {node.op_type for node in __import__("onnx").load(str(target)).graph.node}
    inputs = random_inputs(model, 3, 5, seed=1)
    with torch.inference_mode():
        expected = model(**inputs)
    difference = (int8(**inputs) - expected).abs().max().item()
    assert 0 < difference < 0.1  # quantized, so not exact; close, so not broken
    assert target.stat().st_size < export.path.stat().st_size


@pytest.fixture(scope="module")
def checkpoint(data_dir, tmp_path_factory):
    """A copy of the trained toy gru's checkpoint (the export writes beside it)."""
    directory = tmp_path_factory.mktemp("run")
    for path in (data_dir / "checkpoints" / "gru" / "run1").glob("best.*"):
        shutil.copy(path, directory / path.name)
    return directory / "best.safetensors"


@pytest.fixture(scope="module")
def sequences(data_dir):
    return build_sequences(open_bank(data_dir / "exports"), spec=WindowSpec(max_context=8))


@pytest.fixture(scope="module")
def report(checkpoint, sequences, encoder):
    return export_checkpoint(checkpoint, sequences, encoder)


def test_the_parity_report_measures_every_backend_on_the_test_queries(report, checkpoint, sequences):
    assert [f.backend for f in report.backends] == list(BACKENDS)
    assert report.queries == len(sequences.windows["test"])
    torch_figures, onnx_figures, int8_figures = report.backends
    assert torch_figures.max_abs_diff == 0 and onnx_figures.max_abs_diff < 1e-5 and int8_figures.max_abs_diff > 0
    assert report.parity and onnx_figures.hit_at_5 == pytest.approx(torch_figures.hit_at_5, abs=1e-3)
    assert 0 < torch_figures.hit_at_5 < 1
    assert all(path.is_file() for path in backend_paths(checkpoint).values())
    saved = read_report(checkpoint)
    assert saved["parity"] and saved["backends"][1]["backend"] == "onnx"
    assert "parity holds" in report.markdown() and "| onnx-int8 |" in report.markdown()


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_the_predictor_on_an_onnx_backend_answers_as_on_pytorch(report, checkpoint, data_dir, encoder, backend):
    bank = open_bank(data_dir / "exports")
    on_torch = NextConceptPredictor(checkpoint, bank, encoder)
    on_onnx = NextConceptPredictor(checkpoint, bank, encoder, backend=backend)
    queries = [ContextQuery.of_texts(["The Moon orbits the Earth.", "It has no atmosphere."], k=3),
               ContextQuery(vectors=bank.vectors[10:14], k=3)]
    for expected, got in zip(on_torch.predict_batch(queries), on_onnx.predict_batch(queries)):
        assert [n.row for n in got.neighbours] == [n.row for n in expected.neighbours]
        assert [n.score for n in got.neighbours] == pytest.approx([n.score for n in expected.neighbours], abs=0.02)


def test_new_weights_remove_the_stale_exports(tmp_path, checkpoint):
    for path in checkpoint.parent.glob("best.*"):
        shutil.copy(path, tmp_path / path.name)
    model, sidecar = load_backend(tmp_path / "best.safetensors")
    assert (tmp_path / "best.onnx").is_file()
    save_checkpoint(tmp_path, model, sidecar, name="best")
    assert not any((tmp_path / f"best{suffix}").exists() for suffix in (".onnx", ".int8.onnx", ".onnx.json"))
    assert read_sidecar(tmp_path / "best.json")["model_name"] == sidecar["model_name"]


def test_an_onnx_backend_without_an_export_is_one_clear_line(tmp_path, checkpoint, data_dir):
    for path in checkpoint.parent.glob("best.*"):
        if path.suffix in (".safetensors", ".json") and not path.name.endswith(".onnx.json"):
            shutil.copy(path, tmp_path / path.name)
    env = {"LVM_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "lvm_pipeline.cli", "serve", "--backend", "onnx", "--checkpoint",
                           str(tmp_path / "best.safetensors"), "--port", "0"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"lvm-pipeline serve: no onnx export of {tmp_path / 'best.safetensors'}: run lvm-pipeline export-onnx first"]


def test_export_onnx_of_a_missing_checkpoint_is_one_clear_line(tmp_path, data_dir):
    env = {"LVM_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "lvm_pipeline.cli", "export-onnx", "--checkpoint",
                           str(tmp_path / "gone.safetensors")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"lvm-pipeline export-onnx: no checkpoint file {tmp_path / 'gone.safetensors'}"]

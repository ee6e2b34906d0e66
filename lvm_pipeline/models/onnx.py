"""A next-concept model as an ONNX graph: export with dynamic batch and sequence axes, INT8 dynamic quantization,
and `OnnxModel`, which onnxruntime runs where the PyTorch model ran (`ModelPredictor` takes either).

Export goes through `torch.onnx.export(dynamo=True)` (torch.export, then ONNX). A family whose backbone is a Python
loop over positions (memory_gru) cannot keep a symbolic sequence axis: torch.export unrolls the loop at the example
length. It is then exported at a fixed length (`fixed_length`, the training windows' C) and `OnnxModel` right-pads
shorter contexts to it, which cannot change a causal model's output at the last real position; longer contexts keep
their most recent `fixed_length` concepts, as the evaluation's do.

INT8 is onnxruntime's dynamic quantization (weights int8, activations quantized on the fly) of the operators it
quantizes: MatMul and Gemm, LSTM, Attention. It has no quantized GRU: a GRU graph keeps its GRU node in float and only
what surrounds it (the projections) is quantized. `quantize_int8` says which nodes changed.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lvm_pipeline.errors import PipelineError
from lvm_pipeline.files import atomic_write
from lvm_pipeline.models.base import TMD_DIM, ModelConfig, NextConceptModel, config_from_dict

EXPORT_LENGTH = 7  # the example sequence length of an export (a symbolic axis must not be specialised at 1)
CHECK_LENGTH = 11  # a second length the exported graph is run at, to tell a symbolic axis from an unrolled one
METADATA_KEY = "lvm_pipeline"  # the ONNX metadata entry holding the model config, d_input and fixed_length
LEGACY_OPSET = 17  # the TorchScript exporter's opset (recurrent families)
QUANTIZED_OPS = ("MatMul", "Gemm", "LSTM", "Attention")  # what onnxruntime's dynamic quantization rewrites


def input_names(config: ModelConfig) -> list[str]:
    """The graph's inputs, in order: x [batch, seq, D], then tmd [batch, seq, 16] and view [batch, seq, D] if used."""
    return ["x", *(["tmd"] if config.tmd else []), *(["view"] if config.text_view else [])]


def _example(model: NextConceptModel, batch: int, length: int) -> dict[str, torch.Tensor]:
    widths = {"x": model.d_input, "tmd": TMD_DIM, "view": model.d_input}
    generator = torch.Generator().manual_seed(0)
    return {name: torch.randn(batch, length, widths[name], generator=generator) for name in input_names(model.config)}


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    fixed_length: int | None  # None: the sequence axis is symbolic
    max_abs_diff: float  # against PyTorch on random inputs at a length other than the export's
    ops: dict[str, int]  # ONNX operator -> count


def export_onnx(model: NextConceptModel, path: Path, fixed_length: int) -> OnnxExport:
    """Write `model` as ONNX at `path` (batch and sequence axes symbolic; a fixed sequence of `fixed_length` for a
    family whose loop over positions unrolls), checked against PyTorch at a second length."""
    if model.samples:
        raise PipelineError(f"{model.config.family} samples its prediction in a loop of denoising steps from seeded "
                            "noise: it has no ONNX export (serve it with --backend torch)")
    model = model.eval()
    graph = _export(model, Path(path), None)
    try:
        diff = _difference(model, Path(path), CHECK_LENGTH)
        fixed = None
    except _SequenceAxisFixed:
        graph, fixed = _export(model, Path(path), fixed_length), fixed_length
        diff = _difference(model, Path(path), min(CHECK_LENGTH, fixed_length))
    return OnnxExport(Path(path), fixed, diff, _op_counts(graph))


class _SequenceAxisFixed(Exception):
    """The exported graph only takes the example's sequence length."""


def _export(model: NextConceptModel, path: Path, fixed_length: int | None):
    """One export, written to `path`; returns the graph (ModelProto). torch.export (dynamo) unless the model holds an
    nn.LSTM/nn.GRU: torch.export specialises their sequence length (torch 2.13), the TorchScript exporter keeps it
    symbolic and emits ONNX's own LSTM/GRU nodes."""
    import onnx

    example = _example(model, 2, fixed_length or EXPORT_LENGTH)
    recurrent = any(isinstance(module, torch.nn.RNNBase) for module in model.modules())
    with warnings.catch_warnings(), _quiet("torch.onnx", "torch.export", "torch._dynamo", "onnxscript"):
        warnings.simplefilter("ignore")
        if recurrent:
            axes = {0: "batch", **({1: "seq"} if fixed_length is None else {})}
            buffer = io.BytesIO()
            torch.onnx.export(model, (), buffer, kwargs=example, input_names=list(example), output_names=["next"],
                              dynamic_axes={name: axes for name in [*example, "next"]}, dynamo=False,
                              opset_version=LEGACY_OPSET)
            graph = onnx.load_from_string(buffer.getvalue())
        else:
            batch = torch.export.Dim("batch", min=1)
            seq = torch.export.Dim("seq", min=1) if fixed_length is None else None
            shapes = {name: {0: batch, **({1: seq} if seq is not None else {})} for name in example}
            graph = torch.onnx.export(model, (), kwargs=example, input_names=list(example), output_names=["next"],
                                      dynamic_shapes=shapes, dynamo=True, verbose=False).model_proto
    _output_like_input(graph)
    about = {"model_config": model.config.to_dict(), "d_input": model.d_input, "fixed_length": fixed_length}
    graph.metadata_props.add(key=METADATA_KEY, value=json.dumps(about))
    atomic_write(path, lambda f: f.write(graph.SerializeToString()))
    return graph


def _output_like_input(graph) -> None:
    """The output's batch and sequence dimensions named as the input's (the exporter may leave the example's)."""
    source = graph.graph.input[0].type.tensor_type.shape.dim
    target = graph.graph.output[0].type.tensor_type.shape.dim
    for axis in (0, 1):
        target[axis].CopyFrom(source[axis])


def _difference(model: NextConceptModel, path: Path, length: int) -> float:
    """Max |ONNX - PyTorch| on random inputs of `length` positions (raises _SequenceAxisFixed if a graph exported
    with a symbolic sequence axis refuses the length)."""
    import onnxruntime

    inputs = _example(model, 3, length)
    with torch.inference_mode():
        expected = model(**inputs).numpy()
    onnx_model = OnnxModel(path)
    try:
        got = onnx_model(**inputs).numpy()
    except onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument as error:
        if "dimensions" in str(error) and onnx_model.fixed_length is None:
            raise _SequenceAxisFixed() from error
        raise
    return float(np.abs(got - expected).max())


def _op_counts(graph) -> dict[str, int]:
    """ONNX operator -> nodes of a ModelProto."""
    return dict(sorted(Counter(node.op_type for node in graph.graph.node).items()))


def quantize_int8(source: Path, target: Path) -> dict[str, int]:
    """INT8 dynamic quantization of `source` into `target`; returns the quantized nodes by their new operator
    (e.g. {"MatMulInteger": 6, "DynamicQuantizeLSTM": 1}); empty when nothing could be quantized."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=Path(target).parent) as scratch, _quiet("onnxruntime", "root"):
        temporary = Path(scratch) / "int8.onnx"
        quantize_dynamic(str(source), str(temporary), weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(QUANTIZED_OPS))
        quantized = onnx.load(str(temporary))
    original = onnx.load(str(source))
    del quantized.metadata_props[:]  # the source's, once: the quantizer may or may not carry them over
    quantized.metadata_props.extend(entry for entry in original.metadata_props if entry.key == METADATA_KEY)
    atomic_write(Path(target), lambda f: f.write(quantized.SerializeToString()))
    before, after = Counter(_op_counts(original)), Counter(_op_counts(quantized))
    return {op: count for op, count in (after - before).items() if "Integer" in op or op == "DynamicQuantizeLSTM"}


def read_metadata(path: Path) -> dict:
    """What `export_onnx` stored in the graph: model_config, d_input, fixed_length."""
    import onnx

    if not Path(path).is_file():
        raise PipelineError(f"no ONNX model at {path}: run lvm-pipeline export-onnx")
    graph = onnx.load(str(path), load_external_data=False)
    entry = next((entry.value for entry in graph.metadata_props if entry.key == METADATA_KEY), None)
    if entry is None:
        raise PipelineError(f"{path} was not exported by lvm-pipeline (no {METADATA_KEY} metadata)")
    return json.loads(entry)


class OnnxModel:
    """An exported model run by onnxruntime on CPU, called as the PyTorch model is: (x, tmd=None, view=None) ->
    [batch, seq, D] tensors."""

    def __init__(self, path: Path, threads: int = 0):
        import onnxruntime

        about = read_metadata(path)
        self.path, self.config = Path(path), config_from_dict(about["model_config"])
        self.d_input, self.fixed_length = int(about["d_input"]), about["fixed_length"]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's default (one per physical core)
        options.log_severity_level = 3  # errors only: not the shape-inference warnings of every run
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [entry.name for entry in self.session.get_inputs()]

    def __call__(self, x: torch.Tensor, tmd: torch.Tensor | None = None, view: torch.Tensor | None = None) -> torch.Tensor:
        given = {"x": x, "tmd": tmd, "view": view}
        missing = [name for name in self.names if given[name] is None]
        if missing:
            raise ValueError(f"this model reads {', '.join(missing)}: pass it")
        length = x.shape[1]
        if self.fixed_length is not None and length > self.fixed_length:
            raise ValueError(f"this export reads at most {self.fixed_length} positions, got {length}")
        feed = {name: _padded(given[name], self.fixed_length) for name in self.names}
        return torch.from_numpy(self.session.run(None, feed)[0][:, :length])


def _padded(tensor: torch.Tensor, length: int | None) -> np.ndarray:
    """A float32 array, right-padded with zeros to `length` positions when given."""
    array = tensor.detach().cpu().numpy().astype(np.float32, copy=False)
    if length is None or array.shape[1] == length:
        return np.ascontiguousarray(array)
    return np.pad(array, ((0, 0), (0, length - array.shape[1]), (0, 0)))


class _quiet:
    """Loggers of the exporters and onnxruntime's quantizer at ERROR for the block (they print per node)."""

    def __init__(self, *names: str):
        self.loggers = [logging.getLogger(name) for name in names]

    def __enter__(self):
        self.levels = [logger.level for logger in self.loggers]
        for logger in self.loggers:
            logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        for logger, level in zip(self.loggers, self.levels):
            logger.setLevel(level)

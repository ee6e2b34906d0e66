"""A checkpoint as ONNX beside it (`<stem>.onnx`, `<stem>.int8.onnx`), with its parity to PyTorch measured on the
test queries: the largest difference of the predicted vectors, full-bank Hit@5 of each backend, and each one's speed
on the same batches. Written to `<stem>.onnx.json`; `lvm-pipeline export-onnx` and the `lvm_onnx` asset call it.

Parity holds when the float export's Hit@5 is within `HIT_TOLERANCE` (0.1 point) of PyTorch's. INT8 is not held
to that: its Hit@5 change is a measured cost, reported beside its speed-up.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lvm_pipeline.evaluation.context_text import TextEncoder, model_views
from lvm_pipeline.evaluation.retrieval import BankIndex, retrieval_ranks
from lvm_pipeline.files import atomic_write
from lvm_pipeline.markdown import md_table
from lvm_pipeline.models.onnx import OnnxModel, export_onnx, quantize_int8
from lvm_pipeline.models.predictor import ModelPredictor
from lvm_pipeline.tmd.schema import bank_tmd_vectors
from lvm_pipeline.training.checkpoint import (
    BACKENDS,
    backend_paths,
    check_compatible,
    files_of,
    load_checkpoint,
)

HIT_TOLERANCE = 0.1  # points of Hit@5 the float export may differ from PyTorch by
SINGLE_QUERIES = 200  # one-query latency: the median over this many test queries, each asked alone


def report_path(checkpoint: Path) -> Path:
    return files_of(checkpoint)[".onnx.json"]


@dataclass
class BackendFigures:
    backend: str
    size_mb: float
    hit_at_5: float  # full bank, test queries, in [0, 1]
    max_abs_diff: float  # of the predicted vectors, against PyTorch's
    ms_per_1k_queries: float  # batches of 256, as the evaluation asks
    single_query_ms: float  # median of one query at a time, as a service without batching asks


@dataclass
class OnnxReport:
    model: str
    checkpoint: str
    queries: int
    fixed_length: int | None  # the export's fixed sequence length, None when symbolic
    ops: dict[str, int]  # the float graph's operators
    quantized: dict[str, int]  # the INT8 graph's quantized nodes
    backends: list[BackendFigures] = field(default_factory=list)

    def figures(self, backend: str) -> BackendFigures:
        return next(figures for figures in self.backends if figures.backend == backend)

    @property
    def parity(self) -> bool:
        """The float export's Hit@5 within HIT_TOLERANCE points of PyTorch's."""
        return abs(self.figures("onnx").hit_at_5 - self.figures("torch").hit_at_5) * 100 <= HIT_TOLERANCE

    def to_dict(self) -> dict:
        return asdict(self) | {"parity": self.parity, "hit_tolerance_points": HIT_TOLERANCE}

    def markdown(self) -> str:
        torch_hit = self.figures("torch").hit_at_5
        quantized = ", ".join(f"{count} {op}" for op, count in self.quantized.items()) or "nothing (no operator "\
            "onnxruntime quantizes)"
        summary = (f"**{self.model}**: parity {'holds' if self.parity else 'FAILS'} on {self.queries:,} test queries "
                   f"(float Hit@5 within {HIT_TOLERANCE} point of PyTorch's). "
                   + (f"Exported at a fixed length of {self.fixed_length} (right-padded). " if self.fixed_length else "")
                   + f"INT8 quantized {quantized}.")
        rows = [[f.backend, f"{f.size_mb:.2f}", f"{f.hit_at_5:.2%}", f"{(f.hit_at_5 - torch_hit) * 100:+.2f} pt",
                 f"{f.max_abs_diff:.1e}", f"{f.ms_per_1k_queries:.0f}", f"{f.single_query_ms:.2f}"] for f in self.backends]
        return summary + "\n\n" + md_table(["backend", "file MB", "Hit@5", "vs PyTorch", "max abs diff",
                                             "ms / 1k queries (batched)", "ms / query (alone)"], rows)


def export_checkpoint(checkpoint: Path, sequences, encoder: TextEncoder | None = None, cache_dir: Path | None = None,
                      index: BankIndex | None = None) -> OnnxReport:
    """Export `checkpoint` (float and INT8) beside itself and measure both against PyTorch on the test queries of
    `sequences` (`encoder`, the bank's, and `cache_dir`: the context views of a model that reads them)."""
    model, sidecar = load_checkpoint(checkpoint)
    check_compatible(sidecar, sequences.bank)
    views = model_views(model, sequences, encoder, cache_dir)
    paths = backend_paths(checkpoint)
    export = export_onnx(model, paths["onnx"], fixed_length=sequences.spec.max_context)
    quantized = quantize_int8(paths["onnx"], paths["onnx-int8"])
    bank, queries = sequences.bank, sequences.windows["test"]
    index = index or BankIndex(bank.vectors)
    name = sidecar["model_name"]
    report = OnnxReport(name, str(checkpoint), len(queries), export.fixed_length, export.ops, quantized)
    tmd = bank_tmd_vectors(bank.column("tmd_bits")) if model.config.tmd else None
    reference = None
    for backend in BACKENDS:
        runner = model if backend == "torch" else OnnxModel(paths[backend])
        predictor = ModelPredictor(runner, name, views=views)
        predictor.predict(bank.vectors, queries.subset(np.arange(min(256, len(queries)))), tmd)  # warm up
        started = time.perf_counter()
        predicted = predictor.predict(bank.vectors, queries, tmd)
        batched_ms = (time.perf_counter() - started) * 1000 / len(queries) * 1000
        reference = predicted if reference is None else reference
        hits = retrieval_ranks(index, predicted, queries, (5,))["hit_at_5"]
        report.backends.append(BackendFigures(
            backend, round(paths[backend].stat().st_size / 2**20, 3), float(hits.mean()),
            float(np.abs(predicted - reference).max()), round(batched_ms, 1),
            round(_single_query_ms(predictor, bank.vectors, queries, {"context_views": views, "context_tmd": tmd}), 3)))
    text = json.dumps(report.to_dict(), indent=2)
    atomic_write(report_path(checkpoint), lambda f: f.write(text.encode()))
    return report


def _single_query_ms(predictor: ModelPredictor, vectors: np.ndarray, queries, bank_side: dict) -> float:
    """The median time of one test query asked alone (the first SINGLE_QUERIES, after one to warm up); `bank_side`
    the bank-aligned context_views and context_tmd, or None."""
    times = []
    for i in [0, *range(min(SINGLE_QUERIES, len(queries)))]:
        start, end = int(queries.context_start[i]), int(queries.target[i])
        side = {name: values[start:end] for name, values in bank_side.items() if values is not None}
        started = time.perf_counter()
        predictor.predict_one(vectors[start:end], **side)
        times.append(time.perf_counter() - started)
    return float(np.median(times[1:]) * 1000)


def read_report(checkpoint: Path) -> dict | None:
    """The last export's report of `checkpoint`, None when it was never exported."""
    path = report_path(checkpoint)
    return json.loads(path.read_text()) if path.is_file() else None

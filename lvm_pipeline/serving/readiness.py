"""The predecessor's deployment checklist and production criteria, each graded GO / STOP on a measured figure.

Checklist: weights < 4 GB, ONNX export (parity holds), INT8 quantization, batch inference (batches merge under
load), an API that answers, a 1,000 QPS load test, monitoring (Prometheus metrics parse). Production criteria:
Recall@10 > 0.85, BLEU-4 > 0.20, latency < 500 ms, memory < 8 GB, 1,000 QPS. The verdict is GO only when every
row is GO *and* the benchmark report says the model beats the best baseline; otherwise STOP, "ship the baseline
instead" (the predecessor's rule), naming the rows that failed. The figures come from
`deployment_readiness` (defs/serving.py), which starts the service and loads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lvm_pipeline.markdown import md_table

TARGET_QPS = 1000.0
P99_TARGET_MS = 50.0  # vectors in, at TARGET_QPS (issue 16's load-test target)
LATENCY_TARGET_MS = 500.0  # texts in, p99: the predecessor's "latency < 500 ms"
MEMORY_TARGET_MB = 8 * 1024
WEIGHTS_TARGET_MB = 4 * 1024
RECALL_AT_10_TARGET = 0.85
BLEU4_TARGET = 0.20
# the service's threads: OpenMP threads that spin while idle would take the cores the event loop and the load need
# (one each: `workers` processes share the cores; docs/BENCHMARKS.md)
SERVER_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
INT8_MAX_HIT_DROP_POINTS = 1.0  # INT8 counts as done when it costs at most this much full-bank Hit@5


@dataclass
class DeploymentFigures:
    """What was measured; None where a figure could not be (the row then says STOP with the reason)."""

    model: str
    backend: str
    workers: int
    search: str
    beats_baseline: bool  # the benchmark report's decision is GO for this model
    best_baseline: str
    weights_mb: float
    recall_at_10: float  # full-bank Hit@10 on the test queries, the report's
    bleu4: float  # BLEU-4 of the decoded top text against the target text, the report's
    onnx_parity: bool | None = None
    onnx_hit_points: float | None = None  # ONNX - PyTorch full-bank Hit@5, points
    int8_hit_points: float | None = None  # INT8 - PyTorch full-bank Hit@5, points
    int8_quantized: dict[str, int] = field(default_factory=dict)
    int8_speedup: float | None = None  # PyTorch / INT8 time per 1k queries (batched)
    api_answers: bool = False
    metrics_parse: bool = False
    mean_batch_size: float | None = None  # under the vectors-in load
    load_seconds: float = 0.0
    load: dict | None = None  # vectors in at TARGET_QPS: LoadResult.to_dict()
    texts_load: dict | None = None  # texts in, a lighter rate: LoadResult.to_dict()
    peak_rss_mb: float | None = None  # the service's peak resident memory over the whole test
    notes: list[str] = field(default_factory=list)


@dataclass
class Row:
    group: str  # "checklist" or "production"
    item: str
    measured: str
    target: str
    go: bool


@dataclass
class Readiness:
    figures: DeploymentFigures
    rows: list[Row]

    @property
    def verdict(self) -> str:
        return "GO" if self.figures.beats_baseline and all(row.go for row in self.rows) else "STOP"

    @property
    def reason(self) -> str:
        failed = [row.item for row in self.rows if not row.go]
        if self.verdict == "GO":
            return f"ship {self.figures.model}: every checklist item and production criterion is met"
        because = ([] if self.figures.beats_baseline else
                   [f"{self.figures.model} does not beat {self.figures.best_baseline} in the benchmark report"])
        because += [f"not met: {', '.join(failed)}"] if failed else []
        return f"ship the baseline instead ({self.figures.best_baseline}): {'; '.join(because)}"

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "reason": self.reason, "rows": [asdict(row) for row in self.rows],
                "figures": asdict(self.figures)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def markdown(self) -> str:
        f = self.figures
        table = md_table(["", "item", "measured", "target", "grade"],
                         [[row.group, row.item, row.measured, row.target, "GO" if row.go else "STOP"]
                          for row in self.rows])
        load = (f"The load tests ran {f.load_seconds:g} s per scenario against `lvm-pipeline serve --backend {f.backend} "
                f"--workers {f.workers} --search {f.search}` on "
                "this machine, the load generator included; the 60-second figure is `benchmarks/serve.py`'s "
                "(docs/BENCHMARKS.md).")
        notes = "".join(f"\n- {note}" for note in f.notes)
        return (f"# Deployment readiness: {self.verdict}\n\n**{self.reason}.**\n\nModel: {f.model}. {load}\n\n"
                f"{table}\n" + (f"\nNotes:{notes}\n" if notes else ""))


def _qps_row(group: str, item: str, load: dict | None, p99_target_ms: float | None) -> Row:
    if not load:
        return Row(group, item, "not measured", f">= {TARGET_QPS:,.0f} QPS", False)
    errors = sum(load["errors"].values())
    measured = f"{load['achieved_qps']:,.0f} QPS, p99 {load['p99_ms']:.1f} ms, {errors} errors"
    go = load["achieved_qps"] >= 0.99 * TARGET_QPS and errors == 0
    target = f">= {TARGET_QPS:,.0f} QPS, 0 errors"
    if p99_target_ms is not None:
        go = go and load["p99_ms"] <= p99_target_ms
        target += f", p99 <= {p99_target_ms:g} ms"
    return Row(group, item, measured, target, go)


def grade(f: DeploymentFigures) -> Readiness:
    """Every checklist item and production criterion as a row with its figure, target and grade."""
    int8_ops = ", ".join(f"{n} {op}" for op, n in f.int8_quantized.items()) or "nothing quantized"
    int8_measured = (f"{int8_ops}; Hit@5 {f.int8_hit_points:+.2f} pt, {f.int8_speedup:.1f}x PyTorch's speed"
                     if f.int8_hit_points is not None else "not exported")
    texts = f.texts_load
    rows = [
        Row("checklist", "weights < 4 GB", f"{f.weights_mb:,.1f} MB", f"< {WEIGHTS_TARGET_MB:,} MB",
            f.weights_mb < WEIGHTS_TARGET_MB),
        Row("checklist", "ONNX export", "not exported" if f.onnx_parity is None else
            f"parity {'holds' if f.onnx_parity else 'fails'} (Hit@5 {f.onnx_hit_points:+.2f} pt)",
            "Hit@5 within 0.1 pt of PyTorch", bool(f.onnx_parity)),
        Row("checklist", "INT8 quantization", int8_measured,
            f"quantized, Hit@5 drop <= {INT8_MAX_HIT_DROP_POINTS:g} pt",
            bool(f.int8_quantized) and f.int8_hit_points is not None
            and f.int8_hit_points >= -INT8_MAX_HIT_DROP_POINTS),
        Row("checklist", "batch inference", "not measured" if f.mean_batch_size is None else
            f"{f.mean_batch_size:.1f} requests per model call under load", "> 1 (requests merged)",
            f.mean_batch_size is not None and f.mean_batch_size > 1),
        Row("checklist", "API", "answers /v1/next from texts and vectors" if f.api_answers else "did not answer",
            "answers", f.api_answers),
        _qps_row("checklist", "load test at 1,000 QPS (vectors in)", f.load, P99_TARGET_MS),
        Row("checklist", "monitoring", "/metrics parses (Prometheus)" if f.metrics_parse else "/metrics did not parse",
            "parses", f.metrics_parse),
        Row("production", "Recall@10 > 0.85", f"{f.recall_at_10:.1%} (full-bank Hit@10)", f"> {RECALL_AT_10_TARGET:.0%}",
            f.recall_at_10 > RECALL_AT_10_TARGET),
        Row("production", "BLEU-4 > 0.20", f"{f.bleu4:.3f} (top decoded text vs the target)", f"> {BLEU4_TARGET}",
            f.bleu4 > BLEU4_TARGET),
        Row("production", "latency < 500 ms", "not measured" if not texts else
            f"p99 {texts['p99_ms']:.0f} ms (texts in, {texts['achieved_qps']:,.0f} QPS)", f"p99 < {LATENCY_TARGET_MS:g} ms",
            bool(texts) and texts["p99_ms"] < LATENCY_TARGET_MS and not sum(texts["errors"].values())),
        Row("production", "memory < 8 GB", "not measured" if f.peak_rss_mb is None else f"{f.peak_rss_mb:,.0f} MB peak RSS",
            f"< {MEMORY_TARGET_MB:,} MB", f.peak_rss_mb is not None and f.peak_rss_mb < MEMORY_TARGET_MB),
        _qps_row("production", "1,000 QPS", f.load, None),
    ]
    return Readiness(f, rows)


def measure_deployment(checkpoint: Path, report: dict, sequences, encoder, cache_dir: Path | None,
                       load_seconds: float, backend: str = "torch", texts_qps: float = 5.0, workers: int = 1,
                       search: str = "exact") -> DeploymentFigures:
    """The figures of `checkpoint` (the benchmark `report`'s best model): its report rows, its ONNX export (made now
    if missing), and `lvm-pipeline serve` started on it and loaded for `load_seconds` per scenario: vectors in at
    TARGET_QPS (with the bank's context views for a text-view model), then texts in at `texts_qps`; `backend`,
    `workers` and `search` are serve's options."""
    from lvm_pipeline.evaluation.context_text import model_views
    from lvm_pipeline.serving import loadtest
    from lvm_pipeline.serving.onnx_export import export_checkpoint, read_report
    from lvm_pipeline.training.checkpoint import backend_paths, config_from_dict, read_sidecar

    sidecar = read_sidecar(checkpoint)
    model = sidecar["model_name"]
    rows = report["predictors"][model]
    difference = report.get("hit_at_5_minus_best_baseline", {}).get(model)
    figures = DeploymentFigures(
        model=model, backend=backend, workers=workers, search=search,
        beats_baseline=bool(difference and difference["ci_low"] > 0),
        best_baseline=report["decision"]["best_baseline"],
        weights_mb=round(backend_paths(checkpoint)["torch"].stat().st_size / 2**20, 3),
        recall_at_10=rows["hit_at_10"]["value"], bleu4=rows["decode_bleu4"]["value"], load_seconds=load_seconds)
    exported = read_report(checkpoint) or export_checkpoint(checkpoint, sequences, encoder, cache_dir).to_dict()
    hits = {b["backend"]: b for b in exported["backends"]}
    figures.onnx_parity = exported["parity"]
    figures.onnx_hit_points = (hits["onnx"]["hit_at_5"] - hits["torch"]["hit_at_5"]) * 100
    figures.int8_hit_points = (hits["onnx-int8"]["hit_at_5"] - hits["torch"]["hit_at_5"]) * 100
    figures.int8_quantized = exported["quantized"]
    figures.int8_speedup = hits["torch"]["ms_per_1k_queries"] / hits["onnx-int8"]["ms_per_1k_queries"]

    bank = sequences.bank
    views = model_views(config_from_dict(sidecar["model_config"]), sequences, encoder, cache_dir)
    vectors = loadtest.vector_bodies(bank.vectors, 512, views=views)
    texts = loadtest.text_bodies([str(t) for t in bank.texts], 256)
    options = ["--checkpoint", str(checkpoint), "--backend", backend, "--workers", str(workers), "--search", search]
    with loadtest.served(options, env=SERVER_THREADS) as server:
        answers = [loadtest.post(server.url, "/v1/next", body) for body in (vectors[0], texts[0])]
        figures.api_answers = all(status == 200 for status in answers)
        before = loadtest.worker_totals(server.url, "lvm_batch_size", workers, kind="next")
        figures.load = loadtest.run_load(server.url, "/v1/next", vectors, TARGET_QPS, load_seconds).to_dict()
        figures.mean_batch_size = loadtest.mean_batch_size(server.url, "next", since=before, workers=workers)
        figures.texts_load = loadtest.run_load(server.url, "/v1/next", texts, texts_qps, load_seconds).to_dict()
        families = loadtest.scrape(server.url)
        figures.metrics_parse = {"lvm_requests", "lvm_stage_latency_seconds", "lvm_batch_size"} <= set(families)
        figures.peak_rss_mb = round(server.peak_rss_mb(), 1)
    if views is not None:
        figures.notes.append("the model reads the text view: its vectors-in requests carry each position's view "
                             "(the bank's, as a client with its own encoder would send)")
    return figures

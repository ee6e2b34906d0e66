"""The next concept after a few sentences: encode them, run a trained model, and read its prediction back as the
bank's nearest texts (retrieval decoding). What `lvm-pipeline predict` prints."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lvm_pipeline.datasets.bank import Bank
from lvm_pipeline.datasets.sequences import WindowSpec
from lvm_pipeline.encoders import SentenceEncoder
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.evaluation.context_text import joined_texts, kept_starts
from lvm_pipeline.evaluation.decoding import retrieval_decode
from lvm_pipeline.evaluation.retrieval import BankIndex
from lvm_pipeline.models.predictor import ModelPredictor
from lvm_pipeline.tmd.schema import TMD_DIM
from lvm_pipeline.training.checkpoint import check_compatible, load_checkpoint
from lvm_pipeline.training.runs import require_current_run

REPORT_JSON = "benchmark_report.json"
VIEW_CONTEXT = WindowSpec().max_context  # sentences a text view reads, as the training windows' C


@dataclass
class Neighbour:
    text: str
    score: float  # cosine to the prediction
    article_id: str


@dataclass
class NextConcept:
    model: str
    checkpoint: str
    context: list[str]
    neighbours: list[Neighbour]  # nearest first
    latency_ms: dict[str, float]  # encode, predict (the model alone), decode, total

    def to_dict(self) -> dict:
        return asdict(self)


def family_checkpoint(checkpoints_dir: Path, family: str) -> Path:
    """The best checkpoint of the family's current training run."""
    return require_current_run(checkpoints_dir, family) / "best.safetensors"


def report_best_checkpoint(reports_dir: Path, checkpoints_dir: Path) -> Path:
    """The best model of the latest benchmark report (the best single model where the ensemble is best): its
    family's current best checkpoint."""
    path = Path(reports_dir) / REPORT_JSON
    if not path.is_file():
        raise PipelineError(f"no benchmark report at {path}: materialize benchmark_report, or name a checkpoint")
    report = json.loads(path.read_text())
    models = [name for name, kind in report.get("kinds", {}).items() if kind == "model" and name != "ensemble"]
    if not models:
        raise PipelineError("the latest benchmark report holds no trained model: materialize lvm_checkpoint first")
    best = report["decision"].get("best_model")  # the ensemble is not one checkpoint: then the best single model
    if best not in models:
        best = max(models, key=lambda name: report["predictors"][name]["hit_at_5"]["value"])
    return family_checkpoint(checkpoints_dir, best)


class NextConceptPredictor:
    """A checkpoint, the bank it decodes into and the encoder of that bank, loaded once for many predictions."""

    def __init__(self, checkpoint: Path, bank: Bank, encoder: SentenceEncoder):
        model, sidecar = load_checkpoint(checkpoint)
        check_compatible(sidecar, bank)
        if encoder.fingerprint != bank.manifest.get("encoder_fingerprint"):
            raise PipelineError(f"the encoder {encoder.name} ({encoder.fingerprint}) is not the bank's "
                                f"({bank.manifest.get('encoder_fingerprint')}): set LVM_ENCODER to the bank's encoder")
        self.checkpoint, self.bank, self.encoder = Path(checkpoint), bank, encoder
        self.predictor = ModelPredictor(model, sidecar["model_name"])
        self.index = BankIndex(bank.vectors)
        self(["A first call warms every stage up, so that the latencies reported are those of a warm call."])

    def __call__(self, sentences: Sequence[str], k: int = 5) -> NextConcept:
        """The k bank concepts nearest the predicted next concept after `sentences` (one concept each)."""
        context = [s.strip() for s in sentences if s and s.strip()]
        if not context:
            raise PipelineError("give at least one non-empty sentence of context")
        started = time.perf_counter()
        vectors = self.encoder.encode(context)
        views = self._views(context, vectors) if self.predictor.uses_view else None  # encoding too
        encoded = time.perf_counter()
        # free text has no TMD codes: a TMD-conditioned model reads the "unknown" (zero) vector at every position
        tmd = np.zeros((len(context), TMD_DIM), dtype=np.float32) if self.predictor.uses_tmd else None
        predicted = self.predictor.predict_one(vectors, tmd, views)
        predicted_at = time.perf_counter()
        decoded = retrieval_decode(self.index, self.bank.texts, predicted[None], k)
        done = time.perf_counter()
        articles = self.bank.article_ids
        neighbours = [Neighbour(text, float(score), str(articles[row]))
                      for text, score, row in zip(decoded.texts[0], decoded.scores[0], decoded.rows[0]) if row >= 0]
        latency = {"encode": encoded - started, "predict": predicted_at - encoded, "decode": done - predicted_at,
                   "total": done - started}
        return NextConcept(self.predictor.name, str(self.checkpoint), context, neighbours,
                           {name: round(seconds * 1000, 2) for name, seconds in latency.items()})

    def _views(self, context: list[str], vectors: np.ndarray) -> np.ndarray:
        """The text view at each position: the encoder on the recent text of the sentences up to it (at most
        VIEW_CONTEXT of them), as `context_text.context_views` reads the bank; one sentence is its own vector."""
        counts = self.encoder.token_counts(context)
        ends = np.arange(1, len(context) + 1)
        starts = kept_starts(counts, np.maximum(ends - VIEW_CONTEXT, 0), ends, self.encoder.max_tokens)
        views = vectors.copy()
        longer = np.flatnonzero(ends - starts > 1)
        if len(longer):
            views[longer] = self.encoder.encode(joined_texts(np.asarray(context, dtype=object), starts[longer], ends[longer]))
        return views

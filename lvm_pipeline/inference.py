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
from lvm_pipeline.evaluation.baselines import context_means
from lvm_pipeline.evaluation.context_text import joined_texts, kept_starts
from lvm_pipeline.evaluation.decoding import retrieval_decode
from lvm_pipeline.evaluation.queries import Queries
from lvm_pipeline.evaluation.retrieval import IVF_ABOVE, BankIndex
from lvm_pipeline.models.predictor import ModelPredictor
from lvm_pipeline.tmd.schema import TMD_DIM
from lvm_pipeline.training.checkpoint import check_compatible, load_backend
from lvm_pipeline.training.runs import require_current_run

REPORT_JSON = "benchmark_report.json"
VIEW_CONTEXT = WindowSpec().max_context  # sentences a text view reads, as the training windows' C


@dataclass
class Neighbour:
    text: str
    score: float  # cosine to the prediction
    article_id: str
    row: int = -1  # bank row
    concept_id: str = ""  # the bank's cpe_id


@dataclass
class NextConcept:
    model: str
    checkpoint: str
    context: list[str]
    neighbours: list[Neighbour]  # nearest first
    latency_ms: dict[str, float]  # encode, predict (the model alone), decode (the bank search), total

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ContextQuery:
    """One question of a batch: its context as sentences (`texts`) or as vectors (L, D) (`vectors`), exactly one;
    with vectors, a text-view model also needs `views` (L, D): the encoder's embedding of the context's recent text
    at each position (as `context_text.context_views` reads the bank), encoded by the client."""

    texts: tuple[str, ...] | None = None
    vectors: np.ndarray | None = None
    views: np.ndarray | None = None
    k: int = 5
    exclude_context: bool = False  # drop bank concepts whose text is one of the context's sentences

    @classmethod
    def of_texts(cls, sentences: Sequence[str], k: int = 5, exclude_context: bool = False) -> ContextQuery:
        """Blank sentences dropped, the others stripped; a PipelineError when none is left."""
        context = tuple(s.strip() for s in sentences if s and s.strip())
        if not context:
            raise PipelineError("give at least one non-empty sentence of context")
        return cls(texts=context, k=k, exclude_context=exclude_context)

    @property
    def length(self) -> int:
        return len(self.texts) if self.texts is not None else len(self.vectors)


SEARCHES = ("exact", "ivf")
SEARCH_MODEL = "vector_search"  # the model name of `search_batch`'s answers
EXCLUDE_DEPTH_PER_SENTENCE = 4  # exclude_context searches this many more rows per context sentence (duplicates)


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
    """A checkpoint, the bank it decodes into and the encoder of that bank, loaded once for many predictions.

    `predict_batch` answers many contexts with one encoder call, one model forward and one FAISS search;
    `backend` runs the model: "torch", or its ONNX export "onnx" / "onnx-int8" (`lvm-pipeline export-onnx`);
    `search` the bank: "exact" (FAISS flat, as the evaluation) or "ivf" (an inverted file probing NPROBE of its
    ~4 sqrt(N) lists: approximate, about 20x faster per query on the demo bank; docs/SERVING.md has its overlap);
    `search_batch` is the vector baseline (the context's own vector searched in the bank) the same way.
    """

    def __init__(self, checkpoint: Path, bank: Bank, encoder: SentenceEncoder, backend: str = "torch",
                 search: str = "exact"):
        model, sidecar = load_backend(checkpoint, backend)
        check_compatible(sidecar, bank)
        if encoder.fingerprint != bank.manifest.get("encoder_fingerprint"):
            raise PipelineError(f"the encoder {encoder.name} ({encoder.fingerprint}) is not the bank's "
                                f"({bank.manifest.get('encoder_fingerprint')}): set LVM_ENCODER to the bank's encoder")
        self.checkpoint, self.bank, self.encoder, self.backend = Path(checkpoint), bank, encoder, backend
        self.predictor = ModelPredictor(model, sidecar["model_name"])
        if search not in SEARCHES:
            raise PipelineError(f"unknown search {search!r}: one of {', '.join(SEARCHES)}")
        self.search = search
        self.index = BankIndex(bank.vectors, ivf_above=0 if search == "ivf" else IVF_ABOVE)
        self.concept_ids = bank.column("cpe_id")
        warm = [ContextQuery.of_texts(["A first call warms every stage up, so that the latencies reported are those "
                                       "of a warm call."])]
        self.predict_batch(warm)
        self.search_batch(warm)

    @property
    def dimension(self) -> int:
        return int(self.bank.vectors.shape[1])

    @property
    def needs_texts(self) -> bool:
        """A text-view model reads the text of its context: it cannot answer from vectors alone."""
        return self.predictor.uses_view

    def __call__(self, sentences: Sequence[str], k: int = 5) -> NextConcept:
        """The k bank concepts nearest the predicted next concept after `sentences` (one concept each)."""
        return self.predict_batch([ContextQuery.of_texts(sentences, k)])[0]

    def predict_batch(self, queries: Sequence[ContextQuery]) -> list[NextConcept]:
        """One answer per query, nearest first; the latencies are the batch's (every query shares them)."""
        if self.needs_texts and any(q.texts is None and q.views is None for q in queries):
            raise PipelineError(f"{self.predictor.name} reads the text view of its context: give texts, or vectors "
                                "with their views")
        started = time.perf_counter()
        contexts, views = self._encode_contexts(queries, with_views=self.needs_texts)
        encoded = time.perf_counter()
        predicted = self._forward(contexts, views)
        predicted_at = time.perf_counter()
        return self._decode(queries, predicted, self.predictor.name, (started, encoded, predicted_at))

    def search_batch(self, queries: Sequence[ContextQuery]) -> list[NextConcept]:
        """The vector baseline: each context's own vector searched in the bank: the encoder's embedding of its
        recent text joined (as `context_text.EncodeContext`), or the mean of its vectors (as `MeanContext`)."""
        started = time.perf_counter()
        encoded_texts = iter(self.encoder.encode([self._joined_text(q.texts) for q in queries if q.texts is not None]))
        vectors = [next(encoded_texts) if q.texts is not None else
                   context_means(q.vectors, Queries(np.array([q.length]), np.array([0]), np.array([0])))[0]
                   for q in queries]
        encoded = time.perf_counter()
        return self._decode(queries, np.asarray(vectors, dtype=np.float32), SEARCH_MODEL, (started, encoded, encoded))

    def _joined_text(self, context: Sequence[str]) -> str:
        """The context's most recent sentences that fit the encoder, joined."""
        ends = np.array([len(context)])
        starts = kept_starts(self.encoder.token_counts(list(context)), np.zeros(1, dtype=np.int64), ends,
                             self.encoder.max_tokens)
        return joined_texts(np.asarray(context, dtype=object), starts, ends)[0]

    def _encode_contexts(self, queries: Sequence[ContextQuery], with_views: bool
                         ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Each query's (L, D) context vectors (and text views): one encoder call for every sentence and view text."""
        texts = [list(q.texts) for q in queries if q.texts is not None]
        plans = [self._view_plan(context) for context in texts] if with_views else []
        sentences = [s for context in texts for s in context]
        encoded = self.encoder.encode(sentences + [t for _, joined in plans for t in joined])
        sentence_vectors, view_vectors = encoded[:len(sentences)], encoded[len(sentences):]
        contexts: list[np.ndarray] = []
        views: list[np.ndarray] | None = [] if with_views else None
        sentence_at = view_at = text_index = 0
        for query in queries:
            if query.texts is None:
                contexts.append(np.asarray(query.vectors, dtype=np.float32))
                if views is not None:
                    views.append(np.asarray(query.views, dtype=np.float32))
                continue
            vectors = sentence_vectors[sentence_at:sentence_at + query.length]
            sentence_at += query.length
            contexts.append(vectors)
            if views is not None:
                longer, joined = plans[text_index]
                view = vectors.copy()
                view[longer] = view_vectors[view_at:view_at + len(joined)]
                view_at += len(joined)
                views.append(view)
            text_index += 1
        return contexts, views

    def _view_plan(self, context: list[str]) -> tuple[np.ndarray, list[str]]:
        """The text view at each position is the encoder on the recent text of the sentences up to it (at most
        VIEW_CONTEXT of them), as `context_text.context_views` reads the bank; one sentence is its own vector.
        Returns the positions that need an encoding of their own, and their texts."""
        counts = self.encoder.token_counts(context)
        ends = np.arange(1, len(context) + 1)
        starts = kept_starts(counts, np.maximum(ends - VIEW_CONTEXT, 0), ends, self.encoder.max_tokens)
        longer = np.flatnonzero(ends - starts > 1)
        return longer, joined_texts(np.asarray(context, dtype=object), starts[longer], ends[longer])

    def _forward(self, contexts: list[np.ndarray], views: list[np.ndarray] | None) -> np.ndarray:
        """(n, D) predictions of contexts of any lengths in one model forward: stacked into one array and asked as
        `Queries` over it, as the evaluation asks the bank (`ModelPredictor.predict` right-pads them)."""
        lengths = np.array([len(c) for c in contexts], dtype=np.int64)
        ends = np.cumsum(lengths)
        queries = Queries(ends, ends - lengths, np.zeros(len(contexts), dtype=np.int64))
        stacked = np.concatenate(contexts).astype(np.float32, copy=False)
        # free text has no TMD codes: a TMD-conditioned model reads the "unknown" (zero) vector at every position
        tmd = np.zeros((len(stacked), TMD_DIM), dtype=np.float32) if self.predictor.uses_tmd else None
        one_forward = ModelPredictor(self.predictor.model, self.predictor.name, batch_size=len(contexts),
                                     device=self.predictor.device,
                                     views=np.concatenate(views) if views is not None else None)
        return one_forward.predict(stacked, queries, tmd)

    def _decode(self, queries: Sequence[ContextQuery], predicted: np.ndarray, model: str,
                times: tuple[float, float, float]) -> list[NextConcept]:
        """One FAISS search, deep enough for each query's k and its excluded context texts."""
        started, encoded, predicted_at = times
        depth = max(q.k + (EXCLUDE_DEPTH_PER_SENTENCE * q.length if q.exclude_context and q.texts else 0)
                    for q in queries)
        decoded = retrieval_decode(self.index, self.bank.texts, predicted, depth)
        done = time.perf_counter()
        latency = {"encode": encoded - started, "predict": predicted_at - encoded, "decode": done - predicted_at,
                   "total": done - started}
        latency_ms = {name: round(seconds * 1000, 3) for name, seconds in latency.items()}
        answers = []
        for query, texts, scores, rows in zip(queries, decoded.texts, decoded.scores, decoded.rows):
            excluded = set(query.texts) if query.exclude_context and query.texts else set()
            neighbours = [Neighbour(text, float(score), str(self.bank.article_ids[row]), int(row),
                                    str(self.concept_ids[row]))
                          for text, score, row in zip(texts, scores, rows) if row >= 0 and text not in excluded]
            answers.append(NextConcept(model, str(self.checkpoint), list(query.texts or ()), neighbours[:query.k],
                                       dict(latency_ms)))
        return answers

"""The retrieval benchmark (DESIGN.md section 7; the predecessor's RAG bench, done right): given a query's context
text, retrieve the passage that comes next, from the full bank with the query's own context passages removed.

A passage is a bank concept (row); the one relevant passage is the query's target row. Backends rank the bank:
`vec` (encode_context: the encoder on the joined context text, searched with FAISS), `bm25`, `lex` (the
predecessor's token overlap), `lvm` (each model's predicted vector, searched with FAISS) and `hybrid` (each lvm fused
with vec and with bm25: reciprocal rank fusion, k = 60, and a weighted sum of min-max-normalised scores whose weight
is chosen on the val queries, never on test). Each backend's ranking is searched `depth` + (context length) deep, its
query's context rows dropped, and its best `depth` rows kept as a ranx `Run`; metrics (Recall@1/5/10, MRR@10,
nDCG@10) and fusion are ranx's. Means carry 95% cluster-bootstrap CIs by article, and every backend's Recall@10 is
compared with vec's (paired). Also: end-to-end latency from text, index memory, and the benchmark in BEIR layout.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lvm_pipeline.arrays import row_slices
from lvm_pipeline.datasets.sequences import TrainingSequences
from lvm_pipeline.evaluation.bootstrap import ClusterBootstrap, Estimate
from lvm_pipeline.evaluation.context_text import BM25, EncodeContext, TextEncoder, joined_texts
from lvm_pipeline.evaluation.queries import Predictor, Queries, Ranker
from lvm_pipeline.evaluation.retrieval import BankIndex
from lvm_pipeline.files import atomic_write
from lvm_pipeline.markdown import md_table
from lvm_pipeline.tmd.schema import bank_tmd_vectors

DEPTH = 100  # rows kept per query and backend once its context is removed (fusion needs depth)
METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")  # ranx's names
HEADLINE = "recall@10"  # compared with vec, and the predecessor's target
TARGET_GAIN = 0.05  # the predecessor's target: the best lvm / hybrid Recall@10 above vec's by more than 5 points
REFERENCE = "vec"
FUSION_PARTNERS = ("vec", "bm25")
RRF_K = 60
FUSION_METRIC = "ndcg@10"  # what the weighted sum's weight maximises on val
WEIGHT_STEP = 0.1  # the weight grid, 0..1
TIE_BREAK = 1e-6  # per rank, times the query's score range: ranx's sort is not stable, so scores are made distinct
ALL_TIED_STEP = 1e-13  # per rank, for a query whose scores all tie
WORD = re.compile(r"\b\w\w+\b")
LEX_BATCH_CELLS = 2**24  # queries x bank rows of one lex batch
LATENCY_WARMUP = 3


def metric_key(metric: str) -> str:
    """ranx's "recall@10" as the report's "recall_at_10"."""
    return metric.replace("@", "_at_")


def metric_label(metric: str) -> str:
    """ranx's "recall@10" as "Recall@10"."""
    name, _, k = metric.partition("@")
    return {"recall": "Recall", "mrr": "MRR", "ndcg": "nDCG"}.get(name, name) + (f"@{k}" if k else "")


class TokenOverlap:
    """The predecessor's lexical backend (`lex`): the number of distinct lowercase word tokens (`\\b\\w\\w+\\b`) a
    passage shares with the query, divided by the query's distinct tokens; ties go to the lower bank row. The bank
    is a binary vocabulary x passage sparse matrix; a batch of queries is one sparse product."""

    name = "lex"

    def __init__(self, texts: np.ndarray):
        self.texts = texts
        self.vocabulary: dict[str, int] = {}
        passages = [[self.vocabulary.setdefault(word, len(self.vocabulary)) for word in self.words(text)] for text in texts]
        self.by_token = binary_rows(passages, len(self.vocabulary)).T.tocsr()  # (V, N)

    @staticmethod
    def words(text) -> set[str]:
        return set(WORD.findall(str(text).lower()))

    @property
    def nbytes(self) -> int:
        return int(self.by_token.data.nbytes + self.by_token.indices.nbytes + self.by_token.indptr.nbytes)

    def search_texts(self, query_texts: Sequence[str], depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, depth) overlap shares and bank rows, best first."""
        n_rows = self.by_token.shape[1]
        depth = min(depth, n_rows)
        scores, rows = np.zeros((len(query_texts), depth), np.float32), np.full((len(query_texts), depth), -1, np.int64)
        for batch in row_slices(len(query_texts), max(1, LEX_BATCH_CELLS // max(n_rows, 1))):
            words = [self.words(text) for text in query_texts[batch]]
            known = [[self.vocabulary[w] for w in ws if w in self.vocabulary] for ws in words]
            shared = (binary_rows(known, len(self.vocabulary)) @ self.by_token).toarray()  # (b, N) counts
            # the `depth` best: every row above the depth-th count, then the lowest rows of those equal to it
            kth = np.partition(shared, n_rows - depth, axis=1)[:, n_rows - depth, None]
            equal = shared == kth
            need = depth - (shared > kth).sum(axis=1, keepdims=True)
            chosen = (shared > kth) | (equal & (np.cumsum(equal, axis=1) <= need))
            top = np.nonzero(chosen)[1].reshape(-1, depth)  # ascending rows
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(shared, top, 1), axis=1, kind="stable"), 1)
            rows[batch] = top
            sizes = np.maximum([len(ws) for ws in words], 1)
            scores[batch] = np.take_along_axis(shared, top, 1) / sizes[:, None]
        return scores, rows

    def search(self, queries: Queries, depth: int) -> tuple[np.ndarray, np.ndarray]:
        return self.search_texts(joined_texts(self.texts, queries.context_start, queries.target), depth)


def binary_rows(columns: Sequence[Sequence[int]], width: int) -> sp.csr_matrix:
    """A float32 0/1 CSR matrix with one row per list of column indices."""
    indptr = np.concatenate([[0], np.cumsum([len(c) for c in columns])]).astype(np.int64)
    indices = np.fromiter((i for c in columns for i in c), dtype=np.int64, count=int(indptr[-1]))
    return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(len(columns), width))


class VectorSearch:
    """A vector predictor (encode_context, a model) as a ranker: its predictions searched in the bank's index."""

    def __init__(self, name: str, predictor: Predictor, vectors: np.ndarray, index: BankIndex, tmd: np.ndarray | None = None):
        self.name, self.predictor, self.vectors, self.index = name, predictor, vectors, index
        self.tmd = tmd if getattr(predictor, "uses_tmd", False) else None

    def search(self, queries: Queries, depth: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(self.predictor.predict(self.vectors, queries, self.tmd), depth)


# --- runs: rankings without the context, as ranx Runs and Qrels ---------------------------------------------------

def without_context(scores: np.ndarray, rows: np.ndarray, queries: Queries, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """The best `depth` of each ranking once its query's context rows [context_start, target) and the -1 pads are
    dropped (-1 pads where fewer remain)."""
    keep = (rows >= 0) & ~((rows >= queries.context_start[:, None]) & (rows < queries.target[:, None]))
    order = np.argsort(~keep, axis=1, kind="stable")[:, :depth]
    kept = np.take_along_axis(keep, order, 1)
    out_scores = np.where(kept, np.take_along_axis(scores, order, 1), 0).astype(np.float64)
    out_rows = np.where(kept, np.take_along_axis(rows, order, 1), -1)
    if out_rows.shape[1] < depth:
        pad = depth - out_rows.shape[1]
        out_scores, out_rows = np.pad(out_scores, ((0, 0), (0, pad))), np.pad(out_rows, ((0, 0), (0, pad)), constant_values=-1)
    return out_scores, out_rows


def retrieve(ranker: Ranker, queries: Queries, bank_size: int, depth: int = DEPTH) -> tuple[np.ndarray, np.ndarray]:
    """(n, depth) scores and bank rows of `ranker` for each query, its own context removed: one search per query,
    `depth` + (the longest context) deep."""
    search_depth = min(depth + int(queries.context_length.max(initial=0)), bank_size)
    return without_context(*ranker.search(queries, search_depth), queries, depth)


def query_ids(split: str, n: int) -> list[str]:
    """Zero-padded ids, so that ranx's order (sorted ids) is the queries' order."""
    width = len(str(max(n - 1, 0)))
    return [f"{split}-{i:0{width}d}" for i in range(n)]


def make_qrels(ids: Sequence[str], queries: Queries):
    """One relevant passage per query: its target row."""
    from ranx import Qrels

    return Qrels({q: {str(target): 1} for q, target in zip(ids, queries.target.tolist())})


def make_run(ids: Sequence[str], scores: np.ndarray, rows: np.ndarray, name: str):
    """A ranx Run of rankings (best first, -1 pads skipped). Each query's scores are lowered by TIE_BREAK x its score
    range per rank (ALL_TIED_STEP when all its scores are equal), so that ranx, whose sort is not stable, keeps the
    backend's own order among ties; a min-max normalised score moves by at most `depth` x TIE_BREAK (all tied: stays
    under 0.01, ranx's normalisation dividing by at least 1e-9)."""
    from ranx import Run

    valid = rows >= 0
    span = (np.where(valid, scores, -np.inf).max(axis=1, initial=-np.inf)
            - np.where(valid, scores, np.inf).min(axis=1, initial=np.inf))
    step = np.where(np.isfinite(span) & (span > 0), TIE_BREAK * span, ALL_TIED_STEP)[:, None]
    distinct = scores - step * np.arange(scores.shape[1])
    return Run({q: dict(zip(map(str, r[r >= 0].tolist()), s[r >= 0].tolist()))
                for q, r, s in zip(ids, rows, distinct)}, name=name)


def per_query_metrics(qrels, run, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """metric key -> (n,) ranx's value of each query, in the order of `ids`."""
    from ranx import evaluate

    values = evaluate(qrels, run, list(METRICS), return_mean=False, save_results_in_run=False)
    position = {q: i for i, q in enumerate(ids)}
    order = np.fromiter((position[q] for q in qrels.keys()), dtype=np.int64, count=len(ids))
    out = {}
    for metric in METRICS:
        out[metric_key(metric)] = np.empty(len(ids))
        out[metric_key(metric)][order] = values[metric]
    return out


# --- fusion ---------------------------------------------------------------------------------------------------------

def rrf(runs: Sequence, name: str):
    """Reciprocal rank fusion (ranx), k = RRF_K: sum over runs of 1 / (k + rank)."""
    from ranx import fuse

    fused = fuse(list(runs), norm=None, method="rrf", params={"k": RRF_K})
    fused.name = name
    return fused


def val_weights(val_qrels, val_runs: Sequence, step: float = WEIGHT_STEP) -> tuple[list[float], float]:
    """The weighted sum's weights (one per run, summing to 1, on a grid of `step`) that maximise FUSION_METRIC on the
    val queries (ranx's optimize_fusion over min-max normalised runs; of equal scores it keeps the last grid point,
    the most weight on the first run), and that score."""
    from ranx import optimize_fusion

    best, report = optimize_fusion(val_qrels, list(val_runs), norm="min-max", method="wsum", metric=FUSION_METRIC,
                                   step=step, show_progress=False, return_optimization_report=True)
    return [float(w) for w in best["weights"]], float(max(report.results))


def weighted_sum(runs: Sequence, weights: Sequence[float], name: str):
    """ranx's weighted sum of min-max normalised scores."""
    from ranx import fuse

    fused = fuse(list(runs), norm="min-max", method="wsum", params={"weights": list(weights)})
    fused.name = name
    return fused


@dataclass(frozen=True)
class Fusion:
    """One hybrid: a model fused with a partner backend; for the weighted sum, the weights chosen on val."""

    model: str
    partner: str
    method: str  # "rrf" or "wsum"
    model_weight: float | None = None
    partner_weight: float | None = None
    val_score: float | None = None  # FUSION_METRIC on val at the chosen weights

    @property
    def name(self) -> str:
        return f"{self.model}+{self.partner} {self.method}"


# --- latency from text ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Latency:
    single_p50_ms: float
    single_p95_ms: float
    batched_ms: float  # per query, in one batch
    batch_size: int


def measure_latency(bank, encoder: TextEncoder, index: BankIndex, rankers: dict[str, Ranker],
                    models: dict[str, Predictor], queries: Queries, n_single: int, batch_size: int, depth: int,
                    tmd: np.ndarray | None = None, max_context: int | None = None) -> dict[str, Latency]:
    """End-to-end time per query from its context text to `depth` ranked rows: vec encodes the joined text and
    searches the index; bm25 and lex rank from the text; a model encodes the context's sentences (a text-view model
    also the joined text up to each of them, at most `max_context` sentences), predicts and searches. The first
    `n_single` queries one at a time (after LATENCY_WARMUP others), then the first `batch_size` as one batch.
    The sentences (and views) are encoded once per query (or batch) and that time is added to each model's own (the
    same encoding for all of them)."""
    article_start = bank.article_bounds[bank.bank_article, 0]

    def encoded_views(rows: np.ndarray, sentences: np.ndarray) -> np.ndarray:
        """The text views of bank `rows` (context_text.context_views from text): a row's own vector when it opens its
        article, else the encoder on the joined text of the (at most max_context) rows up to it."""
        starts = np.maximum(article_start[rows], rows + 1 - (max_context or len(bank)))
        views, longer = sentences.copy(), np.flatnonzero(rows + 1 - starts > 1)
        views[longer] = encoder.encode(joined_texts(bank.texts, starts[longer], rows[longer] + 1))
        return views

    def timings(sample: Queries) -> dict[str, float]:
        texts = joined_texts(bank.texts, sample.context_start, sample.target)
        k = depth + int(sample.context_length.max())
        seconds = {}
        started = time.perf_counter()
        index.search(encoder.encode(texts), k)
        seconds[REFERENCE] = time.perf_counter() - started
        for name, ranker in rankers.items():
            started = time.perf_counter()
            ranker.search_texts(texts, k)
            seconds[name] = time.perf_counter() - started
        if models:
            rows = np.concatenate([np.arange(s, t) for s, t in zip(sample.context_start.tolist(), sample.target.tolist())])
            ends = np.cumsum(sample.context_length)
            local = Queries(ends, ends - sample.context_length, sample.article)  # rows of the encoded sentences
            started = time.perf_counter()
            sentences = encoder.encode([str(t) for t in bank.texts[rows]])
            encoding = time.perf_counter() - started
            views = None
            if any(getattr(model, "uses_view", False) for model in models.values()):
                started = time.perf_counter()
                views = encoded_views(rows, sentences)
                view_encoding = time.perf_counter() - started
            for name, model in models.items():
                local_model = copy.copy(model)  # the same weights, reading the views of these sentences
                if getattr(model, "uses_view", False):
                    local_model.views = views
                local_tmd = tmd[rows] if tmd is not None and getattr(model, "uses_tmd", False) else None
                started = time.perf_counter()
                index.search(local_model.predict(sentences, local, local_tmd), k)
                seconds[name] = encoding + time.perf_counter() - started
                seconds[name] += view_encoding if getattr(model, "uses_view", False) else 0.0
        return seconds

    for i in range(len(queries) - min(LATENCY_WARMUP, len(queries)), len(queries)):  # warm-up, on other queries
        timings(queries.subset(np.array([i])))
    single = [timings(queries.subset(np.array([i]))) for i in range(min(n_single, len(queries)))]
    batch = queries.subset(np.arange(min(batch_size, len(queries))))
    batched = timings(batch)
    return {name: Latency(1000 * float(np.percentile([s[name] for s in single], 50)),
                          1000 * float(np.percentile([s[name] for s in single], 95)),
                          1000 * batched[name] / len(batch), len(batch))
            for name in batched}


# --- the benchmark --------------------------------------------------------------------------------------------------

@dataclass
class RetrievalBenchmark:
    bank_size: int
    queries: Queries
    depth: int
    kinds: dict[str, str]  # backend -> vec, bm25, lex, lvm or hybrid
    per_query: dict[str, dict[str, np.ndarray]]  # backend -> metric key -> (n,) on the test queries
    estimates: dict[str, dict[str, Estimate]]  # backend -> metric key -> mean with its 95% CI
    minus_reference: dict[str, Estimate]  # backend -> its Recall@10 minus vec's (paired)
    fusions: list[Fusion]
    latency: dict[str, Latency]
    index_bytes: dict[str, int]
    seconds: dict[str, float]  # stage -> wall time
    val_queries: int = 0
    val_recall: dict[str, float] = field(default_factory=dict)  # model -> its Recall@10 on the val queries
    n_resamples: int = 0
    weight_step: float = WEIGHT_STEP
    runs: dict[str, object] = field(default_factory=dict, repr=False)  # backend -> ranx Run on test

    @property
    def n_articles(self) -> int:
        return len(np.unique(self.queries.article))

    @property
    def best_challenger(self) -> str | None:
        """The lvm or hybrid backend with the highest Recall@10 (None without a model)."""
        challengers = [name for name, kind in self.kinds.items() if kind in ("lvm", "hybrid")]
        return max(challengers, key=lambda name: self.estimates[name][metric_key(HEADLINE)].value, default=None)

    @property
    def target(self) -> dict:
        """The predecessor's target: the best lvm / hybrid Recall@10 > vec's + 5 points."""
        reference = self.estimates[REFERENCE][metric_key(HEADLINE)].value
        best = self.best_challenger
        value = None if best is None else self.estimates[best][metric_key(HEADLINE)].value
        difference = None if best is None else self.minus_reference[best]
        headline = metric_label(HEADLINE)
        return {"rule": f"best lvm / hybrid {headline} > {REFERENCE} {headline} + {TARGET_GAIN * 100:g} points",
                "best": best, "best_value": value, "reference_value": reference,
                "difference": None if difference is None else difference.to_json(),
                "met": bool(value is not None and value > reference + TARGET_GAIN)}


def run_retrieval_benchmark(sequences: TrainingSequences, encoder: TextEncoder, embeddings, models: Sequence[Predictor] = (),
                            depth: int = DEPTH, n_resamples: int = 1000, seed: int = 0, val_limit: int = 0,
                            fused_models: int = 0, weight_step: float = WEIGHT_STEP, latency_queries: int = 50,
                            latency_batch: int = 256, log: Callable[[str], None] = lambda message: None) -> RetrievalBenchmark:
    """Every backend on the test windows of `sequences` against the full bank, context removed. `embeddings`: the
    bank encoder's (cached) ContextEmbeddings, for vec; `models`: the trained predictors. On the val windows (a
    seeded sample of `val_limit`; 0: all) the models are ranked by Recall@10 and the best `fused_models` (0: all)
    are fused, their weighted-sum weights chosen there. `latency_queries` 0 skips the latency."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = seconds.get(name, 0.0) + now - clock
        clock = now
        log(f"retrieval_benchmark: {name} in {seconds[name]:.1f} s")

    bank = sequences.bank
    test, val = sequences.windows["test"], sequences.windows["val"]
    if not len(test):
        raise ValueError("the test split has no queries: the bank is too small to benchmark")
    if models and not len(val):
        raise ValueError("the val split has no queries: the fusion weights cannot be chosen")
    if val_limit and len(val) > val_limit:
        val = val.subset(np.sort(np.random.default_rng(seed).choice(len(val), val_limit, replace=False)))
    tmd = bank_tmd_vectors(bank.column("tmd_bits")) if any(getattr(m, "uses_tmd", False) for m in models) else None
    index = BankIndex(bank.vectors)
    rankers: dict[str, Ranker] = {REFERENCE: VectorSearch(REFERENCE, EncodeContext(embeddings), bank.vectors, index),
                                  "bm25": BM25(bank.texts), "lex": TokenOverlap(bank.texts)}
    rankers |= {m.name: VectorSearch(m.name, m, bank.vectors, index, tmd) for m in models}
    kinds = {REFERENCE: "vec", "bm25": "bm25", "lex": "lex"} | {m.name: "lvm" for m in models}
    stage("indexes")
    warm_up_ranx()
    stage("ranx warm-up")
    ids = {"test": query_ids("test", len(test)), "val": query_ids("val", len(val))}
    qrels = {"test": make_qrels(ids["test"], test), "val": make_qrels(ids["val"], val)}
    runs = {name: make_run(ids["test"], *retrieve(ranker, test, len(bank), depth), name) for name, ranker in rankers.items()}
    stage("test runs")
    fusions, val_recall = [], {}
    if models:
        val_runs = {name: make_run(ids["val"], *retrieve(rankers[name], val, len(bank), depth), name)
                    for name in (*FUSION_PARTNERS, *(m.name for m in models))}
        headline = metric_key(HEADLINE)
        val_recall = {m.name: float(per_query_metrics(qrels["val"], val_runs[m.name], ids["val"])[headline].mean())
                      for m in models}
        stage("val runs")
        for model in sorted(val_recall, key=val_recall.get, reverse=True)[:fused_models or None]:
            for partner in FUSION_PARTNERS:
                # the partner first: of equal val scores, the weight stays on the partner (the model must earn it)
                weights, val_score = val_weights(qrels["val"], [val_runs[partner], val_runs[model]], weight_step)
                pair = [runs[partner], runs[model]]
                fusions += [Fusion(model, partner, "rrf"), Fusion(model, partner, "wsum", weights[1], weights[0], val_score)]
                runs[fusions[-2].name] = rrf(pair, fusions[-2].name)
                runs[fusions[-1].name] = weighted_sum(pair, weights, fusions[-1].name)
        stage("fusion")
    kinds |= {f.name: "hybrid" for f in fusions}
    per_query = {name: per_query_metrics(qrels["test"], run, ids["test"]) for name, run in runs.items()}
    bootstrap = ClusterBootstrap(test.article, n_resamples, seed)
    estimates = {name: {m: bootstrap.estimate(v) for m, v in values.items()} for name, values in per_query.items()}
    headline = metric_key(HEADLINE)
    minus_reference = {name: bootstrap.difference(values[headline], per_query[REFERENCE][headline])
                       for name, values in per_query.items() if name != REFERENCE}
    stage("metrics")
    latency = {}
    if latency_queries:
        sample = test.subset(np.random.default_rng(seed + 1).permutation(len(test)))
        latency = measure_latency(bank, encoder, index, {"bm25": rankers["bm25"], "lex": rankers["lex"]},
                                  {m.name: m for m in models}, sample, latency_queries, latency_batch, depth, tmd,
                                  sequences.spec.max_context)
        stage("latency")
    index_bytes = {"vec / lvm (FAISS)": index.size * bank.vectors.shape[1] * 4, "bm25 (bm25s)": bm25_bytes(rankers["bm25"]),
                   "lex (sparse matrix)": rankers["lex"].nbytes}
    return RetrievalBenchmark(len(bank), test, depth, kinds, per_query, estimates, minus_reference, fusions, latency,
                              index_bytes, seconds, len(val), val_recall, n_resamples, weight_step, runs)


def warm_up_ranx() -> None:
    """Every ranx function used here, once on a toy run: numba compiles them on first use in a fresh environment
    (cached on disk) and loads them in each process; the benchmark times that as its own stage. Ten queries: ranx
    drops to one thread for fewer."""
    toy = Queries(np.arange(1, 11), np.arange(10), np.arange(10))
    ids = query_ids("toy", len(toy))
    qrels = make_qrels(ids, toy)
    rows, scores = np.stack([toy.context_start, toy.target], axis=1), np.tile([1.0, 0.5], (len(toy), 1))
    runs = [make_run(ids, scores, rows, "a"), make_run(ids, scores, rows[:, ::-1].copy(), "b")]
    per_query_metrics(qrels, rrf(runs, "rrf"), ids)
    per_query_metrics(qrels, weighted_sum(runs, val_weights(qrels, runs, 0.5)[0], "wsum"), ids)


def bm25_bytes(bm25: BM25) -> int:
    """Bytes of the bm25s index's arrays (the sparse score matrix)."""
    arrays = [v for v in bm25.index.scores.values() if isinstance(v, np.ndarray)]
    extra = getattr(bm25.index, "nonoccurrence_array", None)
    return int(sum(a.nbytes for a in arrays) + (extra.nbytes if isinstance(extra, np.ndarray) else 0))


# --- BEIR export ----------------------------------------------------------------------------------------------------

BEIR_FILES = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")


def export_beir(bank, queries: Queries, directory: Path) -> dict[str, Path]:
    """The test queries in BEIR layout: corpus.jsonl (one passage per bank row, `_id` the row), queries.jsonl (the
    context text, with its context row ids in metadata: the task removes them from the ranking, which BEIR's layout
    cannot express) and qrels/test.tsv (the target row). Ids are the runs' ids."""
    directory = Path(directory)
    names = bank.concepts.column_names
    titles = bank.column("title") if "title" in names else bank.article_ids
    cpe_ids, articles = bank.column("cpe_id"), bank.article_ids

    def lines(records) -> Callable:
        return lambda f: f.writelines((json.dumps(r, ensure_ascii=False) + "\n").encode() for r in records)

    corpus = ({"_id": str(row), "title": str(titles[row]), "text": str(bank.texts[row]),
               "metadata": {"cpe_id": str(cpe_ids[row]), "article_id": str(articles[row])}} for row in range(len(bank)))
    ids = query_ids("test", len(queries))
    texts = joined_texts(bank.texts, queries.context_start, queries.target)
    records = ({"_id": q, "text": text, "metadata": {"context_ids": [str(r) for r in range(start, target)],
                                                     "article": str(articles[target])}}
               for q, text, start, target in zip(ids, texts, queries.context_start.tolist(), queries.target.tolist()))
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{t}\t1\n" for q, t in zip(ids, queries.target.tolist()))
    return {"corpus": atomic_write(directory / "corpus.jsonl", lines(corpus)),
            "queries": atomic_write(directory / "queries.jsonl", lines(records)),
            "qrels": atomic_write(directory / "qrels" / "test.tsv", lambda f: f.write(qrels.encode()))}


def load_beir_qrels(path: Path):
    """qrels/test.tsv as a ranx Qrels."""
    import pandas as pd
    from ranx import Qrels

    frame = pd.read_csv(path, sep="\t", dtype={"query-id": object, "corpus-id": object, "score": np.int64})
    return Qrels.from_df(frame, q_id_col="query-id", doc_id_col="corpus-id", score_col="score")


# --- the report -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    json: Path
    text: str


def _percent(estimate: Estimate) -> str:
    return f"{estimate.value:.1%} ({estimate.ci_low:.1%} to {estimate.ci_high:.1%})"


def _points(estimate: Estimate) -> str:
    return f"{estimate.value * 100:+.1f} ({estimate.ci_low * 100:+.1f} to {estimate.ci_high * 100:+.1f})"


def render_markdown(result: RetrievalBenchmark, about: dict) -> str:
    target = result.target
    verdict = "met" if target["met"] else "not met"
    best = (f"best {target['best']} {target['best_value']:.1%} vs {REFERENCE} {target['reference_value']:.1%}"
            if target["best"] else f"no model trained yet; {REFERENCE} {target['reference_value']:.1%}")
    headers = ["backend", "kind", *map(metric_label, METRICS), f"{metric_label(HEADLINE)} - {REFERENCE} (points)"]
    rows = [[name, kind, *(_percent(result.estimates[name][metric_key(m)]) for m in METRICS),
             "reference" if name == REFERENCE else _points(result.minus_reference[name])]
            for name, kind in result.kinds.items()]
    parts = [
        "# Retrieval benchmark: given the context text, retrieve the next passage",
        f"**The predecessor's target ({target['rule']}): {verdict}** ({best}).",
        f"Bank {result.bank_size:,} passages (every concept, all splits), the query's own context passages removed; "
        f"{len(result.queries):,} test queries from {result.n_articles:,} articles; one relevant passage each (its "
        f"target), so Recall@K = Hit@K; chance Recall@10 ~ {10 / result.bank_size:.4%}. Each backend's top {result.depth} "
        f"rows per query, metrics and fusion by ranx; 95% cluster-bootstrap CIs by article ({result.n_resamples:,} "
        f"resamples); the difference to {REFERENCE} is paired.",
        md_table(headers, rows),
    ]
    if result.fusions:
        fused = sorted({f.model for f in result.fusions}, key=result.val_recall.get, reverse=True)
        ranked = ", ".join(f"{m} {v:.1%}" for m, v in sorted(result.val_recall.items(), key=lambda mv: -mv[1]))
        parts += ["## Fusion", f"The models by {metric_label(HEADLINE)} on {result.val_queries:,} val queries: {ranked}; "
                  f"fused with {' and '.join(FUSION_PARTNERS)}: {', '.join(fused)}. RRF with k = {RRF_K}; the weighted "
                  f"sum of min-max normalised scores with its weight chosen on those val queries "
                  f"({metric_label(FUSION_METRIC)}, grid step {result.weight_step:g}), never on test.",
                  md_table(["hybrid", "model weight", "partner weight", f"val {metric_label(FUSION_METRIC)}"],
                           [[f.name, f"{f.model_weight:.2f}", f"{f.partner_weight:.2f}", f"{f.val_score:.3f}"]
                            for f in result.fusions if f.method == "wsum"])]
    if result.latency:
        batch = next(iter(result.latency.values())).batch_size
        parts += ["## Latency from text (ms per query)",
                  "Single queries one at a time, and one batch: vec encodes the joined context text and searches FAISS; "
                  "bm25 and lex rank from the text; a model encodes the context's sentences (a text-view model also "
                  "its views), predicts and searches (that encoding timed once, added to each model's own time).",
                  md_table(["backend", "single p50", "single p95", f"batched (batch of {batch})"],
                           [[name, f"{t.single_p50_ms:.1f}", f"{t.single_p95_ms:.1f}", f"{t.batched_ms:.2f}"]
                            for name, t in result.latency.items()])]
    parts += ["## Index memory", md_table(["index", "MiB"], [[n, f"{b / 2**20:.1f}"] for n, b in result.index_bytes.items()]),
              "## Time", md_table(["stage", "seconds"], [[n, f"{s:.1f}"] for n, s in result.seconds.items()]),
              "`ranx warm-up` is ranx loading its numba functions (cached on disk; compiling them, once in a fresh "
              "environment, takes about a minute more).",
              f"Bank {about.get('bank_version', '?')}, sequences {about.get('sequences_version', '?')}, encoder "
              f"{about.get('encoder_fingerprint', '?')}."]
    return "\n\n".join(parts) + "\n"


def to_json(result: RetrievalBenchmark, about: dict) -> dict:
    return {
        "bank_size": result.bank_size, "n_queries": len(result.queries), "n_articles": result.n_articles,
        "depth": result.depth, "metrics": [metric_key(m) for m in METRICS], "val_queries": result.val_queries,
        "backends": {name: {"kind": kind, **{m: e.to_json() for m, e in result.estimates[name].items()}}
                     for name, kind in result.kinds.items()},
        f"{metric_key(HEADLINE)}_minus_{REFERENCE}": {n: e.to_json() for n, e in result.minus_reference.items()},
        "fusion": {f.name: {"model": f.model, "partner": f.partner, "method": f.method, "model_weight": f.model_weight,
                            "partner_weight": f.partner_weight, f"val_{metric_key(FUSION_METRIC)}": f.val_score}
                   for f in result.fusions},
        "rrf_k": RRF_K, "fusion_metric": FUSION_METRIC, "weight_step": result.weight_step,
        f"val_{metric_key(HEADLINE)}": result.val_recall,
        "latency_ms": {n: {"single_p50": t.single_p50_ms, "single_p95": t.single_p95_ms, "batched": t.batched_ms,
                           "batch_size": t.batch_size} for n, t in result.latency.items()},
        "index_bytes": result.index_bytes, "seconds": result.seconds, "target": result.target,
        "n_resamples": result.n_resamples, **about, "generated_at": datetime.now(UTC).isoformat(),
    }


def write_retrieval_report(result: RetrievalBenchmark, reports_dir: Path, about: dict) -> ReportFiles:
    """data/reports/retrieval_benchmark.md and .json."""
    text = render_markdown(result, about)
    markdown = atomic_write(Path(reports_dir) / "retrieval_benchmark.md", lambda f: f.write(text.encode()))
    payload = json.dumps(to_json(result, about), indent=2).encode()
    return ReportFiles(markdown, atomic_write(Path(reports_dir) / "retrieval_benchmark.json", lambda f: f.write(payload)), text)

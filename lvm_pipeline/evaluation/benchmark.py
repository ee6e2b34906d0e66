"""One honest evaluation: every predictor on the same test queries, the same full bank, the same rule.

`run_benchmark` fits the four vector baselines on the train (and val) windows, adds the two text-aware ones
(`encode_context` with the bank's encoder, and `bm25`, a ranker), predicts every test query with them and with
the given models, and measures each prediction the same way: full-bank Hit@K
(and with the query's own context removed), within-article rank, next-vector cosine, L2, margin,
CA and PAR, and the retrieval-decoded text's BLEU-1/4 against the target's text, each with a 95%
cluster-bootstrap CI by article; with an encoder, the echo loop on a sample of queries, and with a vec2text
inverter too, the models' predictions inverted on a smaller sample (BLEU-1/4 and echo, `v2t_`); the paired
difference of each model to the best baseline on Hit@5; Hit@5 by context length and by TMD lane, and
with the lane re-ranking against without (`lanes`); and the GO / WARN / STOP decision against the best of all baselines.
A ranker (bm25) has no predicted vector: it gets the Hit@K figures (from its ranking) and decoding BLEU only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lvm_pipeline.datasets.sequences import TrainingSequences
from lvm_pipeline.evaluation.baselines import CopyLast, MeanContext, Ridge, SuccessorKNN
from lvm_pipeline.evaluation.bootstrap import ClusterBootstrap, Estimate
from lvm_pipeline.evaluation.context_text import BM25, EncodeContext, TextEncoder, context_embeddings
from lvm_pipeline.evaluation.decision import Decision, decide
from lvm_pipeline.evaluation.decoding import Decoded, echo_similarity, retrieval_decode
from lvm_pipeline.evaluation.ensemble import fit_ensemble
from lvm_pipeline.evaluation.lanes import lane_name, query_lanes, reranked_hits
from lvm_pipeline.evaluation.metrics import next_vector_metrics
from lvm_pipeline.evaluation.queries import Predictor, Queries, Ranker, is_ranker
from lvm_pipeline.evaluation.retrieval import BankIndex, chance_at_k, ranked_hits, retrieval_ranks, within_article_rank
from lvm_pipeline.text import bleu_scores
from lvm_pipeline.tmd.schema import bank_tmd_vectors

VECTOR_BASELINES = ("copy_last", "mean_context", "ridge", "successor_knn")
TEXT_BASELINES = ("encode_context", "bm25")  # encode_context needs the bank's encoder
BASELINES = VECTOR_BASELINES + TEXT_BASELINES
KS = (1, 5, 10)
CONTEXT_BUCKETS = ((1, 1), (2, 2), (3, 3), (4, 4), (5, 8), (9, 16), (17, 10**9))  # inclusive context-length ranges
N_EXAMPLES = 5
DECODE_K = 5  # texts decoded for each example query
ECHO_SAMPLE = 200  # queries whose decoded text is re-encoded for the echo loop
V2T_SAMPLE = 32  # of those, queries whose model predictions are inverted with vec2text (slow: 20 steps each)


Group = tuple[str, int, Estimate]  # (label, queries, Hit@5 on them)


@dataclass
class PredictorResult:
    name: str
    kind: str  # "baseline" or "model"
    per_query: dict[str, np.ndarray]  # metric -> (n,) values on the benchmark's queries
    estimates: dict[str, Estimate]  # metric -> mean with its 95% CI ("echo": on a sample, with an encoder)
    decoded: Decoded  # the DECODE_K nearest bank concepts of the prediction of each example query
    seconds_per_1k: float  # prediction time per 1,000 queries


@dataclass
class Benchmark:
    split: str
    bank_size: int
    queries: Queries
    results: dict[str, PredictorResult]
    decision: Decision
    differences: dict[str, Estimate]  # predictor -> its Hit@5 minus the best baseline's (paired)
    by_context_length: dict[str, list[Group]]  # predictor -> Hit@5 per context-length bucket
    by_lane: dict[str, list[Group]]  # predictor -> Hit@5 per TMD lane of the query
    rerank_gain: dict[str, Estimate]  # predictor -> Hit@5 re-ranked by lane minus Hit@5 (paired)
    examples: np.ndarray  # query indices shown as examples
    chance: dict[int, float] = field(default_factory=dict)  # k -> chance Hit@k
    ensemble: str | None = None  # the ensemble's members and val-chosen weights, when it was fitted

    @property
    def n_articles(self) -> int:
        return len(np.unique(self.queries.article))

    @property
    def models(self) -> list[str]:
        return [name for name, r in self.results.items() if r.kind == "model"]


def fit_baselines(sequences: TrainingSequences, encoder: TextEncoder | None = None,
                  cache_dir: Path | None = None) -> list[Predictor | Ranker]:
    """The baselines of DESIGN.md section 7: the four vector ones fitted on the train windows (ridge's lambda on
    val), bm25, and with the bank's `encoder` encode_context (its embeddings cached in `cache_dir`)."""
    vectors, windows = sequences.bank.vectors, sequences.windows
    baselines = [CopyLast(), MeanContext(), Ridge().fit(vectors, windows["train"], windows["val"]),
                 SuccessorKNN().fit(vectors, windows["train"])]
    if encoder is not None:
        baselines.append(EncodeContext(context_embeddings(sequences, encoder, cache_dir)))
    return [*baselines, BM25(sequences.bank.texts)]


def run_benchmark(sequences: TrainingSequences, models: Sequence[Predictor] = (), split: str = "test",
                  baselines: Sequence[Predictor] | None = None, n_resamples: int = 1000, seed: int = 0,
                  index: BankIndex | None = None, tmd: np.ndarray | None = None,
                  encode: Callable[[Sequence[str]], np.ndarray] | None = None,
                  invert: Callable[[np.ndarray], list[str]] | None = None, encoder: TextEncoder | None = None,
                  cache_dir: Path | None = None, ensemble: bool = False) -> Benchmark:
    """Every baseline and model on the `split` windows of `sequences`, against the full bank (`tmd`: the bank's
    (N, 16) TMD vectors for TMD-conditioned models, read from the bank when not given; `encoder`: the bank's
    encoder, for encode_context (cached in `cache_dir`) and the echo loop; `encode`: texts -> vectors for the echo
    loop alone; `invert`: vectors -> texts, vec2text's round trip of the models' predictions; `ensemble`: add the
    models and encode_context weighted on val as one more model, `ensemble`)."""
    bank, queries = sequences.bank, sequences.windows[split]
    encode = encode or (encoder.encode if encoder is not None else None)
    if invert is not None and encode is None:
        raise ValueError("the vec2text round trip re-encodes the inverted texts: it needs `encode` too")
    if tmd is None and any(getattr(model, "uses_tmd", False) for model in models):
        tmd = bank_tmd_vectors(bank.column("tmd_bits"))
    if not len(queries):
        raise ValueError(f"the {split} split has no queries: the bank is too small to benchmark")
    index = index or BankIndex(bank.vectors)
    bootstrap = ClusterBootstrap(queries.article, n_resamples=n_resamples, seed=seed)
    examples = np.random.default_rng(seed).choice(len(queries), size=min(N_EXAMPLES, len(queries)), replace=False)
    echo_sample = np.sort(np.random.default_rng(seed + 1).choice(len(queries), min(ECHO_SAMPLE, len(queries)), replace=False))
    echo_bootstrap = ClusterBootstrap(queries.article[echo_sample], n_resamples=n_resamples, seed=seed)
    v2t_sample = echo_sample[:V2T_SAMPLE]
    v2t_bootstrap = ClusterBootstrap(queries.article[v2t_sample], n_resamples=n_resamples, seed=seed)
    baselines = baselines if baselines is not None else fit_baselines(sequences, encoder, cache_dir)
    fitted = fit_ensemble(models, baselines, bank.vectors, sequences.windows["val"], index, tmd, seed) if ensemble else None
    models = [*models, fitted] if fitted is not None else list(models)
    predictors = [(p, "baseline") for p in baselines] + [(m, "model") for m in models]
    results = {}
    for predictor, kind in predictors:
        started = time.perf_counter()
        if is_ranker(predictor):
            per_query, decoded = measure_ranking(predictor, bank, queries, examples)
            estimates = {m: _estimate(bootstrap, v, queries) for m, v in per_query.items()}
            results[predictor.name] = PredictorResult(predictor.name, kind, per_query, estimates, decoded,
                                                      1000 * (time.perf_counter() - started) / len(queries))
            continue
        predicted = predictor.predict(bank.vectors, queries, tmd)
        seconds = time.perf_counter() - started
        per_query = measure(predicted, bank, queries, index)
        estimates = {m: _estimate(bootstrap, v, queries) for m, v in per_query.items()}
        if encode is not None:
            echoed = retrieval_decode(index, bank.texts, predicted[echo_sample], k=1).top_texts
            estimates["echo"] = echo_bootstrap.estimate(echo_similarity(encode, echoed, predicted[echo_sample]))
        if invert is not None and kind == "model":
            inverted = invert(np.asarray(predicted[v2t_sample]))
            v2t = bleu_scores(inverted, bank.texts[queries.target[v2t_sample]])
            v2t["echo"] = echo_similarity(encode, inverted, predicted[v2t_sample])
            estimates |= {f"v2t_{name}": v2t_bootstrap.estimate(values) for name, values in v2t.items()}
        results[predictor.name] = PredictorResult(predictor.name, kind, per_query, estimates,
                                                  retrieval_decode(index, bank.texts, predicted[examples], DECODE_K),
                                                  1000 * seconds / len(queries))
    hit5 = {name: r.per_query["hit_at_5"] for name, r in results.items()}
    baseline_names = [name for name, r in results.items() if r.kind == "baseline"]
    decision = decide(hit5, baseline_names, [n for n in results if n not in baseline_names], bootstrap)
    best = decision.best_baseline
    differences = {name: bootstrap.difference(hit5[name], hit5[best]) for name in results if name != best}
    rerank_gain = {name: bootstrap.difference(r.per_query["hit_at_5_lane_reranked"], hit5[name])
                   for name, r in results.items() if "hit_at_5_lane_reranked" in r.per_query}
    lengths = queries.context_length
    length_groups = [(str(low) if low == high else f"{low}+" if high >= 10**9 else f"{low}-{high}",
                      (lengths >= low) & (lengths <= high)) for low, high in CONTEXT_BUCKETS]
    by_lane_groups = lane_groups(bank.domain_codes, queries)
    by_length = {name: grouped_estimates(hits, queries, length_groups, n_resamples, seed) for name, hits in hit5.items()}
    by_lane = {name: grouped_estimates(hits, queries, by_lane_groups, n_resamples, seed) for name, hits in hit5.items()}
    return Benchmark(split, len(bank), queries, results, decision, differences, by_length, by_lane, rerank_gain,
                     examples, {k: chance_at_k(len(bank), k) for k in KS}, fitted and fitted.describe())


def measure(predicted: np.ndarray, bank, queries: Queries, index: BankIndex) -> dict[str, np.ndarray]:
    """Every per-query figure of one predictor's predictions."""
    figures = retrieval_ranks(index, predicted, queries, KS)
    rank, size = within_article_rank(predicted, bank.vectors, queries, bank.article_bounds)
    figures["within_article_rank"] = rank.astype(np.float64)
    figures["within_article_top1"] = (rank == 1).astype(np.float64)
    figures["hit_at_5_lane_reranked"] = reranked_hits(index, predicted, queries, bank.domain_codes)
    figures |= next_vector_metrics(predicted, bank.vectors, queries, bank.bank_article)
    decoded = retrieval_decode(index, bank.texts, predicted, k=1)
    bleu = bleu_scores(decoded.top_texts, bank.texts[queries.target])
    figures |= {f"decode_{name}": values for name, values in bleu.items()}
    return figures


def measure_ranking(ranker: Ranker, bank, queries: Queries, examples: np.ndarray) -> tuple[dict[str, np.ndarray], Decoded]:
    """A ranker's per-query figures (Hit@K from its ranking, both variants; BLEU of its top text) and the texts it
    ranks first for the example queries."""
    scores, rows = np.zeros((len(queries), DECODE_K), np.float32), np.full((len(queries), DECODE_K), -1, np.int64)

    def search(members: np.ndarray, depth: int) -> np.ndarray:  # keeps each query's DECODE_K best on the way
        found_scores, found = ranker.search(queries.subset(members), max(depth, DECODE_K))
        scores[members], rows[members] = found_scores[:, :DECODE_K], found[:, :DECODE_K]
        return found[:, :depth]

    figures = ranked_hits(search, queries, len(bank), KS)
    bleu = bleu_scores([str(bank.texts[row]) for row in rows[:, 0]], bank.texts[queries.target])
    figures |= {f"decode_{name}": values for name, values in bleu.items()}
    decoded = Decoded(rows[examples], scores[examples], [[str(bank.texts[r]) for r in found] for found in rows[examples]])
    return figures, decoded


def _estimate(bootstrap: ClusterBootstrap, values: np.ndarray, queries: Queries) -> Estimate:
    """Mean and CI; a metric undefined on some queries (PAR) is estimated on the queries where it is defined."""
    finite = np.isfinite(values)
    if finite.all():
        return bootstrap.estimate(values)
    if not finite.any():
        return Estimate(float("nan"), float("nan"), float("nan"))
    return ClusterBootstrap(queries.article[finite], bootstrap.n_resamples).estimate(values[finite])


def lane_groups(domain_codes: np.ndarray, queries: Queries) -> list[tuple[str, np.ndarray]]:
    """(lane name, query mask) of each TMD lane the queries fall in, the unknown lane last."""
    lanes = query_lanes(domain_codes, queries)
    return [(lane_name(lane), lanes == lane) for lane in sorted(set(lanes.tolist()), key=lambda x: (x < 0, x))]


def grouped_estimates(values: np.ndarray, queries: Queries, groups: Sequence[tuple[str, np.ndarray]],
                      n_resamples: int, seed: int) -> list[Group]:
    """The mean of `values` with its CI on each (label, query mask) group that has queries."""
    return [(label, int(mask.sum()), ClusterBootstrap(queries.article[mask], n_resamples, seed).estimate(values[mask]))
            for label, mask in groups if mask.any()]

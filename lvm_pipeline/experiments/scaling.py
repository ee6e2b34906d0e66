"""The predecessor's scaling coefficient, measured on the yardstick: test Hit@5 of a model trained on all the
validated batches over the same model and recipe trained on half of them (the first half of the batch ids),
both on the same test queries; and Hit@5 at every context length for the models and the baselines."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lvm_pipeline.datasets.sequences import TrainingSequences
from lvm_pipeline.evaluation.baselines import CopyLast
from lvm_pipeline.evaluation.benchmark import Benchmark, grouped_estimates, run_benchmark
from lvm_pipeline.evaluation.bootstrap import ClusterBootstrap, Estimate
from lvm_pipeline.evaluation.queries import Predictor
from lvm_pipeline.evaluation.report import cell, format_estimate
from lvm_pipeline.markdown import md_table

TARGET = 0.85  # the predecessor's bar for the coefficient


def half_of_batches(sequences: TrainingSequences) -> tuple[TrainingSequences, list[str]]:
    """The view training on the train articles of the first half of the bank's batches (by batch id), and those."""
    bank = sequences.bank
    batch_of_article = bank.column("batch_id")[bank.article_bounds[:, 0]]
    batches = sorted(set(batch_of_article.tolist()))
    if len(batches) < 2:
        raise ValueError(f"the bank holds {len(batches)} batch: the scaling coefficient needs two or more")
    half = batches[: len(batches) // 2]
    keep = np.isin(batch_of_article[sequences.articles["train"]], half)
    return sequences.with_train_articles(keep, f"batches {half[0]} .. {half[-1]} ({len(half)} of {len(batches)})"), half


@dataclass
class Scaling:
    benchmark: Benchmark  # the baselines, the model on all batches (`full`) and on half of them (`half`)
    full: str
    half: str
    coefficient: Estimate  # Hit@5(full) / Hit@5(half), the CI from the same resamples of articles
    half_batches: list[str]
    n_batches: int
    by_length: dict[str, list[tuple[int, int, Estimate]]]  # predictor -> (context length, queries, Hit@5)


def measure_scaling(sequences: TrainingSequences, full: Predictor, half: Predictor, half_batches: list[str],
                    n_resamples: int = 1000, seed: int = 0, encode: Callable | None = None) -> Scaling:
    # the coefficient compares the two models: copy-last is the one baseline shown beside them (the others cost time)
    benchmark = run_benchmark(sequences, [full, half], n_resamples=n_resamples, seed=seed, encode=encode,
                              baselines=[CopyLast()])
    queries = benchmark.queries
    bootstrap = ClusterBootstrap(queries.article, n_resamples=n_resamples, seed=seed)
    hits = {name: r.per_query["hit_at_5"] for name, r in benchmark.results.items()}
    with np.errstate(divide="ignore", invalid="ignore"):  # no hit at all on half the batches: undefined (nan)
        ratios = bootstrap.resampled_means(hits[full.name]) / bootstrap.resampled_means(hits[half.name])
        value = hits[full.name].mean() / hits[half.name].mean() if hits[half.name].any() else np.nan
    low, high = np.quantile(ratios, [0.025, 0.975]) if np.isfinite(ratios).all() else (np.nan, np.nan)
    coefficient = Estimate(float(value), float(low), float(high))
    lengths = queries.context_length
    groups = [(length, lengths == length) for length in range(1, int(lengths.max()) + 1)]
    by_length = {name: grouped_estimates(values, queries, groups, n_resamples, seed) for name, values in hits.items()}
    n_batches = len(set(sequences.bank.column("batch_id").tolist()))
    return Scaling(benchmark, full.name, half.name, coefficient, half_batches, n_batches, by_length)


def render_markdown(s: Scaling) -> str:
    b, c = s.benchmark, s.coefficient
    verdict = "meets" if c.value >= TARGET else "misses" if np.isfinite(c.value) else "cannot be judged against"
    names = list(b.results)
    lengths = [length for length, _, _ in s.by_length[names[0]]]
    table = {name: {length: (n, e) for length, n, e in rows} for name, rows in s.by_length.items()}
    return "\n".join([
        "# Scaling report", "",
        f"Scaling coefficient = test Hit@5 trained on all {s.n_batches} batches / on half of them "
        f"({len(s.half_batches)}: {s.half_batches[0]} .. {s.half_batches[-1]}), same model and recipe, same "
        f"{len(b.queries):,} test queries, full bank of {b.bank_size:,}:", "",
        f"**{c.value:.3f}** (95% CI {c.ci_low:.3f} to {c.ci_high:.3f}); the predecessor's target is >= {TARGET}: "
        f"it {verdict} it.", "",
        md_table(["predictor", "hit_at_5", "hit_at_10", "cosine"],
                 [(n, *(cell(b.results[n].estimates, m) for m in ("hit_at_5", "hit_at_10", "cosine")))
                  for n in names]), "",
        "## Hit@5 by context length", "",
        md_table(["context length", "queries", *names],
                 [(length, table[names[0]][length][0], *(format_estimate("hit_at_5", table[n][length][1]) for n in names))
                  for length in lengths]), "",
    ])

"""Evaluation benchmarks, each section side by side in one run.

(a) retrieval: queries/s of the batched FAISS Hit@K (`retrieval_ranks`, ks 1/5/10, full bank and context
    removed, flat index) vs a naive per-query numpy loop (cosine to every bank row by a matrix-vector
    product, argpartition, target in the top 10), on a synthetic bank of unit vectors. Target: >= 10x.

    .venv/bin/python benchmarks/evaluate.py [--only a] [--bank-rows 200000] [--dim 384] [--queries 2000]
                                            [--naive-queries 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lvm_pipeline.arrays import unit_rows
from lvm_pipeline.evaluation.queries import Queries, article_queries
from lvm_pipeline.evaluation.retrieval import BankIndex, retrieval_ranks


def synthetic_case(bank_rows: int, dim: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, Queries, np.ndarray]:
    """Unit bank in articles of 5..60 concepts, queries with contexts of at most 32, noisy-target predictions."""
    rng = np.random.default_rng(seed)
    bank = np.empty((bank_rows, dim), dtype=np.float32)
    for start in range(0, bank_rows, 50_000):
        stop = min(start + 50_000, bank_rows)
        bank[start:stop] = unit_rows(rng.standard_normal((stop - start, dim), dtype=np.float32), dtype=np.float32)
    ends = np.cumsum(rng.integers(5, 61, size=bank_rows // 5))
    ends = np.r_[ends[ends < bank_rows], bank_rows]
    queries = article_queries(np.stack([np.r_[0, ends[:-1]], ends], axis=1), max_context=32)
    queries = queries.subset(np.sort(rng.choice(len(queries), n_queries, replace=False)))
    noise = rng.standard_normal((n_queries, dim)) / np.sqrt(dim) * rng.uniform(1.0, 6.0, size=(n_queries, 1))
    return bank, queries, (bank[queries.target] + noise).astype(np.float32)


def naive_hit_at_10(bank: np.ndarray, predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """One query at a time: cosines to every (unit) bank row, the 10 best by argpartition."""
    hits = np.zeros(len(target))
    for i, prediction in enumerate(predicted):
        cosines = bank @ (prediction / np.linalg.norm(prediction))
        hits[i] = target[i] in np.argpartition(-cosines, 10)[:10]
    return hits


def retrieval_throughput(args: argparse.Namespace) -> None:
    """(a) batched FAISS retrieval_ranks vs a naive per-query numpy loop."""
    bank, queries, predicted = synthetic_case(args.bank_rows, args.dim, args.queries)
    print(f"(a) retrieval: bank {len(bank):,} x {args.dim} float32 unit rows, {len(queries):,} queries "
          f"(contexts 1..{queries.context_length.max()}), naive loop on the first {args.naive_queries}")
    # the naive loop first: FAISS's OpenMP threads keep spinning for a while after a search and would slow it
    n_naive = min(args.naive_queries, len(queries))
    t0 = time.perf_counter()
    naive_hits = naive_hit_at_10(bank, predicted[:n_naive], queries.target[:n_naive])
    naive_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = BankIndex(bank)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hits = retrieval_ranks(index, predicted, queries, ks=(1, 5, 10))
    faiss_s = time.perf_counter() - t0
    faiss_rate, naive_rate = len(queries) / faiss_s, n_naive / naive_s
    agree = np.array_equal(naive_hits, hits["hit_at_10"][:n_naive])
    print(f"    FAISS flat, batched: {faiss_rate:>10,.0f} queries/s  ({len(queries):,} queries in {faiss_s:.2f} s; "
          f"hit@1/5/10 and the no-context variants; index build {build_s:.2f} s, not counted)")
    print(f"    naive numpy loop:    {naive_rate:>10,.0f} queries/s  ({n_naive} queries in {naive_s:.2f} s, hit@10 only; "
          f"{len(queries):,} would take ~{len(queries) / naive_rate:.0f} s, extrapolated)")
    print(f"    ratio {faiss_rate / naive_rate:.1f}x (target >= 10x); with the build counted "
          f"{len(queries) / (faiss_s + build_s) / naive_rate:.1f}x; naive hit@10 agrees with FAISS: {agree}; "
          f"hit@1/5/10 = {hits['hit_at_1'].mean():.3f}/{hits['hit_at_5'].mean():.3f}/{hits['hit_at_10'].mean():.3f}")


SECTIONS = {"a": retrieval_throughput}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=sorted(SECTIONS), help="sections to run")
    parser.add_argument("--bank-rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--naive-queries", type=int, default=200, help="the naive loop runs on this many, extrapolated")
    args = parser.parse_args()
    for section in args.only:
        SECTIONS[section](args)


if __name__ == "__main__":
    main()

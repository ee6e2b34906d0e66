"""Evaluation benchmarks, each section side by side in one run.

(a) retrieval: queries/s of the batched FAISS Hit@K (`retrieval_ranks`, ks 1/5/10, full bank and context
    removed, flat index) vs a naive per-query numpy loop (cosine to every bank row by a matrix-vector
    product, argpartition, target in the top 10), on a synthetic bank of unit vectors. Target: >= 10x.
(b) storage: bytes of the saved window views (all splits) at C = 5 and C = 1000 next to the bank's vectors,
    on a synthetic bank shaped like the demo's (36k concepts in articles of 1-30). Target: bank + views
    <= 1.1x the bank, whatever C.
(c) memory: peak RSS of `export_bank` (what ordered_vectors runs) streaming a bank of the demo's size and one
    10x larger out of PostgreSQL, each in a fresh process. Target: grows by < 1.5x.

    .venv/bin/python benchmarks/evaluate.py [--only a b c] [--bank-rows 200000] [--dim 384] [--queries 2000]
                                            [--naive-queries 200] [--demo-concepts 36310]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from _common import fresh_database, peak_rss_mb, run_child, throwaway_server

from lvm_pipeline import db
from lvm_pipeline.arrays import unit_rows
from lvm_pipeline.datasets.bank import export_bank, write_bank
from lvm_pipeline.datasets.sequences import WindowSpec, build_sequences, save_sequences
from lvm_pipeline.db.articles import copy_articles
from lvm_pipeline.db.batches import upsert_batch
from lvm_pipeline.db.bulk import copy_vectors
from lvm_pipeline.db.concepts import copy_concepts
from lvm_pipeline.db.encoders import register_encoder
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


def demo_shaped_bank(directory: Path, n_concepts: int, dim: int, seed: int = 0):
    """A bank on disk with the demo's shape: articles of 1-30 concepts (mean about 3.6), random unit vectors."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.geometric(1 / 3.6, size=n_concepts), 30)
    sizes = sizes[np.cumsum(sizes) <= n_concepts]
    n = int(sizes.sum())
    articles = np.repeat([f"a{i}" for i in range(len(sizes))], sizes).tolist()
    seqs = np.concatenate([np.arange(k) for k in sizes]).tolist()
    vectors = unit_rows(rng.standard_normal((n, dim), dtype=np.float32), dtype=np.float32)
    return write_bank(directory, vectors, {"cpe_id": [f"c{i}" for i in range(n)], "batch_id": ["b"] * n,
                                           "article_id": articles, "seq_in_article": seqs,
                                           "concept_text": [f"concept {i}" for i in range(n)], "tmd_bits": [-1] * n})


def view_storage(args: argparse.Namespace) -> None:
    """(b) bytes of the window views at C = 5 and C = 1000 vs the bank."""
    with tempfile.TemporaryDirectory(prefix="lvm-bench-") as tmp:
        bank = demo_shaped_bank(Path(tmp), args.demo_concepts, args.dim)
        bank_bytes = (Path(tmp) / "bank_vectors.npy").stat().st_size
        print(f"(b) storage: bank {len(bank):,} x {args.dim} float32 = {bank_bytes / 2**20:.1f} MiB, "
              f"{len(bank.article_bounds):,} articles")
        for c in (5, 1000):
            sequences = build_sequences(bank, spec=WindowSpec(max_context=c))
            view_bytes = save_sequences(sequences, Path(tmp) / f"seq{c}").stat().st_size
            windows = sum(len(w) for w in sequences.windows.values())
            print(f"    C = {c:>4}: {windows:,} windows in {view_bytes / 2**20:.2f} MiB = {view_bytes / bank_bytes:.4f} "
                  f"of the bank; bank + views {1 + view_bytes / bank_bytes:.3f}x (target <= 1.1x)")


def export_memory(args: argparse.Namespace) -> None:
    """(c) peak RSS of export_bank for the demo's size and 10x, each in a fresh process."""
    with throwaway_server() as (server, workdir):
        peaks = {}
        for scale in (1, 10):
            url = fresh_database(server)
            n = args.demo_concepts * scale
            t0 = time.perf_counter()
            fill_database(url, n, args.dim)
            fill_s = time.perf_counter() - t0
            p = peaks[scale] = run_child(__file__, "--export-child", url, str(workdir / f"bank{scale}"))
            print(f"(c) {scale:>2}x the demo bank: {n:,} concepts ({n * args.dim * 4 / 2**20:.0f} MiB of vectors; "
                  f"filled in {fill_s:.0f} s): peak RSS {p['peak_rss_mb']:.0f} MiB (after imports "
                  f"{p['imports_rss_mb']:.0f} MiB), export {p['seconds']:.1f} s")
        print(f"    peak RSS 10x / 1x: {peaks[10]['peak_rss_mb'] / peaks[1]['peak_rss_mb']:.2f} (target < 1.5)")


def fill_database(url: str, n_concepts: int, dim: int, page: int = 50_000) -> None:
    """One passing batch of `n_concepts` random unit vectors in articles of 4, written with the pipeline's COPY."""
    rng = np.random.default_rng(0)
    with db.connect(url) as conn, conn, conn.cursor() as cur:
        upsert_batch(cur, "synthetic", "synthetic", "0" * 64)
        encoder_id = register_encoder(cur, "synthetic", dim, "synthetic", np.ones(dim, np.float32) / np.sqrt(dim))
        n_articles = (n_concepts + 3) // 4
        copy_articles(cur, ((f"a{i}", "synthetic", i, f"Article {i}", "text", None, {}) for i in range(n_articles)))
        for start in range(0, n_concepts, page):
            rows = range(start, min(start + page, n_concepts))
            ids = [uuid.UUID(int=i + 1) for i in rows]
            copy_concepts(cur, ((str(cid), "synthetic", "synthetic", f"a{i // 4}", f"Article {i // 4}", i % 4,
                                 f"Concept {i}.", 0, 10) for cid, i in zip(ids, rows)))
            vectors = unit_rows(rng.standard_normal((len(rows), dim), dtype=np.float32), dtype=np.float32)
            copy_vectors(cur, [cid.bytes for cid in ids], "synthetic", encoder_id, vectors)


def export_child(url: str, out_dir: str) -> None:
    """Stream the bank out of `url` in this fresh process; print its peak RSS."""
    imports = peak_rss_mb()
    t0 = time.perf_counter()
    with db.connect(url) as conn:
        export_bank(conn, [("synthetic", "0" * 64)], Path(out_dir))
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "imports_rss_mb": imports, "seconds": time.perf_counter() - t0}))



SECTIONS = {"a": retrieval_throughput, "b": view_storage, "c": export_memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=sorted(SECTIONS), help="sections to run")
    parser.add_argument("--bank-rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--naive-queries", type=int, default=200, help="the naive loop runs on this many, extrapolated")
    parser.add_argument("--demo-concepts", type=int, default=36_310, help="(b), (c): the demo bank's size")
    parser.add_argument("--export-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_child:
        return export_child(*args.export_child)
    for section in args.only:
        SECTIONS[section](args)


if __name__ == "__main__":
    main()

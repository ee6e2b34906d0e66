"""Ingest throughput, side by side in one run, on the same real sentences.

(a) bare encoder: encode the sentences, nothing else
(b) ingest path: landing JSONL -> parse -> chunk (sentence mode, so the same sentences) -> encode -> COPY
(c) PostgreSQL write alone, the same vectors: binary COPY vs row-by-row INSERT
(d) peak RSS of the ingest path for a demo-size batch and for one 10x larger (each in a fresh process)

Targets: (b)/(a) >= 0.85; the write's share of (b) < 5%; peak RSS flat in batch size.

    .venv/bin/python benchmarks/ingest.py [--articles 600] [--skip-memory] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path

from _common import fresh_database, peak_rss_mb, run_child, throwaway_server

from lvm_pipeline import db, ingest
from lvm_pipeline.db import batches, bulk, encoders
from lvm_pipeline.db.server import EmbeddedPostgres
from lvm_pipeline.encoders import SentenceEncoder
from lvm_pipeline.segmentation import segment
from lvm_pipeline.sources.vital_articles import load_vital_articles

DEMO_BATCH = 1_004  # articles per demo batch (10,033 in 10 batches)


def write_landing(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path



def throughput(args, server: EmbeddedPostgres, workdir: Path) -> None:
    records = load_vital_articles()[: args.articles]
    sentences = [c.text for r in records for c in segment(r["text"], "sentence")]
    encoder = SentenceEncoder()
    encoder.encode(sentences[:64])  # warm-up
    print(f"{len(records)} articles, {len(sentences)} sentences, encoder {encoder.name} ({encoder.dimension}-D)")

    t0 = time.perf_counter()
    vectors = encoder.encode(sentences)
    bare = time.perf_counter() - t0

    landing = write_landing(workdir / "bench.jsonl", records)
    with db.connect(fresh_database(server)) as conn:
        t0 = time.perf_counter()
        parsed = ingest.parse_batch(conn, landing)
        chunked = ingest.chunk_batch(conn, parsed.batch_id, mode="sentence")
        embedded = ingest.embed_batch(conn, parsed.batch_id, encoder)
        path = time.perf_counter() - t0
    assert chunked.n_concepts == len(sentences), (chunked.n_concepts, len(sentences))

    ids = [uuid.uuid4().bytes for _ in sentences]
    with db.connect(fresh_database(server)) as conn, conn.cursor() as cur:
        batches.upsert_batch(cur, "w", "w", "0")
        encoder_id = encoders.register_encoder(cur, encoder.name, encoder.dimension, encoder.fingerprint, encoder.probe_vector)
        t0 = time.perf_counter()
        bulk.copy_vectors(cur, ids, "w", encoder_id, vectors)
        conn.commit()
        copy_s = time.perf_counter() - t0
        cur.execute("DELETE FROM cpe_vector")
        conn.commit()
        t0 = time.perf_counter()
        for cpe_id, vector in zip(ids, vectors):
            cur.execute("INSERT INTO cpe_vector (cpe_id, batch_id, encoder_id, concept_vec) VALUES (%s, %s, %s, %s)",
                        (str(uuid.UUID(bytes=cpe_id)), "w", encoder_id, "[" + ",".join(map(str, vector.tolist())) + "]"))
        conn.commit()
        insert_s = time.perf_counter() - t0

    n = len(sentences)
    print(f"(a) bare encoder           {n / bare:9.1f} sentences/s  ({bare:.1f} s)")
    print(f"(b) ingest path            {n / path:9.1f} sentences/s  ({path:.1f} s: parse {parsed.seconds:.1f}, "
          f"chunk {chunked.seconds:.1f}, encode {embedded.encode_seconds:.1f}, write {embedded.write_seconds:.2f})")
    print(f"    (b)/(a)                {bare / path:9.3f}   target >= 0.85")
    print(f"    write share of (b)     {100 * embedded.write_seconds / path:9.2f} %  target < 5 %")
    print(f"(c) COPY binary            {n / copy_s:9.0f} rows/s")
    print(f"    row-by-row INSERT      {n / insert_s:9.0f} rows/s")
    print(f"    COPY / INSERT          {insert_s / copy_s:9.1f} x")


def peak_rss(args, server: EmbeddedPostgres, workdir: Path) -> None:
    records = load_vital_articles()
    results = {}
    for scale in (1, 10):
        n = DEMO_BATCH * scale
        batch = [dict(r, id=f"{r['id']}#{i // len(records)}") for i, r in
                 ((i, records[i % len(records)]) for i in range(n))]
        landing = write_landing(workdir / f"rss_{scale}x.jsonl", batch)
        r = results[scale] = run_child(__file__, "--child", str(landing), fresh_database(server))
        print(f"(d) {scale:>2}x demo batch: {n:6d} articles, {r['concepts']:6d} concepts, peak RSS "
              f"{r['parse_chunk_peak_rss_mb']:.0f} MiB after parse+chunk, {r['peak_rss_mb']:.0f} MiB in all, "
              f"{r['seconds']:.0f} s")
    for key, what in (("parse_chunk_peak_rss_mb", "parse+chunk"), ("peak_rss_mb", "whole ingest")):
        print(f"    peak RSS 10x / 1x, {what:<12} {results[10][key] / results[1][key]:6.2f}   target ~1 (bounded)")


def child(landing: str, url: str) -> None:
    """Ingest one file in this (fresh) process and report its peak RSS."""
    t0 = time.perf_counter()
    with db.connect(url) as conn:
        parsed = ingest.parse_batch(conn, Path(landing))
        chunked = ingest.chunk_batch(conn, parsed.batch_id)
        before_encoder = peak_rss_mb()
        ingest.embed_batch(conn, parsed.batch_id, SentenceEncoder())
    print(json.dumps({"concepts": chunked.n_concepts, "peak_rss_mb": peak_rss_mb(),
                      "parse_chunk_peak_rss_mb": before_encoder, "seconds": time.perf_counter() - t0}))



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=600, help="articles for (a)-(c); 600 give ~2,100 sentences")
    parser.add_argument("--skip-memory", action="store_true", help="skip (d), which encodes ~11,000 articles")
    parser.add_argument("--skip-throughput", action="store_true", help="skip (a)-(c)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    with throwaway_server() as (server, workdir):
        if not args.skip_throughput:
            throughput(args, server, workdir)
        if not args.skip_memory:
            peak_rss(args, server, workdir)


if __name__ == "__main__":
    main()

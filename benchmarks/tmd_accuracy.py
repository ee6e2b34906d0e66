"""Zero-shot TMD domain accuracy on the demo corpus: vital-article topics mapped to TMD domains.

    .venv/bin/python benchmarks/tmd_accuracy.py [--modes packed sentence lead] [--threshold T] [--temperature T]

An article's vector is the normalised mean of its concept vectors (`packed` or `sentence`
segmentation), or the embedding of its whole lead text (`lead`). Vectors are cached under
--cache-dir, keyed by mode, encoder fingerprint and article list, so re-runs only score.
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


def report(mapping: dict[str, set[str]], topics: list[str], best: np.ndarray, confidence: np.ndarray,
           threshold: float) -> None:
    """Overall and per-topic accuracy, threshold sweep and top confusions."""
    allowed = np.array([DOMAINS[code].name in mapping[topic] for topic, code in zip(topics, best)])
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
    parser.add_argument("--modes", nargs="+", default=["packed", "sentence", "lead"],
                        choices=["packed", "sentence", "lead"])
    parser.add_argument("--threshold", type=float, default=ZERO_SHOT_THRESHOLD)
    parser.add_argument("--temperature", type=float, default=ZERO_SHOT_TEMPERATURE)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/lvm-tmd"))
    args = parser.parse_args()
    records = [r for r in load_vital_articles() if r["topic"] in STRICT]
    encoder = SentenceEncoder()
    assigner = ZeroShotTmdAssigner(encoder, threshold=0.0, temperature=args.temperature)
    texts, titles, topics = ([r[k] for r in records] for k in ("text", "title", "topic"))
    for mode in args.modes:
        print(f"\n== {mode}: article vector = "
              + ("embedding of the lead text" if mode == "lead" else f"mean of the {mode} concept vectors"))
        labels = assigner.assign_domains(titles, texts, article_vectors(encoder, texts, mode, args.cache_dir))
        assert UNKNOWN not in labels.codes  # threshold 0: every article gets its best domain
        for name, mapping in MAPPINGS.items():
            print(f"-- {name} mapping")
            report(mapping, topics, labels.codes, labels.confidence, args.threshold)


if __name__ == "__main__":
    main()

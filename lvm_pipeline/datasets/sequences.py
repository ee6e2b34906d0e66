"""Training sequences: article-level splits, and windows / whole articles as index views over the bank.

Nothing here copies vectors. A window is two integers (its target row and its first context row:
see `lvm_pipeline.evaluation.queries.Queries`), so the storage of a view does not grow with the
context length C; a whole-article causal sequence is its [start, end) row range. Val and test
windows whose target text is identical to a train text are dropped (and counted): such a target
would be "predicted" by memorising the training set.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from lvm_pipeline.datasets.bank import Bank
from lvm_pipeline.datasets.splits import SPLITS, SplitRatios, assign_splits
from lvm_pipeline.evaluation.queries import Queries, article_queries
from lvm_pipeline.files import atomic_write

SEQUENCES_FILE = "sequences.npz"
MANIFEST_FILE = "sequences.json"


@dataclass(frozen=True)
class WindowSpec:
    max_context: int = 32  # C: a window's context is at most the C concepts before its target
    stride: int = 1  # every stride-th target position of an article starts a window

    def __post_init__(self):
        if self.max_context < 1 or self.stride < 1:
            raise ValueError(f"max_context and stride must be >= 1, got {self.max_context} and {self.stride}")


@dataclass
class TrainingSequences:
    """Per split: its articles (rows of bank.article_bounds) and its windows (index views over the bank)."""

    bank: Bank
    ratios: SplitRatios
    spec: WindowSpec
    articles: dict[str, np.ndarray]  # split -> article indices
    windows: dict[str, Queries]  # split -> windows
    dropped_duplicates: dict[str, int]  # split -> val/test windows dropped: target text identical to a train text
    train_subset: str = ""  # which part of the train split this view keeps ("": all of it)

    def article_bounds(self, split: str) -> np.ndarray:
        """(n, 2) [start, end) bank rows of the split's articles: the whole-article causal view."""
        return self.bank.article_bounds[self.articles[split]]

    @property
    def version(self) -> str:
        """Hash of the bank version, the split, the windows (and the train subset): what a checkpoint was trained on."""
        key = [self.bank.version, asdict(self.ratios), asdict(self.spec)] + ([self.train_subset] if self.train_subset else [])
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]

    def with_train_articles(self, keep: np.ndarray, label: str) -> TrainingSequences:
        """A view that trains on the train articles `keep` (a bool mask over articles["train"]) only; val and test
        are unchanged, so models trained on it are measured on the same queries. `label` names the subset."""
        train = self.articles["train"][np.asarray(keep, dtype=bool)]
        windows = self.windows["train"]
        kept_windows = windows.subset(np.flatnonzero(np.isin(windows.article, train)))
        return replace(self, articles=self.articles | {"train": train}, windows=self.windows | {"train": kept_windows},
                       train_subset=label)


def build_sequences(bank: Bank, ratios: SplitRatios | None = None, spec: WindowSpec | None = None) -> TrainingSequences:
    """Split the bank's articles by hash (default 80/10/10) and cut every split into windows (default C = 32)."""
    ratios, spec = ratios or SplitRatios(), spec or WindowSpec()
    bounds = bank.article_bounds
    first_rows = bounds[:, 0]
    split_of_article = assign_splits(bank.article_ids[first_rows], ratios)
    articles = {name: np.flatnonzero(split_of_article == i) for i, name in enumerate(SPLITS)}
    train_texts = set(bank.texts[split_of_article[bank.bank_article] == 0].tolist())
    windows, dropped = {}, {}
    for name in SPLITS:
        queries = _windows(bounds, articles[name], spec)
        dropped[name] = 0
        if name != "train":
            duplicate = np.fromiter((t in train_texts for t in bank.texts[queries.target].tolist()), bool, len(queries))
            queries, dropped[name] = queries.subset(np.flatnonzero(~duplicate)), int(duplicate.sum())
        windows[name] = queries
    return TrainingSequences(bank, ratios, spec, articles, windows, dropped)


def _windows(bounds: np.ndarray, article_index: np.ndarray, spec: WindowSpec) -> Queries:
    queries = article_queries(bounds[article_index], article_index, spec.max_context)
    position = queries.target - bounds[queries.article, 0]  # 1.. within the article
    return queries.subset(np.flatnonzero((position - 1) % spec.stride == 0)) if spec.stride > 1 else queries


def save_sequences(sequences: TrainingSequences, out_dir: Path) -> Path:
    """The index arrays in one NPZ (no pickle) and a JSON manifest beside it; returns the NPZ path."""
    arrays = {}
    for name in SPLITS:
        w = sequences.windows[name]
        arrays |= {f"{name}_articles": sequences.articles[name], f"{name}_target": w.target,
                   f"{name}_context_start": w.context_start, f"{name}_article": w.article}
    path = atomic_write(Path(out_dir) / SEQUENCES_FILE, lambda f: np.savez(f, **arrays))
    manifest = {"version": sequences.version, "bank_version": sequences.bank.version,
                "ratios": asdict(sequences.ratios), "windows": asdict(sequences.spec),
                "dropped_duplicates": sequences.dropped_duplicates,
                "counts": {name: {"articles": len(sequences.articles[name]), "windows": len(sequences.windows[name])}
                           for name in SPLITS}}
    atomic_write(Path(out_dir) / MANIFEST_FILE, lambda f: f.write(json.dumps(manifest, indent=2).encode()))
    return path


def load_sequences(bank: Bank, out_dir: Path) -> TrainingSequences:
    """The sequences saved by `save_sequences`, over `bank` (ValueError if they were cut from another bank)."""
    manifest = json.loads((Path(out_dir) / MANIFEST_FILE).read_text())
    if manifest["bank_version"] != bank.version:
        raise ValueError(f"the training sequences in {out_dir} were cut from bank {manifest['bank_version']}, "
                         f"not {bank.version}: materialize training_sequences again")
    with np.load(Path(out_dir) / SEQUENCES_FILE) as npz:
        articles = {name: npz[f"{name}_articles"] for name in SPLITS}
        windows = {name: Queries(npz[f"{name}_target"], npz[f"{name}_context_start"], npz[f"{name}_article"])
                   for name in SPLITS}
    return TrainingSequences(bank, SplitRatios(**manifest["ratios"]), WindowSpec(**manifest["windows"]), articles,
                             windows, manifest["dropped_duplicates"])


def context_length_histogram(queries: Queries) -> dict[int, int]:
    """Context length -> number of windows."""
    lengths, counts = np.unique(queries.context_length, return_counts=True)
    return dict(zip(lengths.tolist(), counts.tolist()))


def write_legacy_sequences(sequences: TrainingSequences, split: str, path: Path) -> Path:
    """The predecessor's sequence NPZ for one split (DESIGN.md section 3): context_sequences (N, C, D) left-padded
    with zeros, target_vectors (N, D), target_texts, target_tmds, sequence_positions (target position in its
    article); strings as fixed-width unicode (no pickle). Materialises N x C x D floats: for export only."""
    bank, windows = sequences.bank, sequences.windows[split]
    contexts, _ = windows.contexts(bank.vectors, sequences.spec.max_context)
    arrays = {"context_sequences": contexts, "target_vectors": np.asarray(bank.vectors[windows.target]),
              "target_texts": bank.texts[windows.target].astype(str),
              "target_tmds": bank.column("tmd_bits")[windows.target].astype(np.int32),
              "sequence_positions": (windows.target - bank.article_bounds[windows.article, 0]).astype(np.int64)}
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def leakage_inputs(sequences: TrainingSequences) -> dict:
    """The arrays `lvm_pipeline.gates.leakage.check_leakage` judges, read from the saved index views."""
    bank = sequences.bank
    first_row_ids = bank.article_ids[bank.article_bounds[:, 0]]
    train_rows = np.isin(bank.bank_article, sequences.articles["train"])
    return {"article_ids": {name: first_row_ids[sequences.articles[name]] for name in SPLITS},
            "target_texts": {name: bank.texts[sequences.windows[name].target] for name in SPLITS},
            "train_texts": bank.texts[train_rows],
            "window_articles": {name: (bank.bank_article[w.context_start], bank.bank_article[w.target])
                                for name, w in sequences.windows.items()},
            "dropped_duplicates": sequences.dropped_duplicates}

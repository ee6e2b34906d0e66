"""The context as text, for the text-aware baselines (DESIGN.md section 7).

A query's context is bank rows [start, end) of one article. Its text is the concepts' texts joined in order;
when that exceeds the encoder's token limit, the oldest concepts are dropped (the most recent are kept: they say
most about what comes next). `ContextEmbeddings` is the encoder on that text, computed once per context and kept
in a file beside the training sequences, keyed by everything that changes it (the sequences, the encoder, C, the
token limit). `EncodeContext` uses it as a prediction; `BM25` ranks the bank's texts with it as the query.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from lvm_pipeline.arrays import row_slices
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.evaluation.queries import Queries
from lvm_pipeline.files import atomic_write
from lvm_pipeline.progress import progress

log = logging.getLogger(__name__)

SEPARATOR = " "
CACHE_PREFIX = "context_embeddings-"
ENCODE_PAGE = 512  # contexts encoded per encoder call (and per progress update)


class TextEncoder(Protocol):
    """What the text baselines need of an encoder (`lvm_pipeline.encoders.SentenceEncoder` has it)."""

    fingerprint: str
    max_tokens: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def token_counts(self, texts: Sequence[str]) -> np.ndarray: ...


def kept_starts(token_counts: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_tokens: int) -> np.ndarray:
    """(n,) the first row kept of each context [start, end): the most recent rows whose token counts sum to at
    most `max_tokens` (one more token per separator), and always the last row, however long it is."""
    cumulative = np.concatenate([[0], np.cumsum(np.asarray(token_counts, dtype=np.int64) + 1)])  # +1: the separator
    ends = np.asarray(ends, dtype=np.int64)
    first = np.searchsorted(cumulative, cumulative[ends] - 1 - max_tokens, side="left")  # the last one needs no separator
    return np.clip(first, np.asarray(starts, dtype=np.int64), ends - 1)


def joined_texts(texts: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[str]:
    """The texts of rows [start, end) of each context, joined in order."""
    return [SEPARATOR.join(map(str, texts[start:end])) for start, end in zip(starts.tolist(), ends.tolist())]


class ContextEmbeddings:
    """The encoder's unit vector of each context's recent text, for any (start, end) contexts of one bank.

    A context of one concept is that concept's bank vector (the same encoder on the same text). Longer contexts
    are encoded once and kept in `directory/context_embeddings-<key hash>.npz` (start, end, vectors) with a JSON
    sidecar: the key and what encoding cost. A changed key (sequences, encoder, C, token limit) is another file;
    the old one is removed when the new one is written. `cost` holds this object's encoding work so far.
    """

    def __init__(self, vectors: np.ndarray, texts: np.ndarray, encoder: TextEncoder, directory: Path, key: dict):
        self.vectors, self.texts, self.encoder = vectors, texts, encoder
        self.key = {**key, "encoder_fingerprint": encoder.fingerprint, "max_tokens": int(encoder.max_tokens)}
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]
        self.directory, self.path = Path(directory), Path(directory) / f"{CACHE_PREFIX}{digest}.npz"
        self._token_counts: np.ndarray | None = None
        self._cached: dict[tuple[int, int], int] | None = None  # (start, end) -> row of _store; read on first use
        self._starts, self._ends = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self._store = np.zeros((0, vectors.shape[1]), np.float32)
        self.cost = {"encoded": 0, "truncated": 0, "seconds": 0.0, "from_cache": 0}

    def _load(self) -> dict[tuple[int, int], int]:
        if self._cached is None:
            self._cached = {}
            if self.path.is_file():
                with np.load(self.path) as saved:
                    self._starts, self._ends, self._store = saved["start"], saved["end"], saved["vectors"]
                self._cached = {(s, e): i for i, (s, e) in enumerate(zip(self._starts.tolist(), self._ends.tolist()))}
        return self._cached

    @property
    def token_counts(self) -> np.ndarray:
        if self._token_counts is None:
            self._token_counts = self.encoder.token_counts([str(t) for t in self.texts])
        return self._token_counts

    def __call__(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """(n, D) float32 unit vectors of the contexts [starts[i], ends[i])."""
        starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
        out = np.empty((len(starts), self.vectors.shape[1]), dtype=np.float32)
        single = ends - starts == 1
        out[single] = self.vectors[starts[single]]
        longer = np.flatnonzero(~single)
        cached = self._load()
        slots = np.array([cached.get(pair, -1) for pair in zip(starts[longer].tolist(), ends[longer].tolist())],
                         dtype=np.int64)
        self.cost["from_cache"] += int(np.count_nonzero(slots >= 0))
        out[longer[slots >= 0]] = self._store[slots[slots >= 0]]
        missing = longer[slots < 0]
        if len(missing):
            pairs = np.unique(np.stack([starts[missing], ends[missing]], axis=1), axis=0)
            encoded = self._encode(pairs[:, 0], pairs[:, 1])
            self._add(pairs, encoded)
            out[missing] = self._store[[cached[pair] for pair in zip(starts[missing].tolist(), ends[missing].tolist())]]
        return out

    def _encode(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        began = time.perf_counter()
        first = kept_starts(self.token_counts, starts, ends, self.encoder.max_tokens)
        out = np.empty((len(starts), self.vectors.shape[1]), dtype=np.float32)
        order = np.argsort(self.token_counts_of(first, ends), kind="stable")  # similar lengths together: less padding
        with progress(len(order), "encode_context", unit="context") as bar:
            for page in row_slices(len(order), ENCODE_PAGE):
                rows = order[page]
                out[rows] = self.encoder.encode(joined_texts(self.texts, first[rows], ends[rows]))
                bar.update(len(rows))
        self.cost["encoded"] += len(starts)
        self.cost["truncated"] += int(np.count_nonzero(first > starts))
        self.cost["seconds"] += time.perf_counter() - began
        return out

    def token_counts_of(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        cumulative = np.concatenate([[0], np.cumsum(self.token_counts)])
        return cumulative[ends] - cumulative[starts]

    def _add(self, pairs: np.ndarray, encoded: np.ndarray) -> None:
        offset = len(self._store)
        self._starts = np.concatenate([self._starts, pairs[:, 0]])
        self._ends = np.concatenate([self._ends, pairs[:, 1]])
        self._store = np.concatenate([self._store, encoded])
        self._cached |= {(int(s), int(e)): offset + i for i, (s, e) in enumerate(pairs.tolist())}
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda f: np.savez(f, start=self._starts, end=self._ends, vectors=self._store))
        sidecar = {**self.key, "contexts": len(self._store), "last_encode": dict(self.cost)}
        atomic_write(self.path.with_suffix(".json"), lambda f: f.write(json.dumps(sidecar, indent=2).encode()))
        for stale in self.directory.glob(f"{CACHE_PREFIX}*"):
            if stale.stem != self.path.stem:
                stale.unlink(missing_ok=True)


def context_views(embeddings: ContextEmbeddings, article_bounds: np.ndarray, max_context: int) -> np.ndarray:
    """(N, D) float32, bank-aligned: row r is the embedding of the context that ends with r, the at most
    `max_context` rows of its article up to r, i.e. what a model with the text view reads at position r (the last
    row of an article, never a context's end, keeps its own vector)."""
    bounds = np.asarray(article_bounds, dtype=np.int64).reshape(-1, 2)
    sizes = bounds[:, 1] - bounds[:, 0]
    rows = np.arange(int(bounds[-1, 1]) if len(bounds) else 0)
    first = np.repeat(bounds[:, 0], sizes)
    views = np.asarray(embeddings.vectors, dtype=np.float32).copy()
    ends = rows + 1
    inner = ends < np.repeat(bounds[:, 1], sizes)  # a next concept follows: r ends some query's context
    starts = np.maximum(first, ends - max_context)
    views[inner] = embeddings(starts[inner], ends[inner])
    return views


def context_embeddings(sequences, encoder: TextEncoder, cache_dir: Path | None) -> ContextEmbeddings:
    """The encoder's context embeddings of `sequences` (a TrainingSequences), cached in `cache_dir` (a temporary
    folder when None) under the key (sequences version, C, encoder fingerprint, token limit)."""
    directory = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="lvm-context-"))
    key = {"sequences_version": sequences.version, "max_context": sequences.spec.max_context}
    return ContextEmbeddings(sequences.bank.vectors, sequences.bank.texts, encoder, directory, key)


def model_views(model, sequences, encoder: TextEncoder | None, cache_dir: Path | None) -> np.ndarray | None:
    """The bank's context views if `model` (or a model config) reads the text view, else None; PipelineError
    without the bank's encoder."""
    if not getattr(getattr(model, "config", model), "text_view", False):
        return None
    if encoder is None:
        raise PipelineError("this model reads the text view: it needs the bank's encoder (set LVM_ENCODER to it)")
    embeddings = context_embeddings(sequences, encoder, cache_dir)
    if embeddings.path not in _VIEWS:  # every family, check and report of a process reads the same views
        _VIEWS.clear()
        views = context_views(embeddings, sequences.bank.article_bounds, sequences.spec.max_context)
        views.flags.writeable = False
        _VIEWS[embeddings.path] = views
    return _VIEWS[embeddings.path]


_VIEWS: dict[Path, np.ndarray] = {}  # the views of the last cache file model_views read (its name hashes its key)


class EncodeContext:
    """Predicts the encoder's vector of the context's recent text (no training: what the encoder gives for free)."""

    name = "encode_context"

    def __init__(self, embeddings: ContextEmbeddings):
        self.embeddings = embeddings

    def predict(self, vectors: np.ndarray, queries: Queries, tmd: np.ndarray | None = None) -> np.ndarray:
        return self.embeddings(queries.context_start, queries.target)


class BM25:
    """BM25 (bm25s, Lucene's variant, an English Snowball stemmer and stopwords) over the bank's texts, the query
    the context's texts joined: a ranker, not a vector predictor. `search` returns bank rows best first."""

    name = "bm25"

    def __init__(self, texts: np.ndarray, k1: float = 1.5, b: float = 0.75):
        import bm25s
        import Stemmer

        self.texts = texts
        self.tokenizer = bm25s.tokenization.Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english"))
        self.index = bm25s.BM25(k1=k1, b=b)
        corpus = self.tokenizer.tokenize([str(t) for t in texts], update_vocab=True, return_as="tuple", show_progress=False)
        self.index.index(corpus, show_progress=False)

    def search_texts(self, query_texts: Sequence[str], depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, depth) BM25 scores and bank rows of the best `depth` texts for each query text."""
        depth = min(depth, len(self.texts))
        # a query's unknown words are dropped; a query with no known word is the empty token (scores all 0)
        tokens = self.tokenizer.tokenize(list(query_texts), update_vocab="never", return_as="ids", show_progress=False)
        rows, scores = self.index.retrieve(tokens, k=depth, show_progress=False)
        return np.asarray(scores, dtype=np.float32), np.asarray(rows, dtype=np.int64)

    def search(self, queries: Queries, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """The `depth` best bank rows for each query's context text (the context's own rows included)."""
        return self.search_texts(joined_texts(self.texts, queries.context_start, queries.target), depth)


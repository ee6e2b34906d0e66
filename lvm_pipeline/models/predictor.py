"""A trained next-concept model as an evaluation `Predictor` (lvm_pipeline.evaluation.queries).

Queries are predicted in batches of similar context lengths: each batch's contexts are right-padded
into [B, L, D] (L = the batch's longest context, at most `max_context` most recent concepts) and the
model's output at each query's last real position is its prediction. Right padding cannot change it:
position t of a causal model never sees positions after t.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lvm_pipeline.arrays import right_padded
from lvm_pipeline.evaluation.queries import Queries


class ModelPredictor:
    """`predict(vectors, queries, tmd)` -> (n, D) float32 with `model` in eval mode, without gradients."""

    def __init__(self, model: nn.Module, name: str, batch_size: int = 256, device: str | torch.device = "cpu",
                 max_context: int | None = None):
        self.model, self.name = model.to(device), name
        self.batch_size, self.device, self.max_context = batch_size, torch.device(device), max_context
        self.uses_tmd = bool(getattr(getattr(model, "config", None), "tmd", False))

    def predict(self, vectors: np.ndarray, queries: Queries, tmd: np.ndarray | None = None) -> np.ndarray:
        """`vectors` the bank (array or memory map), `tmd` its (N, 16) TMD vectors (needed by a TMD model)."""
        if self.uses_tmd and tmd is None:
            raise ValueError(f"{self.name} is TMD-conditioned: pass the bank's (N, 16) TMD vectors as tmd")
        lengths = queries.context_length if self.max_context is None else np.minimum(queries.context_length, self.max_context)
        out = np.empty((len(queries), vectors.shape[1]), dtype=np.float32)
        order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
        for first in range(0, len(order), self.batch_size):
            members = order[first:first + self.batch_size]
            starts = queries.target[members] - lengths[members]
            out[members] = self._predict_rows(vectors, starts, lengths[members], tmd if self.uses_tmd else None)
        return out

    def predict_one(self, context_vectors: np.ndarray, context_tmd: np.ndarray | None = None) -> np.ndarray:
        """The next vector (D,) after one context (L, D) (+ its (L, 16) TMD vectors): for single-query latency."""
        context = context_vectors if self.max_context is None else context_vectors[-self.max_context:]
        context = np.array(context, dtype=np.float32)  # a copy: the bank may be a read-only memory map
        if self.max_context is not None and context_tmd is not None:
            context_tmd = context_tmd[-self.max_context:]
        if self.uses_tmd and context_tmd is None:
            raise ValueError(f"{self.name} is TMD-conditioned: pass the context's (L, 16) TMD vectors")
        x = torch.from_numpy(context)[None].to(self.device)
        tmd = None if context_tmd is None else torch.from_numpy(np.array(context_tmd, dtype=np.float32))[None].to(self.device)
        return self._run(x, tmd, torch.tensor([len(context) - 1], device=self.device))[0]

    def _predict_rows(self, vectors: np.ndarray, starts: np.ndarray, lengths: np.ndarray, tmd: np.ndarray | None) -> np.ndarray:
        x = torch.from_numpy(right_padded(vectors, starts, lengths)).to(self.device)
        x_tmd = None if tmd is None else torch.from_numpy(right_padded(tmd, starts, lengths)).to(self.device)
        return self._run(x, x_tmd, torch.from_numpy(lengths - 1).to(self.device))

    def _run(self, x: torch.Tensor, tmd: torch.Tensor | None, last: torch.Tensor) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                out = self.model(x, tmd) if tmd is not None else self.model(x)
                return out[torch.arange(len(x), device=out.device), last].float().cpu().numpy()
        finally:
            self.model.train(was_training)

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
    """`predict(vectors, queries, tmd)` -> (n, D) float32 with `model` in eval mode, without gradients.

    `model` is a PyTorch model or an `OnnxModel` (`lvm_pipeline.models.onnx`), which is called the same way.

    A model with the text view reads `views` (N, D), the bank-aligned context views (`context_text.context_views`).
    """

    def __init__(self, model: nn.Module, name: str, batch_size: int = 256, device: str | torch.device = "cpu",
                 max_context: int | None = None, views: np.ndarray | None = None):
        self.model, self.name = model.to(device) if isinstance(model, nn.Module) else model, name
        fixed = getattr(model, "fixed_length", None)  # an ONNX export of a fixed length reads at most that many
        max_context = fixed if max_context is None else min(max_context, fixed or max_context)
        self.batch_size, self.device, self.max_context = batch_size, torch.device(device), max_context
        self.uses_tmd = bool(getattr(getattr(model, "config", None), "tmd", False))
        self.uses_view = bool(getattr(getattr(model, "config", None), "text_view", False))
        self.views = views if self.uses_view else None

    def predict(self, vectors: np.ndarray, queries: Queries, tmd: np.ndarray | None = None) -> np.ndarray:
        """`vectors` the bank (array or memory map), `tmd` its (N, 16) TMD vectors (needed by a TMD model)."""
        if self.uses_tmd and tmd is None:
            raise ValueError(f"{self.name} is TMD-conditioned: pass the bank's (N, 16) TMD vectors as tmd")
        if self.uses_view and self.views is None:
            raise ValueError(f"{self.name} reads the text view: construct it with the bank's context views")
        lengths = queries.context_length if self.max_context is None else np.minimum(queries.context_length, self.max_context)
        out = np.empty((len(queries), vectors.shape[1]), dtype=np.float32)
        order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
        for first in range(0, len(order), self.batch_size):
            members = order[first:first + self.batch_size]
            starts = queries.target[members] - lengths[members]
            out[members] = self._predict_rows(vectors, starts, lengths[members], tmd if self.uses_tmd else None)
        return out

    def predict_one(self, context_vectors: np.ndarray, context_tmd: np.ndarray | None = None,
                    context_views: np.ndarray | None = None) -> np.ndarray:
        """The next vector (D,) after one context (L, D) (+ its (L, 16) TMD vectors, + its (L, D) text views): for
        single-query latency."""
        keep = slice(None) if self.max_context is None else slice(-self.max_context, None)
        context = np.array(context_vectors[keep], dtype=np.float32)  # a copy: the bank may be a read-only memory map
        if self.uses_tmd and context_tmd is None:
            raise ValueError(f"{self.name} is TMD-conditioned: pass the context's (L, 16) TMD vectors")
        if self.uses_view and context_views is None:
            raise ValueError(f"{self.name} reads the text view: pass the context's (L, D) text views")
        side = {name: torch.from_numpy(np.array(values[keep], dtype=np.float32))[None].to(self.device)
                for name, values in (("tmd", context_tmd), ("view", context_views)) if values is not None}
        return self._run(torch.from_numpy(context)[None].to(self.device), side,
                         torch.tensor([len(context) - 1], device=self.device))[0]

    def _predict_rows(self, vectors: np.ndarray, starts: np.ndarray, lengths: np.ndarray, tmd: np.ndarray | None) -> np.ndarray:
        x = torch.from_numpy(right_padded(vectors, starts, lengths)).to(self.device)
        side = {name: torch.from_numpy(right_padded(values, starts, lengths)).to(self.device)
                for name, values in (("tmd", tmd), ("view", self.views)) if values is not None}
        return self._run(x, side, torch.from_numpy(lengths - 1).to(self.device))

    def _run(self, x: torch.Tensor, side: dict[str, torch.Tensor], last: torch.Tensor) -> np.ndarray:
        if not isinstance(self.model, nn.Module):
            return self.model(x, **side)[torch.arange(len(x)), last.cpu()].numpy()
        if self.model.samples:  # a sampler computes only the positions asked for
            side = side | {"at": last}
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                out = self.model(x, **side)
                return out[torch.arange(len(x), device=out.device), last].float().cpu().numpy()
        finally:
            self.model.train(was_training)

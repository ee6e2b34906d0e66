"""Meta's Base-LCM ("base_lcm", arXiv 2412.08821): PreNet -> causal pre-norm Transformer -> PostNet, in a
robust-scaled space.

The PreNet and PostNet are the model's input and output projections (`Linear(D -> d)`, `Linear(d -> D)`), the
decoder is our causal pre-norm `TransformerModel` with learned positions (their toy's), and the prediction is the
next vector outright (no residual base). Inputs are scaled per dimension by a `RobustScaler` fitted on the train
split's vectors (the trainer calls `fit_train_vectors`), the output is scaled back, and the training loss compares
prediction and target in the scaled space (`loss_space`), as Meta's MSE does; InfoNCE (the recipe's
`infonce_alpha`) still ranks the vectors themselves. Their paper found Base-LCM has the lowest L2 and the worst
contrastive accuracy ("it generates their average"): the `mse` variant is their recipe, ours adds InfoNCE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lvm_pipeline.models.base import family, register_config
from lvm_pipeline.models.scaling import RobustScaler
from lvm_pipeline.models.transformer import TransformerConfig, TransformerModel


@dataclass
class BaseLCMConfig(TransformerConfig):
    """A Transformer decoder between a PreNet and a PostNet, on robust-scaled vectors."""

    family: str = "base_lcm"  # the registered family name
    positions: str = "learned"  # learned position embeddings, as Meta's toy Base-LCM (or "rotary", as their 1.6B)
    residual: str = "none"  # the next vector is predicted outright, not as a change to the last one


@family("base_lcm", BaseLCMConfig)
class BaseLCMModel(TransformerModel):
    """TransformerModel on scaled inputs (and scaled text views), its output scaled back."""

    def __init__(self, config: BaseLCMConfig, d_input: int):
        super().__init__(config, d_input)
        self.scaler = RobustScaler(d_input)

    def fit_train_vectors(self, vectors: np.ndarray) -> None:
        self.scaler.fit(vectors)

    def loss_space(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.scaler(vectors)

    def forward(self, x: torch.Tensor, tmd: torch.Tensor | None = None, view: torch.Tensor | None = None) -> torch.Tensor:
        scaled = super().forward(self.scaler(x), tmd, None if view is None else self.scaler(view))
        return self.scaler.inverse(scaled)


@register_config
def toy_base_lcm() -> BaseLCMConfig:
    """Tiny Base-LCM for tests (milliseconds on CPU)."""
    return BaseLCMConfig(d_model=32, n_layers=2, n_heads=4, mlp_ratio=2.0, max_len=64)


@register_config
def base_lcm_small() -> BaseLCMConfig:
    """Base-LCM a 2-core CPU trains in about a minute: Meta's toy shape (2 layers, FFN 4d) at width 256."""
    return BaseLCMConfig(d_model=256, n_layers=2, n_heads=4, dropout=0.0)


@register_config
def base_lcm_768() -> BaseLCMConfig:
    """Base-LCM at the predecessor's width (768, 12 heads) and depth (6), with dropout 0.1 as Meta's toy."""
    return BaseLCMConfig(d_model=768, n_layers=6, n_heads=12, dropout=0.1)

"""A per-dimension robust scaler of concept vectors, as Meta's LCMs normalise their inputs and targets.

`fit` sets each dimension's centre to its median over the train split's vectors and its scale to its interquartile
range divided by 1.349 (a normal distribution's IQR in standard deviations), so a dimension scaled this way has
roughly unit spread whatever its outliers. Centre and scale are buffers: they travel in the checkpoint's weights.
An unfitted scaler is the identity.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

NORMAL_IQR = 1.349  # the interquartile range of a standard normal distribution
MIN_SCALE = 1e-6  # a constant dimension keeps scale 1e-6 instead of dividing by zero


class RobustScaler(nn.Module):
    """(v - centre) / scale per dimension; `inverse` undoes it."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("centre", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def fit(self, vectors: np.ndarray) -> None:
        """Fit centre and scale on (N, D) vectors (the train split's)."""
        low, median, high = np.percentile(np.asarray(vectors, dtype=np.float64), [25, 50, 75], axis=0)
        self.centre.copy_(torch.from_numpy(median))
        self.scale.copy_(torch.from_numpy(np.maximum((high - low) / NORMAL_IQR, MIN_SCALE)))

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return (vectors - self.centre) / self.scale

    def inverse(self, scaled: torch.Tensor) -> torch.Tensor:
        return scaled * self.scale + self.centre

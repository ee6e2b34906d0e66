"""Augmentation of the training inputs (never the targets, never validation): inputs shuffled within windows,
Gaussian noise, and context dropout, drawn from a generator seeded by (seed, epoch, rank, batch index), so an
epoch's batches stay a function of (seed, epoch) and a resumed run redoes any batch exactly.

Shuffling can leak under the all-positions causal loss: after a permutation, input position t may hold x_{t+1},
its own target, or a later concept. The loss is therefore masked at every position t whose inputs up to t
include an original position > t (the permutation's prefix maximum exceeds t); each position left sees exactly
x_0..x_t, in another order. A position's TMD code moves with its vector; the text view stays in place (at a
position left it is the view of the same concepts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from lvm_pipeline.training.config import TrainConfig
from lvm_pipeline.training.data import Batch

AUGMENT_STREAM = 2  # spawn key of the augmentation's generators (apart from the batch order's)


@dataclass(frozen=True)
class Augmentation:
    context_dropout: float = 0.0  # probability that an input vector is replaced by zeros
    input_noise: float = 0.0  # expected L2 norm of the Gaussian noise added to each input vector
    shuffle_window: int = 0  # inputs permuted within consecutive windows of this many positions (0, 1: not)
    seed: int = 0  # with the epoch, the rank and the batch index, seeds each batch's draws
    rank: int = 0  # this process's rank under DDP (its batches are other articles: other draws)
    mask_leaks: bool = True  # mask the positions a shuffle lets see ahead; False for a loss on the last positions
    # only (a shuffle never moves a later concept before the last position, and that loss needs a mask without holes)

    @classmethod
    def from_config(cls, config: TrainConfig, rank: int = 0) -> Augmentation | None:
        """The recipe's augmentation, or None when it has none."""
        augmentation = cls(config.context_dropout, config.input_noise, config.shuffle_window, config.seed, rank,
                           mask_leaks=config.positions == "all")
        return augmentation if augmentation.active else None

    @property
    def active(self) -> bool:
        return self.context_dropout > 0 or self.input_noise > 0 or self.shuffle_window > 1

    def generator(self, epoch: int, index: int, device: torch.device) -> torch.Generator:
        """The generator of batch `index` of `epoch` (on `device`, where the batch is)."""
        sequence = np.random.SeedSequence([self.seed, epoch, self.rank, index], spawn_key=(AUGMENT_STREAM,))
        return torch.Generator(device).manual_seed(int(sequence.generate_state(1, np.uint64)[0]))

    def __call__(self, batch: Batch, epoch: int, index: int) -> Batch:
        """Batch `index` of `epoch`, its inputs augmented: shuffled (its mask and target_rows then exclude the
        positions that see ahead), noised, dropped out, in that order."""
        generator = self.generator(epoch, index, batch.inputs.device)
        inputs, tmd, mask = batch.inputs, batch.tmd, batch.mask
        if self.shuffle_window > 1:
            order = window_permutation(batch.mask, self.shuffle_window, generator)
            inputs = at_positions(inputs, order)
            tmd = None if tmd is None else at_positions(tmd, order)
            if self.mask_leaks:
                mask = mask & ~sees_ahead(order)
        real = batch.mask[..., None]
        if self.input_noise > 0:
            noise = torch.randn(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
            inputs = torch.where(real, inputs + noise * (self.input_noise / math.sqrt(inputs.shape[-1])), inputs)
        if self.context_dropout > 0:
            dropped = torch.rand(mask.shape, generator=generator, device=inputs.device) < self.context_dropout
            inputs = inputs.masked_fill(dropped[..., None] & real, 0.0)
        return replace(batch, inputs=inputs, tmd=tmd, mask=mask, target_rows=batch.target_rows.masked_fill(~mask, -1))


def window_permutation(mask: torch.Tensor, window: int, generator: torch.Generator) -> torch.Tensor:
    """[B, T] int64: per sequence a random permutation of its real positions (the mask's right-padded prefix)
    within consecutive windows of `window` positions, padding in place: new position t holds old position order[:, t]."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand(mask.shape)
    jitter = torch.rand(mask.shape, generator=generator, device=mask.device, dtype=torch.float64)
    keys = torch.where(mask, torch.div(positions, window, rounding_mode="floor") + 0.5 * jitter,
                       mask.shape[1] + positions)  # a window's keys lie in [w, w + 0.5); padding sorts last, in order
    return torch.argsort(keys, dim=1, stable=True)


def sees_ahead(order: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the positions t whose inputs up to t include an old position > t (its target or later)."""
    return torch.cummax(order, dim=1).values > torch.arange(order.shape[1], device=order.device)


def at_positions(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """[B, T, C] values rearranged along T: position t takes position order[:, t]."""
    return values.gather(1, order[..., None].expand(-1, -1, values.shape[-1]))

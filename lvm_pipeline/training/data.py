"""Training batches: the train split's whole articles as causal sequences, read from the memory-mapped bank.

An epoch shuffles the articles of two or more concepts with a generator seeded by (seed, epoch), crops each
longer than max_len + 1 concepts to a window at a seeded random offset, and cuts the order into batches.
A curriculum (`curriculum` = (epochs, max_len)) crops to shorter windows in the first epochs: short contexts
first, then long. With `group_by_length`, the shuffled order is sorted by length within groups of GROUP_BATCHES batches before
it is cut, and the batches are then shuffled: a batch pads to its longest sequence, and a corpus of mostly
short articles otherwise spends most of its compute on padding.
Progressive training (`progressive` = (stage sizes, epochs per stage)) trains the first epochs on nested seeded
subsets of the articles (stage k: the first n_k of one fixed seeded order, so each holds the one before; a stage
of all the articles or more is skipped), then on all: an epoch's number of batches (`batches_in`) then depends on it.
Under DDP each rank takes every world_size-th article of the same order (the order padded by repeating its
start so that every rank has the same number of batches, as `DistributedSampler` does). The epoch's batches
depend only on (seed, epoch), so a resumed run can skip to any batch of an epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lvm_pipeline.arrays import right_padded

GROUP_BATCHES = 32  # batches per group sorted by length (group_by_length)
FIT_ROWS = 100_000  # train vectors a model's `fit_train_vectors` sees at most (a seeded sample beyond)
STAGE_STREAM = 1  # spawn key of the generator of the progressive stages' article order (apart from the epochs')


@dataclass
class Batch:
    inputs: torch.Tensor  # [B, T, D] float32: each sequence's concepts but the last, right-padded with zeros
    targets: torch.Tensor  # [B, T, D] float32: the concept after each input position
    mask: torch.Tensor  # [B, T] bool: real positions
    tmd: torch.Tensor | None  # [B, T, 16] float32 TMD vectors of the input positions, or None
    target_rows: torch.Tensor  # [B, T] int64 bank row of each target (-1 at padding)
    view: torch.Tensor | None = None  # [B, T, D] float32 text views of the input positions, or None

    def to(self, device: torch.device | str) -> Batch:
        tmd = None if self.tmd is None else self.tmd.to(device, non_blocking=True)
        view = None if self.view is None else self.view.to(device, non_blocking=True)
        return Batch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True),
                     self.mask.to(device, non_blocking=True), tmd, self.target_rows.to(device, non_blocking=True), view)

    @property
    def side_inputs(self) -> dict[str, torch.Tensor]:
        """The model's keyword inputs besides the vectors: tmd and view, where the batch has them."""
        return {name: value for name, value in (("tmd", self.tmd), ("view", self.view)) if value is not None}


class ArticleBatches:
    """Seeded, cropped, right-padded batches of whole articles (rows [start, end) of `vectors`)."""

    def __init__(self, vectors: np.ndarray, article_bounds: np.ndarray, batch_size: int, max_len: int, seed: int = 0,
                 tmd: np.ndarray | None = None, rank: int = 0, world_size: int = 1, group_by_length: bool = False,
                 curriculum: tuple[int, int] = (0, 0), views: np.ndarray | None = None,
                 progressive: tuple[Sequence[int], int] = ((), 1)):
        bounds = np.asarray(article_bounds, dtype=np.int64).reshape(-1, 2)
        self.bounds = bounds[bounds[:, 1] - bounds[:, 0] >= 2]  # one concept has no next one
        if not len(self.bounds):
            raise ValueError("no article of two or more concepts to train on")
        self.vectors, self.tmd, self.views = vectors, tmd, views
        self.batch_size, self.max_len, self.seed = batch_size, max_len, seed
        self.rank, self.world_size, self.group_by_length = rank, world_size, group_by_length
        self.curriculum_epochs, self.curriculum_max_len = curriculum  # the first epochs crop to shorter windows
        stage_sizes, self.stage_epochs = progressive
        self.stage_sizes = [int(n) for n in stage_sizes if n < len(self.bounds)]  # a stage of them all is skipped
        stage_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(STAGE_STREAM,)))
        self.stage_order = stage_rng.permutation(len(self.bounds))  # stage k: its first stage_sizes[k] articles

    def train_vectors(self, max_rows: int = FIT_ROWS) -> np.ndarray:
        """(n, D) the concept vectors of the articles trained on (what a model's `fit_train_vectors` reads): all of
        them, or a seeded sample of `max_rows` (a per-dimension scaler needs no more; the bank may not fit in memory)."""
        rows = np.concatenate([np.arange(start, end) for start, end in self.bounds])
        if len(rows) > max_rows:
            rows = np.sort(np.random.default_rng(self.seed).choice(rows, max_rows, replace=False))
        return np.asarray(self.vectors[rows])

    def epoch_bounds(self, epoch: int) -> np.ndarray:
        """(articles, 2) the [start, end) bounds of the articles of `epoch`: its progressive stage's subset (in
        bank order), or all of them."""
        stage = epoch // self.stage_epochs
        if stage >= len(self.stage_sizes):
            return self.bounds
        return self.bounds[np.sort(self.stage_order[:self.stage_sizes[stage]])]

    def per_rank(self, n_articles: int) -> int:
        """Articles of each rank in an epoch of `n_articles` (the order padded to a multiple of world_size)."""
        return -(-n_articles // self.world_size)

    def batches_in(self, epoch: int) -> int:
        """Batches of `epoch` (on each rank)."""
        return -(-self.per_rank(len(self.epoch_bounds(epoch))) // self.batch_size)

    def __len__(self) -> int:
        """Batches of an epoch on all the articles (on each rank; `batches_in` counts a progressive stage's)."""
        return -(-self.per_rank(len(self.bounds)) // self.batch_size)

    def epoch_rows(self, epoch: int) -> np.ndarray:
        """(articles of this rank, 2) the [start, end) rows this rank trains on in `epoch`, in batch order."""
        bounds = self.epoch_bounds(epoch)
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(bounds))
        max_len = self.curriculum_max_len if epoch < self.curriculum_epochs else self.max_len
        sizes = bounds[:, 1] - bounds[:, 0]
        offsets = rng.integers(0, np.maximum(sizes - max_len, 1))  # crop start within each article
        starts = bounds[:, 0] + offsets
        ends = np.minimum(starts + max_len + 1, bounds[:, 1])
        if self.group_by_length:
            order = self._grouped_by_length(order, ends - starts, rng)
        padded = np.resize(order, self.per_rank(len(bounds)) * self.world_size)  # repeats the start of the order
        mine = padded[self.rank::self.world_size]
        return np.stack([starts[mine], ends[mine]], axis=1)

    def _grouped_by_length(self, order: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`order` sorted by length within groups of GROUP_BATCHES batches, its full batches (of every rank
        together) then shuffled; a last, shorter batch stays last."""
        step = self.batch_size * self.world_size  # a batch of each rank: consecutive articles, dealt round robin
        group = step * GROUP_BATCHES
        order = np.concatenate([part[np.argsort(lengths[part], kind="stable")]
                                for part in np.split(order, range(group, len(order), group))])
        batches = np.split(order, range(step, len(order), step))
        n_full = len(order) // step
        return np.concatenate([batches[i] for i in rng.permutation(n_full)] + batches[n_full:])

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """The batches of `epoch`, from batch `skip` on."""
        rows = self.epoch_rows(epoch)
        for first in range(skip * self.batch_size, len(rows), self.batch_size):
            yield self.batch(rows[first:first + self.batch_size])

    def batch(self, rows: np.ndarray) -> Batch:
        """Right-padded inputs/targets/mask (+ TMD) of the sequences at bank rows [start, end)."""
        starts, lengths = rows[:, 0], rows[:, 1] - rows[:, 0]
        width = int(lengths.max())
        sequences = right_padded(self.vectors, starts, lengths)
        tmd = None if self.tmd is None else right_padded(self.tmd, starts, lengths - 1, width - 1)
        view = None if self.views is None else torch.from_numpy(right_padded(self.views, starts, lengths - 1, width - 1))
        mask = np.arange(width - 1)[None, :] < (lengths - 1)[:, None]
        whole = torch.from_numpy(sequences)
        target_rows = np.where(mask, starts[:, None] + 1 + np.arange(width - 1)[None, :], -1)
        return Batch(whole[:, :-1], whole[:, 1:], torch.from_numpy(mask), None if tmd is None else torch.from_numpy(tmd),
                     torch.from_numpy(target_rows), view)

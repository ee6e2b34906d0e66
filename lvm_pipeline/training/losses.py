"""Training losses on right-padded batches: cosine or MSE to the next vector, plus in-batch InfoNCE.

Every function takes predictions and targets [batch, seq, D] and the [batch, seq] bool mask of real
positions; padded positions never count. Losses are computed in float32 (also under bf16 autocast).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from lvm_pipeline.training.config import TrainConfig


def last_positions(mask: torch.Tensor) -> torch.Tensor:
    """The mask keeping only each sequence's last real position (right padding: position length - 1)."""
    lengths = mask.sum(dim=1)
    last = torch.zeros_like(mask)
    rows = torch.nonzero(lengths > 0).squeeze(1)
    last[rows, lengths[rows] - 1] = True
    return last


def cosine_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(prediction, target) over the real positions."""
    cos = F.cosine_similarity(pred[mask].float(), target[mask].float(), dim=-1)
    return (1 - cos).mean()


def mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real positions and the D dimensions."""
    return F.mse_loss(pred[mask].float(), target[mask].float())


def infonce_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, temperature: float,
                 negatives: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """In-batch InfoNCE: each real position's prediction scored (cosine / temperature) against its own target and
    the real targets of the OTHER sequences of the batch, cross-entropy toward its own target; with `negatives`
    ([n, k, D] vectors and their [n, k] found-mask, one row per real position), those too (hard negatives).

    The other targets of its own sequence are not negatives: they are the same article, on the same topic,
    and pushing the prediction away from them punishes exactly the on-topic predictions that retrieval needs.
    """
    p = F.normalize(pred[mask].float(), dim=-1)
    t = F.normalize(target[mask].float(), dim=-1)
    logits = p @ t.T / temperature
    sequence = torch.nonzero(mask)[:, 0]
    same_sequence = sequence[:, None] == sequence[None, :]
    own = torch.eye(len(p), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(same_sequence & ~own, float("-inf"))
    if negatives is not None:
        vectors, found = negatives
        hard = torch.einsum("nd,nkd->nk", p, F.normalize(vectors.float(), dim=-1)) / temperature
        logits = torch.cat([logits, hard.masked_fill(~found, float("-inf"))], dim=1)
    return F.cross_entropy(logits, torch.arange(len(p), device=logits.device))


def training_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, config: TrainConfig,
                  negatives_for: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
                  space: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """config.loss (+ config.infonce_alpha x InfoNCE) on config.positions ("all" real positions, or each last);
    `negatives_for(mask)`: the hard negatives of the positions `mask` keeps (see `infonce_loss`); `space`: where
    config.loss compares prediction and target (a model's `loss_space`, e.g. Base-LCM's robust-scaled space;
    InfoNCE always ranks the vectors themselves, as retrieval does)."""
    if config.positions == "last":
        mask = last_positions(mask)
    compared_pred, compared_target = (pred, target) if space is None else (space(pred), space(target))
    base = (cosine_loss if config.loss == "cosine" else mse_loss)(compared_pred, compared_target, mask)
    if config.infonce_alpha > 0:
        negatives = negatives_for(mask) if negatives_for is not None else None
        base = base + config.infonce_alpha * infonce_loss(pred, target, mask, config.infonce_temperature, negatives)
    return base

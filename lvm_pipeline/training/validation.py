"""Checks of a finished training run: its loss fell, and its best checkpoint beats copy-last on val Hit@5."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lvm_pipeline.datasets.sequences import TrainingSequences
from lvm_pipeline.evaluation.baselines import CopyLast
from lvm_pipeline.evaluation.retrieval import BankIndex, retrieval_ranks
from lvm_pipeline.models.predictor import ModelPredictor
from lvm_pipeline.tmd.schema import bank_tmd_vectors
from lvm_pipeline.training.checkpoint import check_compatible, load_checkpoint
from lvm_pipeline.training.trainer import HISTORY_FILE


@dataclass(frozen=True)
class Verdict:
    passed: bool
    summary: str
    figures: dict = field(default_factory=dict)


def loss_is_decreasing(run_dir: Path) -> Verdict:
    """The run's train loss is finite at every validation and lower at the last than at the first."""
    history_path = Path(run_dir) / HISTORY_FILE
    if not history_path.is_file():
        return Verdict(False, f"no training history in {run_dir}")
    losses = [entry["train_loss"] for entry in json.loads(history_path.read_text())]
    figures = {"epochs": len(losses), "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}
    if not losses or not all(isinstance(x, int | float) and math.isfinite(x) for x in losses):
        return Verdict(False, f"the training loss is not finite: {losses}", figures)
    if len(losses) > 1 and not losses[-1] < losses[0]:
        return Verdict(False, f"the training loss did not fall: {losses[0]:.4f} -> {losses[-1]:.4f}", figures)
    if len(losses) == 1:  # one validation (the time budget ended the first epoch): nothing to compare it with
        return Verdict(True, f"the training loss is finite ({losses[0]:.4f}); one epoch only: whether it falls is "
                             "unmeasured", figures)
    return Verdict(True, f"the training loss fell: {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} epochs", figures)


def val_hit_at_5_vs_copy_last(run_dir: Path, sequences: TrainingSequences,
                              views_for: Callable[[object], np.ndarray | None] = lambda model: None) -> Verdict:
    """Full-bank Hit@5 of the run's best checkpoint and of copy-last on every val window (`views_for(model)`: the
    context views of a model that reads the text view)."""
    model, sidecar = load_checkpoint(Path(run_dir) / "best.safetensors")
    check_compatible(sidecar, sequences.bank, sequences)
    bank, queries = sequences.bank, sequences.windows["val"]
    index = BankIndex(bank.vectors)
    tmd = bank_tmd_vectors(bank.column("tmd_bits")) if model.config.tmd else None
    model_hits = retrieval_ranks(index, ModelPredictor(model, sidecar["model_name"], views=views_for(model)).predict(
        bank.vectors, queries, tmd),
                                 queries)["hit_at_5"].mean()
    copy_hits = retrieval_ranks(index, CopyLast().predict(bank.vectors, queries), queries)["hit_at_5"].mean()
    figures = {"val_hit_at_5": float(model_hits), "copy_last_val_hit_at_5": float(copy_hits), "val_queries": len(queries)}
    verb = "beats" if model_hits > copy_hits else "does not beat"
    return Verdict(bool(model_hits > copy_hits),
                   f"{sidecar['model_name']} {verb} copy-last on val Hit@5: {model_hits:.1%} vs {copy_hits:.1%}", figures)

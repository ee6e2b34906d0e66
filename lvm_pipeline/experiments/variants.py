"""The predecessor's experiment variants (its sprints 3-4), each one change to a family's base recipe.

A variant applies `model_changes` to the family's model config and `train_changes` to the training recipe;
1A changes nothing, so every other variant reads as "1A plus one idea" and the comparison pairs it with 1A.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from lvm_pipeline.models.base import ModelConfig
from lvm_pipeline.training.config import TrainConfig


@dataclass(frozen=True)
class Variant:
    name: str  # "1A" ... "1E"
    title: str  # a few words
    description: str  # what changes, for the UI and the comparison
    model_changes: dict = field(default_factory=dict)  # ModelConfig fields
    train_changes: dict = field(default_factory=dict)  # TrainConfig fields

    def apply(self, model: ModelConfig, recipe: TrainConfig) -> tuple[ModelConfig, TrainConfig]:
        """The variant's model config and recipe, from the base ones."""
        return replace(model, **self.model_changes), replace(recipe, **self.train_changes)


VARIANTS = {v.name: v for v in (
    Variant("1A", "baseline", "the family's _small config and the default recipe"),
    Variant("1B", "TMD conditioning", "each position's TMD code (16 -> d_model adapter) added to its input",
            model_changes={"tmd": True}),
    Variant("1C", "curriculum", "the first 3 epochs on windows of at most 4 concepts (short contexts), then full length",
            train_changes={"curriculum_epochs": 3, "curriculum_max_len": 4}),
    Variant("1D", "larger model", "d_model 512 and 3 layers instead of 256 and 2",
            model_changes={"d_model": 512, "n_layers": 3}),
    Variant("1E", "hard negatives", "InfoNCE also scores each target's 8 nearest train concepts of OTHER articles "
            "(never its own context: that cut Hit@5 by more than half)", train_changes={"hard_negatives": 8}),
)}

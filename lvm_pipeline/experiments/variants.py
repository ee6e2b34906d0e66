"""The experiment variants, each one change to a family's base recipe: the predecessor's 1A-1E (its sprints 3-4)
and the training strategies measured since (SWA, augmentation, shuffling, progressive training, Base-LCM's MSE).

A variant applies `model_changes` to the family's model config and `train_changes` to the training recipe;
1A changes nothing, so every other variant reads as "1A plus one idea" and the comparison pairs it with 1A.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from lvm_pipeline.models.base import ModelConfig
from lvm_pipeline.training.config import TrainConfig


@dataclass(frozen=True)
class Variant:
    name: str  # "1A" ... "1E", or a strategy's name ("swa", ...)
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
    Variant("swa", "weight averaging", "SWA: from half the run on, each validation adds the weights to a running "
            "mean, and the mean is validated and saved (training goes on from the raw weights)",
            train_changes={"swa_start": 0.5}),
    Variant("augment", "input augmentation", "each training input vector dropped (zeros) with probability 0.1 and "
            "Gaussian noise of expected norm 0.1 added (no shuffling: that is variant shuffle)",
            train_changes={"context_dropout": 0.1, "input_noise": 0.1}),
    Variant("shuffle", "shuffled contexts", "training inputs permuted within windows of 3 positions, the loss masked "
            "where a position could see its target or later", train_changes={"shuffle_window": 3}),
    Variant("progressive", "progressive training", "2 epochs on 1,000 train articles, 2 on 5,000, 2 on 10,000 "
            "(nested seeded subsets; a stage of all of them or more skipped), then all",
            train_changes={"progressive_articles": [1000, 5000, 10000], "progressive_epochs": 2}),
    Variant("mse", "MSE loss", "Meta's Base-LCM objective: MSE to the next vector, no InfoNCE, no hard negatives",
            train_changes={"loss": "mse", "infonce_alpha": 0.0, "hard_negatives": 0}),
)}
PREDECESSOR_VARIANTS = ("1A", "1B", "1C", "1D", "1E")  # what `lvm-pipeline experiments` trains unless told

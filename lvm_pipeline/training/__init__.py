"""Training next-concept models: the recipe (`TrainConfig`), losses, batches, checkpoints and the trainer."""

from lvm_pipeline.training.checkpoint import check_compatible, load_checkpoint, save_checkpoint
from lvm_pipeline.training.config import TrainConfig
from lvm_pipeline.training.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "check_compatible", "load_checkpoint", "save_checkpoint", "train"]

"""Training, fine-tuning, evaluation and checkpoints."""

from gnnmd.train.checkpoint import load_model, read_checkpoint, save_checkpoint
from gnnmd.train.trainer import TrainConfig, train

__all__ = ["TrainConfig", "load_model", "read_checkpoint", "save_checkpoint", "train"]

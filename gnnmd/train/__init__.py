"""Training and fine-tuning: the run configuration, its set-up, the epoch loop, data parallelism."""

from gnnmd.train.trainer import TrainConfig, train

__all__ = ["TrainConfig", "train"]

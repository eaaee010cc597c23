"""Training and fine-tuning: the run configuration (config), its set-up (setup), the epoch loop
(loop), data parallelism (distributed), and the run that ties them together (trainer)."""

from gnnmd.train.config import TrainConfig
from gnnmd.train.trainer import train

__all__ = ["TrainConfig", "train"]

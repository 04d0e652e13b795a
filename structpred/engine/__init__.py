"""The training engine: fit / evaluate, checkpoints, multi-process data parallel, logs."""

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .trainer import NonFiniteLossError, TrainConfig, Trainer

__all__ = [
    "NonFiniteLossError",
    "TrainConfig",
    "Trainer",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

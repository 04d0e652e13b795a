"""The training recipe shared by the ablation scripts in ``experiments/``."""

from __future__ import annotations

from typing import Any

from .trainer import TrainConfig

# AdamW with weight decay and a cosine schedule, quiet, on the CPU, keeping the last checkpoint.
ABLATION_DEFAULTS: dict[str, Any] = {
    "optimizer": "adamw",
    "weight_decay": 1e-4,
    "schedule": "cosine",
    "progress": False,
    "log_every": 1000,
    "keep_last": 1,
    "device": "cpu",
}


def ablation_config(**settings: Any) -> TrainConfig:
    """:data:`ABLATION_DEFAULTS` with ``settings`` (epochs, batch size, lr, seed...) on top."""
    return TrainConfig(**{**ABLATION_DEFAULTS, **settings})

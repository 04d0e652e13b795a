"""The recipe of a run: :class:`TrainConfig` (everything that decides it, saved in every
checkpoint) and the one shared by the ablation scripts in ``experiments/``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainConfig:
    """Everything that decides a run (saved in every checkpoint)."""

    epochs: int = 10
    batch_size: int = 8
    lr: float = 0.01
    optimizer: str = "sgd"  # "sgd" (momentum) or "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # "cosine", "step" or "constant"
    warmup_steps: int = 0
    milestones: Sequence[float] = (0.67, 0.89)  # "step": fractions of the run
    gamma: float = 0.1
    clip_grad_norm: float | None = None
    amp: str | None = None  # None, "bf16" (CPU or CUDA) or "fp16" (CUDA)
    seed: int = 0
    num_workers: int = 0
    checkpoint_every: int = 0  # optimizer steps between checkpoints; 0: at epoch ends only
    eval_every: int = 1  # epochs between validations; the last epoch is always validated
    keep_last: int = 3
    log_every: int = 10
    progress: bool = True
    device: str | None = None
    model_name: str = ""  # recorded so `structpred eval` can rebuild the model and its data
    data: str = ""
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # the builder's, as built
    model_args: dict[str, Any] = field(default_factory=dict)  # what the user asked (--model-arg)
    data_kwargs: dict[str, Any] = field(default_factory=dict)  # the dataset's (--data-arg)
    weights: str | None = None  # the file the run started from (--weights); never reloaded on resume
    freeze: str | None = None  # the frozen parts (--freeze), applied again on resume
    num_classes: int | None = None  # the user's class count (--num-classes), None: the data's
    image_size: int | None = None  # the model's input size (--image-size; see engine.run)
    overrides: list[dict[str, Any]] = field(default_factory=list)  # resume --override history
    class_names: list[str] = field(default_factory=list)  # names of labels 1..K (detection data)
    category_ids: list[int] = field(default_factory=list)  # the data's own id of each label

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size <= 0 or self.lr <= 0:
            raise ValueError(
                f"epochs, batch_size and lr must be positive, got {self.epochs}, {self.batch_size}, {self.lr}"
            )
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 1:
            raise ValueError(f"eval_every must be an int >= 1 (epochs), got {self.eval_every!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {self.amp!r}")


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

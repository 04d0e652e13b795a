"""The recipe of a run: :class:`TrainConfig` (everything that decides it, saved in every
checkpoint) and the one shared by the ablation scripts in ``experiments/``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def _int(low: int, high: int | None = None) -> Callable[[Any], bool]:
    return lambda v: (
        isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)
    )


def _real(low: float, high: float = math.inf, above: bool = False) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        try:
            if not math.isfinite(v):
                return False
        except OverflowError:  # an int beyond float's range (a hostile checkpoint)
            return False
        return (v > low if above else v >= low) and v <= high

    return ok


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda v: any(v is c or (isinstance(v, str) and v == c) for c in choices)


def _fractions(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(_real(0.0, 1.0)(m) for m in v)


def _augment_spec(v: Any) -> bool:
    """An augmentation spec (:func:`~structpred.data.augment.parse_augment`) or None."""
    if v is None:
        return True
    if not isinstance(v, str):
        return False
    from ..data.augment import canonical_augment  # the data package only when a spec is given

    try:
        canonical_augment(v, "augment")
    except ValueError:
        return False
    return True


def _ema_spec(v: Any) -> bool:
    """A weight-EMA spec (:func:`~structpred.engine.ema.parse_ema`) or None."""
    if v is None:
        return True
    if not isinstance(v, str):
        return False
    from .ema import canonical_ema

    try:
        canonical_ema(v, "ema")
    except ValueError:
        return False
    return True


def _kind(*types: type) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, types)


#: Each setting's rule: (test, what it must be). Checked on construction (Python and CLI), on
#: every checkpoint read, and by ``structpred train`` before any data is read.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (_int(1), "a positive int (>= 1)"),
    "batch_size": (_int(1), "a positive int (>= 1)"),
    "lr": (_real(0.0, above=True), "a finite positive number (> 0)"),
    "optimizer": (_one_of("sgd", "adamw"), "'sgd' or 'adamw'"),
    "momentum": (_real(0.0, 1.0), "a number in [0, 1]"),
    "weight_decay": (_real(0.0), "a finite number >= 0"),
    "schedule": (_one_of("cosine", "step", "constant"), "'cosine', 'step' or 'constant'"),
    "warmup_steps": (_int(0), "an int >= 0"),
    "milestones": (_fractions, "a list of fractions of the run in [0, 1]"),
    "gamma": (_real(0.0, above=True), "a finite positive number (> 0)"),
    "clip_grad_norm": (_optional(_real(0.0, above=True)), "a finite positive number (> 0) or None"),
    "amp": (_one_of(None, "bf16", "fp16"), "None, 'bf16' or 'fp16'"),
    "seed": (_int(0, 2**32 - 1), "an int in [0, 2**32 - 1]"),
    "num_workers": (_int(0), "an int >= 0"),
    "checkpoint_every": (_int(0), "an int >= 0 (steps; 0: at epoch ends only)"),
    "eval_every": (_int(1), "an int >= 1 (epochs)"),
    "keep_last": (_int(0), "an int >= 0 (0: keep every checkpoint)"),
    "log_every": (_int(1), "an int >= 1 (steps)"),
    "progress": (_kind(bool), "true or false"),
    "device": (_optional(_kind(str)), "a device name or None"),
    "model_name": (_kind(str), "a string"),
    "data": (_kind(str), "a string"),
    "model_kwargs": (_kind(dict), "a mapping"),
    "model_args": (_kind(dict), "a mapping"),
    "data_kwargs": (_kind(dict), "a mapping"),
    "weights": (_optional(_kind(str)), "a path or None"),
    "freeze": (_optional(_kind(str)), "a spec or None"),
    "num_classes": (_optional(_int(1)), "a positive int or None"),
    "image_size": (_optional(_int(16)), "an int >= 16 (pixels) or None"),
    "augment": (_augment_spec, "an augmentation spec (e.g. 'hflip,scale=0.2' or 'yolo') or None"),
    "ema": (_ema_spec, "a weight EMA spec DECAY[,tau=N] (e.g. '0.999,tau=500') or None"),
    "overrides": (_kind(list), "a list"),
    "class_names": (_kind(list), "a list"),
    "category_ids": (_kind(list), "a list"),
}


def config_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for the setting ``name`` (``"must be ..., got ..."``), or
    None when it is fine or ``name`` is not a setting (unknown keys of old checkpoints)."""
    rule = RULES.get(name)
    if rule is None or rule[0](value):
        return None
    return f"must be {rule[1]}, got {_shown(value)}"


def _shown(value: Any) -> str:
    """``repr(value)``, at most 80 characters (a hostile value may be a 10,000-digit int, whose
    repr Python refuses)."""
    try:
        text = repr(value)
    except ValueError:  # int beyond sys.get_int_max_str_digits()
        return f"an int of about {int(value.bit_length() * 0.30103)} digits"
    return text if len(text) <= 80 else text[:77] + "..."


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
    augment: str | None = None  # training augmentation (--augment; data.augment's canonical spec)
    ema: str | None = None  # weight EMA (--ema DECAY[,tau=N]; engine.ema's canonical spec)
    overrides: list[dict[str, Any]] = field(default_factory=list)  # resume --override history
    class_names: list[str] = field(default_factory=list)  # names of labels 1..K (detection data)
    category_ids: list[int] = field(default_factory=list)  # the data's own id of each label

    def __post_init__(self) -> None:
        for name in RULES:
            problem = config_problem(name, getattr(self, name))
            if problem is not None:
                raise ValueError(f"{name} {problem}")
        if self.augment is not None:  # recorded canonical: presets expanded, "none" -> None
            from ..data.augment import canonical_augment

            self.augment = canonical_augment(self.augment, "augment")
        if self.ema is not None:
            from .ema import canonical_ema

            self.ema = canonical_ema(self.ema, "ema")


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

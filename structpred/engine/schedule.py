"""Learning-rate schedules as pure functions of the step: nothing to save, exact on resume."""

from __future__ import annotations

import math
from collections.abc import Sequence


def lr_at(
    step: int,
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "cosine",
    milestones: Sequence[float] = (0.67, 0.89),
    gamma: float = 0.1,
    min_lr_ratio: float = 0.0,
) -> float:
    """Learning rate at optimizer step ``step`` (0-based).

    Linear warm-up from ``base_lr / warmup_steps`` to ``base_lr`` over ``warmup_steps``, then
    ``"cosine"`` decay to ``min_lr_ratio * base_lr`` at ``total_steps``, ``"step"`` decay by
    ``gamma`` at each milestone (fractions of ``total_steps``), or ``"constant"``.
    """
    if schedule not in ("cosine", "step", "constant"):
        raise ValueError(f"schedule must be 'cosine', 'step' or 'constant', got {schedule!r}")
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        passed = sum(step >= m * total_steps for m in milestones)
        return base_lr * gamma**passed
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    floor = min_lr_ratio * base_lr
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

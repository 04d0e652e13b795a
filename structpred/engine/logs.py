"""Training logs: a CSV file always, TensorBoard event files when tensorboard is installed; the
per-epoch line a user reads."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class RunLog:
    """Append rows ``{step, epoch, phase, <metric>: value}`` to ``<run_dir>/log.csv`` (+ TensorBoard).

    The CSV's columns grow as new metrics appear (the file is rewritten then; it stays small).
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "log.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():  # resuming: keep what the earlier run logged
            with open(self.path, newline="") as f:
                self.rows = list(csv.DictReader(f))
        self.columns: list[str] = list(self.rows[0].keys()) if self.rows else ["step", "epoch", "phase"]
        self.writer: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
            except ImportError:
                log.warning("tensorboard is not installed: logging to %s only", self.path)

    def drop_after(self, step: int) -> None:
        """Forget rows logged after ``step`` (an interrupted run's, before resuming from ``step``)."""
        self.rows = [r for r in self.rows if int(float(r["step"])) <= step]
        self._rewrite()

    def write(self, step: int, epoch: int, phase: str, values: dict[str, float]) -> None:
        row: dict[str, Any] = {"step": step, "epoch": epoch, "phase": phase, **values}
        new = [k for k in row if k not in self.columns]
        self.columns += new
        self.rows.append(row)
        if new:
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, self.columns).writerow(row)
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{phase}/{k}", v, step)

    def _rewrite(self) -> None:
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, self.columns)
            w.writeheader()
            w.writerows(self.rows)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def epoch_line(
    epoch: int,
    epochs: int,
    train_loss: float,
    metrics: dict[str, float],
    key: str,
    best: bool,
    seconds: float,
) -> str:
    """``epoch 3/10  train loss 0.412  val loss 0.398  val map 0.61  (best)  41 s``.

    ``epoch`` is 0-based; ``metrics`` the validation's (empty on epochs without one); ``key``
    the task's headline metric.
    """
    parts = [f"epoch {epoch + 1}/{epochs}", f"train loss {train_loss:.4g}"]
    if "loss" in metrics:
        parts.append(f"val loss {metrics['loss']:.4g}")
    if key != "loss" and key in metrics:
        parts.append(f"val {key} {metrics[key]:.4g}")
    if best:
        parts.append("(best)")
    parts.append(f"{seconds:.0f} s")
    return "  ".join(parts)

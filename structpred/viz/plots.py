"""Training and evaluation plots written straight to PNG files with matplotlib's Agg canvas.

No display and no ``pyplot`` global state: each call builds its own ``Figure``, so plotting is
safe in headless jobs and worker threads. A figure of ``figsize=(w, h)`` inches at ``dpi``
gives a PNG of ``w * dpi`` x ``h * dpi`` pixels.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

# Column or key names taken as the x axis, in order of preference.
X_KEYS = ("step", "epoch", "iteration", "iter")


def _as_1d(values: Any, name: str) -> np.ndarray:
    """A Tensor, array or sequence of numbers (``None`` = missing) -> float64 ``[L]``."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got {type(values).__name__}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _read_csv_log(path: Path) -> dict[str, list[float]]:
    """Numeric columns of a CSV log with a header row; empty cells become NaN.

    With a ``phase`` column (the engine's ``log.csv``: ``step, epoch, phase, <metric>...``)
    each metric is split per phase into series named ``"<phase>/<metric>"`` (``train/loss``,
    ``val/loss``); the x-axis columns (``step``, ``epoch``...) stay whole. Other non-numeric
    columns are dropped.
    """
    if not path.is_file():
        raise ValueError(f"history file {str(path)!r} does not exist")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"history file {str(path)!r} has no data rows under a header")
    phases = [r.get("phase") or "" for r in rows] if "phase" in rows[0] else None
    columns: dict[str, list[float]] = {}
    for key in rows[0]:
        if key is None or key == "phase":
            continue
        try:
            values = [float(r[key]) if r.get(key) not in (None, "") else math.nan for r in rows]
        except ValueError:
            logger.debug("%s: column %r is not numeric, not plotted", path, key)
            continue
        if phases is None or key in X_KEYS:
            columns[key] = values
            continue
        for phase in dict.fromkeys(phases):  # phases in order of first appearance
            split = [v if p == phase else math.nan for v, p in zip(values, phases, strict=True)]
            if any(math.isfinite(v) for v in split):
                columns[f"{phase}/{key}" if phase else key] = split
    return columns


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(out)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(out))
    logger.debug("wrote %s", out)
    return out


def plot_loss_curves(
    history: Mapping[str, Sequence[float]] | str | Path,
    path: str | Path,
    *,
    keys: Sequence[str] | None = None,
    x_key: str | None = None,
    log_y: bool = False,
    title: str = "Training curves",
    figsize: tuple[float, float] = (6.0, 4.0),
    dpi: int = 100,
) -> Path:
    """Plot one line per series of a training history and write it as a PNG.

    Args:
        history: ``{"loss": [...], "val_loss": [...], "epoch": [...]}`` or the path of a CSV
            log with a header row (empty cells = not logged at that row), such as the
            engine's ``log.csv``, whose metrics are split per ``phase`` (``train/loss``...).
        path: output ``.png`` file (parent folders are created).
        keys: the series to draw; default every numeric series except x-axis ones
            (``step``, ``epoch``, ``iteration``, ``iter``).
        x_key: the series used as x; default the first of ``step``, ``epoch``, ``iteration``,
            ``iter`` that is present, else ``1..L`` (a series shorter than ``L`` is drawn
            against ``1..len``).
        log_y: logarithmic y axis (non-positive values are not drawn).
    Returns:
        ``Path(path)``.
    """
    if isinstance(history, (str, Path)):
        series = {k: _as_1d(v, f"history[{k!r}]") for k, v in _read_csv_log(Path(history)).items()}
    elif isinstance(history, Mapping):
        series = {str(k): _as_1d(v, f"history[{k!r}]") for k, v in history.items()}
    else:
        raise ValueError(f"history must be a dict of lists or a CSV path, got {type(history).__name__}")
    if x_key is None:
        x_key = next((k for k in X_KEYS if k in series), None)
    elif x_key not in series:
        raise ValueError(f"x_key={x_key!r} is not in history (has {sorted(series)})")
    names = list(keys) if keys is not None else [k for k in series if k != x_key and k not in X_KEYS]
    missing = [k for k in names if k not in series]
    if missing:
        raise ValueError(f"keys {missing} are not in history (has {sorted(series)})")
    if not names:
        raise ValueError("history has no series to plot")

    fig = Figure(figsize=figsize, dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    for name in names:
        y = series[name]
        if x_key is not None:
            x = series[x_key]
            if len(x) != len(y):
                raise ValueError(
                    f"history[{name!r}] has {len(y)} values but the x axis {x_key!r} has {len(x)}"
                )
        else:
            x = np.arange(1, len(y) + 1, dtype=np.float64)
        keep = np.isfinite(y) & np.isfinite(x)  # rows where this series was logged
        if log_y:
            keep &= y > 0
        if not keep.any():
            logger.warning("plot_loss_curves: series %r has no finite values to draw", name)
            continue
        ax.plot(x[keep], y[keep], label=name, marker="." if keep.sum() < 30 else None)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(x_key or "index")
    ax.set_ylabel("value")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    return _save(fig, path)


def average_precision(recall: Any, precision: Any) -> float:
    """Area under the precision-recall curve with the precision envelope (all-point, VOC 2010+).

    ``recall`` and ``precision`` are ``[R]`` points of one curve (any order of recall);
    precision at recall r is taken as the best precision at any recall >= r.
    """
    r = _as_1d(recall, "recall")
    p = _as_1d(precision, "precision")
    order = np.argsort(r, kind="stable")
    r = np.concatenate(([0.0], r[order], [r.max() if r.size else 0.0]))
    p = np.concatenate(([0.0], p[order], [0.0]))
    p = np.maximum.accumulate(p[::-1])[::-1]  # envelope: best precision at this recall or beyond
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


def plot_pr_curves(
    curves: Mapping[str, tuple[Any, Any] | tuple[Any, Any, float]],
    path: str | Path,
    title: str = "Precision-recall",
    *,
    figsize: tuple[float, float] = (5.0, 5.0),
    dpi: int = 100,
) -> Path:
    """Plot precision against recall, one curve per entry, with each curve's AP in the legend.

    Args:
        curves: ``{name: (recall [R], precision [R])}``, values in [0, 1]; a third element
            gives the AP to print (e.g. COCO's 101-point AP), else it is computed with
            ``average_precision`` (all-point envelope).
        path: output ``.png`` file (parent folders are created).
    Returns:
        ``Path(path)``.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty dict {name: (recall, precision)}")
    fig = Figure(figsize=figsize, dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in curves.items():
        if not isinstance(curve, (tuple, list)) or len(curve) not in (2, 3):
            raise ValueError(f"curves[{name!r}] must be (recall, precision) or (recall, precision, ap)")
        recall = _as_1d(curve[0], f"curves[{name!r}] recall")
        precision = _as_1d(curve[1], f"curves[{name!r}] precision")
        if recall.shape != precision.shape or recall.size == 0:
            raise ValueError(
                f"curves[{name!r}]: recall and precision must be non-empty and of equal length, "
                f"got {recall.size} and {precision.size}"
            )
        both = np.concatenate((recall, precision))
        if not np.isfinite(both).all() or both.min() < 0.0 or both.max() > 1.0:
            raise ValueError(f"curves[{name!r}]: recall and precision must be finite and in [0, 1]")
        ap = float(curve[2]) if len(curve) == 3 else average_precision(recall, precision)
        order = np.argsort(recall, kind="stable")
        ax.plot(recall[order], precision[order], label=f"{name} (AP {ap:.3f})")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    return _save(fig, path)

"""Training and evaluation plots written straight to PNG files with matplotlib's Agg canvas.

No display and no ``pyplot`` global state: each call builds its own ``Figure``, so plotting is
safe in headless jobs and worker threads. A figure of ``figsize=(w, h)`` inches at ``dpi``
gives a PNG of ``w * dpi`` x ``h * dpi`` pixels.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .scores import _as_1d, average_precision

logger = logging.getLogger(__name__)

# Column or key names taken as the x axis, in order of preference.
X_KEYS = ("step", "epoch", "iteration", "iter")


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


def figure_png(fig: Figure) -> bytes:
    """The figure laid out (``tight_layout``) and encoded as PNG bytes (for HTML pages)."""
    fig.tight_layout()
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()


def fit_title(fig: Figure, ax: Any, title: str, fontsize: float = 12.0, min_fontsize: float = 6.0) -> Any:
    """Set ``ax``'s title so that all of it lies inside the figure: wrapped at word boundaries
    to the figure's width, then shrunk (down to ``min_fontsize``) until its box fits."""
    canvas = FigureCanvasAgg(fig)
    fig_w = fig.get_figwidth() * fig.dpi
    size = fontsize
    while True:
        chars = max(8, int(0.92 * fig_w / (0.6 * size * fig.dpi / 72.0)))  # ~0.6 em per character
        text = ax.set_title("\n".join(textwrap.wrap(title, chars)) or title, fontsize=size)
        fig.tight_layout()
        canvas.draw()
        box = text.get_window_extent(canvas.get_renderer())
        inside = box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig_w and box.y1 <= fig.get_figheight() * fig.dpi
        if inside or size <= min_fontsize:
            return text
        size = max(min_fontsize, size - 1.0)


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average with bias correction (TensorBoard's smoothing), ``[L] -> [L]``:
    ``s_t = w s_{t-1} + (1 - w) y_t``, divided by ``1 - w^t`` so the start is not pulled to 0."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out = np.empty_like(values, dtype=np.float64)
    acc = 0.0
    for t, y in enumerate(values, start=1):
        acc = weight * acc + (1.0 - weight) * float(y)
        out[t - 1] = acc / (1.0 - weight**t)
    return out


def _default_keys(series: Mapping[str, np.ndarray], x_key: str | None) -> list[str]:
    """The total loss series when there are any (``loss``, ``val_loss``, ``train/loss``; not
    the ``loss_<term>`` parts), else every series naming a loss, else every series; axes
    (``step``, ``epoch``...) never."""
    names = [k for k in series if k != x_key and k not in X_KEYS]
    last = {k: k.rsplit("/", 1)[-1] for k in names}
    totals = [k for k in names if last[k] == "loss" or last[k].endswith("_loss")]  # not loss_<term>
    losses = [k for k in names if "loss" in k.rsplit("/", 1)[-1]]
    return totals or losses or names


def loss_curves_figure(
    history: Mapping[str, Sequence[float]] | str | Path,
    *,
    keys: Sequence[str] | None = None,
    x_key: str | None = None,
    log_y: bool | None = None,
    smoothing: float | None = None,
    title: str = "Training curves",
    figsize: tuple[float, float] = (6.0, 4.0),
    dpi: int = 100,
) -> Figure:
    """One line per series of a training history, as a matplotlib ``Figure``.

    Readable by default: a series of many points (>= 30, e.g. per-step training loss) is drawn
    faint, with its smoothed line (:func:`ema`) on top in the same colour; the y axis is
    logarithmic when the drawn values span more than a factor of 10; with both ``step`` and
    ``epoch`` in the history the x axis counts steps and a second axis on top marks epochs.

    Args:
        history: ``{"loss": [...], "val_loss": [...], "epoch": [...]}`` or the path of a CSV
            log with a header row (empty cells = not logged at that row), such as the
            engine's ``log.csv``, whose metrics are split per ``phase`` (``train/loss``...).
        keys: the series to draw; default the total losses (``loss``, ``val_loss``,
            ``train/loss``, ``val/loss``, not the ``loss_<term>`` parts) when logged, else every
            series with ``loss`` in its name, else every numeric series except x-axis ones
            (``step``, ``epoch``, ``iteration``, ``iter``).
        x_key: the series used as x; default the first of ``step``, ``epoch``, ``iteration``,
            ``iter`` that is present, else ``1..L`` (a series shorter than ``L`` is drawn
            against ``1..len``).
        log_y: logarithmic y axis (non-positive values are not drawn); None: automatic, as above.
        smoothing: EMA weight in [0, 1) for long series; None: 0.9 (0 draws raw lines only).
    Returns:
        the ``Figure`` (see :func:`plot_loss_curves` to write it).
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
    names = list(keys) if keys is not None else _default_keys(series, x_key)
    missing = [k for k in names if k not in series]
    if missing:
        raise ValueError(f"keys {missing} are not in history (has {sorted(series)})")
    if not names:
        raise ValueError("history has no series to plot")
    weight = 0.9 if smoothing is None else float(smoothing)
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")

    lines: list[tuple[str, np.ndarray, np.ndarray]] = []
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
        lines.append((name, x[keep], y[keep]))
    drawn = np.concatenate([y for _, _, y in lines]) if lines else np.zeros(0)
    if log_y is None:  # automatic: log when positive values span more than a decade
        log_y = bool(drawn.size) and bool((drawn > 0).all()) and drawn.max() > 10.0 * drawn.min()

    fig = Figure(figsize=figsize, dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, x, y) in enumerate(lines):
        if log_y:
            x, y = x[y > 0], y[y > 0]
        color = f"C{i % 10}"
        if y.size >= 30 and weight > 0.0:
            ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(x, ema(y, weight), color=color, linewidth=1.8, label=f"{name} (smoothed)")
        else:
            ax.plot(x, y, color=color, label=name, marker="." if y.size < 30 else None)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(
        {"step": "training step (optimizer updates)", "epoch": "epoch"}.get(x_key or "", x_key or "index")
    )
    ax.set_ylabel("loss" if all("loss" in n for n in names) else "value")
    if x_key == "step" and "epoch" in series:
        _epoch_axis(ax, series["step"], series["epoch"])
    fit_title(fig, ax, title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    return fig


def plot_loss_curves(
    history: Mapping[str, Sequence[float]] | str | Path,
    path: str | Path,
    *,
    keys: Sequence[str] | None = None,
    x_key: str | None = None,
    log_y: bool | None = None,
    smoothing: float | None = None,
    title: str = "Training curves",
    figsize: tuple[float, float] = (6.0, 4.0),
    dpi: int = 100,
) -> Path:
    """:func:`loss_curves_figure` written as a PNG at ``path`` (parent folders are created);
    returns ``Path(path)``. The arguments are :func:`loss_curves_figure`'s."""
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    fig = loss_curves_figure(
        history,
        keys=keys,
        x_key=x_key,
        log_y=log_y,
        smoothing=smoothing,
        title=title,
        figsize=figsize,
        dpi=dpi,
    )
    return _save(fig, path)


def _epoch_axis(ax: Any, steps: np.ndarray, epochs: np.ndarray) -> None:
    """A top x axis with a tick at the first logged step of each epoch, labelled with the epoch."""
    ok = np.isfinite(steps) & np.isfinite(epochs)
    ticks: dict[int, float] = {}
    for s, e in zip(steps[ok], epochs[ok], strict=True):
        ticks.setdefault(int(e), float(s))
    if len(ticks) < 2:
        return
    top = ax.secondary_xaxis("top")
    every = max(1, len(ticks) // 10)  # at most ~10 labels
    shown = sorted(ticks.items())[::every]
    top.set_xticks([s for _, s in shown], labels=[str(e) for e, _ in shown])
    top.set_xlabel("epoch", fontsize=9)


def pr_curves_figure(
    curves: Mapping[str, tuple[Any, Any] | tuple[Any, Any, float]],
    title: str = "Precision-recall",
    *,
    figsize: tuple[float, float] = (5.0, 5.0),
    dpi: int = 100,
) -> Figure:
    """:func:`plot_pr_curves`' figure, not yet written (an HTML report encodes it itself)."""
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
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small" if len(curves) > 6 else None)  # least over the curves
    fit_title(fig, ax, title)
    return fig


def plot_pr_curves(
    curves: Mapping[str, tuple[Any, Any] | tuple[Any, Any, float]],
    path: str | Path,
    title: str = "Precision-recall",
    *,
    figsize: tuple[float, float] = (5.0, 5.0),
    dpi: int = 100,
) -> Path:
    """Plot precision against recall, one curve per entry, with each curve's AP in the legend.

    The title is wrapped (and shrunk if need be) to lie wholly inside the figure.

    Args:
        curves: ``{name: (recall [R], precision [R])}``, values in [0, 1]; a third element
            gives the AP to print, else it is :func:`average_precision` of the points (COCO's
            101-point AP: for ``MeanAveragePrecision.pr_curve`` curves, exactly the metric's
            per-class AP at that IoU threshold).
        path: output ``.png`` file (parent folders are created).
    Returns:
        ``Path(path)``.
    """
    return _save(pr_curves_figure(curves, title, figsize=figsize, dpi=dpi), path)

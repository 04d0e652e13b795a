"""Plots: files are real PNGs of the requested size with the lines drawn; AP against a naive reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from structpred.viz import average_precision, plot_loss_curves, plot_pr_curves

# matplotlib's first two default line colours ("C0", "C1").
C0 = (31, 119, 180)
C1 = (255, 127, 14)
C2 = (44, 160, 44)
C3 = (214, 39, 40)


def png_pixels(path) -> tuple[tuple[int, int], np.ndarray]:
    with Image.open(path) as pil:
        assert pil.format == "PNG"
        return pil.size, np.array(pil.convert("RGB"))


def count_color(pixels: np.ndarray, rgb: tuple[int, int, int], tol: int = 3) -> int:
    return int((np.abs(pixels.astype(int) - np.array(rgb)) <= tol).all(-1).sum())


def naive_ap(recall, precision):
    """All-point AP: for every recall step, the best precision at that recall or beyond."""
    pts = sorted(zip(recall, precision, strict=True))
    ap, prev_r = 0.0, 0.0
    for i, (r, _) in enumerate(pts):
        best = max(p for _, p in pts[i:])
        ap += (r - prev_r) * best
        prev_r = r
    return ap


# ----------------------------------------------------------------------------- loss curves


def test_loss_curves_from_dict(tmp_path):
    history = {
        "epoch": [1, 2, 3, 4, 5],
        "loss": [2.0, 1.0, 0.6, 0.4, 0.3],
        "val_loss": [2.2, 1.3, 0.9, 0.8, 0.75],
    }
    out = plot_loss_curves(history, tmp_path / "plots" / "loss.png")
    assert out == tmp_path / "plots" / "loss.png" and out.stat().st_size > 0
    size, px = png_pixels(out)
    assert size == (600, 400)
    assert count_color(px, C0) > 100 and count_color(px, C1) > 100  # both lines drawn


def test_loss_curves_one_series_draws_one_line(tmp_path):
    out = plot_loss_curves({"loss": [3.0, 2.0, 1.0]}, tmp_path / "one.png", figsize=(4, 3), dpi=50)
    size, px = png_pixels(out)
    assert size == (200, 150)
    assert count_color(px, C0) > 10 and count_color(px, C1) == 0


def test_loss_curves_from_csv_log_with_gaps_and_log_y(tmp_path):
    log = tmp_path / "log.csv"
    rows = ["step,loss,val_loss,note"]  # "note" is not numeric: dropped
    for step in range(1, 41):
        val = f"{1.0 / step:.4f}" if step % 10 == 0 else ""
        rows.append(f"{step},{math.exp(-step / 10):.5f},{val},ok")
    log.write_text("\n".join(rows) + "\n")
    out = plot_loss_curves(log, tmp_path / "csv.png", log_y=True, title="run 1")
    size, px = png_pixels(out)
    assert size == (600, 400)
    assert count_color(px, C0) > 100  # loss
    assert count_color(px, C1) > 20  # val_loss, only every 10 steps
    out = plot_loss_curves(log, tmp_path / "only_val.png", keys=["val_loss"], x_key="step")
    assert count_color(png_pixels(out)[1], C0) > 20


def test_loss_curves_engine_log_split_by_phase(tmp_path):
    # The engine's log.csv: step, epoch, phase, then metric columns; val rows also carry "loss".
    log = tmp_path / "log.csv"
    rows = ["step,epoch,phase,loss,miou"]
    for step in range(1, 31):
        epoch = (step - 1) // 10
        rows.append(f"{step},{epoch},train,{2.0 / step:.4f},")
        if step % 10 == 0:
            rows.append(f"{step},{epoch},val,{3.0 / step:.4f},{0.2 * step / 10:.3f}")
    log.write_text("\n".join(rows) + "\n")
    out = plot_loss_curves(log, tmp_path / "engine.png")
    px = png_pixels(out)[1]
    # By default the total losses only: train/loss, val/loss; epoch is an axis, not a series.
    assert count_color(px, C0) > 100 and count_color(px, C1) > 20 and count_color(px, C2) == 0
    out = plot_loss_curves(log, tmp_path / "all.png", keys=["train/loss", "val/loss", "val/miou"])
    px = png_pixels(out)[1]
    assert count_color(px, C0) > 100 and count_color(px, C1) > 20 and count_color(px, C2) > 20
    assert count_color(px, C3) == 0
    out = plot_loss_curves(log, tmp_path / "val.png", keys=["val/loss"], x_key="epoch")
    assert count_color(png_pixels(out)[1], C0) > 20
    with pytest.raises(ValueError, match="train/miou"):  # never logged in training
        plot_loss_curves(log, tmp_path / "x.png", keys=["train/miou"])


def test_loss_curves_accept_tensors_and_none(tmp_path):
    out = plot_loss_curves(
        {"loss": torch.tensor([1.0, 0.5, 0.25]), "acc": [None, 0.5, 0.7]}, tmp_path / "t.png"
    )
    assert png_pixels(out)[0] == (600, 400)


@pytest.mark.parametrize(
    "history, kwargs, match",
    [
        ({"loss": [1.0, 2.0]}, {"keys": ["nope"]}, "nope"),
        ({"loss": [1.0, 2.0]}, {"x_key": "epoch"}, "x_key"),
        ({"epoch": [1, 2, 3], "loss": [1.0, 2.0]}, {}, "loss"),
        ({"loss": [[1.0, 2.0]]}, {}, "loss"),
        ({"loss": ["a", "b"]}, {}, "loss"),
        ({"epoch": [1, 2]}, {}, "no series"),
        ([1.0, 2.0], {}, "history"),
        ("/nonexistent/log.csv", {}, "history"),
    ],
)
def test_loss_curves_bad_input(tmp_path, history, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_loss_curves(history, tmp_path / "x.png", **kwargs)
    assert not (tmp_path / "x.png").exists()


def test_loss_curves_bad_path(tmp_path):
    with pytest.raises(ValueError, match="png"):
        plot_loss_curves({"loss": [1.0]}, tmp_path / "x.jpg")


def test_loss_curves_empty_csv(tmp_path):
    log = tmp_path / "empty.csv"
    log.write_text("step,loss\n")
    with pytest.raises(ValueError, match="no data rows"):
        plot_loss_curves(log, tmp_path / "x.png")


# ----------------------------------------------------------------------------- precision-recall


def naive_coco_ap(recall, precision):
    """COCO's 101-point AP: at r = 0, 0.01, ..., 1 the best precision at recall >= r (0 if none)."""
    total = 0.0
    for r in np.linspace(0.0, 1.0, 101).tolist():  # pycocotools' exact recall points
        total += max((p for rr, p in zip(recall, precision, strict=True) if rr >= r), default=0.0)
    return total / 101


def test_average_precision_all_point_against_naive():
    ap = lambda r, p: average_precision(r, p, method="all_point")  # noqa: E731
    assert ap([0.5, 1.0], [1.0, 1.0]) == pytest.approx(1.0)
    assert ap([0.2, 0.4, 0.4, 0.6], [1.0, 0.5, 0.67, 0.5]) == pytest.approx(0.2 + 0.134 + 0.1)
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 30))
        r = np.sort(rng.random(n))
        p = rng.random(n)
        assert ap(r, p) == pytest.approx(naive_ap(r.tolist(), p.tolist()))
        assert ap(torch.from_numpy(r), torch.from_numpy(p)) == pytest.approx(naive_ap(r, p))


def test_average_precision_coco_against_naive():
    assert average_precision([0.5, 1.0], [1.0, 1.0]) == pytest.approx(1.0)
    assert average_precision([0.5], [1.0]) == pytest.approx(51 / 101)  # r = 0 .. 0.5 reached
    assert average_precision([], []) == 0.0
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(1, 30))
        r = np.round(rng.random(n), 3)
        p = rng.random(n)
        assert average_precision(r, p) == pytest.approx(naive_coco_ap(r.tolist(), p.tolist()))
    with pytest.raises(ValueError, match="method"):
        average_precision([0.5], [1.0], method="voc07")
    with pytest.raises(ValueError, match="length"):
        average_precision([0.5, 0.6], [1.0])


def _random_detections(seed: int, images: int = 6, classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(images):
        G = int(torch.randint(1, 5, (1,), generator=g))
        xy = torch.rand(G, 2, generator=g) * 60
        gt = torch.cat([xy, xy + 10 + torch.rand(G, 2, generator=g) * 20], 1)
        N = int(torch.randint(0, 7, (1,), generator=g))
        pick = torch.randint(0, G, (N,), generator=g)
        boxes = gt[pick] + torch.randn(N, 4, generator=g) * 4  # near an object, sometimes off
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        preds.append({"boxes": boxes, "scores": torch.rand(N, generator=g),
                      "labels": torch.randint(1, classes + 1, (N,), generator=g)})  # fmt: skip
        targets.append({"boxes": gt, "labels": torch.randint(1, classes + 1, (G,), generator=g)})
    return preds, targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pr_legend_ap_equals_the_metrics_per_class_ap50(seed):
    # The legend's AP (average_precision of a pr_curve) is the metric's per-class AP at IoU 0.5.
    from structpred.metrics import MeanAveragePrecision

    preds, targets = _random_detections(seed)
    at50 = MeanAveragePrecision(iou_thresholds=[0.5], class_metrics=True)
    at50.update(preds, targets)
    summary = at50.compute()
    table = dict(zip(summary["classes"].tolist(), summary["map_per_class"].tolist(), strict=True))
    coco = MeanAveragePrecision()  # the default 0.5:0.95 metric, whose curves the report plots
    coco.update(preds, targets)
    curves = coco.pr_curve(iou_threshold=0.5)
    assert curves and set(curves) <= set(table)
    for label, (recall, precision) in curves.items():
        assert average_precision(recall, precision) == pytest.approx(table[label], abs=1e-6)
    assert any(0.0 < v < 1.0 for v in table.values())  # a case where the definitions could differ


def test_loss_figure_is_readable_by_default():
    from structpred.viz import loss_curves_figure

    steps = np.arange(1, 201)
    noise = np.random.default_rng(0).lognormal(0.0, 0.4, steps.size)
    history = {"step": steps, "epoch": (steps - 1) // 50, "loss": 20.0 * np.exp(-steps / 30) * noise + 0.01}
    fig = loss_curves_figure(history)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"  # the values span decades
    raw, smooth = ax.lines[:2]
    assert raw.get_alpha() is not None and raw.get_alpha() < 0.5  # the raw line is faint
    assert smooth.get_alpha() is None and smooth.get_linewidth() > raw.get_linewidth()
    y_raw, y_smooth = np.asarray(raw.get_ydata()), np.asarray(smooth.get_ydata())
    assert np.abs(np.diff(np.log(y_smooth))).mean() < 0.5 * np.abs(np.diff(np.log(y_raw))).mean()
    assert "step" in ax.get_xlabel()
    tops = [c for c in ax.child_axes if c.get_xlabel() == "epoch"]  # the epoch axis on top
    assert len(tops) == 1 and [t.get_text() for t in tops[0].get_xticklabels()] == ["0", "1", "2", "3"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["loss (smoothed)"]
    # A short series in a narrow range: linear axis, markers, no smoothing.
    ax = loss_curves_figure({"epoch": [1, 2, 3], "loss": [1.0, 0.8, 0.7]}).axes[0]
    assert ax.get_yscale() == "linear" and len(ax.lines) == 1 and ax.lines[0].get_marker() == "."
    assert loss_curves_figure(history, log_y=False, smoothing=0.0).axes[0].get_yscale() == "linear"
    with pytest.raises(ValueError, match="smoothing"):
        loss_curves_figure(history, smoothing=1.0)


def test_ema_is_bias_corrected():
    from structpred.viz.plots import ema

    assert ema(np.array([5.0, 5.0, 5.0]), 0.9).tolist() == pytest.approx([5.0, 5.0, 5.0])
    out = ema(np.array([1.0, 3.0]), 0.5)
    assert out.tolist() == pytest.approx([1.0, (0.5 * 0.5 * 1.0 + 0.5 * 3.0) / 0.75])


def _title_inside(fig) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    box = fig.axes[0].title.get_window_extent(canvas.get_renderer())
    W, H = fig.get_figwidth() * fig.dpi, fig.get_figheight() * fig.dpi
    return box.x0 >= 0 and box.y0 >= 0 and box.x1 <= W and box.y1 <= H


@pytest.mark.parametrize("figsize", [(5.0, 5.0), (3.0, 3.0)])
def test_pr_title_is_wholly_inside_the_figure(figsize):
    from structpred.viz import pr_curves_figure

    title = "fasterrcnn_narrow_fpn on coco:/data/some/long/folder/name/of/the/user test split, IoU 0.5"
    r = torch.linspace(0, 1, 11)
    fig = pr_curves_figure({"car": (r, 1 - r)}, title, figsize=figsize)
    assert _title_inside(fig)
    assert "".join(fig.axes[0].get_title().split()) == "".join(title.split())  # all of it, wrapped
    # Without the fitting, matplotlib would cut it: the same title set plainly runs off the figure.
    fig.axes[0].set_title(title, fontsize=12)
    assert not _title_inside(fig)


def test_pr_curves_png(tmp_path):
    r = torch.linspace(0, 1, 50)
    curves = {"car": (r, 1 - r**2), "person": (r * 0.8, (1 - r).clamp(min=0.1), 0.42)}
    out = plot_pr_curves(curves, tmp_path / "pr.png", title="val")
    size, px = png_pixels(out)
    assert size == (500, 500) and out.stat().st_size > 0
    assert count_color(px, C0) > 100 and count_color(px, C1) > 100


@pytest.mark.parametrize(
    "curves, match",
    [
        ({}, "curves"),
        ({"a": ([0.1, 0.2], [1.0])}, "equal length"),
        ({"a": ([], [])}, "non-empty"),
        ({"a": ([0.1, 1.5], [1.0, 0.5])}, r"\[0, 1\]"),
        ({"a": ([0.1, math.nan], [1.0, 0.5])}, "finite"),
        ({"a": [0.1, 0.2]}, r"curves\['a'\] recall"),
        ({"a": ([0.1], [1.0], 0.5, 1)}, "recall, precision"),
    ],
)
def test_pr_curves_bad_input(tmp_path, curves, match):
    with pytest.raises(ValueError, match=match):
        plot_pr_curves(curves, tmp_path / "x.png")

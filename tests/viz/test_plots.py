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
    # train/loss, val/loss, val/miou: three lines; epoch is an axis, not a series.
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


def test_average_precision_against_naive():
    assert average_precision([0.5, 1.0], [1.0, 1.0]) == pytest.approx(1.0)
    assert average_precision([0.2, 0.4, 0.4, 0.6], [1.0, 0.5, 0.67, 0.5]) == pytest.approx(0.2 + 0.134 + 0.1)
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 30))
        r = np.sort(rng.random(n))
        p = rng.random(n)
        assert average_precision(r, p) == pytest.approx(naive_ap(r.tolist(), p.tolist()))
        assert average_precision(torch.from_numpy(r), torch.from_numpy(p)) == pytest.approx(naive_ap(r, p))


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

"""Disparity colouring: the tabled colour maps against matplotlib's (the peer), unknown pixels,
the batch scale, the legend, and bad input."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

from structpred.viz.colors import colormap_lut
from structpred.viz.depth import colormap, disparity_legend, disparity_to_color


def _lut(cmap: str) -> list[list[int]]:
    return colormap_lut(cmap).tolist()  # matplotlib's 256 entries, uint8


@pytest.mark.parametrize("cmap", ["plasma", "magma"])
def test_colormap_is_matplotlibs_table(cmap):
    t = torch.linspace(0, 1, 256, dtype=torch.float64)
    ours = colormap(t, cmap).int()  # (256, 3)
    peer = np.round(matplotlib.colormaps[cmap](t.numpy())[:, :3] * 255).astype(np.int32)
    assert torch.equal(ours, torch.from_numpy(peer))


def test_colormap_clamps_and_refuses_unknown_maps():
    out = colormap(torch.tensor([-3.0, float("nan"), 7.0, 0.5 / 255]), "magma")
    lut = _lut("magma")
    assert out[0].tolist() == lut[0] == out[1].tolist()  # below 0 and NaN: the first colour
    assert out[2].tolist() == lut[-1]  # above 1: the last
    assert out[3].tolist() == lut[1]  # nearest entry (0.5 rounds up)
    with pytest.raises(ValueError, match="colormap"):
        colormap(torch.tensor([0.5]), "no-such-map")
    with pytest.raises(ValueError, match="float"):
        colormap(torch.tensor([1]), "magma")


def test_disparity_to_color_scale_and_unknown_pixels_black():
    disp = torch.tensor([[10.0, 5.0, 0.0], [-1.0, float("nan"), float("inf")]])
    out = disparity_to_color(disp)
    assert out.dtype == torch.uint8 and out.shape == (3, 2, 3)
    assert out[:, 0, 0].tolist() == _lut("plasma")[-1]  # the largest is the brightest
    assert out[:, 0, 1].tolist() == colormap(torch.tensor([0.5]))[0].tolist()
    assert (out[:, 0, 2] == 0).all() and (out[:, 1] == 0).all()  # 0, < 0, NaN, inf: black
    valid = torch.tensor([[False, True, True], [True, True, True]])
    masked = disparity_to_color(disp, valid=valid)
    assert (masked[:, 0, 0] == 0).all()
    assert masked[:, 0, 1].tolist() == _lut("plasma")[-1]  # 5 px is now the largest known
    fixed = disparity_to_color(disp, max_disp=5.0)
    assert fixed[:, 0, 0].tolist() == fixed[:, 0, 1].tolist() == _lut("plasma")[-1]  # clamped
    assert torch.equal(disparity_to_color(disp[None]), out)  # [1, H, W] too


def test_batch_shares_one_scale():
    a, b = torch.full((1, 2, 2), 4.0), torch.full((1, 2, 2), 8.0)
    batch = disparity_to_color(torch.stack([a, b]))
    assert batch.shape == (2, 3, 2, 2)
    assert torch.equal(batch[0], disparity_to_color(a, max_disp=8.0))
    assert torch.equal(batch[1], disparity_to_color(b))
    assert (disparity_to_color(torch.zeros(2, 1, 3, 3)) == 0).all()  # nothing known: all black


def test_legend():
    bar = disparity_legend(height=5, width=256, cmap="plasma")
    assert bar.shape == (3, 5, 256) and bar.dtype == torch.uint8
    assert [bar[:, 0, j].tolist() for j in range(256)] == _lut("plasma")
    assert torch.equal(bar[:, 0], bar[:, 4])
    disp = torch.linspace(0, 20, 256, dtype=torch.float64)[1:].reshape(1, 255)
    assert torch.equal(disparity_to_color(disp, max_disp=20.0)[:, 0], bar[:, 0, 1:])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: disparity_to_color(torch.ones(2, 4, 4)), r"\[H, W\], \[1, H, W\]"),
        (lambda: disparity_to_color(torch.ones(4, 4, dtype=torch.int64)), "floating point"),
        (lambda: disparity_to_color(torch.ones(4, 4), max_disp=0.0), "max_disp"),
        (lambda: disparity_to_color(torch.ones(4, 4), max_disp=float("inf")), "max_disp"),
        (lambda: disparity_to_color(torch.ones(4, 4), valid=torch.ones(4, 4)), "valid must be a bool"),
        (lambda: disparity_to_color(torch.ones(1, 4, 4), valid=torch.ones(4, 5, dtype=torch.bool)), "valid"),
        (lambda: disparity_to_color(torch.ones(4, 4), cmap="no-such-map"), "cmap"),
        (lambda: disparity_legend(width=1), "legend size"),
        (lambda: colormap(torch.ones(3, dtype=torch.int64)), "float Tensor"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()

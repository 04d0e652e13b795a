"""The flow colour coding of ``structpred.viz.flow``: torchvision's ``flow_to_image`` as the peer, batches,
the ``valid`` mask and the legend."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.utils import flow_to_image

from structpred.viz import flow_color_wheel, flow_legend, flow_to_color
from structpred.viz.colors import flow_to_color as field_to_color


def rand_flow(*shape: int, seed: int = 0, scale: float = 5.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


@pytest.mark.parametrize("shape", [(2, 13, 17), (3, 2, 8, 9), (1, 2, 1, 1)])
def test_matches_torchvision_within_one(shape):
    flow = rand_flow(*shape, seed=sum(shape))
    ours = flow_to_color(flow).int()
    peer = flow_to_image(flow).int()
    assert ours.shape == peer.shape and ours.dtype == torch.int32
    assert (ours - peer).abs().max() <= 1


def test_batch_shares_one_scale_like_torchvision():
    slow = torch.zeros(2, 4, 4)
    slow[0] = 1.0  # |flow| = 1
    fast = torch.zeros(2, 4, 4)
    fast[0] = 4.0  # |flow| = 4: the batch maximum
    out = flow_to_color(torch.stack([slow, fast]))
    assert out.shape == (2, 3, 4, 4) and out.dtype == torch.uint8
    assert tuple(out[1, :, 0, 0].tolist()) == (255, 0, 0)
    # A quarter of the batch maximum: a quarter of the way from white to red, not red.
    assert tuple(out[0, :, 0, 0].tolist()) == (255, 191, 191)
    assert torch.equal(out[0], field_to_color(slow, max_flow=4.0))
    assert (
        flow_to_color(torch.stack([slow, fast])).int() - flow_to_image(torch.stack([slow, fast])).int()
    ).abs().max() <= 1


def test_single_field_equals_field_colouring():
    flow = rand_flow(2, 6, 7, seed=3).double()
    assert torch.equal(flow_to_color(flow), field_to_color(flow))
    assert torch.equal(flow_to_color(flow, max_flow=2.5), field_to_color(flow, max_flow=2.5))


def test_valid_mask_black_and_out_of_the_scale():
    flow = torch.zeros(2, 2, 3)
    flow[0, 0, 0] = 1.0
    flow[0, 1, 2] = 100.0  # invalid: must neither be drawn nor set the scale
    valid = torch.ones(2, 3, dtype=torch.bool)
    valid[1, 2] = False
    out = flow_to_color(flow, valid=valid)
    assert tuple(out[:, 0, 0].tolist()) == (255, 0, 0)
    assert tuple(out[:, 1, 2].tolist()) == (0, 0, 0)
    assert tuple(out[:, 0, 1].tolist()) == (255, 255, 255)
    batched = flow_to_color(flow[None].expand(2, -1, -1, -1), valid=valid[None].expand(2, -1, -1))
    assert torch.equal(batched[0], out) and torch.equal(batched[1], out)


def test_nan_and_unknown_flow_black_in_a_batch():
    flow = rand_flow(2, 2, 3, 3, seed=9)
    flow[0, 0, 1, 1] = math.nan
    flow[1, 1, 0, 0] = 2e9
    out = flow_to_color(flow)
    assert out[0, :, 1, 1].tolist() == [0, 0, 0] and out[1, :, 0, 0].tolist() == [0, 0, 0]
    assert (out[0].sum(0) > 0).sum() == 8


def test_all_zero_or_all_invalid():
    assert (flow_to_color(torch.zeros(3, 2, 4, 5)) == 255).all()
    assert (flow_to_color(torch.full((2, 4, 5), math.nan)) == 0).all()


def test_legend_directions_rim_and_background():
    size = 101
    legend = flow_legend(size)
    assert legend.shape == (3, size, size) and legend.dtype == torch.uint8
    c = size // 2
    wheel = flow_color_wheel()
    assert legend[:, c, c].tolist() == [255, 255, 255]  # zero flow at the centre
    assert legend[:, c, size - 1].tolist() == wheel[0].tolist()  # +x on the rim: pure red
    right, down, left, up = (legend[:, y, x].tolist() for y, x in ((c, 90), (90, c), (c, 10), (10, c)))
    assert right[0] == 255 and right[2] < right[0] and right[1] == right[2]  # red, towards white
    assert down[0] == 255 and down[1] > 200  # yellow-orange
    assert left[2] == 255 and left[0] < left[1]  # cyan-blue
    assert up[2] == 255 and up[1] < up[2]  # blue-magenta
    assert legend[:, 0, 0].tolist() == [255, 255, 255]  # corner: background
    assert flow_legend(size, background=0)[:, 0, 0].tolist() == [0, 0, 0]
    # The legend is the colouring of the field (x - c, y - c) scaled to max_flow on the rim.
    ys, xs = torch.meshgrid(torch.arange(size) - c, torch.arange(size) - c, indexing="ij")
    field = torch.stack([xs, ys]).double() * (3.0 / c)
    ref = field_to_color(field, max_flow=3.0)
    inside = xs**2 + ys**2 <= c * c
    assert torch.equal(flow_legend(size, max_flow=3.0)[:, inside], ref[:, inside])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: flow_to_color(torch.zeros(3, 4, 4)), "flow"),
        (lambda: flow_to_color(torch.zeros(1, 1, 2, 4, 4)), "flow"),
        (lambda: flow_to_color(torch.zeros(2, 4, 4, dtype=torch.int32)), "floating"),
        (lambda: flow_to_color(torch.zeros(2, 4, 4), max_flow=-1.0), "max_flow"),
        (lambda: flow_to_color(torch.zeros(2, 4, 4), valid=torch.ones(4, 4)), "bool"),
        (lambda: flow_to_color(torch.zeros(2, 4, 4), valid=torch.ones(4, 5, dtype=torch.bool)), "shape"),
        (lambda: flow_to_color(torch.zeros(2, 2, 4, 4), valid=torch.ones(4, 4, dtype=torch.bool)), "shape"),
        (lambda: flow_legend(2), "size"),
        (lambda: flow_legend(10**6), "size"),
        (lambda: flow_legend(11, max_flow=math.nan), "max_flow"),
        (lambda: flow_legend(11, background=300), "background"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()

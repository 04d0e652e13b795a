"""``structpred.ops.roi_align``, ``roi_pool`` and ``spp`` against naive loop references.

No torchvision here (that is ``tests/parity/test_roi_parity.py``). The references below are
plain Python loops over RoIs, bins and samples, with scalar math done in the input's
precision (numpy scalars), written from torchvision's documented CPU kernel semantics:

roi_align: ``start = x1 * scale - offset`` (offset 0.5 if aligned); RoI size ``end - start``,
at least 1 unless aligned; ``grid = sampling_ratio`` if > 0 else ``ceil(bin)``; every bin is
the mean of ``grid_h x grid_w`` bilinear samples (at least one divisor); a sample more than one
cell outside the map is 0; coordinates are clamped at 0 and at the last row/column.

roi_pool: corners ``round(coord * scale)`` (halves away from zero); the RoI spans
``x2 - x1 + 1 >= 1`` cells; bin ``p`` covers ``[floor(p * size / P), ceil((p + 1) * size / P))``
plus the RoI's start, clipped to the map; an empty bin is 0; the gradient of a bin goes to
its first maximal cell in row-major order.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from structpred.ops import roi_align, roi_pool, spp
from tests.roi_cases import gen as _gen
from tests.roi_cases import make_rois

# Scalar type that does the reference's arithmetic in the input's precision.
_SCALAR: dict[torch.dtype, Any] = {torch.float32: np.float32, torch.float64: np.float64}

Tap = tuple[int, int, Any]  # (y, x, weight)


# ----------------------------------------------------------------------------- references


def _c_round(v: float) -> int:
    """C's ``round``: halves go away from zero."""
    t = math.trunc(v)
    frac = v - t  # exact for floats
    if frac >= 0.5:
        return t + 1
    if frac <= -0.5:
        return t - 1
    return t


def ref_roi_pool(
    x: Tensor, rois: Tensor, out_hw: tuple[int, int], scale: float, last_tie: bool = False
) -> tuple[Tensor, list[list[list[list[tuple[int, int, int] | None]]]]]:
    """Naive RoIPool.

    Args:
        x (Tensor[N, C, H, W]), rois (Tensor[K, 5]) rows ``(batch, x1, y1, x2, y2)``.
        last_tie: pick the *last* maximal cell instead (only to show a test can tell them apart).
    Returns:
        the output Tensor[K, C, PH, PW] and, per ``[k][c][ph][pw]``, the arg-max cell
        ``(n, y, x)`` (the first maximal one in row-major order) or None for an empty bin.
    """
    T = _SCALAR[x.dtype]
    _, C, H, W = x.shape
    PH, PW = out_hw
    vals = x.tolist()
    out: list = []
    arg: list = []
    for b, x1, y1, x2, y2 in rois.tolist():
        n = int(b)
        start_w = _c_round(float(T(x1) * T(scale)))
        start_h = _c_round(float(T(y1) * T(scale)))
        end_w = _c_round(float(T(x2) * T(scale)))
        end_h = _c_round(float(T(y2) * T(scale)))
        roi_w = max(end_w - start_w + 1, 1)
        roi_h = max(end_h - start_h + 1, 1)
        bin_h = T(roi_h) / T(PH)
        bin_w = T(roi_w) / T(PW)
        out_k = [[[0.0] * PW for _ in range(PH)] for _ in range(C)]
        arg_k: list = [[[None] * PW for _ in range(PH)] for _ in range(C)]
        for ph in range(PH):
            hstart = min(max(math.floor(T(ph) * bin_h) + start_h, 0), H)
            hend = min(max(math.ceil(T(ph + 1) * bin_h) + start_h, 0), H)
            for pw in range(PW):
                wstart = min(max(math.floor(T(pw) * bin_w) + start_w, 0), W)
                wend = min(max(math.ceil(T(pw + 1) * bin_w) + start_w, 0), W)
                for c in range(C):
                    best = None
                    where = None
                    for yy in range(hstart, hend):
                        for xx in range(wstart, wend):
                            v = vals[n][c][yy][xx]
                            if best is None or v > best or (last_tie and v == best):
                                best, where = v, (n, yy, xx)
                    out_k[c][ph][pw] = 0.0 if best is None else best
                    arg_k[c][ph][pw] = where
        out.append(out_k)
        arg.append(arg_k)
    result = torch.tensor(out, dtype=x.dtype).reshape(rois.shape[0], C, PH, PW)
    return result, arg


def ref_roi_pool_grad(x: Tensor, arg: list, grad_out: Tensor) -> Tensor:
    """Input gradient of RoIPool: every bin's output gradient goes to its arg-max cell."""
    grad = [
        [[[0.0] * x.shape[3] for _ in range(x.shape[2])] for _ in range(x.shape[1])]
        for _ in range(x.shape[0])
    ]
    g = grad_out.tolist()
    for k, arg_k in enumerate(arg):
        for c, arg_c in enumerate(arg_k):
            for ph, row in enumerate(arg_c):
                for pw, where in enumerate(row):
                    if where is not None:
                        n, yy, xx = where
                        grad[n][c][yy][xx] += g[k][c][ph][pw]
    return torch.tensor(grad, dtype=x.dtype)


def _bilinear_taps(y: Any, x: Any, H: int, W: int, T: Any) -> list[Tap]:
    """The 4 (cell, weight) taps of one bilinear sample; [] if it is off the map."""
    if y < -1.0 or y > H or x < -1.0 or x > W:
        return []
    y = max(y, T(0))
    x = max(x, T(0))
    y_low = int(y)
    x_low = int(x)
    if y_low >= H - 1:
        y_low = y_high = H - 1
        y = T(y_low)
    else:
        y_high = y_low + 1
    if x_low >= W - 1:
        x_low = x_high = W - 1
        x = T(x_low)
    else:
        x_high = x_low + 1
    ly = y - T(y_low)
    lx = x - T(x_low)
    hy = T(1) - ly
    hx = T(1) - lx
    return [
        (y_low, x_low, hy * hx),
        (y_low, x_high, hy * lx),
        (y_high, x_low, ly * hx),
        (y_high, x_high, ly * lx),
    ]


def _align_plan(
    rois: Tensor,
    H: int,
    W: int,
    out_hw: tuple[int, int],
    scale: float,
    sampling_ratio: int,
    aligned: bool,
    T: Any,
) -> list[tuple[int, int, list[list[list[list[Tap]]]]]]:
    """Per RoI: ``(batch index, count, samples[ph][pw] -> list of samples -> taps)``."""
    PH, PW = out_hw
    offset = T(0.5) if aligned else T(0.0)
    plan = []
    for b, x1, y1, x2, y2 in rois.tolist():
        start_w = T(x1) * T(scale) - offset
        start_h = T(y1) * T(scale) - offset
        end_w = T(x2) * T(scale) - offset
        end_h = T(y2) * T(scale) - offset
        roi_w = end_w - start_w
        roi_h = end_h - start_h
        if not aligned:
            roi_w = max(roi_w, T(1))
            roi_h = max(roi_h, T(1))
        bin_h = roi_h / T(PH)
        bin_w = roi_w / T(PW)
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(bin_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(bin_w)
        count = max(grid_h * grid_w, 1)
        bins = []
        for ph in range(PH):
            row = []
            for pw in range(PW):
                samples = []
                for iy in range(grid_h):
                    yy = start_h + T(ph) * bin_h + T(iy + 0.5) * bin_h / T(grid_h)
                    for ix in range(grid_w):
                        xx = start_w + T(pw) * bin_w + T(ix + 0.5) * bin_w / T(grid_w)
                        samples.append(_bilinear_taps(yy, xx, H, W, T))
                row.append(samples)
            bins.append(row)
        plan.append((int(b), count, bins))
    return plan


def ref_roi_align(
    x: Tensor, rois: Tensor, out_hw: tuple[int, int], scale: float, sampling_ratio: int, aligned: bool
) -> Tensor:
    """Naive RoIAlign: Tensor[K, C, PH, PW], accumulated in the input's precision."""
    T = _SCALAR[x.dtype]
    _, C, H, W = x.shape
    PH, PW = out_hw
    vals = x.tolist()
    out = []
    for n, count, bins in _align_plan(rois, H, W, out_hw, scale, sampling_ratio, aligned, T):
        out_k = [[[0.0] * PW for _ in range(PH)] for _ in range(C)]
        for c in range(C):
            fmap = vals[n][c]
            for ph in range(PH):
                for pw in range(PW):
                    acc = T(0)
                    for taps in bins[ph][pw]:
                        s = T(0)
                        for yy, xx, w in taps:
                            s = s + w * T(fmap[yy][xx])
                        acc = acc + s
                    out_k[c][ph][pw] = float(acc / T(count))
        out.append(out_k)
    return torch.tensor(out, dtype=x.dtype).reshape(rois.shape[0], C, PH, PW)


def ref_roi_align_grad(
    x: Tensor,
    rois: Tensor,
    out_hw: tuple[int, int],
    scale: float,
    sampling_ratio: int,
    aligned: bool,
    grad_out: Tensor,
) -> Tensor:
    """Input gradient of RoIAlign: each tap gets ``grad * weight / count`` (float64 math)."""
    N, C, H, W = x.shape
    grad = [[[[0.0] * W for _ in range(H)] for _ in range(C)] for _ in range(N)]
    g = grad_out.tolist()
    plan = _align_plan(rois, H, W, out_hw, scale, sampling_ratio, aligned, _SCALAR[x.dtype])
    for k, (n, count, bins) in enumerate(plan):
        for ph, row in enumerate(bins):
            for pw, samples in enumerate(row):
                for taps in samples:
                    for yy, xx, w in taps:
                        for c in range(C):
                            grad[n][c][yy][xx] += g[k][c][ph][pw] * float(w) / count
    return torch.tensor(grad, dtype=x.dtype)


# ----------------------------------------------------------------------------- test data


def by_image(rois: Tensor, N: int) -> tuple[list[Tensor], Tensor]:
    """Tensor[K, 5] -> (one Tensor[L, 4] per image, the RoI order that list gives)."""
    order = torch.sort(rois[:, 0], stable=True).indices
    boxes = [rois[rois[:, 0] == n, 1:] for n in range(N)]
    return boxes, order


def _close(got: Tensor, want: Tensor, dtype: torch.dtype) -> None:
    atol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(got, want, rtol=0, atol=atol)


SHAPE = (2, 3, 7, 9)  # N, C, H, W
SIZES_SCALES = [((3, 5), 0.5), ((2, 2), 1.0)]


# ----------------------------------------------------------------------------- roi_align


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize(("output_size", "scale"), SIZES_SCALES)
def test_roi_align_matches_reference(
    dtype: torch.dtype, sampling_ratio: int, aligned: bool, output_size: tuple[int, int], scale: float
) -> None:
    gen = _gen(10 + sampling_ratio)
    N, C, H, W = SHAPE
    x = torch.randn(SHAPE, generator=gen, dtype=torch.float64).to(dtype)
    rois = make_rois(gen, N, H, W, scale, 6, dtype)
    got = roi_align(x, rois, output_size, scale, sampling_ratio, aligned)
    assert got.shape == (rois.shape[0], C, *output_size)
    assert got.dtype == dtype
    _close(got, ref_roi_align(x, rois, output_size, scale, sampling_ratio, aligned), dtype)


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_split_into_many_calls_matches_reference(
    sampling_ratio: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny tap budget forces the chunked path (one embedding_bag call per few RoIs).
    # (the module, not the function that structpred.ops re-exports under the same name)
    monkeypatch.setattr(importlib.import_module("structpred.ops.roi_align"), "_MAX_TAPS", 100)
    gen = _gen(77)
    N, C, H, W = SHAPE
    x = torch.randn(SHAPE, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = make_rois(gen, N, H, W, 0.5, 6, torch.float64)
    got = roi_align(x, rois, (3, 5), 0.5, sampling_ratio, True)
    _close(got, ref_roi_align(x.detach(), rois, (3, 5), 0.5, sampling_ratio, True), torch.float64)
    # One channel: the calls are split by RoI, not by channel, and gradcheck runs the op twice per
    # input element (the forward above checks all C channels through the same split).
    one = x.detach()[:, :1].clone().requires_grad_()  # (N, 1, H, W)
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois[:4], 2, 0.5, sampling_ratio, True), (one,))


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_list_boxes_match_tensor_boxes(sampling_ratio: int, aligned: bool) -> None:
    gen = _gen(1)
    N, C, H, W = SHAPE
    x = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    rois = make_rois(gen, N, H, W, 0.5, 5, torch.float64)
    boxes, order = by_image(rois, N)
    got = roi_align(x, boxes, (3, 5), 0.5, sampling_ratio, aligned)
    want = ref_roi_align(x, rois[order], (3, 5), 0.5, sampling_ratio, aligned)
    _close(got, want, torch.float64)
    torch.testing.assert_close(got, roi_align(x, rois, (3, 5), 0.5, sampling_ratio, aligned)[order])


def test_roi_align_list_shorter_than_batch() -> None:
    """Fewer tensors than images is allowed: the last images have no RoIs."""
    gen = _gen(2)
    x = torch.randn(3, 2, 6, 6, generator=gen, dtype=torch.float64)
    boxes = [
        torch.tensor([[0.5, 1.0, 4.0, 5.0]], dtype=torch.float64),
        torch.tensor([[1.0, 0.0, 5.5, 3.0], [2.0, 2.0, 3.0, 3.0]], dtype=torch.float64),
    ]
    rois = torch.tensor(
        [[0, 0.5, 1.0, 4.0, 5.0], [1, 1.0, 0.0, 5.5, 3.0], [1, 2.0, 2.0, 3.0, 3.0]], dtype=torch.float64
    )
    _close(roi_align(x, boxes, 2, 1.0, 2), ref_roi_align(x, rois, (2, 2), 1.0, 2, False), torch.float64)


@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2])
@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_gradient_matches_reference(sampling_ratio: int, aligned: bool) -> None:
    gen = _gen(3)
    N, C, H, W = SHAPE
    x = torch.randn(SHAPE, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = make_rois(gen, N, H, W, 0.5, 5, torch.float64)
    out = roi_align(x, rois, (3, 5), 0.5, sampling_ratio, aligned)
    grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out, x, grad_out)
    want = ref_roi_align_grad(x.detach(), rois, (3, 5), 0.5, sampling_ratio, aligned, grad_out)
    _close(grad, want, torch.float64)


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_of_constant_map_inside(aligned: bool) -> None:
    """Independent of the reference: bilinear samples of a constant map inside it are the constant."""
    x = torch.full((1, 2, 6, 8), 3.25, dtype=torch.float64)
    rois = torch.tensor(
        [[0, 0.5, 0.5, 6.5, 4.5], [0, 1.0, 1.0, 2.0, 4.0], [0, 0.7, 0.6, 7.0, 5.0]], dtype=torch.float64
    )
    out = roi_align(x, rois, (3, 4), 1.0, -1, aligned)
    torch.testing.assert_close(out, torch.full_like(out, 3.25), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- roi_pool


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("output_size", "scale"), [*SIZES_SCALES, ((4, 3), 0.25)])
def test_roi_pool_matches_reference(dtype: torch.dtype, output_size: tuple[int, int], scale: float) -> None:
    gen = _gen(20)
    N, C, H, W = SHAPE
    x = torch.randn(SHAPE, generator=gen, dtype=torch.float64).to(dtype)
    rois = make_rois(gen, N, H, W, scale, 8, dtype)
    got = roi_pool(x, rois, output_size, scale)
    want, _ = ref_roi_pool(x, rois, output_size, scale)
    assert got.shape == (rois.shape[0], C, *output_size)
    assert got.dtype == dtype
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_roi_pool_rounds_halves_away_from_zero() -> None:
    """Independent of the reference: x1 = 2.5 starts at cell 3, x2 = -0.5 ends at -1 (not 2, 0)."""
    x = torch.arange(6, dtype=torch.float64).expand(1, 1, 1, 6).clone()  # value = column
    rois = torch.tensor([[0, 2.5, 0.0, 4.5, 0.0], [0, -3.5, 0.0, 0.5, 0.0]], dtype=torch.float64)
    out = roi_pool(x, rois, (1, 2), 1.0)
    # RoI 0 spans columns 3..5 (3 cells): bins [3, 5) and [4, 6) -> max 4, 5.
    # RoI 1 spans columns -4..1 (6 cells): bins [-4, -1) -> empty -> 0, [-1, 2) -> max 1.
    torch.testing.assert_close(out.flatten(1), torch.tensor([[4.0, 5.0], [0.0, 1.0]], dtype=torch.float64))


# (RoI length in cells, bins) where ceil(P * (L / P)) differs between float32 and float64.
PRECISION_EDGES = [(7, 13), (13, 11), (29, 7), (31, 7), (15, 11)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_roi_pool_bin_edges_use_input_precision(dtype: torch.dtype) -> None:
    """Bin limits are computed in the input's dtype, as torchvision does: for L = 7, P = 13 the
    float32 product 13 * (7 / 13) rounds up past 7, so the last bin takes one more column."""
    x = torch.arange(40, dtype=dtype).expand(1, 2, 5, 40).contiguous()  # value = column
    x[:, 1] = x[:, 1].flip(-1)
    for length, bins in PRECISION_EDGES:
        rois = torch.tensor([[0, 0.0, 0.0, length - 1.0, 4.0], [0, 3.0, 1.0, length + 2.0, 2.0]], dtype=dtype)
        got = roi_pool(x, rois, (2, bins), 1.0)
        torch.testing.assert_close(got, ref_roi_pool(x, rois, (2, bins), 1.0)[0], rtol=0, atol=0)
        # the same along y
        xt, rois_t = x.transpose(2, 3).contiguous(), rois[:, [0, 2, 1, 4, 3]]
        got_t = roi_pool(xt, rois_t, (bins, 2), 1.0)
        torch.testing.assert_close(got_t, ref_roi_pool(xt, rois_t, (bins, 2), 1.0)[0], rtol=0, atol=0)
    last = roi_pool(x, torch.tensor([[0, 0.0, 0.0, 6.0, 4.0]], dtype=dtype), (1, 13), 1.0)[0, 0, 0, -1]
    assert float(last) == (7.0 if dtype == torch.float32 else 6.0)


def test_roi_pool_list_boxes_match_tensor_boxes() -> None:
    gen = _gen(4)
    N, C, H, W = SHAPE
    x = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    rois = make_rois(gen, N, H, W, 0.5, 5, torch.float64)
    boxes, order = by_image(rois, N)
    got = roi_pool(x, boxes, (3, 5), 0.5)
    torch.testing.assert_close(got, ref_roi_pool(x, rois[order], (3, 5), 0.5)[0], rtol=0, atol=0)
    torch.testing.assert_close(got, roi_pool(x, rois, (3, 5), 0.5)[order], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("integer_valued", [False, True])
def test_roi_pool_gradient_goes_to_first_max(dtype: torch.dtype, integer_valued: bool) -> None:
    """On an integer-valued map (many ties) each bin's gradient goes to its first maximal cell."""
    gen = _gen(5)
    N, C, H, W = SHAPE
    if integer_valued:
        x = torch.randint(0, 3, SHAPE, generator=gen).to(dtype)
    else:
        x = torch.randn(SHAPE, generator=gen, dtype=torch.float64).to(dtype)
    rois = make_rois(gen, N, H, W, 0.5, 8, dtype)
    want_out, arg = ref_roi_pool(x, rois, (3, 5), 0.5)
    x.requires_grad_(True)
    out = roi_pool(x, rois, (3, 5), 0.5)
    torch.testing.assert_close(out.detach(), want_out, rtol=0, atol=0)
    # Integer output gradients: every sum is exact, so the comparison can be exact.
    grad_out = torch.randint(1, 5, out.shape, generator=gen).to(dtype)
    (grad,) = torch.autograd.grad(out, x, grad_out)
    want = ref_roi_pool_grad(x.detach(), arg, grad_out)
    torch.testing.assert_close(grad, want, rtol=0, atol=0)
    if integer_valued:  # meaningful only if "last maximal cell" would give another gradient
        _, arg_last = ref_roi_pool(x.detach(), rois, (3, 5), 0.5, last_tie=True)
        assert not torch.equal(want, ref_roi_pool_grad(x.detach(), arg_last, grad_out))


def test_roi_pool_tie_gradient_is_row_major_first() -> None:
    """Independent of the reference: a 2x2 bin of equal values sends its gradient to the top-left."""
    x = torch.ones(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.0, 2.0, 2.0]], dtype=torch.float64)
    roi_pool(x, rois, 1, 1.0).sum().backward()
    want = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    want[0, 0, 1, 1] = 1.0
    torch.testing.assert_close(x.grad, want, rtol=0, atol=0)


def test_rois_outside_the_map_give_zeros() -> None:
    gen = _gen(6)
    x = torch.randn(1, 2, 5, 6, generator=gen, dtype=torch.float64) + 10.0  # all positive
    rois = torch.tensor(
        [[0, 7.5, 0.0, 10.0, 4.0], [0, -8.0, -7.0, -2.5, -1.6], [0, 0.0, 6.2, 5.0, 9.0]], dtype=torch.float64
    )
    for out in (
        roi_align(x, rois, (2, 3), 1.0, 2),
        roi_align(x, rois, (2, 3), 1.0, -1, True),
        roi_pool(x, rois, (2, 3), 1.0),
    ):
        torch.testing.assert_close(out, torch.zeros_like(out), rtol=0, atol=0)


# ----------------------------------------------------------------------------- spp


@pytest.mark.parametrize("levels", [(1, 2, 4), (3, 1)])
def test_spp_is_concatenated_roi_pool(levels: tuple[int, ...]) -> None:
    gen = _gen(7)
    N, C, H, W = SHAPE
    x = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    rois = make_rois(gen, N, H, W, 0.5, 4, torch.float64)
    got = spp(x, rois, levels, 0.5)
    assert got.shape == (rois.shape[0], C * sum(n * n for n in levels))
    want = torch.cat([ref_roi_pool(x, rois, (n, n), 0.5)[0].flatten(1) for n in levels], dim=1)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    boxes, order = by_image(rois, N)
    torch.testing.assert_close(spp(x, boxes, levels, 0.5), want[order], rtol=0, atol=0)


def test_spp_default_levels() -> None:
    x = torch.randn(SHAPE, generator=_gen(8), dtype=torch.float64)
    rois = torch.tensor([[1, 0.0, 0.0, 6.0, 5.0]], dtype=torch.float64)
    assert spp(x, rois).shape == (1, SHAPE[1] * 21)


@pytest.mark.parametrize("levels", [[], [0], [2, -1]])
def test_spp_bad_levels(levels: list[int]) -> None:
    x = torch.randn(SHAPE, generator=_gen(9), dtype=torch.float64)
    rois = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="levels"):
        spp(x, rois, levels)


# ----------------------------------------------------------------------------- shared


POOLERS: dict[str, Callable[..., Tensor]] = {
    "roi_align": lambda x, b, size: roi_align(x, b, size, 0.5, 2),
    "roi_align_adaptive_aligned": lambda x, b, size: roi_align(x, b, size, 0.5, -1, True),
    "roi_pool": lambda x, b, size: roi_pool(x, b, size, 0.5),
}


@pytest.mark.parametrize("name", list(POOLERS))
@pytest.mark.parametrize(
    "boxes",
    [
        torch.zeros(0, 5, dtype=torch.float64),
        [],
        [torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, 4, dtype=torch.float64)],
    ],
    ids=["tensor", "empty_list", "list_of_empty"],
)
def test_zero_rois(name: str, boxes: Tensor | list[Tensor]) -> None:
    x = torch.randn(SHAPE, generator=_gen(11), dtype=torch.float64)
    out = POOLERS[name](x, boxes, (3, 5))
    assert out.shape == (0, SHAPE[1], 3, 5)
    assert out.dtype == torch.float64
    assert spp(x, boxes, (1, 2)).shape == (0, SHAPE[1] * 5)


@pytest.mark.parametrize("output_size", [7, (7,), (7, 7)])
def test_output_size_forms(output_size: int | tuple[int, ...]) -> None:
    x = torch.randn(1, 1, 8, 8, generator=_gen(12), dtype=torch.float64)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 7.0]], dtype=torch.float64)
    assert roi_align(x, rois, output_size).shape == (1, 1, 7, 7)
    assert roi_pool(x, rois, output_size).shape == (1, 1, 7, 7)


# ----------------------------------------------------------------------------- gradcheck


GRAD_ROIS = torch.tensor(
    [
        [0, 1.0, 2.0, 13.0, 11.0],
        [1, -3.0, -2.0, 6.0, 9.0],
        [1, 8.0, 3.0, 19.0, 16.0],
        [0, 5.5, 5.5, 5.5, 5.5],
        [1, 12.0, 10.0, 22.0, 20.0],
    ],
    dtype=torch.float64,
)  # image pixels; spatial_scale 0.5 on a GRAD_SHAPE map
GRAD_SHAPE = (2, 2, 7, 8)  # small: gradcheck runs the op twice per input element


@pytest.mark.parametrize(("sampling_ratio", "aligned"), [(-1, False), (0, True), (1, False), (2, True)])
def test_roi_align_gradcheck(sampling_ratio: int, aligned: bool) -> None:
    x = torch.randn(GRAD_SHAPE, generator=_gen(13), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: roi_align(t, GRAD_ROIS, (3, 2), 0.5, sampling_ratio, aligned), (x,)
    )


def test_roi_pool_gradcheck() -> None:
    x = torch.randn(GRAD_SHAPE, generator=_gen(14), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: roi_pool(t, GRAD_ROIS, (3, 2), 0.5), (x,))


def test_spp_gradcheck() -> None:
    # One channel: spp runs roi_pool three times per call, and gradcheck calls it per input element.
    x = torch.randn(2, 1, 6, 7, generator=_gen(15), dtype=torch.float64, requires_grad=True)
    boxes, _ = by_image(GRAD_ROIS, 2)
    assert torch.autograd.gradcheck(lambda t: spp(t, boxes, (1, 2, 4), 0.5), (x,))


# ----------------------------------------------------------------------------- bad input


def _x() -> Tensor:
    return torch.zeros(2, 3, 8, 9, dtype=torch.float64)


def _rois(*rows: list[float]) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64)


BAD_INPUTS = [
    pytest.param(
        torch.zeros(3, 8, 9, dtype=torch.float64), _rois([0, 1, 1, 4, 4]), 2, "input", id="input_3d"
    ),
    pytest.param(
        torch.zeros(2, 3, 8, 9, dtype=torch.int64), _rois([0, 1, 1, 4, 4]), 2, "input", id="input_int"
    ),
    pytest.param(_x(), torch.tensor([[0, 1, 1, 4, 4]]), 2, "boxes", id="boxes_int_tensor"),
    pytest.param(_x(), [torch.tensor([[1, 1, 4, 4]])], 2, r"boxes\[0\]", id="boxes_int_list"),
    pytest.param(
        _x(), torch.tensor([[1.0, 1, 4, 4]], dtype=torch.float64), 2, r"boxes.*\[K, 5\]", id="boxes_k4"
    ),
    pytest.param(_x(), torch.zeros(5, dtype=torch.float64), 2, "boxes", id="boxes_1d"),
    pytest.param(
        _x(),
        [torch.zeros(1, 4, dtype=torch.float64), _rois([0, 1, 1, 4, 4])],
        2,
        r"boxes\[1\]",
        id="list_element_l5",
    ),
    pytest.param(_x(), _rois([2, 1, 1, 4, 4]), 2, "boxes", id="batch_index_too_big"),
    pytest.param(_x(), _rois([0, 1, 1, 4, 4], [-1, 1, 1, 4, 4]), 2, "boxes", id="batch_index_negative"),
    pytest.param(_x(), _rois([0.5, 1, 1, 4, 4]), 2, "boxes", id="batch_index_fractional"),
    pytest.param(_x(), _rois([0, 4, 1, 3, 4]), 2, "boxes", id="x2_lt_x1"),
    pytest.param(_x(), _rois([1, 1, 4, 4, 3.5]), 2, "boxes", id="y2_lt_y1"),
    pytest.param(_x(), [torch.tensor([[4.0, 1, 3, 4]], dtype=torch.float64)], 2, "boxes", id="list_x2_lt_x1"),
    pytest.param(_x(), [torch.zeros(1, 4, dtype=torch.float64)] * 3, 2, "boxes", id="list_longer_than_batch"),
    pytest.param(_x(), (1.0, 2.0), 2, "boxes", id="boxes_tuple_of_floats"),
    pytest.param(_x(), _rois([0, 1, 1, math.nan, 4]), 2, "boxes must be finite", id="nan_corner"),
    pytest.param(_x(), _rois([0, 1, 1, 4, math.inf]), 2, "boxes must be finite", id="inf_corner"),
    pytest.param(_x(), _rois([0, -math.inf, 1, 4, 4]), 2, "boxes must be finite", id="minus_inf_corner"),
    pytest.param(
        _x(), [torch.tensor([[math.nan] * 4], dtype=torch.float64)], 2, "boxes must be finite", id="list_nan"
    ),
    pytest.param(_x(), _rois([0, 1, 1, 4, 4]), 0, "output_size", id="output_size_0"),
    pytest.param(_x(), _rois([0, 1, 1, 4, 4]), -3, "output_size", id="output_size_negative"),
    pytest.param(_x(), _rois([0, 1, 1, 4, 4]), (3, 0), "output_size", id="output_size_pair_0"),
    pytest.param(_x(), _rois([0, 1, 1, 4, 4]), (2, 2, 2), "output_size", id="output_size_triple"),
]


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
@pytest.mark.parametrize(("x", "boxes", "output_size", "match"), BAD_INPUTS)
def test_bad_input_raises(op: str, x: Tensor, boxes: Any, output_size: Any, match: str) -> None:
    fn = roi_align if op == "roi_align" else roi_pool
    with pytest.raises(ValueError, match=match):
        fn(x, boxes, output_size)


# spp has pyramid levels instead of an output size: the same bad inputs but those.
@pytest.mark.parametrize(
    ("x", "boxes", "output_size", "match"), [p for p in BAD_INPUTS if p.values[3] != "output_size"]
)
def test_spp_bad_input_raises(x: Tensor, boxes: Any, output_size: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        spp(x, boxes, (1, 2))


def test_per_channel_quantized_input_raises() -> None:
    scales, zero_points = torch.tensor([0.1, 0.2]), torch.tensor([0, 0])
    x = torch.quantize_per_channel(torch.rand(1, 2, 4, 4), scales, zero_points, 1, torch.quint8)
    with pytest.raises(ValueError, match="input: only per-tensor quantization"):
        roi_align(x, _rois([0, 0, 0, 3, 3]).float(), 2)


# ------------------------------------------------------ low precision, quantized maps, torch.fx


@pytest.mark.parametrize(
    ("dtype", "rtol", "sampling_ratio", "aligned"),
    [(torch.bfloat16, 2**-8, -1, False), (torch.float16, 2**-11, 2, True)],
)
def test_roi_align_low_precision_is_pooled_in_float32(
    dtype: torch.dtype, rtol: float, sampling_ratio: int, aligned: bool
) -> None:
    """bf16/fp16 maps: the float64 result rounded once (sample coordinates and weights in bf16
    were off by 0.035-0.059 on a fifth of the bins: torchvision's test_autocast_cpu)."""
    gen = _gen(21)
    N, H, W = 2, 7, 9
    x = torch.rand(N, 1, W, H, generator=gen).transpose(2, 3).to(dtype)  # non-contiguous, as the peer's
    rois = make_rois(gen, N, H, W, 0.5, 2, torch.float64).to(dtype)
    got = roi_align(x, rois, (3, 5), 0.5, sampling_ratio, aligned)
    want = ref_roi_align(x.double(), rois.double(), (3, 5), 0.5, sampling_ratio, aligned)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=1e-6)
    xg = x.detach().requires_grad_(True)
    roi_align(xg, rois, 3, 0.5).sum().backward()
    assert xg.grad is not None and xg.grad.dtype == dtype and bool(xg.grad.abs().sum() > 0)
    # Under CPU autocast a float32 map stays float32, numbers and dtype.
    x32, rois32 = x.float(), rois.float()
    plain = roi_align(x32, rois32, 3, 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = roi_align(x32, rois32, 3, 0.5)
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, plain, rtol=0, atol=0)


@pytest.mark.parametrize("qdtype", [torch.quint8, torch.qint8, torch.qint32])
def test_roi_align_quantized_map(qdtype: torch.dtype) -> None:
    """A quantized map gives a map quantized like it: the float result of the dequantized map,
    requantized; several images are fine (torchvision's quantized kernel takes one)."""
    gen = _gen(22)
    x = torch.randint(50, 100, (2, 2, 10, 10), generator=gen).float()
    qx = torch.quantize_per_tensor(x, 2.0, 10, qdtype)
    rois = _rois([0, 1, 1, 6, 7], [1, 0, 2, 9, 9], [1, 3.5, 3.5, 4.5, 8]).float()
    got = roi_align(qx, torch.quantize_per_tensor(rois, 0.5, 0, qdtype), 5, 1.0, -1, True)
    assert got.is_quantized and got.dtype == qdtype and got.q_scale() == 2.0 and got.q_zero_point() == 10
    want = torch.quantize_per_tensor(roi_align(qx.dequantize(), rois, 5, 1.0, -1, True), 2.0, 10, qdtype)
    assert torch.equal(got.int_repr(), want.int_repr())


def test_ops_trace_with_torch_fx() -> None:
    """torch.fx.symbolic_trace records each op as one node (the ops branch on values inside)."""
    import torch.fx

    from structpred.layers import MultiScaleRoIAlign
    from structpred.layers.poolers import RoIPooler

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fpn = MultiScaleRoIAlign(["p2", "p3"], 2, 2)
            self.pooler = RoIPooler("p2", 4, "spp", spp_levels=(1, 2))

        def forward(self, x: Tensor, rois: Tensor, feats: dict[str, Tensor], boxes: list[Tensor]) -> Tensor:
            a = roi_align(x, rois, (3, 5), 0.5, -1, True)  # (K, C, 3, 5)
            p = roi_pool(x, [rois[:4, 1:]], (3, 5), 0.5)  # (4, C, 3, 5)
            s = spp(x, rois, (1, 2), 0.5)  # (K, C * 5)
            f = self.fpn(feats, boxes, [(32, 32)]).flatten(1)  # (L, C * 4)
            q = self.pooler(feats, boxes, [(32, 32)])  # (L, C * 5)
            return torch.cat([a.flatten(1).sum(1), p.flatten(1).sum(1), s.sum(1), f.sum(1), q.sum(1)])

    traced = torch.fx.symbolic_trace(Net())
    targets = [n.target for n in traced.graph.nodes if n.op == "call_function"]
    for fn in (roi_align, roi_pool, spp):
        assert targets.count(fn) == 1
    assert sum(getattr(t, "__name__", "") in ("_align_levels", "_pool_one") for t in targets) == 2
    gen = _gen(23)
    N, C, H, W = SHAPE
    x = torch.randn(SHAPE, generator=gen)
    rois = make_rois(gen, N, H, W, 0.5, 4, torch.float32)
    feats = {"p2": torch.randn(1, C, 8, 8, generator=gen), "p3": torch.randn(1, C, 4, 4, generator=gen)}
    boxes = [torch.tensor([[1.0, 2.0, 20.0, 30.0], [0.0, 0.0, 31.0, 31.0]])]
    torch.testing.assert_close(traced(x, rois, feats, boxes), Net()(x, rois, feats, boxes), rtol=0, atol=0)


# ----------------------------------------------------------------------------- devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    gen = _gen(16)
    N, C, H, W = SHAPE
    x = torch.randn(SHAPE, generator=gen)
    rois = make_rois(gen, N, H, W, 0.5, 6, torch.float32)
    xc, rc = x.cuda().requires_grad_(True), rois.cuda()
    for fn in (
        lambda t, b: roi_align(t, b, (3, 5), 0.5, -1, True),
        lambda t, b: roi_pool(t, b, (3, 5), 0.5),
        lambda t, b: spp(t, b, (1, 2), 0.5),
    ):
        out = fn(xc, rc)
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), fn(x, rois), rtol=0, atol=1e-5)
        out.sum().backward()
        assert xc.grad is not None and torch.isfinite(xc.grad).all()
        xc.grad = None

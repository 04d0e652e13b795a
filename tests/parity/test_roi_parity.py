"""RoI pooling parity with torchvision: ``roi_align``, ``roi_pool``, ``spp``, the FPN pooler.

structpred computes these with its own PyTorch code; torchvision's C++ CPU kernels are the
peer. Outputs and input gradients must agree: exactly for ``roi_pool`` (a max picks an input
value, and its gradient goes to the same cell), to rounding for ``roi_align``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision.ops as tv_ops  # torchvision: a dependency
import torchvision.ops.poolers as tv_poolers
from torch import Tensor

from structpred.layers import MultiScaleRoIAlign
from structpred.ops import assign_fpn_levels, roi_align, roi_pool, spp
from tests.roi_cases import gen as _gen
from tests.roi_cases import make_rois

SHAPE = (2, 3, 7, 9)  # N, C, H, W
ATOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def by_image(rois: Tensor, N: int) -> list[Tensor]:
    """Tensor[K, 5] -> one Tensor[L, 4] per image."""
    return [rois[rois[:, 0] == n, 1:] for n in range(N)]


def _input(gen: torch.Generator, dtype: torch.dtype, integer_valued: bool = False) -> Tensor:
    if integer_valued:  # many ties inside a bin
        return torch.randint(0, 3, SHAPE, generator=gen).to(dtype)
    return torch.randn(SHAPE, generator=gen, dtype=torch.float64).to(dtype)


def _output_and_grad(fn: Callable[[Tensor], Tensor], x: Tensor, grad_out: Tensor) -> tuple[Tensor, Tensor]:
    """``fn(x)`` and the gradient of ``<fn(x), grad_out>`` with respect to ``x``."""
    xg = x.detach().clone().requires_grad_(True)
    out = fn(xg)
    (grad,) = torch.autograd.grad(out, xg, grad_out)
    return out.detach(), grad


# ----------------------------------------------------------------------------- roi_align


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize(("output_size", "scale"), [((3, 5), 0.5), ((2, 2), 1.0), ((4, 3), 0.25)])
@pytest.mark.parametrize("form", ["tensor", "list"])
def test_roi_align_matches_torchvision(
    dtype: torch.dtype,
    sampling_ratio: int,
    aligned: bool,
    output_size: tuple[int, int],
    scale: float,
    form: str,
) -> None:
    gen = _gen(30 + sampling_ratio)
    N, _, H, W = SHAPE
    x = _input(gen, dtype)
    rois = make_rois(gen, N, H, W, scale, 6, dtype)
    boxes: Tensor | list[Tensor] = rois if form == "tensor" else by_image(rois, N)
    ours = lambda t: roi_align(t, boxes, output_size, scale, sampling_ratio, aligned)  # noqa: E731
    peer = lambda t: tv_ops.roi_align(t, boxes, output_size, scale, sampling_ratio, aligned)  # noqa: E731
    grad_out = torch.randn(rois.shape[0], SHAPE[1], *output_size, generator=gen, dtype=torch.float64)
    want, want_grad = _output_and_grad(peer, x, grad_out.to(dtype))
    got, got_grad = _output_and_grad(ours, x, grad_out.to(dtype))
    assert got.dtype == dtype
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL[dtype])
    torch.testing.assert_close(got_grad, want_grad, rtol=0, atol=ATOL[dtype])


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_zero_rois_matches_torchvision(sampling_ratio: int) -> None:
    x = _input(_gen(31), torch.float32)
    for boxes in (torch.zeros(0, 5), [torch.zeros(0, 4), torch.zeros(0, 4)]):
        got = roi_align(x, boxes, (3, 5), 0.5, sampling_ratio)
        want = tv_ops.roi_align(x, boxes, (3, 5), 0.5, sampling_ratio)
        assert got.shape == want.shape == (0, SHAPE[1], 3, 5)


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rois_dtype", [torch.float32, torch.bfloat16])
def test_roi_align_under_cpu_autocast_matches_torchvision(
    x_dtype: torch.dtype, rois_dtype: torch.dtype
) -> None:
    """torchvision's test_autocast_cpu case: its autocast kernel pools in float32 and casts back;
    ours pooled bf16 maps in bf16 (off by 0.035-0.059 on 22% of the bins) before the fix."""
    gen = _gen(32)
    x = torch.rand(2, 6, 10, 10, generator=gen).transpose(2, 3).to(x_dtype)
    rois = torch.tensor(
        [[0, 0, 0, 9, 9], [0, 0, 5, 4, 9], [0, 5, 5, 9, 9], [1, 0, 0, 9, 9], [1, 0.3, 1.7, 6.2, 8.9]]
    ).to(rois_dtype)
    for aligned in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = roi_align(x, rois, 5, 1.0, -1, aligned)
            want = tv_ops.roi_align(x, rois, 5, 1.0, -1, aligned)
        assert got.dtype == want.dtype == x_dtype
        # float32 arithmetic in both; rounding to bf16 may differ by one unit (2^-8 below 1)
        atol = 2**-8 if x_dtype == torch.bfloat16 else 1e-6
        torch.testing.assert_close(got, want, rtol=0, atol=atol)


@pytest.mark.parametrize("qdtype", [torch.quint8, torch.qint8, torch.qint32])
@pytest.mark.parametrize("aligned", [False, True])
def test_quantized_roi_align_matches_torchvision(qdtype: torch.dtype, aligned: bool) -> None:
    """torchvision's test_qroialign inputs (one image: its quantized kernel's limit)."""
    gen = _gen(33)
    x = torch.randint(50, 100, (1, 2, 10, 10), generator=gen).float()
    rois = torch.randint(0, 5, (40, 5), generator=gen).float()
    rois[:, 0] = 0
    rois[:, 3:] += rois[:, 1:3]
    for scale, zero_point in ((1.0, 0), (2.0, 10), (0.1, 50)):
        qx = torch.quantize_per_tensor(x, scale, zero_point, qdtype)
        qrois = torch.quantize_per_tensor(rois, scale, zero_point, qdtype)
        got = roi_align(qx, qrois, 5, 1.0, -1, aligned)
        want = tv_ops.roi_align(qx, qrois, 5, 1.0, -1, aligned)
        assert got.dtype == want.dtype == qdtype and got.q_scale() == want.q_scale()
        # The same float result requantized; rounding a .5 may differ: one step, rarely.
        diff = (got.int_repr().long() - want.int_repr().long()).abs()
        assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.05


def test_traced_ops_match_torchvision() -> None:
    """torch.fx.symbolic_trace of a module calling our ops (torchvision's test_torch_fx_trace)."""
    import torch.fx

    class Net(torch.nn.Module):
        def forward(self, x: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
            return roi_align(x, rois, 5, 1.0, -1), roi_pool(x, rois, 5, 1.0)

    traced = torch.fx.symbolic_trace(Net())
    x = torch.rand(2, 50, 5, 5, generator=_gen(34))
    rois = torch.tensor([[0, 0, 0, 9, 9], [0, 0, 5, 4, 9], [0, 5, 5, 9, 9], [1, 0, 0, 9, 9]]).float()
    align, pool = traced(x, rois)
    torch.testing.assert_close(align, tv_ops.roi_align(x, rois, 5, 1.0, -1), rtol=0, atol=1e-5)
    torch.testing.assert_close(pool, tv_ops.roi_pool(x, rois, 5, 1.0), rtol=0, atol=0)


# ----------------------------------------------------------------------------- roi_pool


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("output_size", "scale"), [((3, 5), 0.5), ((2, 2), 1.0), ((4, 3), 0.25)])
@pytest.mark.parametrize("integer_valued", [False, True])
@pytest.mark.parametrize("form", ["tensor", "list"])
def test_roi_pool_matches_torchvision_exactly(
    dtype: torch.dtype, output_size: tuple[int, int], scale: float, integer_valued: bool, form: str
) -> None:
    gen = _gen(40)
    N, _, H, W = SHAPE
    x = _input(gen, dtype, integer_valued)
    rois = make_rois(gen, N, H, W, scale, 8, dtype)
    boxes: Tensor | list[Tensor] = rois if form == "tensor" else by_image(rois, N)
    peer = lambda t: tv_ops.roi_pool(t, boxes, output_size, scale)  # noqa: E731
    ours = lambda t: roi_pool(t, boxes, output_size, scale)  # noqa: E731
    # Integer output gradients: sums are exact whatever the order, so grads compare exactly.
    grad_out = torch.randint(1, 5, (rois.shape[0], SHAPE[1], *output_size), generator=gen).to(dtype)
    want, want_grad = _output_and_grad(peer, x, grad_out)
    got, got_grad = _output_and_grad(ours, x, grad_out)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(got_grad, want_grad, rtol=0, atol=0)
    with torch.no_grad():  # the value-only path (no arg-max bookkeeping) too
        torch.testing.assert_close(roi_pool(x, boxes, output_size, scale), want, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("length", "bins"), [(7, 13), (13, 11), (29, 7), (31, 7), (15, 11)])
def test_roi_pool_bin_edges_match_torchvision(dtype: torch.dtype, length: int, bins: int) -> None:
    """RoI lengths where ``ceil(P * (L / P))`` differs between float32 and float64."""
    x = torch.randn(1, 2, 40, 40, generator=_gen(43), dtype=torch.float64).to(dtype)
    x[0, 0] += torch.arange(40, dtype=dtype)  # increasing along x: the last bin's extent shows
    x[0, 1] += torch.arange(40, dtype=dtype)[:, None]  # and along y
    rois = torch.tensor(
        [[0, 0.0, 0.0, length - 1.0, length - 1.0], [0, 3.0, 2.0, length + 2.0, length + 1.0]], dtype=dtype
    )
    for size in ((bins, bins), (2, bins), (bins, 3)):
        torch.testing.assert_close(
            roi_pool(x, rois, size, 1.0), tv_ops.roi_pool(x, rois, size, 1.0), rtol=0, atol=0
        )


def test_roi_pool_zero_rois_matches_torchvision() -> None:
    x = _input(_gen(41), torch.float32)
    for boxes in (torch.zeros(0, 5), [torch.zeros(0, 4), torch.zeros(0, 4)]):
        assert roi_pool(x, boxes, (3, 5), 0.5).shape == tv_ops.roi_pool(x, boxes, (3, 5), 0.5).shape


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_spp_matches_torchvision_roi_pool(dtype: torch.dtype) -> None:
    gen = _gen(42)
    N, _, H, W = SHAPE
    x = _input(gen, dtype)
    rois = make_rois(gen, N, H, W, 0.5, 4, dtype)
    want = torch.cat([tv_ops.roi_pool(x, rois, n, 0.5).flatten(1) for n in (1, 2, 4)], dim=1)
    torch.testing.assert_close(spp(x, rois, (1, 2, 4), 0.5), want, rtol=0, atol=0)


# ----------------------------------------------------------------------------- FPN pooler


# (H, W) before padding; the batch is padded to 510 x 514 and every map is floor(size / stride),
# so feature / image is a little under 1/stride and the scales must be rounded, not floored.
IMAGE_SIZES = [(510, 460), (380, 514)]


def _fpn_features(gen: torch.Generator, dtype: torch.dtype) -> dict[str, Tensor]:
    """FPN-like maps: '0'..'3' at strides 4..32 and a 'pool' map (stride 64) not to be pooled."""
    feats = {}
    for name, stride in (("0", 4), ("1", 8), ("2", 16), ("3", 32), ("pool", 64)):
        feats[name] = torch.randn(2, 2, 510 // stride, 514 // stride, generator=gen, dtype=torch.float64)
        feats[name] = feats[name].to(dtype)
    return feats


def _fpn_boxes(gen: torch.Generator, dtype: torch.dtype) -> list[Tensor]:
    """Per image: tiny to whole-image boxes, FPN level boundaries, boxes over the border."""
    out = []
    for h, w in IMAGE_SIZES:
        fixed = torch.tensor(
            [
                [0.0, 0.0, w, h],  # whole image -> the coarsest level
                [10.0, 20.0, 12.0, 23.0],  # tiny -> the finest level
                [5.0, 5.0, 5.0, 5.0],  # zero area
                [100.0, 50.0, 212.0, 162.0],  # sqrt(area) = 112: level 3 exactly
                [30.0, 40.0, 254.0, 264.0],  # sqrt(area) = 224: level 4 exactly
                [0.0, 0.0, 56.0, 56.0],  # 56: level 2 exactly
                [w - 70.0, h - 90.0, w + 30.0, h + 20.0],  # over the border
                [w - 1.5, h - 2.5, w - 0.5, h - 0.25],  # in the last cells
            ],
            dtype=torch.float64,
        )
        k = 10
        side = torch.exp(torch.empty(k, 2, dtype=torch.float64).uniform_(0.0, 6.2, generator=gen))
        x1 = torch.rand(k, generator=gen, dtype=torch.float64) * w
        y1 = torch.rand(k, generator=gen, dtype=torch.float64) * h
        rand = torch.stack([x1, y1, (x1 + side[:, 0]).clamp(max=w), (y1 + side[:, 1]).clamp(max=h)], 1)
        out.append(torch.cat([fixed, rand]).to(dtype))
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("output_size", "sampling_ratio"), [((7, 7), 2), ((3, 5), -1), (4, 0)])
@pytest.mark.parametrize("names", [["0", "1", "2", "3"], ["2"]], ids=["fpn", "single_level"])
def test_multiscale_roi_align_matches_torchvision(
    dtype: torch.dtype, output_size: int | tuple[int, int], sampling_ratio: int, names: list[str]
) -> None:
    gen = _gen(50)
    feats = _fpn_features(gen, dtype)
    boxes = _fpn_boxes(gen, dtype)
    ours = MultiScaleRoIAlign(names, output_size, sampling_ratio)
    peer = tv_ops.MultiScaleRoIAlign(names, output_size, sampling_ratio)
    leaves = {k: v.clone().requires_grad_(True) for k, v in feats.items()}
    peer_leaves = {k: v.clone().requires_grad_(True) for k, v in feats.items()}
    got = ours(leaves, boxes, IMAGE_SIZES)
    want = peer(peer_leaves, boxes, IMAGE_SIZES)
    assert got.shape == want.shape == (sum(b.shape[0] for b in boxes), 2, *ours.output_size)
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL[dtype])
    grad_out = torch.randn(want.shape, generator=gen, dtype=torch.float64).to(dtype)
    got.backward(grad_out)
    want.backward(grad_out)
    for name in names:
        torch.testing.assert_close(leaves[name].grad, peer_leaves[name].grad, rtol=0, atol=ATOL[dtype])
    assert leaves["pool"].grad is None  # not in featmap_names: never read


def test_multiscale_roi_align_uses_every_level() -> None:
    """The FPN case above is only a real test if its boxes reach all four levels."""
    gen = _gen(50)
    _fpn_features(gen, torch.float64)  # same generator state as in the test above
    boxes = _fpn_boxes(gen, torch.float64)
    levels = tv_poolers.LevelMapper(2, 5)(boxes)
    assert set(levels.tolist()) == {0, 1, 2, 3}


def test_multiscale_roi_align_missing_map() -> None:
    feats = _fpn_features(_gen(51), torch.float32)
    del feats["2"]
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    with pytest.raises(ValueError, match="'2'"):
        pooler(feats, _fpn_boxes(_gen(52), torch.float32), IMAGE_SIZES)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("k_min", "k_max"), [(2, 5), (3, 4), (2, 2), (3, 6)])
def test_assign_fpn_levels_matches_level_mapper(dtype: torch.dtype, k_min: int, k_max: int) -> None:
    gen = _gen(60)
    side = torch.exp(torch.empty(200, 2, dtype=torch.float64).uniform_(-1.0, 7.5, generator=gen))
    x1y1 = torch.rand(200, 2, generator=gen, dtype=torch.float64) * 300
    boxes = torch.cat([x1y1, x1y1 + side], 1)
    exact = torch.tensor(
        [
            [0, 0, 0, 0],
            [0, 0, 56, 56],
            [0, 0, 112, 112],
            [0, 0, 224, 224],
            [0, 0, 448, 448],
            [0, 0, 896, 896],
            [3, 4, 3 + 111.9, 4 + 112],
            [0, 0, 28, 112],
            [0, 0, 1, 1],
            # just under a level boundary: only FPN's eps puts these on the upper level
            [0, 0, 112, 112 - 1e-5],
            [0, 0, 224 - 1e-4, 224],
            [0, 0, 56, 56 - 1e-6],
        ],
        dtype=torch.float64,
    )
    boxes = torch.cat([exact, boxes]).to(dtype)
    got = assign_fpn_levels(boxes, k_min, k_max)
    want = tv_poolers.LevelMapper(k_min, k_max)([boxes])
    assert got.dtype == torch.int64
    torch.testing.assert_close(got, want, rtol=0, atol=0)

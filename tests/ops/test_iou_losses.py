"""IoU-family losses (GIoU, DIoU, CIoU) and the pairwise DIoU / CIoU: naive per-pair references,
torchvision parity on edge cases, every reduction, dtypes, float64 gradcheck, properties, bad input.

The reference is a plain Python loop in float64 written from the papers' definitions
(Rezatofighi et al. 2019; Zheng et al. 2020), with torchvision's placement of ``eps``: the
losses divide by ``union + eps``, ``|C| + eps`` and ``c^2 + eps``; the pairwise DIoU / CIoU use
a plain IoU and ``c^2 + eps``; CIoU's ``alpha = v / (1 - IoU + v + eps)``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tv
from hypothesis import given, settings
from hypothesis import strategies as st

from structpred.ops import (
    complete_box_iou,
    complete_box_iou_loss,
    distance_box_iou,
    distance_box_iou_loss,
    generalized_box_iou,
    generalized_box_iou_loss,
)

LOSSES = {
    "giou": generalized_box_iou_loss,
    "diou": distance_box_iou_loss,
    "ciou": complete_box_iou_loss,
}
PAIRWISE = {"giou": generalized_box_iou, "diou": distance_box_iou, "ciou": complete_box_iou}
REDUCTIONS = ("none", "mean", "sum")


# ---------------------------------------------------------------------------- reference


def naive_metric(a, b, kind, iou_eps, eps):
    """GIoU / DIoU / CIoU of two xyxy boxes (Python floats), torchvision's eps placement."""
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    iw, ih = min(ax2, bx2) - max(ax1, bx1), min(ay2, by2) - max(ay1, by1)
    inter = iw * ih if iw > 0 and ih > 0 else 0.0
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    iou = inter / (union + iou_eps) if union + iou_eps != 0 else math.nan
    cw, ch = max(ax2, bx2) - min(ax1, bx1), max(ay2, by2) - min(ay1, by1)
    if kind == "giou":
        c = cw * ch + eps
        return iou - (cw * ch - union) / c if c != 0 else math.nan
    rho2 = ((ax1 + ax2) / 2 - (bx1 + bx2) / 2) ** 2 + ((ay1 + ay2) / 2 - (by1 + by2) / 2) ** 2
    diou = iou - rho2 / (cw**2 + ch**2 + eps)
    if kind == "diou":
        return diou

    def angle(w, h):
        return math.atan(w / h) if h != 0 else (math.nan if w == 0 else math.copysign(math.pi / 2, w))

    v = 4 / math.pi**2 * (angle(bx2 - bx1, by2 - by1) - angle(ax2 - ax1, ay2 - ay1)) ** 2
    alpha = v / (1 - iou + v + eps)
    return diou - alpha * v


def naive_loss(b1, b2, kind, eps=1e-7):
    return torch.tensor(
        [1 - naive_metric(a, b, kind, eps, eps) for a, b in zip(b1.tolist(), b2.tolist(), strict=True)],
        dtype=torch.float64,
    )


def naive_pairwise(b1, b2, kind, eps=1e-7):
    e = 0.0 if kind == "giou" else eps
    return torch.tensor(
        [[naive_metric(a, b, kind, 0.0, e) for b in b2.tolist()] for a in b1.tolist()], dtype=torch.float64
    ).reshape(len(b1), len(b2))


def random_boxes(n, generator, scale=100.0, dtype=torch.float32):
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * scale
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * scale / 2
    return torch.cat([xy, xy + wh], 1).to(dtype)


def edge_cases():
    """(name, boxes1, boxes2) with matching rows: the inputs every function is checked on."""
    g = torch.Generator().manual_seed(0)
    a, b = random_boxes(64, g), random_boxes(64, g)
    b[:8] = a[:8]  # some identical pairs among random ones
    square = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    return [
        ("random", a, b),
        ("empty", torch.zeros(0, 4), torch.zeros(0, 4)),
        ("one", a[:1], b[:1]),
        ("identical", a, a.clone()),
        (
            "disjoint",
            square.repeat(3, 1),
            torch.tensor([[20.0, 0, 30, 10], [0, 20, 10, 30], [50, 50, 51, 90]]),
        ),
        ("touching", square.repeat(2, 1), torch.tensor([[10.0, 0, 20, 10], [10.0, 10, 20, 20]])),
        (
            "zero-area",
            torch.tensor([[5.0, 5, 5, 5], [5.0, 5, 5, 5], [0, 0, 10, 0], [3, 3, 3, 3]]),
            torch.tensor([[5.0, 5, 5, 5], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]),
        ),
        ("huge", a * 1e12, b * 1e12),  # areas ~1e27: finite in float32
        ("overflow", a * 1e20, b * 1e20),  # areas overflow to inf: NaN on both sides
    ]


CASES = {name: (b1, b2) for name, b1, b2 in edge_cases()}


# ---------------------------------------------------------------------------- naive reference


@pytest.mark.parametrize("kind", list(LOSSES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_losses_match_naive(kind, dtype):
    g = torch.Generator().manual_seed(1)
    b1, b2 = random_boxes(40, g, dtype=dtype), random_boxes(40, g, dtype=dtype)
    b2[:5] = b1[:5]
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    out = LOSSES[kind](b1, b2)
    assert out.shape == (40,) and out.dtype == dtype
    torch.testing.assert_close(out.double(), naive_loss(b1.double(), b2.double(), kind), rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", ["diou", "ciou"])
def test_pairwise_match_naive(kind):
    g = torch.Generator().manual_seed(2)
    b1, b2 = random_boxes(9, g, dtype=torch.float64), random_boxes(7, g, dtype=torch.float64)
    b2[0] = b1[0]
    out = PAIRWISE[kind](b1, b2)
    torch.testing.assert_close(out, naive_pairwise(b1, b2, kind), rtol=1e-12, atol=1e-12)


def test_known_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0]])  # IoU 2/6, C = 3 x 2, rho^2 = 1, c^2 = 13
    torch.testing.assert_close(generalized_box_iou_loss(a, b, eps=0), torch.tensor([1 - 1 / 3]))
    torch.testing.assert_close(distance_box_iou_loss(a, b, eps=0), torch.tensor([1 - 1 / 3 + 1 / 13]))
    torch.testing.assert_close(
        complete_box_iou_loss(a, b, eps=0), torch.tensor([1 - 1 / 3 + 1 / 13])
    )  # v = 0
    tall = torch.tensor([[0.0, 0.0, 1.0, 2.0]])  # IoU 2/4, centres (1, 1) and (0.5, 1), C = 2 x 2
    v = 4 / math.pi**2 * (math.atan(0.5) - math.atan(1.0)) ** 2
    iou = 2 / 4
    alpha = v / (1 - iou + v)
    rho2, c2 = 0.5**2, 2**2 + 2**2
    torch.testing.assert_close(
        complete_box_iou(a, tall, eps=0), torch.tensor([[iou - rho2 / c2 - alpha * v]]), rtol=1e-6, atol=1e-7
    )


# ---------------------------------------------------------------------------- torchvision parity


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", list(LOSSES))
def test_losses_match_torchvision(case, kind):
    b1, b2 = CASES[case]
    for reduction in REDUCTIONS:
        ours = LOSSES[kind](b1, b2, reduction)
        peer = getattr(tv, LOSSES[kind].__name__)(b1, b2, reduction)
        assert ours.shape == peer.shape and ours.dtype == peer.dtype, (reduction, ours, peer)
        torch.testing.assert_close(ours, peer, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", list(PAIRWISE))
def test_pairwise_match_torchvision(case, kind):
    b1, b2 = CASES[case]
    b2 = b2[: max(len(b2) - 3, 0)]  # N != M
    ours = PAIRWISE[kind](b1, b2)
    peer = getattr(tv, PAIRWISE[kind].__name__)(b1, b2)
    assert ours.shape == peer.shape == (len(b1), len(b2)) and ours.dtype == peer.dtype
    torch.testing.assert_close(ours, peer, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("kind", list(PAIRWISE))
def test_pairwise_leading_dims_match_torchvision(kind):
    g = torch.Generator().manual_seed(3)
    b1, b2 = random_boxes(10, g).view(2, 5, 4), random_boxes(6, g).view(2, 3, 4)
    ours = PAIRWISE[kind](b1, b2)
    assert ours.shape == (2, 5, 3)
    torch.testing.assert_close(ours, getattr(tv, PAIRWISE[kind].__name__)(b1, b2))


@pytest.mark.parametrize("kind", list(LOSSES))
def test_losses_broadcast_and_single_box_like_torchvision(kind):
    g = torch.Generator().manual_seed(4)
    b1, b2 = random_boxes(6, g), random_boxes(1, g)
    fn, peer = LOSSES[kind], getattr(tv, LOSSES[kind].__name__)
    torch.testing.assert_close(fn(b1, b2), peer(b1, b2))  # [6, 4] against [1, 4]
    torch.testing.assert_close(fn(b1[0], b2[0]), peer(b1[0], b2[0]))  # Tensor[4]: a scalar loss
    assert fn(b1[0], b2[0]).shape == ()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int16])
@pytest.mark.parametrize("kind", list(LOSSES))
def test_dtypes_like_torchvision(dtype, kind):
    g = torch.Generator().manual_seed(5)
    b1, b2 = random_boxes(20, g).to(dtype), random_boxes(20, g).to(dtype)
    b2[:3] = b1[:3]
    ours, peer = LOSSES[kind](b1, b2), getattr(tv, LOSSES[kind].__name__)(b1, b2)
    assert ours.dtype == peer.dtype, (ours.dtype, peer.dtype)  # upcast to float32, as torchvision
    torch.testing.assert_close(ours, peer, rtol=1e-5, atol=1e-6)
    ours, peer = PAIRWISE[kind](b1, b2), getattr(tv, PAIRWISE[kind].__name__)(b1, b2)
    assert ours.dtype == peer.dtype, (ours.dtype, peer.dtype)
    torch.testing.assert_close(ours, peer, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("kind", list(LOSSES))
def test_gradients_match_torchvision(kind):
    g = torch.Generator().manual_seed(6)
    b1, b2 = random_boxes(30, g, dtype=torch.float64), random_boxes(30, g, dtype=torch.float64)
    b2[:3, :2] = b1[:3, :2]  # shared corners
    b2[:3, 2:] = torch.maximum(b2[:3, 2:], b1[:3, :2] + 1)
    grads = []
    for fn in (LOSSES[kind], getattr(tv, LOSSES[kind].__name__)):
        x1, x2 = b1.clone().requires_grad_(), b2.clone().requires_grad_()
        fn(x1, x2, "sum").backward()
        grads.append((x1.grad, x2.grad))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-12)
    grads = []
    for fn in (PAIRWISE[kind], getattr(tv, PAIRWISE[kind].__name__)):
        x1, x2 = b1[:7].clone().requires_grad_(), b2[:5].clone().requires_grad_()
        fn(x1, x2).sum().backward()
        grads.append((x1.grad, x2.grad))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-12)


def test_ciou_loss_eps_used_throughout():
    """Peer difference (documented): torchvision's CIoU loss takes its IoU with eps = 1e-7 always."""
    g = torch.Generator().manual_seed(7)
    b1, b2 = random_boxes(10, g, dtype=torch.float64), random_boxes(10, g, dtype=torch.float64)
    torch.testing.assert_close(complete_box_iou_loss(b1, b2, eps=0.5), naive_loss(b1, b2, "ciou", eps=0.5))
    torch.testing.assert_close(complete_box_iou_loss(b1, b2), tv.complete_box_iou_loss(b1, b2))


# ---------------------------------------------------------------------------- gradcheck


def _aspect_and_alpha(b1, b2, iou_eps):
    """CIoU's v and alpha, written out here (torch, broadcasting rows) for the gradchecks."""
    w1, h1 = b1[..., 2] - b1[..., 0], b1[..., 3] - b1[..., 1]
    w2, h2 = b2[..., 2] - b2[..., 0], b2[..., 3] - b2[..., 1]
    iw = (torch.minimum(b1[..., 2], b2[..., 2]) - torch.maximum(b1[..., 0], b2[..., 0])).clamp(min=0)
    ih = (torch.minimum(b1[..., 3], b2[..., 3]) - torch.maximum(b1[..., 1], b2[..., 1])).clamp(min=0)
    iou = iw * ih / (w1 * h1 + w2 * h2 - iw * ih + iou_eps)
    v = 4 / math.pi**2 * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    return v, v / (1 - iou + v + 1e-7)


@pytest.mark.parametrize("kind", list(LOSSES))
def test_gradcheck(kind):
    g = torch.Generator().manual_seed(8)
    b1 = random_boxes(6, g, dtype=torch.float64).requires_grad_()
    b2 = random_boxes(6, g, dtype=torch.float64).requires_grad_()
    if kind != "ciou":
        assert torch.autograd.gradcheck(lambda x, y: LOSSES[kind](x, y, "sum"), (b1, b2))
        assert torch.autograd.gradcheck(LOSSES[kind], (b1, b2))
        assert torch.autograd.gradcheck(PAIRWISE[kind], (b1, b2[:4]))
        return
    # CIoU's alpha is a constant under autograd (the paper's choice), so finite differences of
    # CIoU itself differ from its gradient. Check it with alpha pinned at the base point:
    # f = CIoU_loss - alpha(b) v(b) + alpha0 v(b) has f's true derivative (DIoU' + alpha0 v')
    # exactly when CIoU's autograd is DIoU' + alpha v' with alpha held.
    _, alpha0 = _aspect_and_alpha(b1.detach(), b2.detach(), 1e-7)

    def pinned_loss(x, y):
        v, alpha = _aspect_and_alpha(x, y, 1e-7)
        return complete_box_iou_loss(x, y) - alpha.detach() * v + alpha0 * v

    assert torch.autograd.gradcheck(pinned_loss, (b1, b2))
    _, alpha0 = _aspect_and_alpha(b1.detach()[:, None], b2.detach()[None], 0.0)

    def pinned_pairwise(x, y):
        v, alpha = _aspect_and_alpha(x[:, None], y[None], 0.0)
        return complete_box_iou(x, y) + alpha.detach() * v - alpha0 * v

    assert torch.autograd.gradcheck(pinned_pairwise, (b1, b2))


# ---------------------------------------------------------------------------- properties

coords = st.floats(0, 100, allow_nan=False, width=32)


@st.composite
def box_lists(draw, min_size=1, max_size=6):
    n = draw(st.integers(min_size, max_size))
    rows = []
    for _ in range(n):
        x1, y1 = draw(coords), draw(coords)
        w, h = draw(st.floats(0.5, 50, width=32)), draw(st.floats(0.5, 50, width=32))
        rows.append([x1, y1, x1 + w, y1 + h])
    return torch.tensor(rows, dtype=torch.float64)


@settings(max_examples=40, deadline=None)
@given(box_lists(), box_lists())
def test_property_symmetry_and_bounds(a, b):
    for kind in PAIRWISE:
        ab, ba = PAIRWISE[kind](a, b), PAIRWISE[kind](b, a)
        torch.testing.assert_close(ab, ba.T, rtol=1e-12, atol=1e-12)
        low = -1.5 if kind == "ciou" else -1.0
        assert ((ab >= low) & (ab <= 1 + 1e-12)).all(), (kind, ab)
    n = min(len(a), len(b))
    for kind in LOSSES:
        loss = LOSSES[kind](a[:n], b[:n])
        torch.testing.assert_close(loss, LOSSES[kind](b[:n], a[:n]), rtol=1e-12, atol=1e-12)
        high = 2.5 if kind == "ciou" else 2.0
        assert ((loss >= -1e-12) & (loss <= high)).all(), (kind, loss)


@settings(max_examples=40, deadline=None)
@given(box_lists(), box_lists())
def test_property_loss_is_one_minus_metric_on_the_diagonal(a, b):
    n = min(len(a), len(b))
    for kind in LOSSES:
        # A tiny eps makes the loss's IoU the pairwise metric's IoU (areas here are >= 0.25) and
        # keeps CIoU's alpha = 0 / eps = 0 for identical boxes.
        loss = LOSSES[kind](a[:n], b[:n], eps=1e-30)
        metric = PAIRWISE[kind](a[:n], b[:n], **({} if kind == "giou" else {"eps": 1e-30})).diagonal()
        torch.testing.assert_close(loss, 1 - metric, rtol=1e-12, atol=1e-12)
        assert (LOSSES[kind](a, a).abs() < 1e-6).all()  # a box against itself: loss 0


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", list(LOSSES.values()))
def test_bad_input_raises_one_line(fn):
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    for bad_args, match in [
        ((good, good, "avg"), "reduction"),
        ((torch.zeros(1, 5), good), "boxes1"),
        ((good, torch.zeros(3)), "boxes2"),
        ((good.repeat(3, 1), good.repeat(2, 1)), "matching rows"),
        (([0.0, 0, 1, 1], good), "boxes1"),
    ]:
        with pytest.raises(ValueError, match=match) as info:
            fn(*bad_args)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("fn", [distance_box_iou, complete_box_iou])
def test_pairwise_bad_input_raises(fn):
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="boxes2"):
        fn(good, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="boxes1 must be in"):
        fn(torch.tensor([[2.0, 0, 1, 1]]), good)  # x2 < x1
    with pytest.raises(ValueError, match="boxes1"):
        fn("boxes", good)

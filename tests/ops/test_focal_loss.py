"""``sigmoid_focal_loss``: a naive per-element reference, torchvision parity on edge cases, every
reduction, dtypes, float64 gradcheck, properties, bad input.

Reference (Lin et al. 2017, written from the paper in float64 with ``math``):
``p = 1 / (1 + e^-x)``, ``CE = -t log p - (1 - t) log(1 - p)``, ``p_t = p t + (1 - p)(1 - t)``,
``FL = alpha_t (1 - p_t)^gamma CE`` with ``alpha_t = alpha t + (1 - alpha)(1 - t)`` unless
``alpha = -1``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tv
from hypothesis import given, settings
from hypothesis import strategies as st

from structpred.ops import sigmoid_focal_loss

REDUCTIONS = ("none", "mean", "sum")


def naive_focal(x, t, alpha, gamma):
    p = 1 / (1 + math.exp(-x))
    ce = -t * math.log(p) - (1 - t) * math.log(1 - p)
    p_t = p * t + (1 - p) * (1 - t)
    loss = (1 - p_t) ** gamma * ce
    return loss * (alpha * t + (1 - alpha) * (1 - t)) if alpha >= 0 else loss


def cases():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 9, 5, generator=g) * 3
    hard = (torch.rand(6, 9, 5, generator=g) < 0.2).float()
    return {
        "random": (x, hard),
        "soft-targets": (x, torch.rand(6, 9, 5, generator=g)),
        "empty": (torch.zeros(0, 80), torch.zeros(0, 80)),
        "one": (x[:1, :1, :1], hard[:1, :1, :1]),
        "scalar": (torch.tensor(0.7), torch.tensor(1.0)),
        "saturated": (
            torch.tensor([-100.0, -30, 0, 30, 100, 100, -100]),
            torch.tensor([1.0, 1, 0, 0, 0, 1, 0]),
        ),
        "ties": (torch.zeros(4, 3), torch.tensor([[0.0, 1, 0]] * 4)),  # x = 0: p = 1/2 everywhere
    }


CASES = cases()
PARAMS = [(0.25, 2.0), (-1, 2.0), (0.0, 0.0), (1.0, 0.5), (0.5, 3.0)]


@pytest.mark.parametrize("alpha,gamma", PARAMS)
def test_matches_naive(alpha, gamma):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, generator=g, dtype=torch.float64) * 4
    t = torch.cat(
        [torch.rand(25, generator=g, dtype=torch.float64) < 0.3, torch.rand(25, dtype=torch.float64)]
    )
    t = t.double()
    out = sigmoid_focal_loss(x, t, alpha, gamma)
    ref = torch.tensor(
        [naive_focal(a, b, alpha, gamma) for a, b in zip(x.tolist(), t.tolist(), strict=True)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        sigmoid_focal_loss(x, t, alpha, gamma, "sum"), ref.sum(), rtol=1e-12, atol=1e-14
    )
    torch.testing.assert_close(
        sigmoid_focal_loss(x, t, alpha, gamma, "mean"), ref.mean(), rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("alpha,gamma", PARAMS[:3])
def test_matches_torchvision(case, alpha, gamma):
    x, t = CASES[case]
    for reduction in REDUCTIONS:
        ours = sigmoid_focal_loss(x, t, alpha, gamma, reduction)
        peer = tv.sigmoid_focal_loss(x, t, alpha, gamma, reduction)
        assert ours.shape == peer.shape and ours.dtype == peer.dtype
        # The mean of nothing is NaN on both sides, as torchvision. Tolerance: torchvision's
        # cross-entropy loses ~1e-5 relative where it is small (see test_more_accurate_than_peer).
        torch.testing.assert_close(ours, peer, rtol=1e-5, atol=5e-7, equal_nan=True)


@pytest.mark.parametrize("gamma", [2.0, 0.0])
def test_float32_at_least_as_accurate_as_torchvision(gamma):
    """Against float64: relative precision of float32 everywhere, even where the loss is tiny
    (torchvision's 1 - p_t = 1 - (1 - p) cancels for easy examples and its CE loses ~ulp(1))."""
    x = torch.linspace(-20, 20, 401)
    t = (torch.arange(401) % 2).float()
    exact = sigmoid_focal_loss(x.double(), t.double(), 0.25, gamma)
    ours = sigmoid_focal_loss(x, t, 0.25, gamma).double()
    peer = tv.sigmoid_focal_loss(x, t, 0.25, gamma).double()
    seen = exact > 1e-30
    ours_rel = ((ours - exact).abs() / exact)[seen].max()
    peer_rel = ((peer - exact).abs() / exact)[exact > 1e-7].max()
    assert ours_rel < 1e-6 and ours_rel <= peer_rel, (ours_rel, peer_rel)


def test_gradients_match_torchvision():
    x, t = CASES["soft-targets"]
    x = torch.cat([x.flatten(), CASES["saturated"][0], torch.zeros(3)]).double()
    t = torch.cat([t.flatten(), CASES["saturated"][1], torch.tensor([0.0, 1.0, 0.5])]).double()
    for alpha, gamma in PARAMS:
        grads = []
        for fn in (sigmoid_focal_loss, tv.sigmoid_focal_loss):
            xg = x.clone().requires_grad_()
            fn(xg, t, alpha, gamma, "sum").backward()
            grads.append(xg.grad)
        # gamma < 1 at a saturated logit: torchvision's 1 - p_t is exactly 0 in float64 and
        # d(1 - p_t)^gamma is inf * 0 = NaN; here 1 - p_t = sigmoid(-100) > 0: a finite gradient.
        assert torch.isfinite(grads[0]).all()
        peer_ok = torch.isfinite(grads[1])
        assert peer_ok.sum() >= len(x) - 2
        torch.testing.assert_close(grads[0][peer_ok], grads[1][peer_ok], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes_like_torchvision(dtype):
    """Same dtype out; half inputs are computed in float32 here, so as close to float64 as the
    output precision allows (torchvision computes in the half type)."""
    x, t = CASES["random"]
    ours = sigmoid_focal_loss(x.to(dtype), t.to(dtype))
    peer = tv.sigmoid_focal_loss(x.to(dtype), t.to(dtype))
    assert ours.dtype == peer.dtype == dtype
    exact = sigmoid_focal_loss(x.to(dtype).double(), t.double())
    half_ulp = {torch.float16: 2**-11, torch.bfloat16: 2**-8, torch.float64: 2**-53}[dtype]
    assert ((ours.double() - exact).abs() <= exact.abs() * half_ulp + 1e-7).all()
    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(ours.double(), peer.double(), rtol=tol, atol=tol)


@pytest.mark.parametrize(
    ("x_dtype", "t_dtype"),
    [(torch.bfloat16, torch.float32), (torch.float32, torch.float64), (torch.float16, torch.bfloat16)],
)
def test_mixed_dtypes_and_autocast_like_torchvision(x_dtype, t_dtype):
    x, t = CASES["random"]
    x, t = x.to(x_dtype), t.to(t_dtype)
    assert sigmoid_focal_loss(x, t).dtype == tv.sigmoid_focal_loss(x, t).dtype
    with torch.autocast("cpu", dtype=torch.bfloat16):  # torchvision's cross-entropy runs in float32
        ours, peer = sigmoid_focal_loss(x, t, reduction="sum"), tv.sigmoid_focal_loss(x, t, reduction="sum")
    assert ours.dtype == peer.dtype
    torch.testing.assert_close(ours, peer, rtol=2e-3, atol=1e-3)


def test_integer_and_bool_targets():
    x, t = CASES["random"]
    torch.testing.assert_close(sigmoid_focal_loss(x, t.long()), sigmoid_focal_loss(x, t))
    torch.testing.assert_close(sigmoid_focal_loss(x, t.bool()), sigmoid_focal_loss(x, t))


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1, 0.5), (0.7, 0.0)])
def test_gradcheck(alpha, gamma):
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(12, generator=g, dtype=torch.float64) * 3).requires_grad_()
    t = torch.cat([torch.tensor([0.0, 1.0] * 3, dtype=torch.float64), torch.rand(6, dtype=torch.float64)])
    assert torch.autograd.gradcheck(lambda v: sigmoid_focal_loss(v, t, alpha, gamma), (x,))
    # Soft targets carry a gradient too (e.g. IoU-aware targets built from the predictions).
    tg = t.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda v, w: sigmoid_focal_loss(v, w, alpha, gamma, "mean"), (x, tg))


finite = st.floats(-40, 40, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(finite, st.floats(0, 1)), min_size=1, max_size=8),
    st.floats(0, 1),
    st.floats(0, 4),
)
def test_property_bounds(pairs, alpha, gamma):
    x = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    t = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    fl = sigmoid_focal_loss(x, t, alpha, gamma)
    ce = sigmoid_focal_loss(x, t, -1, 0.0)  # plain binary cross-entropy
    assert torch.isfinite(fl).all() and (fl >= 0).all()
    assert (fl <= ce * max(alpha, 1 - alpha) + 1e-12).all()  # down-weights, never up
    p, small = torch.sigmoid(x), x.abs() < 15  # where the naive logs are accurate
    naive = -(t * p.log() + (1 - t) * (1 - p).log())
    torch.testing.assert_close(ce[small], naive[small], rtol=1e-6, atol=1e-9)


def test_bad_input_raises_one_line():
    x, t = torch.zeros(3, 4), torch.zeros(3, 4)
    for args, kwargs, match in [
        ((x, t), {"reduction": "avg"}, "reduction"),
        ((x, torch.zeros(4, 3)), {}, "shape"),
        ((x, [0.0] * 4), {}, "targets"),
        ((x.long(), t), {}, "floating point"),
        ((x, t), {"alpha": 1.5}, "alpha"),
        ((x, t), {"alpha": -0.5}, "alpha"),
        ((x, t), {"gamma": -1.0}, "gamma"),
    ]:
        with pytest.raises(ValueError, match=match) as info:
            sigmoid_focal_loss(*args, **kwargs)
        assert "\n" not in str(info.value)


def test_backward_keeps_two_tensors_alive_torchvision_six():
    """Memory for training: what autograd keeps between forward and backward, beyond the inputs
    (a RetinaNet loss is (B, anchors, 80) elements: each kept tensor is its size again)."""
    x = torch.randn(50, 80).requires_grad_()
    t = (torch.rand(50, 80) < 0.05).float()
    kept = {}
    for name, fn in (("ours", sigmoid_focal_loss), ("torchvision", tv.sigmoid_focal_loss)):
        storages: dict[int, int] = {}

        def pack(tensor, storages=storages):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            fn(x, t, 0.25, 2.0, "sum")
        inputs = {x.untyped_storage().data_ptr(), t.untyped_storage().data_ptr()}
        kept[name] = sum(n for ptr, n in storages.items() if ptr not in inputs) / (x.numel() * 4)
    assert kept["ours"] == 2 and kept["torchvision"] > 2, kept  # torchvision 0.29: 6

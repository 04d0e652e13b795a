"""Box coder: round trips, multi-class decoding, the exp clamp, float64, bad input; the linear
(FCOS) coder against torchvision's ``BoxLinearCoder`` and a naive loop."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxLinearCoder as TVLinearCoder

from structpred.ops import BoxCoder, decode_boxes, encode_boxes
from structpred.ops.box_coder import DEFAULT_CLIP, BoxLinearCoder, decode_linear, encode_linear

WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]


def random_boxes(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` xyxy boxes with sides in [4, 204): no size ratio near the clamp's 62.5."""
    xy = torch.rand(n, 2, generator=generator, dtype=dtype) * 800
    wh = 4 + torch.rand(n, 2, generator=generator, dtype=dtype) * 200
    return torch.cat([xy, xy + wh], dim=1)


def naive_encode(gt, ref, weights):
    wx, wy, ww, wh = weights
    out = []
    for g, r in zip(gt.tolist(), ref.tolist(), strict=True):
        pw, ph = r[2] - r[0], r[3] - r[1]
        px, py = r[0] + pw / 2, r[1] + ph / 2
        gw, gh = g[2] - g[0], g[3] - g[1]
        gx, gy = g[0] + gw / 2, g[1] + gh / 2
        out.append([wx * (gx - px) / pw, wy * (gy - py) / ph, ww * math.log(gw / pw), wh * math.log(gh / ph)])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_encode_matches_formula(weights):
    g = torch.Generator().manual_seed(0)
    gt, ref = random_boxes(50, g, torch.float64), random_boxes(50, g, torch.float64)
    got = encode_boxes(gt, ref, weights)
    assert got.shape == (50, 4)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, naive_encode(gt, ref, weights), rtol=1e-12, atol=1e-12)


def test_encode_known_values():
    ref = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    gt = torch.tensor([[5.0, 0.0, 25.0, 40.0]])  # centre (15, 20) vs (5, 10); size x2 both ways
    got = encode_boxes(gt, ref)
    torch.testing.assert_close(got, torch.tensor([[1.0, 0.5, math.log(2), math.log(2)]]))
    got = encode_boxes(gt, ref, (10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(got, torch.tensor([[10.0, 5.0, 5 * math.log(2), 5 * math.log(2)]]))
    assert torch.equal(encode_boxes(ref, ref), torch.zeros(1, 4))


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip(weights, dtype):
    g = torch.Generator().manual_seed(1)
    gt, ref = random_boxes(200, g, dtype), random_boxes(200, g, dtype)
    deltas = encode_boxes(gt, ref, weights)
    back = decode_boxes(deltas, ref, weights)
    assert back.dtype == dtype
    tol = 1e-3 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(back, gt, rtol=tol, atol=tol)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_box_coder_round_trip(weights):
    g = torch.Generator().manual_seed(2)
    coder = BoxCoder(weights)
    gt, ref = random_boxes(64, g, torch.float64), random_boxes(64, g, torch.float64)
    back = coder.decode_single(coder.encode_single(gt, ref), ref)
    torch.testing.assert_close(back, gt, rtol=1e-9, atol=1e-9)
    # list forms: per-image encode, then decode to [N, 1, 4]
    targets = coder.encode([gt[:40], gt[40:]], [ref[:40], ref[40:]])
    assert [t.shape for t in targets] == [(40, 4), (24, 4)]
    decoded = coder.decode(torch.cat(targets), [ref[:40], ref[40:]])
    assert decoded.shape == (64, 1, 4)
    torch.testing.assert_close(decoded[:, 0], gt, rtol=1e-9, atol=1e-9)


coord = st.floats(-1000, 1000, allow_nan=False, allow_infinity=False)
side = st.floats(1.0, 50.0, allow_nan=False, allow_infinity=False)  # size ratio <= 50 < 62.5 (clamp)
box = st.tuples(coord, coord, side, side).map(lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]])


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(st.tuples(box, box), min_size=1, max_size=8),
    weights=st.sampled_from(WEIGHTS),
)
def test_round_trip_property(pairs, weights):
    gt = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    ref = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    back = decode_boxes(encode_boxes(gt, ref, weights), ref, weights)
    torch.testing.assert_close(back, gt, rtol=1e-9, atol=1e-7)


def test_decode_j_box_sets_per_row():
    g = torch.Generator().manual_seed(3)
    n, j = 10, 3
    ref = random_boxes(n, g)
    deltas = torch.randn(n, 4 * j, generator=g)
    weights = (10.0, 10.0, 5.0, 5.0)
    got = decode_boxes(deltas, ref, weights)
    assert got.shape == (n, 4 * j)
    for k in range(j):  # each set of 4 decodes like a single-set call
        alone = decode_boxes(deltas[:, 4 * k : 4 * k + 4], ref, weights)
        torch.testing.assert_close(got[:, 4 * k : 4 * k + 4], alone, rtol=0, atol=0)
    coder = BoxCoder(weights)
    assert torch.equal(coder.decode_single(deltas, ref), got)
    assert torch.equal(coder.decode(deltas, [ref[:4], ref[4:]]), got.reshape(n, j, 4))


def test_decode_known_values():
    ref = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    deltas = torch.tensor([[1.0, 0.5, math.log(2), math.log(2)]])
    torch.testing.assert_close(decode_boxes(deltas, ref), torch.tensor([[5.0, 0.0, 25.0, 40.0]]))
    torch.testing.assert_close(decode_boxes(torch.zeros(1, 8), ref), torch.cat([ref, ref], dim=1))


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decode_clamps_dw_dh(weights, dtype):
    ref = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 9.0, 7.0]], dtype=dtype)
    _, _, ww, wh = weights
    huge = torch.tensor([[0.0, 0.0, 1e4, 1e4], [0.0, 0.0, 1e30, 50.0]], dtype=dtype)
    got = decode_boxes(huge, ref, weights)
    assert torch.isfinite(got).all()
    # exactly what deltas sitting on the clamp give
    at_clip = torch.tensor(
        [[0.0, 0.0, ww * DEFAULT_CLIP, wh * DEFAULT_CLIP], [0.0, 0.0, ww * DEFAULT_CLIP, wh * DEFAULT_CLIP]],
        dtype=dtype,
    )
    torch.testing.assert_close(got, decode_boxes(at_clip, ref, weights))
    # and the clamp is log(1000 / 16): the box grows 62.5 times about its centre
    widths, heights = got[:, 2] - got[:, 0], got[:, 3] - got[:, 1]
    torch.testing.assert_close(widths, 62.5 * (ref[:, 2] - ref[:, 0]))
    torch.testing.assert_close(heights, 62.5 * (ref[:, 3] - ref[:, 1]))
    torch.testing.assert_close((got[:, 0] + got[:, 2]) / 2, (ref[:, 0] + ref[:, 2]) / 2)


def test_decode_clip_argument_and_no_lower_clamp():
    ref = torch.tensor([[0.0, 0.0, 10.0, 10.0]], dtype=torch.float64)
    got = decode_boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0]], dtype=torch.float64), ref, clip=math.log(2))
    torch.testing.assert_close(got, torch.tensor([[-5.0, -5.0, 15.0, 15.0]], dtype=torch.float64))
    coder = BoxCoder(bbox_xform_clip=math.log(2))
    assert coder.bbox_xform_clip == math.log(2)
    torch.testing.assert_close(
        coder.decode_single(torch.tensor([[0.0, 0.0, 5.0, 5.0]]), ref.float()), got.float()
    )
    # Only the top is clamped (as torchvision): a very negative dw shrinks the box to its centre.
    tiny = decode_boxes(torch.tensor([[0.0, 0.0, -1e4, -1e4]], dtype=torch.float64), ref)
    assert torch.equal(tiny, torch.tensor([[5.0, 5.0, 5.0, 5.0]], dtype=torch.float64))


def test_float64_is_kept_and_reference_is_cast_to_deltas_dtype():
    g = torch.Generator().manual_seed(4)
    gt, ref = random_boxes(8, g, torch.float64), random_boxes(8, g, torch.float64)
    deltas = encode_boxes(gt, ref, (10.0, 10.0, 5.0, 5.0))
    assert deltas.dtype == torch.float64
    assert decode_boxes(deltas, ref).dtype == torch.float64
    assert decode_boxes(deltas, ref.float()).dtype == torch.float64
    assert decode_boxes(deltas.float(), ref).dtype == torch.float32


def test_empty_inputs():
    assert encode_boxes(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert decode_boxes(torch.zeros(0, 8), torch.zeros(0, 4)).shape == (0, 8)
    assert BoxCoder().decode(torch.zeros(0, 4), [torch.zeros(0, 4)]).shape == (0, 4)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("shape", [(5, 5), (5, 3), (20,), (5, 1, 4), (4, 4)])
def test_decode_deltas_not_n_by_4j(shape):
    with pytest.raises(ValueError, match=r"deltas must be \[N, 4\*J\]"):
        decode_boxes(torch.zeros(shape), torch.zeros(5, 4))
    with pytest.raises(ValueError, match=r"deltas must be \[N, 4\*J\]"):
        BoxCoder().decode_single(torch.zeros(shape), torch.zeros(5, 4))


def test_encode_mismatched_n():
    with pytest.raises(ValueError, match="pair up"):
        encode_boxes(torch.zeros(3, 4), torch.ones(4, 4))
    with pytest.raises(ValueError, match="pair up"):
        BoxCoder().encode_single(torch.zeros(3, 4), torch.ones(4, 4))


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (1.0,) * 5, ()])
def test_wrong_weights_length(weights):
    with pytest.raises(ValueError, match="weights"):
        BoxCoder(weights)
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    with pytest.raises(ValueError):
        encode_boxes(boxes, boxes, weights)
    with pytest.raises(ValueError):
        decode_boxes(torch.zeros(1, 4), boxes, weights)


@pytest.mark.parametrize("shape", [(3, 5), (3, 3), (4,), (2, 3, 4), ()])
def test_boxes_not_n_by_4(shape):
    good = torch.ones(3, 4)
    bad = torch.ones(shape)
    with pytest.raises(ValueError, match="gt must have shape"):
        encode_boxes(bad, good)
    with pytest.raises(ValueError, match="reference must have shape"):
        encode_boxes(good, bad)
    with pytest.raises(ValueError, match="reference must have shape"):
        decode_boxes(torch.zeros(3, 4), bad)


def test_boxes_not_tensors():
    with pytest.raises(ValueError, match="must be a Tensor"):
        encode_boxes([[0.0, 0.0, 1.0, 1.0]], torch.ones(1, 4))


# ---------------------------------------------------------------------------- linear coder (FCOS)


def naive_encode_linear(gt, ref, normalize):
    out = []
    for g, r in zip(gt.tolist(), ref.tolist(), strict=True):
        cx, cy, w, h = (r[0] + r[2]) / 2, (r[1] + r[3]) / 2, r[2] - r[0], r[3] - r[1]
        d = [cx - g[0], cy - g[1], g[2] - cx, g[3] - cy]
        out.append([d[0] / w, d[1] / h, d[2] / w, d[3] / h] if normalize else d)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("n", [0, 1, 37])
def test_linear_coder_matches_torchvision_and_naive(normalize, n):
    g = torch.Generator().manual_seed(5)
    gt, ref = random_boxes(n, g, torch.float64), random_boxes(n, g, torch.float64)
    ours, theirs = BoxLinearCoder(normalize), TVLinearCoder(normalize)
    codes = ours.encode(ref, gt)
    assert codes.shape == (n, 4)
    torch.testing.assert_close(codes, theirs.encode(ref, gt), rtol=0, atol=0)
    if n:
        torch.testing.assert_close(codes, naive_encode_linear(gt, ref, normalize), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.decode(codes, ref), theirs.decode(codes, ref), rtol=0, atol=0)
    torch.testing.assert_close(ours.decode(codes, ref), gt, rtol=1e-9, atol=1e-9)  # round trip
    # float32 codes against float64 references: the reference is cast, as torchvision
    got = decode_linear(codes.float(), ref, normalize)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, theirs.decode(codes.float(), ref), rtol=0, atol=0)


@pytest.mark.parametrize("normalize", [True, False])
def test_linear_coder_batched_and_broadcast(normalize):
    g = torch.Generator().manual_seed(6)
    gt = random_boxes(2 * 9, g).reshape(2, 9, 4)  # (B, R, 4)
    ref = random_boxes(9, g)  # (R, 4), shared by the batch
    codes = encode_linear(gt, ref, normalize)
    assert codes.shape == (2, 9, 4)
    torch.testing.assert_close(codes, TVLinearCoder(normalize).encode(ref.expand(2, 9, 4), gt))
    torch.testing.assert_close(decode_linear(codes, ref, normalize), gt, rtol=1e-4, atol=1e-3)


def test_linear_coder_known_values_and_outside_centre():
    ref = torch.tensor([[0.0, 0.0, 8.0, 8.0]])  # centre (4, 4), side 8
    gt = torch.tensor([[2.0, 3.0, 12.0, 5.0]])
    torch.testing.assert_close(encode_linear(gt, ref, False), torch.tensor([[2.0, 1.0, 8.0, 1.0]]))
    torch.testing.assert_close(encode_linear(gt, ref), torch.tensor([[0.25, 0.125, 1.0, 0.125]]))
    outside = torch.tensor([[5.0, 5.0, 9.0, 9.0]])  # the centre is not inside: l, t < 0
    assert (encode_linear(outside, ref, False)[0, :2] < 0).all()


def test_linear_coder_gradcheck():
    g = torch.Generator().manual_seed(7)
    ref = random_boxes(5, g, torch.float64)
    gt = random_boxes(5, g, torch.float64).requires_grad_()
    codes = torch.rand(5, 4, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: encode_linear(x, ref), (gt,))
    assert torch.autograd.gradcheck(lambda c: decode_linear(c, ref), (codes,))


@pytest.mark.parametrize("shape", [(3, 5), (4,) * 0, (2, 3)])
def test_linear_coder_bad_shapes(shape):
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        encode_linear(torch.zeros(shape), torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        decode_linear(torch.zeros(3, 4), torch.zeros(shape))
    with pytest.raises(ValueError, match="must be a Tensor"):
        encode_linear([[0.0, 0.0, 1.0, 1.0]], torch.zeros(1, 4))  # type: ignore[arg-type]

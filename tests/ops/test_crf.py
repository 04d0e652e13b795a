"""Tests of structpred.ops.dense_crf and its permutohedral lattice.

(a) parity with pydensecrf2 (the C++ the op reproduces) on synthetic and real images;
(b) a naive O(N^2) reference: exact Gaussian filtering and mean field, written out here;
(c) float64 gradcheck; (d) properties; (e) bad inputs -> clear ValueErrors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from structpred.ops import dense_crf
from structpred.ops import permutohedral as P
from structpred.ops.crf import _SMOOTH_CACHE, PROB_CLIP, _pixel_features

# ---------------------------------------------------------------- inputs


def coloured_scene(
    H: int, W: int, K: int, seed: int = 0, noise: float = 1.5
) -> tuple[Tensor, Tensor, Tensor]:
    """``probs [K, H, W]`` (noisy softmax), ``image uint8[3, H, W]`` and ``labels [H, W]``.

    Label ``k > 0`` is a disc of its own colour on a background of label 0; the unaries see the
    true label with a +2 logit through Gaussian noise, so many pixels start out wrong.
    """
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    labels = torch.zeros(H, W, dtype=torch.long)
    for k in range(1, K):
        cy, cx = int(torch.randint(0, H, (1,), generator=g)), int(torch.randint(0, W, (1,), generator=g))
        r = 3 + int(torch.randint(0, max(4, min(H, W) // 3), (1,), generator=g))
        labels[(ys - cy) ** 2 + (xs - cx) ** 2 < r * r] = k
    colours = torch.randint(0, 256, (K, 3), generator=g).float()
    image = colours[labels].permute(2, 0, 1) + 10 * torch.randn(3, H, W, generator=g)
    image = image.clamp(0, 255).round().to(torch.uint8)
    logits = 2.0 * torch.nn.functional.one_hot(labels, K).permute(2, 0, 1).float()
    probs = torch.softmax(logits + noise * torch.randn(K, H, W, generator=g), dim=0)
    return probs, image, labels


def real_scene(K: int = 6) -> tuple[Tensor, Tensor]:
    """skimage's coffee photo at 1/4 size (100 x 150) with colour-cluster unaries."""
    import skimage.data as data  # scikit-image: a pinned dev dependency
    image = torch.from_numpy(np.ascontiguousarray(data.coffee()[::4, ::4])).permute(2, 0, 1).contiguous()
    rgb = image.reshape(3, -1).t().float()  # (N, 3)
    centres = rgb[torch.linspace(0, rgb.shape[0] - 1, K).long()]  # (K, 3) colours from the photo
    g = torch.Generator().manual_seed(1)
    logits = -torch.cdist(rgb, centres) / 20 + 0.8 * torch.randn(rgb.shape[0], K, generator=g)
    probs = torch.softmax(logits, dim=1).t().reshape(K, *image.shape[1:])  # (N, K) -> (K, H, W)
    return probs, image


def peer_crf(probs: Tensor, image: Tensor, num_iters: int = 5) -> Tensor:
    """pydensecrf2's ``DenseCRF2D`` with DeepLab's parameters, on ``[K, H, W]`` / ``uint8[3, H, W]``."""
    import pydensecrf.densecrf as dcrf  # pydensecrf2: a pinned dev dependency
    K, H, W = probs.shape
    crf = dcrf.DenseCRF2D(W, H, K)
    unary = -np.log(np.maximum(probs.reshape(K, H * W).numpy(), PROB_CLIP))
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    rgb = np.ascontiguousarray(image.permute(1, 2, 0).numpy())  # (3, H, W) -> (H, W, 3)
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=rgb, compat=10)
    return torch.from_numpy(np.array(crf.inference(num_iters))).reshape(K, H, W)


# ---------------------------------------------------------------- (a) parity with pydensecrf2


@pytest.mark.parametrize(("H", "W", "K"), [(20, 30, 2), (37, 53, 21), (64, 48, 5), (96, 128, 21)])
@pytest.mark.parametrize("num_iters", [0, 1, 5])
def test_matches_pydensecrf(H: int, W: int, K: int, num_iters: int) -> None:
    probs, image, _ = coloured_scene(H, W, K, seed=H + K)
    ours = dense_crf(probs[None], image[None], num_iters=num_iters)[0]
    peer = peer_crf(probs, image, num_iters)
    assert (ours.argmax(0) == peer.argmax(0)).float().mean() >= 0.99
    # Same algorithm step for step in float32: the marginals agree far beyond the labels.
    assert (ours - peer).abs().max() < 1e-3


def test_matches_pydensecrf_on_a_photo() -> None:
    probs, image = real_scene()
    ours = dense_crf(probs[None], image[None])[0]
    peer = peer_crf(probs, image)
    assert (ours.argmax(0) == peer.argmax(0)).float().mean() >= 0.99
    assert (ours - peer).abs().max() < 1e-3
    assert (ours.argmax(0) != probs.argmax(0)).float().mean() > 0.05  # the CRF did change labels


def test_batch_is_per_image() -> None:
    a, image_a, _ = coloured_scene(24, 32, 4, seed=1)
    b, image_b, _ = coloured_scene(24, 32, 4, seed=2)
    both = dense_crf(torch.stack([a, b]), torch.stack([image_a, image_b]))
    assert torch.allclose(both[0], dense_crf(a[None], image_a[None])[0], atol=1e-6)
    assert torch.allclose(both[1], peer_crf(b, image_b), atol=1e-3)


# ---------------------------------------------------------------- (b) naive O(N^2) reference


def exact_gaussian(features: Tensor, values: Tensor) -> Tensor:
    """``sum_j exp(-|f_i - f_j|^2 / 2) v_j`` with the full ``[N, N]`` kernel."""
    return torch.exp(-0.5 * torch.cdist(features, features) ** 2) @ values


def naive_dense_crf(probs: Tensor, image: Tensor, num_iters: int = 5) -> Tensor:
    """Exact mean field of the same CRF: dense kernels, symmetric normalisation, Potts."""
    K, H, W = probs.shape
    f64 = torch.float64
    ys, xs = torch.meshgrid(torch.arange(H, dtype=f64), torch.arange(W, dtype=f64), indexing="ij")
    pos = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)  # (N, 2), (x, y)
    rgb = image.reshape(3, -1).t().double()  # (N, 3)
    kernels = []
    for features, weight in [(pos / 3, 3.0), (torch.cat([pos / 80, rgb / 13], dim=1), 10.0)]:
        k = torch.exp(-0.5 * torch.cdist(features, features) ** 2)  # (N, N), self included
        d = k.sum(1).rsqrt()
        kernels.append(weight * d[:, None] * k * d[None, :])
    neg_unary = probs.reshape(K, -1).t().double().clamp(min=PROB_CLIP).log()  # (N, K)
    q = torch.softmax(neg_unary, dim=1)
    for _ in range(num_iters):
        q = torch.softmax(neg_unary + sum(kn @ q for kn in kernels), dim=1)
    return q.t().reshape(K, H, W)


@pytest.mark.parametrize(("d", "min_corr"), [(2, 0.99), (5, 0.95)])
def test_lattice_filter_approximates_the_gaussian(d: int, min_corr: float) -> None:
    """The lattice is an approximation: splat/slice interpolate linearly and the blur is a
    separable [1 2 1] stencil, so its kernel has a slightly different shape and overall scale
    than exp(-r^2/2), and the error grows with d. The scale cancels in the CRF's symmetric
    normalisation, so we compare normalised filter outputs by correlation: ~0.997 in 2-D and
    ~0.97 in 5-D on spread-out random points (the thresholds leave a margin)."""
    g = torch.Generator().manual_seed(d)
    features = 2 * torch.randn(400, d, generator=g, dtype=torch.float64)
    values = torch.rand(400, 3, generator=g, dtype=torch.float64)
    ones = torch.ones(400, 1, dtype=torch.float64)
    lattice = P.build_lattice(features, torch.float64)
    ours = P.lattice_filter(values, lattice) / P.lattice_filter(ones, lattice)
    exact = exact_gaussian(features, values) / exact_gaussian(features, ones)
    assert torch.corrcoef(torch.stack([ours.reshape(-1), exact.reshape(-1)]))[0, 1] > min_corr


@pytest.mark.parametrize(("H", "W", "K"), [(12, 16, 3), (20, 24, 4)])
def test_mean_field_close_to_the_exact_dense_crf(H: int, W: int, K: int) -> None:
    """With the approximate kernels the marginals differ a little (mean |dQ| ~ 0.002-0.004),
    pixels near a decision boundary can flip (~0.5%); the labels agree on >= 98% of pixels."""
    probs, image, _ = coloured_scene(H, W, K, seed=1)
    ours = dense_crf(probs[None].double(), image[None])[0]
    exact = naive_dense_crf(probs.double(), image)
    assert (ours.argmax(0) == exact.argmax(0)).double().mean() >= 0.98
    assert (ours - exact).abs().mean() < 0.01


def test_lattice_filter_transpose_and_stacking() -> None:
    g = torch.Generator().manual_seed(0)
    f2, f5 = torch.rand(300, 2, generator=g) * 6, torch.rand(300, 5, generator=g) * 3
    a, b = P.build_lattice(f2.double(), torch.float64), P.build_lattice(f5.double(), torch.float64)
    x, y = torch.rand(2, 300, 4, generator=g, dtype=torch.float64)
    for lat in (a, b):  # <F x, y> = <x, F^T y>: the transpose is the reversed blur
        forward, transposed = P.lattice_filter(x, lat), P.lattice_filter(y, lat, reverse=True)
        assert torch.allclose((forward * y).sum(), (x * transposed).sum())
    stacked = P.stack_lattices([(a, 3.0), (b, 10.0)])
    expected = 3 * P.lattice_filter(x, a) + 10 * P.lattice_filter(x, b)
    assert torch.allclose(P.lattice_filter(x, stacked), expected)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_lattice_row_matching_fallback_is_the_same_lattice(d: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Huge coordinate ranges switch from int64 codes to matching whole rows: same filter."""
    features = torch.rand(500, d, generator=torch.Generator().manual_seed(d)) * 4
    values = torch.rand(500, 3)
    coded = P.build_lattice(features)
    monkeypatch.setattr(P, "_MAX_CODE", 10)
    rows = P.build_lattice(features)
    assert rows.num_vertices == coded.num_vertices
    assert torch.allclose(P.lattice_filter(values, rows), P.lattice_filter(values, coded), atol=1e-5)


# ---------------------------------------------------------------- (c) gradients


def test_gradcheck_float64() -> None:
    probs, image, _ = coloured_scene(5, 6, 3, seed=3)
    probs = (0.8 * probs + 0.2 / 3).double().requires_grad_()  # away from the clip at 1e-5

    def crf(p: Tensor) -> Tensor:
        return dense_crf(p[None], image[None], num_iters=3)

    assert torch.autograd.gradcheck(crf, (probs,))
    assert torch.autograd.gradgradcheck(crf, (probs,))


def test_backward_through_a_loss() -> None:
    probs, image, labels = coloured_scene(16, 20, 4, seed=4)
    logits = probs.log().requires_grad_()
    out = dense_crf(torch.softmax(logits, 0)[None], image[None])
    torch.nn.functional.nll_loss(out.clamp(min=1e-8).log(), labels[None]).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# ---------------------------------------------------------------- (d) properties


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_shape_dtype_and_normalisation(dtype: torch.dtype) -> None:
    probs, image, _ = coloured_scene(17, 23, 5, seed=5)
    out = dense_crf(probs[None].to(dtype), image[None])
    assert out.shape == (1, 5, 17, 23) and out.dtype == dtype
    assert torch.allclose(out.double().sum(1), torch.ones(1, 17, 23, dtype=torch.float64), atol=1e-3)
    assert (out >= 0).all()


def test_zero_iterations_renormalise_the_probabilities() -> None:
    probs, image, _ = coloured_scene(10, 12, 3, seed=6)
    scaled = 3 * probs.double()  # need not sum to 1
    out = dense_crf(scaled[None], image[None], num_iters=0)[0]
    assert torch.allclose(out, scaled / scaled.sum(0, keepdim=True))


def test_crf_sharpens_noisy_unaries_towards_the_regions() -> None:
    probs, image, labels = coloured_scene(48, 64, 5, seed=7, noise=1.8)
    before = (probs.argmax(0) == labels).float().mean()
    after = (dense_crf(probs[None], image[None])[0].argmax(0) == labels).float().mean()
    assert before < 0.7 and after > 0.95


def test_huge_potts_weights_stay_finite() -> None:
    """Weights past the shifted softmax's safe range use torch's softmax: still a distribution."""
    probs, image, _ = coloured_scene(12, 14, 3, seed=8)
    out = dense_crf(probs[None], image[None], compat_gaussian=300, compat_bilateral=500)
    assert torch.isfinite(out).all() and torch.allclose(out.sum(1), torch.ones(1, 12, 14), atol=1e-5)


def test_smoothness_lattice_is_reused_and_evicted() -> None:
    _SMOOTH_CACHE.clear()
    probs, image, _ = coloured_scene(9, 11, 3, seed=9)
    first = dense_crf(probs[None], image[None])
    assert len(_SMOOTH_CACHE) == 1
    assert torch.equal(dense_crf(probs[None], image[None]), first)
    for w in range(12, 17):
        dense_crf(torch.ones(1, 2, 9, w), torch.zeros(1, 3, 9, w, dtype=torch.uint8), num_iters=1)
    assert len(_SMOOTH_CACHE) == 4


def test_pixel_features_follow_the_convention() -> None:
    image = torch.arange(3 * 2 * 3, dtype=torch.uint8).reshape(3, 2, 3)
    f = _pixel_features(image, 2.0, 4.0)  # (5, N): x, y, r, g, b
    assert torch.equal(f[0], torch.tensor([0, 1, 2, 0, 1, 2]) / 2.0)  # x = column
    assert torch.equal(f[1], torch.tensor([0, 0, 0, 1, 1, 1]) / 2.0)  # y = row
    assert torch.equal(f[2:], image.reshape(3, -1).float() / 4.0)


# ---------------------------------------------------------------- (e) bad inputs


def _ok() -> tuple[Tensor, Tensor]:
    return torch.full((1, 2, 4, 5), 0.5), torch.zeros(1, 3, 4, 5, dtype=torch.uint8)


@pytest.mark.parametrize(
    ("probs", "image", "match"),
    [
        (torch.full((2, 4, 5), 0.5), _ok()[1], r"probs must be a Tensor\[B, K, H, W\], got \(2, 4, 5\)"),
        (_ok()[0], torch.zeros(3, 4, 5, dtype=torch.uint8), r"image must be a uint8 Tensor\[B, 3, H, W\]"),
        (_ok()[0].long(), _ok()[1], "probs must be a floating point tensor"),
        (_ok()[0], torch.zeros(1, 3, 4, 5), "image must be uint8"),
        (_ok()[0], torch.zeros(1, 1, 4, 5, dtype=torch.uint8), "image must have 3 .RGB. channels"),
        (_ok()[0], torch.zeros(1, 3, 4, 6, dtype=torch.uint8), "does not match probs"),
        (_ok()[0], torch.zeros(2, 3, 4, 5, dtype=torch.uint8), "does not match probs"),
        (_ok()[0] - 1, _ok()[1], "probs must be non-negative, got a minimum of -0.5"),
        (_ok()[0] * float("nan"), _ok()[1], "probs must be finite"),
        (torch.ones(1, 0, 4, 5), _ok()[1][:, :, :, :], "at least one label"),
        ("probs", _ok()[1], r"probs must be a Tensor\[B, K, H, W\], got str"),
    ],
)
def test_bad_tensors(probs: Tensor, image: Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dense_crf(probs, image)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_iters": -1}, "num_iters must be an integer >= 0, got -1"),
        ({"num_iters": 2.5}, "num_iters must be an integer"),
        ({"sxy_gaussian": 0}, "sxy_gaussian must be a positive number, got 0"),
        ({"compat_gaussian": -3}, "compat_gaussian must be a positive number"),
        ({"sxy_bilateral": float("nan")}, "sxy_bilateral must be a positive number"),
        ({"srgb_bilateral": -13}, "srgb_bilateral must be a positive number"),
        ({"compat_bilateral": 0.0}, "compat_bilateral must be a positive number"),
        ({"compat_bilateral": True}, "compat_bilateral must be a positive number"),
    ],
)
def test_bad_parameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dense_crf(*_ok(), **kwargs)  # type: ignore[arg-type]


def test_bad_lattice_inputs() -> None:
    with pytest.raises(ValueError, match=r"features must be a Tensor\[N, d\]"):
        P.build_lattice(torch.rand(5))
    with pytest.raises(ValueError, match="at least one point"):
        P.build_lattice(torch.rand(0, 3))
    lattice = P.build_lattice(torch.rand(6, 2))
    with pytest.raises(ValueError, match=r"values must be a Tensor\[N, C\] with N = 6"):
        P.lattice_filter(torch.rand(5, 2), lattice)
    with pytest.raises(ValueError, match="lattice was built for torch.float32"):
        P.lattice_filter(torch.rand(6, 2, dtype=torch.float64), lattice)
    with pytest.raises(ValueError, match="must share their points"):
        P.stack_lattices([(lattice, 1.0), (P.build_lattice(torch.rand(7, 2)), 1.0)])


# ---------------------------------------------------------------- benchmark smoke test (no timing asserted)


def test_bench_dense_crf_smoke() -> None:
    from structpred.bench.crf import bench_dense_crf

    threads = torch.get_num_threads()
    try:
        r = bench_dense_crf(height=12, width=16, num_labels=3, num_iters=2, repeats=1)
    finally:
        torch.set_num_threads(threads)
    assert set(r) == {"ours_ms", "peer_ms", "ratio", "label_agreement"}
    assert r["ours_ms"] > 0 and r["peer_ms"] > 0 and r["label_agreement"] >= 0.99

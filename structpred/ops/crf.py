"""Fully-connected CRF over the pixels of an image (Krähenbühl & Koltun, 2011), as used by DeepLab.

:func:`dense_crf` refines per-pixel class probabilities with mean-field inference in a CRF whose
pairwise term connects *every* pair of pixels through two Gaussian kernels: an appearance
(bilateral) kernel over position and colour — nearby pixels of similar colour prefer the same
label — and a smoothness kernel over position alone. Each mean-field step filters the current
marginals with both kernels, which the permutohedral lattice (:mod:`.permutohedral`) does in
O(N) per kernel; the lattices depend only on the image, so they are built once per image and
reused by every iteration (the smoothness lattice depends only on ``(H, W, sxy_gaussian)`` and
is kept for the last few sizes). The result is differentiable with respect to ``probs`` (a
CRF-as-RNN layer, backward through the same lattices); the image is a constant. Without
autograd the steps run in place, which matters on CPU where fresh megabyte buffers are slow.

Shape shorthand:
    B: images, K: labels, H, W: height and width, N = H*W: pixels (row-major, ``n = y*W + x``).

Convention (that of pydensecrf's ``DenseCRF2D`` with ``setUnaryEnergy(-log p)``,
``addPairwiseGaussian(sxy, compat)``, ``addPairwiseBilateral(sxy, srgb, rgbim, compat)``,
``inference(num_iters)``, whose C++ this reproduces step for step):
    * Unary: ``U = -log(max(p, 1e-5))`` (the clip of pydensecrf's ``unary_from_softmax``), so
      ``Q_0 = softmax(-U)`` is ``p`` renormalised over K (exactly ``p`` when no entry is clipped).
    * Features: ``x`` is the column and ``y`` the row index in pixels; smoothness features
      ``(x, y) / sxy_gaussian``, appearance features ``(x / sxy, y / sxy, r / srgb, g / srgb,
      b / srgb)`` with ``image`` channels in R, G, B order and raw 0-255 values.
    * Kernels: ``k(f_i, f_j) = exp(-|f_i - f_j|^2 / 2)`` (lattice approximation), the pixel's own
      term ``j = i`` included, normalised symmetrically (pydensecrf's ``NORMALIZE_SYMMETRIC``):
      ``Kn = D^-1/2 K D^-1/2`` with ``D = diag(K 1)``.
    * Potts compatibility ``mu(l, l') = w [l != l']`` applied as pydensecrf does, ``-w * Kn Q``:
      one step is ``Q <- softmax_K(-U + w_g Kn_g Q + w_b Kn_b Q)``. This differs from the
      textbook ``-sum_{l'} mu(l, l') Kn Q_l'`` only by a per-pixel constant, which softmax ignores.
    * All ``num_iters`` steps update every pixel at once (parallel mean field); 0 steps return
      ``Q_0``. Computation is float32 for float16/bfloat16 inputs, in the input dtype otherwise.
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict

import torch
from torch import Tensor

from .permutohedral import Lattice, build_lattice, lattice_filter, stack_lattices

__all__ = ["dense_crf"]

# pydensecrf.utils.unary_from_softmax clips probabilities here before the log.
PROB_CLIP = 1e-5


def _shape(t: object) -> object:
    return tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__


def _check_inputs(probs: Tensor, image: Tensor, num_iters: int, params: dict[str, float]) -> None:
    if not isinstance(probs, Tensor) or probs.dim() != 4:
        raise ValueError(f"probs must be a Tensor[B, K, H, W], got {_shape(probs)}")
    if not probs.is_floating_point():
        raise ValueError(f"probs must be a floating point tensor, got {probs.dtype}")
    if not isinstance(image, Tensor) or image.dim() != 4:
        raise ValueError(f"image must be a uint8 Tensor[B, 3, H, W], got {_shape(image)}")
    if image.dtype != torch.uint8:
        raise ValueError(f"image must be uint8 (raw 0-255 RGB values), got {image.dtype}")
    if image.shape[1] != 3:
        raise ValueError(f"image must have 3 (RGB) channels, got shape {tuple(image.shape)}")
    B, K, H, W = probs.shape
    if (image.shape[0], image.shape[2], image.shape[3]) != (B, H, W):
        raise ValueError(
            f"image {tuple(image.shape)} does not match probs {tuple(probs.shape)}: "
            "expected the same batch size B, height H and width W"
        )
    if K < 1 or H < 1 or W < 1:
        raise ValueError(f"probs must have at least one label and one pixel, got {tuple(probs.shape)}")
    if image.device != probs.device:
        raise ValueError(f"image is on {image.device} but probs on {probs.device}")
    if isinstance(num_iters, bool) or not isinstance(num_iters, numbers.Integral) or num_iters < 0:
        raise ValueError(f"num_iters must be an integer >= 0, got {num_iters!r}")
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    with torch.no_grad():
        low, high = (float(v) for v in torch.aminmax(probs.detach()))  # one pass; NaN propagates
    if math.isnan(low) or math.isinf(high):
        raise ValueError("probs must be finite, got NaN or inf entries")
    if low < 0:
        raise ValueError(f"probs must be non-negative, got a minimum of {low:g}")


def _pixel_features(image: Tensor, sxy: float, srgb: float | None) -> Tensor:
    """Kernel features of one image (``uint8[3, H, W]``): ``[2, N]`` (``srgb=None``) or ``[5, N]``."""
    _, H, W = image.shape
    dev = image.device
    xs = torch.arange(W, dtype=torch.float32, device=dev).repeat(H)  # (N,), pixel n = y*W + x
    ys = torch.arange(H, dtype=torch.float32, device=dev).repeat_interleave(W)  # (N,)
    rows = [xs, ys]
    sigmas = [sxy, sxy]
    if srgb is not None:
        rows += list(image.reshape(3, H * W).to(torch.float32))  # (3, H, W) -> 3 x (N,)
        sigmas += [srgb] * 3
    # A true division by a [d, 1] tensor (not a scalar, which may become a reciprocal multiply),
    # as the C++ computes ``i / sx`` in float32.
    return torch.stack(rows) / torch.tensor(sigmas, dtype=torch.float32, device=dev)[:, None]  # (d, N)


def _normalised_lattice(features: Tensor, dtype: torch.dtype) -> Lattice:
    """The lattice of ``D^-1/2 K D^-1/2``, ``D = diag(K 1)`` (pydensecrf's NORMALIZE_SYMMETRIC).

    ``features`` is ``[d, N]``.
    """
    lattice = build_lattice(features, dtype, points_last=True)
    ones = torch.ones(lattice.num_points, 1, dtype=dtype, device=features.device)
    with torch.no_grad():
        degree = lattice_filter(ones, lattice)[:, 0]  # (N,) = K 1, self weight included
    return lattice.rescaled(torch.rsqrt(degree + 1e-20))


# The smoothness kernel depends only on (H, W, sxy): its normalised lattice is kept for the
# last few sizes, so a stream of same-size images builds it once.
_SMOOTH_CACHE: OrderedDict[tuple[int, int, float, torch.dtype, torch.device], Lattice] = OrderedDict()
_SMOOTH_CACHE_SIZE = 4


def _smoothness_lattice(H: int, W: int, sxy: float, dtype: torch.dtype, device: torch.device) -> Lattice:
    key = (H, W, sxy, dtype, device)
    lattice = _SMOOTH_CACHE.get(key)
    if lattice is None:
        grid = torch.zeros(3, H, W, dtype=torch.uint8, device=device)  # colour is not used
        lattice = _normalised_lattice(_pixel_features(grid, sxy, None), dtype)
        _SMOOTH_CACHE[key] = lattice
        while len(_SMOOTH_CACHE) > _SMOOTH_CACHE_SIZE:
            _SMOOTH_CACHE.popitem(last=False)
    _SMOOTH_CACHE.move_to_end(key)
    return lattice


def _softmax_shifted(shifted: Tensor) -> Tensor:
    """``softmax(shifted, dim=1)`` for rows whose maximum is <= 0 (no overflow, no max needed).

    torch's softmax over a short last dimension is several times slower than these
    element-wise passes; the caller's shift replaces its max-reduction.
    """
    e = shifted.exp()  # (N, K), all <= 1
    return e / e.sum(dim=1, keepdim=True)


def _energy_shift(neg_unary: Tensor, kernel: Lattice) -> tuple[Tensor, bool]:
    """A per-pixel shift ``[N, 1]`` >= the row maximum of every step's energy, and whether it is safe.

    The filter's entries are >= 0 and q <= 1, so the pairwise energy of pixel n is at most
    ``(sum_k w_k Kn_k 1)_n``. After the shift the best label's term is >= -that bound, so the
    row cannot underflow entirely unless the Potts weights are huge; then it is not ``safe`` and
    the max-reducing softmax is used instead.
    """
    with torch.no_grad():
        ones = torch.ones(neg_unary.shape[0], 1, dtype=neg_unary.dtype, device=neg_unary.device)
        bound = lattice_filter(ones, kernel)  # (N, 1)
        safe = float(bound.max()) < 0.5 * -math.log(torch.finfo(neg_unary.dtype).tiny)
        return neg_unary.amax(dim=1, keepdim=True) + bound, safe


def _mean_field(neg_unary: Tensor, kernel: Lattice | None, num_iters: int) -> Tensor:
    """``num_iters`` parallel mean-field steps from ``softmax(-U)``; ``neg_unary``: ``-U [N, K]``.

    ``kernel`` filters with ``sum_k w_k Kn_k`` (the Potts weights folded in, see Convention).
    """
    if kernel is None or num_iters == 0:
        with torch.no_grad():
            top = neg_unary.amax(dim=1, keepdim=True)  # (N, 1)
        return _softmax_shifted(neg_unary - top)  # (N, K)
    shift, safe = _energy_shift(neg_unary, kernel)
    # Softmax ignores a per-pixel shift, so it is folded into the constant part of the energy.
    bias = neg_unary - shift if safe else neg_unary  # (N, K)
    q = _softmax_shifted(bias) if safe else torch.softmax(bias, dim=1)
    for _ in range(num_iters):
        # Potts: -U - (-w Kn Q), both kernels in one stacked filter (see the Convention block).
        energy = lattice_filter(q, kernel) + bias
        q = _softmax_shifted(energy) if safe else torch.softmax(energy, dim=1)
    return q


def _mean_field_inference(neg_unary: Tensor, kernel: Lattice | None, num_iters: int) -> Tensor:
    """:func:`_mean_field` without autograd, in place (``neg_unary`` is overwritten).

    Fresh multi-megabyte tensors cost page faults that can exceed the arithmetic; here the
    steps work in place where they can.
    """
    N, K = neg_unary.shape
    if kernel is None or num_iters == 0:
        shift, safe = neg_unary.amax(dim=1, keepdim=True), True
    else:
        shift, safe = _energy_shift(neg_unary, kernel)
    bias = neg_unary.sub_(shift) if safe else neg_unary  # (N, K)
    q = torch.empty_like(bias)
    row_sum = q.new_empty(N, 1)

    def softmax_into(x: Tensor, scratch: Tensor) -> None:  # q <- softmax(x); scratch may be x
        if safe:
            torch.exp(x, out=scratch)
            torch.sum(scratch, dim=1, keepdim=True, out=row_sum)
            torch.div(scratch, row_sum, out=q)
        else:
            torch.softmax(x, dim=1, out=q)

    softmax_into(bias, q)
    if kernel is None:
        return q
    for _ in range(num_iters):
        energy = lattice_filter(q, kernel).add_(bias)  # the step of _mean_field
        softmax_into(energy, energy)
    return q


def dense_crf(
    probs: Tensor,
    image: Tensor,
    num_iters: int = 5,
    sxy_gaussian: float = 3,
    compat_gaussian: float = 3,
    sxy_bilateral: float = 80,
    srgb_bilateral: float = 13,
    compat_bilateral: float = 10,
) -> Tensor:
    """Refine per-pixel class probabilities with a fully-connected CRF (mean-field inference).

    Args:
        probs (Tensor[B, K, H, W]): non-negative class probabilities (e.g. a softmax output);
            they need not sum exactly to 1. Differentiable.
        image (Tensor[B, 3, H, W]): uint8 RGB image the probabilities are for.
        num_iters: mean-field iterations (0 returns ``probs`` renormalised).
        sxy_gaussian: smoothness kernel's spatial standard deviation, pixels.
        compat_gaussian: Potts weight of the smoothness kernel.
        sxy_bilateral: appearance kernel's spatial standard deviation, pixels.
        srgb_bilateral: appearance kernel's colour standard deviation, 0-255 units.
        compat_bilateral: Potts weight of the appearance kernel.

    Returns:
        Tensor[B, K, H, W]: the CRF marginals, same dtype as ``probs``, summing to 1 over K.
    """
    params = {
        "sxy_gaussian": sxy_gaussian,
        "compat_gaussian": compat_gaussian,
        "sxy_bilateral": sxy_bilateral,
        "srgb_bilateral": srgb_bilateral,
        "compat_bilateral": compat_bilateral,
    }
    _check_inputs(probs, image, num_iters, params)
    B, K, H, W = probs.shape
    N = H * W
    work = probs if probs.dtype in (torch.float32, torch.float64) else probs.float()
    track = torch.is_grad_enabled() and work.requires_grad
    out: list[Tensor] | Tensor = [] if track else work.new_empty(B, K, H, W)
    for b in range(B):
        # -U = log p: (K, H, W) -> (K, N) -> (N, K), labels contiguous, one row per pixel
        neg_unary = work[b].reshape(K, N).clamp(min=PROB_CLIP).log().t().contiguous()  # fresh
        kernel = None
        if num_iters > 0:  # the lattices depend on the image only: built once, used every step
            smooth = _smoothness_lattice(H, W, float(sxy_gaussian), work.dtype, work.device)
            appearance = _pixel_features(image[b], float(sxy_bilateral), float(srgb_bilateral))
            kernel = stack_lattices(
                [
                    (smooth, float(compat_gaussian)),
                    (_normalised_lattice(appearance, work.dtype), float(compat_bilateral)),
                ]
            )
        if track:
            q = _mean_field(neg_unary, kernel, num_iters)  # (N, K)
        else:
            with torch.no_grad():
                q = _mean_field_inference(neg_unary, kernel, num_iters)
        if isinstance(out, list):
            out.append(q.t().reshape(K, H, W))  # (N, K) -> (K, N) -> (K, H, W)
        else:
            out[b].view(K, N).copy_(q.t())  # (N, K) -> (K, N)
    result = torch.stack(out) if isinstance(out, list) else out
    return result.to(probs.dtype)

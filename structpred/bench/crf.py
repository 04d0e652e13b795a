"""Dense CRF benchmark: structpred.ops.dense_crf against pydensecrf2's ``DenseCRF2D``, one run.

Inputs (the issue's): a 240 x 320 synthetic image (coloured discs and boxes on a gradient,
with sensor-like noise), random unaries over 21 labels (a softmax of Gaussian logits),
DeepLab's parameters (Gaussian sxy 3, compat 3; bilateral sxy 80, srgb 13, compat 10),
5 mean-field iterations. Both sides get the same ``-log p`` and build their lattices inside
the timed call, as a user calling either once per image would.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..ops.crf import PROB_CLIP, dense_crf
from .timing import Comparison, bench_main, compare

logger = logging.getLogger(__name__)


def synthetic_image(height: int, width: int, generator: torch.Generator, shapes: int = 12) -> Tensor:
    """``uint8[3, H, W]``: a colour gradient with ``shapes`` flat discs and boxes, noise std 6."""
    ys = torch.linspace(0, 1, height)[:, None].expand(height, width)
    xs = torch.linspace(0, 1, width)[None, :].expand(height, width)
    img = torch.stack([60 + 80 * xs, 90 + 60 * ys, 140 - 50 * xs * ys])  # (3, H, W)
    for i in range(shapes):
        colour = torch.randint(0, 256, (3,), generator=generator).float()
        size = torch.tensor([height, width, 0.25 * min(height, width)])
        cy, cx, r = (torch.rand(3, generator=generator) * size).tolist()
        if i % 2:
            mask = (ys * height - cy) ** 2 + (xs * width - cx) ** 2 < (r + 4) ** 2
        else:
            mask = ((ys * height - cy).abs() < r + 4) & ((xs * width - cx).abs() < 1.5 * r + 4)
        img[:, mask] = colour[:, None]
    img = img + 6 * torch.randn(img.shape, generator=generator)
    return img.round().clamp(0, 255).to(torch.uint8)


def _peer_crf(probs: Tensor, image: Tensor, num_iters: int) -> Callable[[], np.ndarray]:
    """pydensecrf2's inference on ``probs`` (``[K, H, W]``) and ``image`` (``uint8[3, H, W]``)."""
    try:  # the peer, imported only to be measured against (untyped: no stubs)
        dcrf = importlib.import_module("pydensecrf.densecrf")
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the CRF benchmark needs the peer: pip install pydensecrf2") from err
    K, H, W = probs.shape
    p = np.maximum(probs.reshape(K, H * W).numpy(), PROB_CLIP)  # the same clip as ours
    unary = np.ascontiguousarray(-np.log(p), dtype=np.float32)
    rgb = np.ascontiguousarray(image.permute(1, 2, 0).numpy())  # (3, H, W) -> (H, W, 3)

    def run() -> np.ndarray:
        crf = dcrf.DenseCRF2D(W, H, K)
        crf.setUnaryEnergy(unary)
        crf.addPairwiseGaussian(sxy=3, compat=3)
        crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=rgb, compat=10)
        return np.array(crf.inference(num_iters)).reshape(K, H, W)

    return run


def bench_dense_crf(
    height: int = 240, width: int = 320, num_labels: int = 21, num_iters: int = 5, repeats: int = 5
) -> dict[str, float]:
    """Median time of ours and of pydensecrf2 on the same input (alternating runs).

    Returns:
        ``{"ours_ms", "peer_ms", "ratio" (ours / peer), "label_agreement"}``, the last the
        fraction of pixels whose arg-max label is the same in both results.
    """
    g = torch.Generator().manual_seed(0)
    image = synthetic_image(height, width, g)
    probs = torch.softmax(torch.randn(num_labels, height, width, generator=g), dim=0)  # (K, H, W)

    def ours() -> Tensor:
        with torch.no_grad():
            return dense_crf(probs[None], image[None], num_iters=num_iters)[0]

    peer = _peer_crf(probs, image, num_iters)
    result = compare("dense_crf", ours, peer, repeats=repeats, warmup=1)
    agreement = float((ours().argmax(0) == torch.from_numpy(peer()).argmax(0)).float().mean())
    logger.info("dense_crf %dx%d: %.1f vs %.1f ms", height, width, result.ours_ms, result.peer_ms)
    return {
        "ours_ms": result.ours_ms,
        "peer_ms": result.peer_ms,
        "ratio": result.ratio,
        "label_agreement": agreement,
    }


def run(repeats: int = 5, threads: int = 2, quick: bool = False) -> list[Comparison]:
    """The suite's rows; ``quick`` shrinks inputs (for smoke tests, not for figures)."""
    torch.set_num_threads(threads)
    cases: list[tuple[str, dict[str, Any], float | None]] = [
        ("dense_crf 240x320 K21 5 iters", {"height": 240, "width": 320}, 1.0),
        ("dense_crf 120x160 K21 5 iters (extra)", {"height": 120, "width": 160}, None),
    ]
    if quick:
        cases = [("dense_crf 24x32 K21 5 iters (quick)", {"height": 24, "width": 32}, None)]
    rows = []
    for name, size, target in cases:
        r = bench_dense_crf(**size, repeats=repeats)
        label = f"{name}, agreement {r['label_agreement']:.4f}"
        rows.append(Comparison(label, r["ours_ms"], r["peer_ms"], target))
    return rows


def main(argv: list[str] | None = None) -> str:
    """CLI entry: run, print and return the Markdown table."""
    return bench_main("crf", __doc__, run, "pydensecrf2", 5, argv)


if __name__ == "__main__":
    main()

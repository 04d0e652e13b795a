"""ViT benchmark: our ``vit_tiny_patch16_224`` against timm's with identical weights, one run.

timm's ``vit_tiny_patch16_224`` (``pretrained=False``, seed 0, 1000 classes, drop path 0) is
converted to ours by :func:`structpred.models.from_timm`, so both sides hold the same tensors.
Input: a batch of 8 normalised ``3 x 224 x 224`` images (seeded normal noise; a ViT's cost does
not depend on the pixels). Cases:

- inference: ``eval()``, ``torch.no_grad()``, the batch in, logits out (timm's ``model(x)``, our
  ``model.logits(x)``: the same normalised input, no resize);
- train step: ``train()``, ``zero_grad``, logits, cross-entropy against fixed labels, backward.

Before timing, both sides must agree (logits within 1e-4, the same loss). The two sides then run
alternately (:func:`~structpred.bench.timing.compare`), medians of ``--repeats``.

Throughput: the FLOPs of one call counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix
products, convolutions and attention, forward and backward) on timm's side, divided by each
side's median time, against this machine's float32 matmul peak measured in the same run
(:func:`structpred.bench.detection.matmul_peak`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .detection import Throughput, count_gflop, format_throughput, matmul_peak
from .timing import Comparison, compare, format_table, suite_parser, suite_repeats

MODEL = "vit_tiny_patch16_224"
BATCH, IMAGE = 8, 224
QUICK_BATCH, QUICK_IMAGE, QUICK_DEPTH = 2, 64, 2
SEED = 0
TARGET = 1.0  # ours / timm, every row


def build_pair(image: int, depth: int | None) -> tuple[nn.Module, nn.Module]:
    """(timm's model, ours converted from it), both in eval mode."""
    import timm

    from ..models import from_timm

    torch.manual_seed(SEED)
    kwargs: dict[str, Any] = {} if depth is None else {"depth": depth}
    peer = timm.create_model(MODEL, pretrained=False, img_size=image, drop_path_rate=0.0, **kwargs).eval()
    return peer, from_timm(peer).eval()


def _check_logits(ours: Tensor, peer: Tensor) -> None:
    if ours.shape != peer.shape or float((ours - peer).abs().max()) > 1e-4:
        raise RuntimeError(f"{MODEL}: logits differ from timm's (max {float((ours - peer).abs().max()):.3g})")


def classifier_train_step(model: nn.Module, x: Tensor, labels: Tensor, ours: bool) -> Callable[[], Tensor]:
    """One training step of a classifier (ours through ``logits``, timm's through ``forward``): zero_grad,
    forward, cross-entropy, backward; returns the loss."""
    forward: Callable[[Tensor], Tensor] = model.logits if ours else model  # type: ignore[assignment]

    def step() -> Tensor:
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(x), labels)
        loss.backward()
        return loss.detach()

    return step


def run(
    repeats: int = 5, threads: int = 2, quick: bool = False
) -> tuple[list[Comparison], list[Throughput], float]:
    """Every case: ``(rows, throughput rows, matmul peak GFLOP/s)``; ``quick`` shrinks everything."""
    torch.set_num_threads(threads)
    peak = matmul_peak(*((1024, 3) if quick else (2048, 10)))
    batch, image = (QUICK_BATCH, QUICK_IMAGE) if quick else (BATCH, IMAGE)
    peer, ours = build_pair(image, QUICK_DEPTH if quick else None)
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(batch, 3, image, image, generator=g)
    labels = torch.randint(0, 1000, (batch,), generator=g)
    warmup = 0 if quick else 1  # plus the agreement check's call on each side
    where = f"batch {batch}, {image}x{image}"

    def infer_peer() -> Tensor:
        with torch.no_grad():
            return peer(x)

    def infer_ours() -> Tensor:
        with torch.no_grad():
            return ours.logits(x)  # type: ignore[operator]

    _check_logits(infer_ours(), infer_peer())
    rows = [compare(f"{MODEL} inference, {where}", infer_ours, infer_peer, repeats, warmup, TARGET)]
    throughput = [
        Throughput(
            f"{MODEL} inference",
            count_gflop(infer_peer),
            count_gflop(infer_ours),
            rows[-1].ours_ms,
            rows[-1].peer_ms,
            peak,
        )
    ]

    peer.train()
    ours.train()
    step_peer, step_ours = (
        classifier_train_step(peer, x, labels, False),
        classifier_train_step(ours, x, labels, True),
    )
    mine, theirs = step_ours(), step_peer()
    if not torch.allclose(mine, theirs, rtol=1e-4, atol=1e-5):
        raise RuntimeError(f"{MODEL}: training loss {float(mine):.6g}, timm's {float(theirs):.6g}")
    label = f"{MODEL} train step (zero_grad + forward + CE + backward), {where}"
    rows.append(compare(label, step_ours, step_peer, repeats, warmup, TARGET))
    throughput.append(
        Throughput(
            f"{MODEL} train step",
            count_gflop(step_peer),
            count_gflop(step_ours),
            rows[-1].ours_ms,
            rows[-1].peer_ms,
            peak,
        )
    )
    return rows, throughput, peak


def main(argv: list[str] | None = None) -> str:
    """CLI entry: run, print and return both Markdown tables."""
    import timm

    parser = suite_parser("vit", __doc__, 10, quick_help="tiny inputs, 1 repeat: a smoke run")
    args = parser.parse_args(argv)
    repeats = suite_repeats(parser, args)
    previous_threads = torch.get_num_threads()
    try:
        rows, throughput, peak = run(repeats, args.threads, args.quick)
    finally:  # the caller (a test, a notebook) gets its thread count back
        torch.set_num_threads(previous_threads)
    header = (
        f"torch {torch.__version__}, timm {timm.__version__}, {args.threads} threads, median of {repeats} "
        f"alternating runs; identical random weights (seed {SEED}), float32"
    )
    if args.quick:
        header += f" (QUICK: batch {QUICK_BATCH} at {QUICK_IMAGE} px, {QUICK_DEPTH} blocks: not figures)"
    text = "\n\n".join(
        [
            header,
            format_table(rows, "timm"),
            f"matmul peak: {peak:.1f} GFLOP/s",
            format_throughput(throughput, "timm", "case", "GFLOP"),
        ]
    )
    print(text)
    return text


if __name__ == "__main__":
    main()

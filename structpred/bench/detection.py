"""Detection benchmark: our Faster R-CNN against torchvision's with identical weights, one run.

Models: ``fasterrcnn_resnet50_fpn`` and ``fasterrcnn_mobilenet_v3_large_fpn`` (91 classes,
torchvision's defaults otherwise: ``min_size`` 800, ``max_size`` 1333, ``box_score_thresh``
0.05), built by torchvision with ``weights=None`` (seed 0) and converted to ours by
:func:`structpred.models.from_torchvision`, so both sides hold the same tensors.
``mobilenet_v3_large_320_fpn`` can be chosen too (``--models``).

Random weights see realistic, varied features only after calibration, done once on the
torchvision model before the conversion: every batch norm's running statistics are set to its
input's on the benchmark image (one pass, as the parity tests), then the classifier's weights
are scaled so that its logits have standard deviation 1 on that image. Without it MobileNetV3's
activations shrink towards zero, every class score is about 1/91 < 0.05 and post-processing
sees no detection at all.

Input: one ShapesWorld test image, 3 x 480 x 640, which both models resize to 800 x 1066 (the
row names give the sizes measured from the transform). Cases per model:

- inference: ``model.eval()``, ``torch.no_grad()``, the image in, detections out;
- train step: ``model.train()`` with the image's target (its boxes and labels), ``zero_grad``,
  forward and backward of the summed losses, ``torch.manual_seed(0)`` before each step on both
  sides (the samplers draw the same RoIs). Without pretrained weights torchvision trains every
  layer and uses plain batch norm, so ours does too.

Before timing, both sides must agree: the same number of detections with the same scores, the
same losses. The two sides then run alternately (:func:`~structpred.bench.timing.compare`),
medians of ``--repeats``.

Throughput: the FLOPs of one call, counted by ``torch.utils.flop_counter.FlopCounterMode``
(convolutions and matrix products, forward and backward) on both sides, divided by the median
times, against this machine's matmul peak measured in the same run (the median time of a
2048 x 2048 float32 ``torch.mm`` on the same threads, ``2 n^3 / t``). Both sides' GFLOP/s use
torchvision's count, the same network's useful work; ours' own count is shown beside it
(it also counts the matrix products inside our pure-PyTorch ops).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from .timing import Comparison, compare, format_table, suite_parser, suite_repeats

MODELS = {
    "resnet50_fpn": "fasterrcnn_resnet50_fpn",
    "mobilenet_v3_large_fpn": "fasterrcnn_mobilenet_v3_large_fpn",
    "mobilenet_v3_large_320_fpn": "fasterrcnn_mobilenet_v3_large_320_fpn",
}
DEFAULT_MODELS = ("resnet50_fpn", "mobilenet_v3_large_fpn")
IMAGE_SIZE = (480, 640)
QUICK_IMAGE_SIZE = (160, 213)
NUM_CLASSES = 91  # torchvision's COCO head: 90 classes + background
SEED = 0
LOGIT_STD = 1.0
TARGET = 1.0  # ours / torchvision, every row


@dataclass
class Throughput:
    """Achieved GFLOP/s of both sides for one case, against the measured matmul peak."""

    name: str
    peer_gflop: float  # torchvision's count: the work both sides' GFLOP/s are based on
    ours_gflop: float  # ours' own count (also counts matmuls inside our pure-PyTorch ops)
    ours_ms: float
    peer_ms: float
    peak_gflops: float

    @property
    def ours_gflops(self) -> float:
        return self.peer_gflop / self.ours_ms * 1e3

    @property
    def peer_gflops(self) -> float:
        return self.peer_gflop / self.peer_ms * 1e3

    @property
    def ours_percent(self) -> float:
        return 100 * self.ours_gflops / self.peak_gflops

    @property
    def peer_percent(self) -> float:
        return 100 * self.peer_gflops / self.peak_gflops


@dataclass
class Result:
    """Everything one run measured."""

    rows: list[Comparison]
    throughput: list[Throughput]
    peak_gflops: float
    peak_n: int
    peak_repeats: int


def matmul_peak(n: int = 2048, repeats: int = 10, warmup: int = 2) -> float:
    """This machine's float32 matmul GFLOP/s on torch's current threads: ``2 n^3 /`` median time."""
    g = torch.Generator().manual_seed(SEED)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    for _ in range(warmup):
        torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def calibrate(model: nn.Module, images: list[Tensor], logit_std: float = LOGIT_STD) -> None:
    """Give a randomly initialised torchvision detector realistic statistics on ``images``.

    In one pass, every (frozen) batch norm's running statistics are set to its input's and the
    classifier (``roi_heads.box_predictor.cls_score``) is scaled so its logits have std ``logit_std``.
    """
    from torchvision.ops.misc import FrozenBatchNorm2d

    def standardise(module: Any, args: tuple[Tensor, ...]) -> None:
        x = args[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)) + 1e-3)

    cls_score: Any = model.roi_heads.box_predictor.cls_score  # type: ignore[union-attr]
    seen: list[Tensor] = []
    norms = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d | nn.BatchNorm2d)]
    # One pass does both: each norm is set before it runs, so the logits already see calibrated features.
    hooks = [m.register_forward_pre_hook(standardise) for m in norms]
    hooks.append(cls_score.register_forward_hook(lambda m, args, out: seen.append(out)))
    model.eval()
    with torch.no_grad():
        model(images)
        for h in hooks:
            h.remove()
        scale = logit_std / float(torch.cat(seen).std())
        cls_score.weight.mul_(scale)
        cls_score.bias.mul_(scale)


def build_pair(name: str, image: Tensor, quick: bool) -> tuple[nn.Module, nn.Module]:
    """(torchvision model, ours) with the same calibrated weights, both in eval mode."""
    from torchvision.models import detection

    from ..models import from_torchvision

    kwargs: dict[str, Any] = {}
    if quick:  # no upscaling of the tiny image, few proposals and RoIs: the smoke run stays tiny
        kwargs = {"min_size": min(image.shape[-2:]), "max_size": max(image.shape[-2:])}
        kwargs |= {f"rpn_{k}_nms_top_n_{m}": 100 for k in ("pre", "post") for m in ("train", "test")}
        kwargs |= {"box_batch_size_per_image": 64}
    torch.manual_seed(SEED)
    peer = getattr(detection, MODELS[name])(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, **kwargs
    )
    calibrate(peer, [image])
    ours = from_torchvision(peer.eval())
    return peer, ours.eval()


def _check_detections(name: str, ours: list[dict[str, Tensor]], peer: list[dict[str, Tensor]]) -> int:
    """The number of detections; raises unless both sides found the same ones (by score)."""
    n_ours, n_peer = len(ours[0]["boxes"]), len(peer[0]["boxes"])
    if n_ours != n_peer:
        raise RuntimeError(f"{name}: structpred found {n_ours} detections, torchvision {n_peer}")
    if n_peer == 0:
        raise RuntimeError(f"{name}: no detections on either side; post-processing would not be measured")
    diff = float((ours[0]["scores"] - peer[0]["scores"]).abs().max())
    if diff > 1e-3:
        raise RuntimeError(f"{name}: detection scores disagree (max |diff| = {diff:.3g})")
    return n_peer


def _check_losses(name: str, ours: dict[str, Tensor], peer: dict[str, Tensor]) -> None:
    if set(ours) != set(peer):
        raise RuntimeError(f"{name}: loss keys differ: structpred {sorted(ours)}, torchvision {sorted(peer)}")
    for key, value in peer.items():
        if not torch.allclose(ours[key].detach(), value.detach(), rtol=1e-3, atol=1e-4):
            raise RuntimeError(
                f"{name}: {key} differs: structpred {float(ours[key]):.6g}, torchvision {float(value):.6g}"
            )


def _mkldnn_conv_flop(
    x_shape: list[int], w_shape: list[int], *args: object, out_shape: list[int], **kw: object
) -> int:
    """FLOPs of ``aten.mkldnn_convolution`` (``layers.Conv3d``'s CPU path), as torch counts a convolution."""
    return conv_flop_count(x_shape, w_shape, out_shape)


def count_gflop(fn: Callable[[], object]) -> float:
    """GFLOP of one call of ``fn`` (torch's FLOP counter; also counts the oneDNN convolutions that
    :class:`structpred.layers.conv.Conv3d` calls directly, which torch's table lacks)."""
    onednn = {torch.ops.aten.mkldnn_convolution: _mkldnn_conv_flop}
    counter = FlopCounterMode(display=False, custom_mapping=onednn)
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


def _train_step(
    model: nn.Module, images: list[Tensor], targets: list[dict[str, Tensor]], ours: bool
) -> Callable[[], dict[str, Tensor]]:
    def step() -> dict[str, Tensor]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(SEED)
        # Ours asks for losses only (predict=False), which is what torchvision's training mode computes.
        out = model(images, targets, predict=False) if ours else model(images, targets)
        losses: dict[str, Tensor] = out[1] if ours else out
        sum(losses.values()).backward()  # type: ignore[union-attr]
        return losses

    return step


def run(
    repeats: int = 5, threads: int = 2, quick: bool = False, models: tuple[str, ...] = DEFAULT_MODELS
) -> Result:
    """Run every case; ``quick`` shrinks the input and the peak matmul (smoke tests, not figures)."""
    from ..data import ShapesWorld

    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    torch.set_num_threads(threads)
    peak_n, peak_repeats = (1024, 3) if quick else (2048, 10)
    peak = matmul_peak(peak_n, peak_repeats)
    size = QUICK_IMAGE_SIZE if quick else IMAGE_SIZE
    image, target = ShapesWorld("test", size=size, num_images=1)[0]
    images = [image]
    targets = [{"boxes": target["boxes"], "labels": target["labels"]}]
    warmup = 0 if quick else 1  # plus the agreement check's call on each side
    rows: list[Comparison] = []
    throughput: list[Throughput] = []
    for name in models:
        peer, ours = build_pair(name, image, quick)
        resized = peer.transform(images)[0].image_sizes[0]  # type: ignore[operator]
        where = f"1 image {size[0]}x{size[1]} (resized to {resized[0]}x{resized[1]})"

        # Inference first: the training steps update the (plain) batch norms' running statistics.
        def infer_peer(peer: nn.Module = peer) -> list[dict[str, Tensor]]:
            with torch.no_grad():
                return peer(images)

        def infer_ours(ours: nn.Module = ours) -> list[dict[str, Tensor]]:
            with torch.no_grad():
                return ours(images)[0]

        found = _check_detections(name, infer_ours(), infer_peer())
        label = f"fasterrcnn_{name} inference, {where}, {found} detections"
        row = compare(label, infer_ours, infer_peer, repeats=repeats, warmup=warmup, target=TARGET)
        rows.append(row)
        gflop = count_gflop(infer_peer), count_gflop(infer_ours)
        throughput.append(Throughput(f"fasterrcnn_{name} inference", *gflop, row.ours_ms, row.peer_ms, peak))

        peer.train()
        ours.train()
        step_peer = _train_step(peer, images, targets, ours=False)
        step_ours = _train_step(ours, images, targets, ours=True)
        _check_losses(name, step_ours(), step_peer())
        boxes = len(target["boxes"])
        label = f"fasterrcnn_{name} train step (zero_grad + forward + backward), {where}, {boxes} boxes"
        row = compare(label, step_ours, step_peer, repeats=repeats, warmup=warmup, target=TARGET)
        rows.append(row)
        gflop = count_gflop(step_peer), count_gflop(step_ours)
        label = f"fasterrcnn_{name} train step (extra)"
        throughput.append(Throughput(label, *gflop, row.ours_ms, row.peer_ms, peak))
    return Result(rows, throughput, peak, peak_n, peak_repeats)


def format_throughput(
    rows: list[Throughput], peer: str = "torchvision", case: str = "model", gflop: str = "GFLOP per image"
) -> str:
    """A Markdown table of achieved GFLOP/s and the fraction of the matmul peak (both sides' GFLOP/s
    use the peer's FLOP count: the same work)."""
    lines = [
        f"| {case} | {gflop} ({peer} count) | GFLOP (structpred count) | structpred GFLOP/s "
        f"| {peer} GFLOP/s | structpred % of peak | {peer} % of peak |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.peer_gflop:.2f} | {r.ours_gflop:.2f} | {r.ours_gflops:.1f} "
            f"| {r.peer_gflops:.1f} | {r.ours_percent:.1f} | {r.peer_percent:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    """CLI entry: run, print and return both Markdown tables."""
    import torchvision

    parser = suite_parser("detection", __doc__, 5)
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated, from {', '.join(MODELS)} (default: {','.join(DEFAULT_MODELS)})",
    )
    args = parser.parse_args(argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        parser.error(f"--models: unknown {bad or args.models!r}; choose from {', '.join(MODELS)}")
    repeats = suite_repeats(parser, args)
    result = run(repeats, args.threads, args.quick, models)
    header = (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.threads} threads, "
        f"median of {repeats} alternating runs; identical random weights (seed {SEED}), batch norms and "
        f"classifier calibrated on the image, torchvision's default settings (box_score_thresh 0.05)"
    )
    if args.quick:
        header += " (QUICK: tiny input not resized, 100 proposals, 64 RoIs, small peak matmul: not figures)"
    peak = (
        f"matmul peak: {result.peak_n}x{result.peak_n} float32 torch.mm, {args.threads} threads, "
        f"median of {result.peak_repeats}: {result.peak_gflops:.1f} GFLOP/s"
    )
    text = "\n\n".join(
        [header, format_table(result.rows, "torchvision"), peak, format_throughput(result.throughput)]
    )
    print(text)
    return text


if __name__ == "__main__":
    main()

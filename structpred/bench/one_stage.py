"""One-stage detection benchmark: our RetinaNet and FCOS against torchvision's, identical weights.

Models (``--models``): torchvision's ``retinanet_resnet50_fpn`` and ``retinanet_resnet50_fpn_v2``
(91 logit channels, torchvision's settings, ``min_size`` 480 / ``max_size`` 640 so the network
sees the benchmark's 480 x 640 images as they are), built with ``weights=None,
weights_backbone=None`` (seed 0) and converted to ours by
:func:`structpred.models.from_torchvision`, so both sides hold the same tensors.

Random weights are made to behave before the conversion (:func:`enliven`): every batch norm's
running statistics are set to its input's on the benchmark images (one pass), and the class
biases are drawn so that a realistic share of anchors passes the 0.05 score threshold
(N(-4, 1): about 6% of (anchor, class) pairs; the background channel stays silent). Without it
every score is the prior, 0.01, and post-processing would see no candidate at all.

Cases per model, on ShapesWorld test images of 3 x 480 x 640:

- inference, batch 1 and batch 2: ``model.eval()``, ``torch.no_grad()``, images in, detections out;
- train step, batch 2: ``model.train()`` with the images' targets, ``zero_grad``, forward and
  backward of the summed losses (every layer trainable, plain batch norm, as torchvision without
  pretrained weights).

Before timing, both sides must agree (the same detections by score; the same losses). The two
sides then run alternately (:func:`~structpred.bench.timing.compare`), medians of ``--repeats``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .timing import Comparison, bench_main, compare

IMAGE_SIZE = (480, 640)
QUICK_IMAGE_SIZE = (96, 128)
NUM_CLASSES = 91  # torchvision's COCO head: 90 classes + the background channel
SEED = 0
TARGET = 1.0  # ours / torchvision, every row


def _retinanet_biases(peer: Any) -> None:
    head = peer.head.classification_head
    g = torch.Generator().manual_seed(SEED)
    bias = torch.randn(head.cls_logits.bias.shape, generator=g) - 4.0
    bias[:: head.num_classes] = -1e4  # torchvision's background channel (label 0): never fires
    head.cls_logits.bias.copy_(bias)


def _fcos_biases(peer: Any) -> None:
    # FCOS scores sqrt(sigmoid(class) * sigmoid(centre-ness)); at random weights the centre-ness is
    # ~0.5, so the same N(-4, 1) class biases put a few % of (location, class) pairs over
    # torchvision's 0.2 threshold (class probability > 0.08), and the background channel stays silent.
    _retinanet_biases(peer)


# name -> (torchvision builder name, how to give its random weights realistic scores).
MODELS: dict[str, tuple[str, Callable[[Any], None]]] = {
    "retinanet_resnet50_fpn": ("retinanet_resnet50_fpn", _retinanet_biases),
    "retinanet_resnet50_fpn_v2": ("retinanet_resnet50_fpn_v2", _retinanet_biases),
    "fcos_resnet50_fpn": ("fcos_resnet50_fpn", _fcos_biases),
}


def enliven(peer: nn.Module, images: list[Tensor], set_scores: Callable[[Any], None]) -> None:
    """Batch norms standardised on ``images`` (one pass, each set before it runs), then scores."""

    def standardise(module: Any, args: tuple[Tensor, ...]) -> None:
        x = args[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)) + 1e-3)

    norms = [m for m in peer.modules() if isinstance(m, nn.BatchNorm2d)]
    hooks = [m.register_forward_pre_hook(standardise) for m in norms]
    peer.eval()
    with torch.no_grad():
        peer(images)
        for h in hooks:
            h.remove()
        set_scores(peer)


def build_pair(name: str, images: list[Tensor]) -> tuple[nn.Module, nn.Module]:
    """(torchvision model, ours) with the same weights, both in eval mode."""
    from torchvision.models import detection

    from ..models import from_torchvision

    builder, set_scores = MODELS[name]
    H, W = images[0].shape[-2:]
    torch.manual_seed(SEED)
    peer = getattr(detection, builder)(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, min_size=min(H, W), max_size=max(H, W)
    )
    enliven(peer, images, set_scores)
    return peer, from_torchvision(peer).eval()


def _check_detections(name: str, ours: list[dict[str, Tensor]], peer: list[dict[str, Tensor]]) -> int:
    """Detections of the batch; raises unless both sides found the same ones (by score)."""
    for o, p in zip(ours, peer, strict=True):
        if len(o["scores"]) != len(p["scores"]):
            raise RuntimeError(
                f"{name}: structpred found {len(o['scores'])} detections, torchvision {len(p['scores'])}"
            )
        if len(p["scores"]) and float((o["scores"] - p["scores"]).abs().max()) > 1e-3:
            raise RuntimeError(f"{name}: detection scores disagree")
    found = sum(len(p["scores"]) for p in peer)
    if found == 0:
        raise RuntimeError(f"{name}: no detections on either side; post-processing would not be measured")
    return found


def _check_losses(name: str, ours: dict[str, Tensor], peer: dict[str, Tensor]) -> None:
    for key, value in peer.items():
        mine = ours.get(f"loss_{key}")
        if mine is None or not torch.allclose(mine.detach(), value.detach(), rtol=1e-3, atol=1e-4):
            raise RuntimeError(
                f"{name}: loss {key} differs: structpred {mine}, torchvision {float(value):.6g}"
            )


def _train_step(
    model: nn.Module, images: list[Tensor], targets: list[dict[str, Tensor]], ours: bool
) -> Callable[[], dict[str, Tensor]]:
    def step() -> dict[str, Tensor]:
        model.zero_grad(set_to_none=True)
        # Ours asks for losses only (predict=False), which is what torchvision's training mode computes.
        out = model(images, targets, predict=False) if ours else model(images, targets)
        losses: dict[str, Tensor] = out[1] if ours else out
        sum(losses.values()).backward()  # type: ignore[union-attr]
        return losses

    return step


def run(repeats: int = 5, threads: int = 2, quick: bool = False) -> list[Comparison]:
    """Every case of every model; ``quick`` shrinks the images (smoke tests, not figures)."""
    from ..data import ShapesWorld

    torch.set_num_threads(threads)
    size = QUICK_IMAGE_SIZE if quick else IMAGE_SIZE
    world = ShapesWorld("test", size=size, num_images=2)
    images = [world[i][0] for i in range(2)]
    targets = [{"boxes": world[i][1]["boxes"], "labels": world[i][1]["labels"]} for i in range(2)]
    warmup = 0 if quick else 1  # plus the agreement check's call on each side
    where = f"{size[0]}x{size[1]}"
    rows: list[Comparison] = []
    for name in MODELS:
        peer, ours = build_pair(name, images)
        # Inference first: the training steps update the (plain) batch norms' running statistics.
        for batch in (images[:1], images):

            def infer_peer(peer: nn.Module = peer, batch: list[Tensor] = batch) -> list[dict[str, Tensor]]:
                with torch.no_grad():
                    return peer(batch)

            def infer_ours(ours: nn.Module = ours, batch: list[Tensor] = batch) -> list[dict[str, Tensor]]:
                with torch.no_grad():
                    return ours(batch)[0]

            found = _check_detections(name, infer_ours(), infer_peer())
            label = f"{name} inference, batch {len(batch)}, {where}, {found} detections"
            rows.append(compare(label, infer_ours, infer_peer, repeats=repeats, warmup=warmup, target=TARGET))
        peer.train()
        ours.train()
        step_peer = _train_step(peer, images, targets, ours=False)
        step_ours = _train_step(ours, images, targets, ours=True)
        _check_losses(name, step_ours(), step_peer())
        boxes = sum(len(t["boxes"]) for t in targets)
        label = f"{name} train step (zero_grad + forward + backward), batch 2, {where}, {boxes} boxes"
        rows.append(compare(label, step_ours, step_peer, repeats=repeats, warmup=warmup, target=TARGET))
    return rows


def main(argv: list[str] | None = None) -> str:
    """CLI entry: run and print the Markdown table."""
    return bench_main("one_stage", __doc__, run, "torchvision", 5, argv)


if __name__ == "__main__":
    main()

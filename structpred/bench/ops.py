"""Ops benchmark: structpred.ops against torchvision.ops on the same inputs, one run.

Inputs (the issue's): nms on 2,000 boxes at IoU 0.7; batched_nms on 2,000 boxes in 80
classes; box_iou 2,000 x 2,000; roi_align and roi_pool of 512 RoIs on ``[2, 256, 50, 68]``
(a stride-16 map of an 800 x 1088 image), 7 x 7, sampling 2, aligned. Boxes are
detection-like: jittered copies around object centres, so NMS has work to do.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import ops
from ..layers import MultiScaleRoIAlign
from .timing import Comparison, bench_main, compare

IMAGE_H, IMAGE_W = 800, 1088


def detections(n: int, generator: torch.Generator, objects: int = 200) -> torch.Tensor:
    """``n`` xyxy boxes clustered around ``objects`` random objects in an 800 x 1088 image."""
    size = 16 + torch.rand(objects, 2, generator=generator) * 400  # (O, 2) w, h
    centre = torch.rand(objects, 2, generator=generator) * torch.tensor([IMAGE_W, IMAGE_H])
    which = torch.randint(0, objects, (n,), generator=generator)
    jitter = 1 + 0.25 * torch.randn(n, 2, generator=generator)
    wh = size[which] * jitter.abs().clamp(min=0.3)
    c = centre[which] + 0.15 * size[which] * torch.randn(n, 2, generator=generator)
    boxes = torch.cat([c - wh / 2, c + wh / 2], dim=1)
    return ops.clip_boxes_to_image(boxes, (IMAGE_H, IMAGE_W))


def run(repeats: int = 15, threads: int = 2, quick: bool = False) -> list[Comparison]:
    """Run every case; ``quick`` shrinks inputs (for smoke tests, not for figures)."""
    import torchvision.ops as tv  # the peer, imported only to be measured against

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    n = 200 if quick else 2000
    boxes = detections(n, g)
    scores = torch.rand(n, generator=g)
    classes = torch.randint(0, 80, (n,), generator=g)
    feats = torch.randn(2, 32 if quick else 256, 50, 68, generator=g)
    k = 64 if quick else 512
    rois = torch.cat([torch.randint(0, 2, (k, 1), generator=g).float(), detections(k, g)], 1)
    feats_grad = feats.clone().requires_grad_()
    # FPN P2-P5 of two 800 x 1088 images, 512 proposals each (Faster R-CNN's box head input).
    fpn = {str(i): torch.randn(2, feats.shape[1], 200 >> i, 272 >> i, generator=g) for i in range(4)}
    proposals = [detections(k, g), detections(k, g)]
    image_sizes = [(IMAGE_H, IMAGE_W)] * 2
    ours_pooler = MultiScaleRoIAlign(list(fpn), 7, 2)
    peer_pooler = tv.MultiScaleRoIAlign(list(fpn), 7, 2)

    def fwd_bwd(fn: Callable[..., torch.Tensor], *args: object) -> Callable[[], None]:
        def step() -> None:
            feats_grad.grad = None
            fn(feats_grad, rois, *args).sum().backward()

        return step

    cases: list[tuple[str, Callable[[], object], Callable[[], object], float | None]] = [
        ("nms (2,000 boxes, IoU 0.7)",
         lambda: ops.nms(boxes, scores, 0.7), lambda: tv.nms(boxes, scores, 0.7), 1.5),
        ("batched_nms (2,000 boxes, 80 classes, IoU 0.5)",
         lambda: ops.batched_nms(boxes, scores, classes, 0.5),
         lambda: tv.batched_nms(boxes, scores, classes, 0.5), 1.5),
        ("box_iou (2,000 x 2,000)", lambda: ops.box_iou(boxes, boxes), lambda: tv.box_iou(boxes, boxes), 1.0),
        ("roi_align (512 RoIs, 7x7, sampling 2, aligned)",
         lambda: ops.roi_align(feats, rois, 7, 1 / 16, 2, True),
         lambda: tv.roi_align(feats, rois, 7, 1 / 16, 2, True), 1.0),
        ("roi_pool (512 RoIs, 7x7)",
         lambda: ops.roi_pool(feats, rois, 7, 1 / 16), lambda: tv.roi_pool(feats, rois, 7, 1 / 16), 1.0),
        ("roi_align adaptive sampling (extra)",
         lambda: ops.roi_align(feats, rois, 7, 1 / 16, -1, False),
         lambda: tv.roi_align(feats, rois, 7, 1 / 16, -1, False), None),
        ("MultiScaleRoIAlign, FPN P2-P5, 2 x 512 RoIs (extra)",
         lambda: ours_pooler(fpn, proposals, image_sizes),
         lambda: peer_pooler(fpn, proposals, image_sizes), None),
        ("roi_align forward+backward (extra)",
         fwd_bwd(ops.roi_align, 7, 1 / 16, 2, True), fwd_bwd(tv.roi_align, 7, 1 / 16, 2, True), None),
        ("roi_pool forward+backward (extra)",
         fwd_bwd(ops.roi_pool, 7, 1 / 16), fwd_bwd(tv.roi_pool, 7, 1 / 16), None),
    ]
    return [compare(name, a, b, repeats=repeats, target=t) for name, a, b, t in cases]


def main(argv: list[str] | None = None) -> str:
    """CLI entry: run, print and return the Markdown table."""
    return bench_main("ops", __doc__, run, "torchvision", 15, argv)


if __name__ == "__main__":
    main()

"""Ops benchmark: structpred.ops against torchvision.ops on the same inputs, one run.

NMS (issue 15): ``nms`` at IoU 0.5 on nine box distributions in an 800 x 1088 image --
uniform (sides 8-128 px), clustered (jittered copies around 200 objects), dense (the same
around 5 objects: most boxes are dropped), tiny (sides 1-8 px), an adversarial chain (10 px
boxes 2 px apart, scores falling along the chain: each box overlaps the next, every decision
depends on the previous one), identical (one box repeated), disjoint (a grid: nothing
dropped), huge (uniform plus one box covering the image) and ties (clustered, three score
levels) -- at 200, 1,000, 2,000, 5,000 and 10,000 boxes, uniform and dense also at 0, 1 and
10 (fixed cost); ``batched_nms`` on clustered and uniform boxes in 80 classes and dense,
identical and tied boxes in 6. Every row checks that both sides keep the same indices before
timing.

Other inputs: box_iou 2,000 x 2,000; roi_align and roi_pool of 512 RoIs on ``[2, 256, 50, 68]``
(a stride-16 map of an 800 x 1088 image), 7 x 7, sampling 2, aligned. Boxes are
detection-like: jittered copies around object centres, so NMS has work to do.

Losses and IoU variants (issue 16): ``sigmoid_focal_loss`` on ``[N, 80]`` logits (N anchors,
COCO's 80 classes; 1 % positives), the GIoU / DIoU / CIoU losses on N matched box pairs
(``reduction='mean'``), N = 1, 1,000 and 100,000, forward and forward + backward (training's
use); the pairwise GIoU / DIoU / CIoU on 1,000 x 1,000 boxes; ``masks_to_boxes`` on
100 x 512 x 512 and 1 x 8 x 8 bool masks. Every row checks both sides agree before timing.
"""

from __future__ import annotations

import functools
import math
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


NMS_THRESHOLD = 0.5
# Box counts: empty, one and ten boxes (fixed cost), typical (200-2,000), large (5,000-10,000).
TINY_SIZES = (0, 1, 10)
NMS_SIZES = (200, 1000, 2000, 5000, 10000)
TINY_KINDS = ("uniform", "dense")
# nms: every distribution at NMS_SIZES (and TINY_SIZES for TINY_KINDS).
NMS_KINDS = ("uniform", "clustered", "dense", "tiny", "chain", "identical", "disjoint", "huge", "ties")
# batched_nms: (distribution, number of classes); the dense clusters at the fixed-cost sizes too.
BATCHED_KINDS = (("clustered", 80), ("dense", 6), ("uniform", 80), ("identical", 6), ("ties", 6))


def nms_boxes(kind: str, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` boxes ``[n, 4]`` and scores ``[n]`` of one NMS distribution (see the module docstring)."""
    scores = torch.rand(n, generator=generator)
    if kind == "clustered":
        return detections(n, generator), scores
    if kind == "dense":  # many detections of very few objects: long runs of suppressed boxes
        return detections(n, generator, objects=5), scores
    if kind == "ties":  # clustered boxes, three score levels: the order among equals decides
        return detections(n, generator), (scores * 3).floor() / 3
    if kind == "chain":
        x = torch.arange(n, dtype=torch.float32) * 2  # IoU(i, i+1) = 8/12, IoU(i, i+2) = 6/14
        zeros = torch.zeros(n)
        return torch.stack([x, zeros, x + 10, zeros + 10], 1), torch.linspace(1, 0, n)
    if kind == "identical":  # one box n times: the best one drops all the others
        box = torch.tensor([[100.0, 120.0, 300.0, 260.0]])
        return box.expand(n, 4).clone(), scores
    if kind == "disjoint":  # a grid of cells, one box inside each: nothing is dropped
        cols = max(1, math.ceil(math.sqrt(n * IMAGE_W / IMAGE_H)))
        cell = IMAGE_W / cols
        k = torch.arange(n, dtype=torch.float32)
        xy = torch.stack([k % cols, torch.div(k, cols, rounding_mode="floor")], 1) * cell  # (n, 2)
        return torch.cat([xy, xy + 0.8 * cell], 1), scores
    low, high = {"uniform": (8.0, 128.0), "tiny": (1.0, 8.0), "huge": (8.0, 128.0)}[kind]
    wh = low + torch.rand(n, 2, generator=generator) * (high - low)  # (n, 2)
    xy = torch.rand(n, 2, generator=generator) * (torch.tensor([IMAGE_W, IMAGE_H]) - wh)
    boxes = torch.cat([xy, xy + wh], 1)
    if kind == "huge" and n:  # one box covering the image: its x-interval meets every box
        boxes[n // 2] = torch.tensor([0.0, 0.0, IMAGE_W, IMAGE_H])
    return boxes, scores


def nms_cases(
    sizes: tuple[int, ...] = NMS_SIZES,
    kinds: tuple[str, ...] = NMS_KINDS,
    batched: tuple[tuple[str, int], ...] = BATCHED_KINDS,
    tiny: tuple[int, ...] = TINY_SIZES,
) -> list[tuple[str, Callable[[], object], Callable[[], object], int]]:
    """``(name, ours, peer, n)`` for every NMS row; raises if the kept indices ever differ.

    The ``tiny`` sizes (fixed cost) are added for the uniform and dense distributions.
    """
    import torchvision.ops as tv

    g = torch.Generator().manual_seed(1)
    cases: list[tuple[str, Callable[[], object], Callable[[], object], int]] = []
    for kind in kinds:
        for n in (tiny if kind in TINY_KINDS else ()) + sizes:
            boxes, scores = nms_boxes(kind, n, g)
            if not torch.equal(ops.nms(boxes, scores, NMS_THRESHOLD), tv.nms(boxes, scores, NMS_THRESHOLD)):
                raise AssertionError(f"nms differs from torchvision on {kind} boxes, n={n}")
            cases.append(
                (
                    f"nms {kind} ({n:,} boxes)",
                    functools.partial(ops.nms, boxes, scores, NMS_THRESHOLD),
                    functools.partial(tv.nms, boxes, scores, NMS_THRESHOLD),
                    n,
                )
            )
    for kind, labels in batched:
        for n in (tiny if kind in TINY_KINDS else ()) + sizes:
            boxes, scores = nms_boxes(kind, n, g)
            classes = torch.randint(0, labels, (n,), generator=g)
            args = (boxes, scores, classes, NMS_THRESHOLD)
            # torchvision's two paths (offsets below 4,000 coordinates, a loop above) order ties
            # differently; the kept set is what both define
            if not torch.equal(ops.batched_nms(*args).sort().values, tv.batched_nms(*args).sort().values):
                raise AssertionError(f"batched_nms differs from torchvision on {kind} boxes, n={n}")
            cases.append(
                (
                    f"batched_nms {kind}, {labels} classes ({n:,} boxes)",
                    functools.partial(ops.batched_nms, *args),
                    functools.partial(tv.batched_nms, *args),
                    n,
                )
            )
    return cases


LOSS_SIZES = (1, 1000, 100000)
IOU_LOSSES = {
    "generalized_box_iou_loss": "GIoU",
    "distance_box_iou_loss": "DIoU",
    "complete_box_iou_loss": "CIoU",
}
_Case = tuple[str, Callable[[], object], Callable[[], object]]


def _checked(name: str, ours: Callable[[], torch.Tensor], peer: Callable[[], torch.Tensor]) -> _Case:
    """The row ``(name, ours, peer)`` after checking both give the same tensor (1e-5)."""
    def message(detail: str) -> str:
        return f"{name} differs from torchvision: {detail}"

    torch.testing.assert_close(ours(), peer(), rtol=1e-5, atol=1e-5, equal_nan=True, msg=message)
    return name, ours, peer


def _fwd_bwd(loss: Callable[..., torch.Tensor], first: torch.Tensor, *args: object) -> Callable[[], None]:
    """A step: ``loss(first (with grad), *args)``, reduced to a scalar, then backward."""
    leaf = first.clone().requires_grad_()

    def step() -> None:
        leaf.grad = None
        loss(leaf, *args).sum().backward()

    return step


def loss_cases(quick: bool = False) -> list[_Case]:
    """``(name, ours, peer)`` for the focal and IoU losses, the pairwise IoU variants and
    ``masks_to_boxes`` (see the module docstring); ``quick`` shrinks every input."""
    import torchvision.ops as tv

    g = torch.Generator().manual_seed(2)
    cases: list[_Case] = []
    for n in (100,) if quick else LOSS_SIZES:
        logits = torch.randn(n, 80, generator=g) - 2
        targets = (torch.rand(n, 80, generator=g) < 0.01).float()
        args = (targets, 0.25, 2.0, "sum")
        cases.append(
            _checked(
                f"sigmoid_focal_loss ({n:,} x 80)",
                functools.partial(ops.sigmoid_focal_loss, logits, *args),
                functools.partial(tv.sigmoid_focal_loss, logits, *args),
            )
        )
        cases.append(
            (
                f"sigmoid_focal_loss forward+backward ({n:,} x 80)",
                _fwd_bwd(ops.sigmoid_focal_loss, logits, *args),
                _fwd_bwd(tv.sigmoid_focal_loss, logits, *args),
            )
        )
        pred, gt = detections(n, g), detections(n, g)
        for fn, short in IOU_LOSSES.items():
            ours, peer = getattr(ops, fn), getattr(tv, fn)
            cases.append(
                _checked(
                    f"{fn} ({n:,} pairs)",
                    functools.partial(ours, pred, gt, "mean"),
                    functools.partial(peer, pred, gt, "mean"),
                )
            )
            cases.append(
                (
                    f"{short} loss forward+backward ({n:,} pairs)",
                    _fwd_bwd(ours, pred, gt, "mean"),
                    _fwd_bwd(peer, pred, gt, "mean"),
                )
            )
    m = 100 if quick else 1000
    boxes1, boxes2 = detections(m, g), detections(m, g)
    for fn in ("generalized_box_iou", "distance_box_iou", "complete_box_iou"):
        cases.append(
            _checked(
                f"{fn} ({m:,} x {m:,})",
                functools.partial(getattr(ops, fn), boxes1, boxes2),
                functools.partial(getattr(tv, fn), boxes1, boxes2),
            )
        )
    for count, side in ((10, 64),) if quick else ((100, 512), (1, 8)):
        masks = torch.rand(count, side, side, generator=g) < 1 / side  # ~side pixels a mask
        if count > 1:
            masks[-1] = False  # one empty mask among several
        cases.append(
            _checked(
                f"masks_to_boxes ({count} x {side} x {side})",
                functools.partial(ops.masks_to_boxes, masks),
                functools.partial(tv.masks_to_boxes, masks),
            )
        )
    return cases


def run(repeats: int = 15, threads: int = 2, quick: bool = False) -> list[Comparison]:
    """Run every case; ``quick`` shrinks inputs (for smoke tests, not for figures)."""
    import torchvision.ops as tv  # the peer, imported only to be measured against

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    n = 200 if quick else 2000
    boxes = detections(n, g)
    torch.rand(n, generator=g), torch.randint(0, 80, (n,), generator=g)  # keep the inputs below as before
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

    # The big NMS inputs take tens of ms per call: fewer runs, still interleaved.
    rows = [
        compare(name, a, b, repeats=repeats if n < 5000 else max(3, repeats // 3), target=1.0)
        for name, a, b, n in nms_cases((200, 1000) if quick else NMS_SIZES)
    ]
    cases: list[tuple[str, Callable[[], object], Callable[[], object], float | None]] = [
        ("box_iou (2,000 x 2,000)", lambda: ops.box_iou(boxes, boxes), lambda: tv.box_iou(boxes, boxes), 1.0),
        (
            "roi_align (512 RoIs, 7x7, sampling 2, aligned)",
            lambda: ops.roi_align(feats, rois, 7, 1 / 16, 2, True),
            lambda: tv.roi_align(feats, rois, 7, 1 / 16, 2, True),
            1.0,
        ),
        (
            "roi_pool (512 RoIs, 7x7)",
            lambda: ops.roi_pool(feats, rois, 7, 1 / 16),
            lambda: tv.roi_pool(feats, rois, 7, 1 / 16),
            1.0,
        ),
        (
            "roi_align adaptive sampling (extra)",
            lambda: ops.roi_align(feats, rois, 7, 1 / 16, -1, False),
            lambda: tv.roi_align(feats, rois, 7, 1 / 16, -1, False),
            None,
        ),
        (
            "MultiScaleRoIAlign, FPN P2-P5, 2 x 512 RoIs (extra)",
            lambda: ours_pooler(fpn, proposals, image_sizes),
            lambda: peer_pooler(fpn, proposals, image_sizes),
            None,
        ),
        (
            "roi_align forward+backward (extra)",
            fwd_bwd(ops.roi_align, 7, 1 / 16, 2, True),
            fwd_bwd(tv.roi_align, 7, 1 / 16, 2, True),
            None,
        ),
        (
            "roi_pool forward+backward (extra)",
            fwd_bwd(ops.roi_pool, 7, 1 / 16),
            fwd_bwd(tv.roi_pool, 7, 1 / 16),
            None,
        ),
    ]
    rows += [compare(name, a, b, repeats=repeats, target=t) for name, a, b, t in cases]
    # The 100,000-row losses take ~0.1-0.5 s per call: fewer runs, still interleaved.
    return rows + [
        compare(name, a, b, repeats=max(3, repeats // 3) if "100,000" in name else repeats)
        for name, a, b in loss_cases(quick)
    ]


def main(argv: list[str] | None = None) -> str:
    """CLI entry: run, print and return the Markdown table."""
    return bench_main("ops", __doc__, run, "torchvision", 15, argv)


if __name__ == "__main__":
    main()

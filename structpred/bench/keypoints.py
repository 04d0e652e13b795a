"""Keypoint R-CNN benchmark: our ``keypointrcnn_resnet50_fpn`` against torchvision's, same weights.

torchvision's ``keypointrcnn_resnet50_fpn`` (2 classes: person + background, 17 keypoints,
``weights=None``, seed 0, its default transform: ``min_size`` 640..800 drawn in training, 800 in
eval, ``max_size`` 1333; its 8 x 512 keypoint convs) is calibrated on the benchmark image as in
:mod:`structpred.bench.detection` (batch norms standardised, classifier logits scaled to std 1)
and converted by :func:`structpred.models.from_torchvision`, so both sides hold the same tensors.

Input: one ShapesWorld test image (default 3 x 480 x 640, resized to 800 x 1066 by both), batch 1.
Its target for the training step: its boxes, all labelled 1, each with 17 keypoints drawn
uniformly inside the box (seeded, all visible). Cases, each timed alternately
(:func:`~structpred.bench.timing.compare`, medians of ``repeats`` after ``warmup`` runs):

- inference: ``eval``, ``no_grad``, the image in, boxes + keypoints out (the keypoint head runs
  on every detection, at most ``detections_per_img``);
- train step: ``train`` mode, ``torch.manual_seed(0)`` before each step on both sides (the same
  training size and sampled RoIs), ``zero_grad``, forward, backward of the summed losses.

Before timing both sides must agree: the same detections, keypoints within 1e-3 px, keypoint
scores within 1e-3, and the same training losses (relative 1e-4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .mask_rcnn import (
    SEED,
    build_pair,
    check_detections,
    inference_pair,
    parser,
    report,
    summary,
    with_threads,
)
from .timing import Comparison, compare

NUM_CLASSES = 2  # torchvision's COCO person head: person + background
NUM_KEYPOINTS = 17
TARGET = 1.0  # ours / torchvision, every row


def keypoint_target(boxes: Tensor, num_keypoints: int = NUM_KEYPOINTS, seed: int = SEED) -> dict[str, Tensor]:
    """A training target for ``boxes [N, 4]``: label 1, keypoints uniform inside each box, visible."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(boxes.shape[0], num_keypoints, 2, generator=g)  # (N, K, 2) in [0, 1)
    xy = boxes[:, None, :2] + u * (boxes[:, None, 2:] - boxes[:, None, :2])  # (N, K, 2) pixels
    keypoints = torch.cat([xy, torch.full_like(xy[..., :1], 2.0)], 2)  # (N, K, 3)
    return {"boxes": boxes, "labels": torch.ones(boxes.shape[0], dtype=torch.int64), "keypoints": keypoints}


def _check(ours: dict[str, Tensor], peer: dict[str, Tensor]) -> float:
    """Max |keypoint difference| (px); raises unless both found the same detections and keypoints."""
    score_diff = check_detections(ours, peer)
    kp_diff = float((ours["keypoints"] - peer["keypoints"]).abs().max())
    kp_score_diff = float((ours["keypoints_scores"] - peer["keypoints_scores"]).abs().max())
    if score_diff > 1e-3 or kp_diff > 1e-3 or kp_score_diff > 1e-3:
        raise RuntimeError(
            f"predictions disagree: scores by {score_diff:.3g}, keypoints by {kp_diff:.3g} px, "
            f"keypoint scores by {kp_score_diff:.3g}"
        )
    return kp_diff


def _train_step(model: nn.Module, image: Tensor, target: dict[str, Tensor], ours: bool) -> dict[str, Tensor]:
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    if ours:
        _, losses = model([image], [target], predict=False)
    else:
        losses = model([image], [target])
    sum(losses.values()).backward()
    return {k: v.detach() for k, v in losses.items()}


def bench_keypoint_rcnn(
    height: int = 480,
    width: int = 640,
    repeats: int = 3,
    threads: int | None = None,
    warmup: int = 1,
    cases: tuple[str, ...] = ("inference", "train step"),
    **settings: Any,
) -> dict[str, Any]:
    """Time both Keypoint R-CNNs on one ``height x width`` image (see the module docstring).

    Args:
        threads: torch threads for the run (None: leave torch's setting).
        cases: which of ``"inference"``, ``"train step"`` to time.
        settings: torchvision builder settings (``min_size``, ``box_detections_per_img``, ...);
            torchvision's defaults otherwise.
    Returns:
        ``{"image", "resized", "detections", "threads", "repeats", "max_keypoint_diff", "rows"}``
        and per case ``{case}_ratio`` (ours / torchvision); ``rows`` are :class:`Comparison` rows.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    return with_threads(threads, lambda: _run(height, width, repeats, warmup, cases, settings))


def _run(
    height: int, width: int, repeats: int, warmup: int, cases: tuple[str, ...], settings: dict[str, Any]
) -> dict[str, Any]:
    from ..data import ShapesWorld

    image, gt = ShapesWorld("test", size=(height, width), num_images=1)[0]
    peer, ours = build_pair(
        "keypointrcnn_resnet50_fpn", image, num_classes=NUM_CLASSES, num_keypoints=NUM_KEYPOINTS, **settings
    )
    resized = tuple(peer.transform([image])[0].image_sizes[0])  # type: ignore[operator]
    infer_ours, infer_peer = inference_pair(ours, peer, image)
    theirs = infer_peer()
    kp_diff = _check(infer_ours(), theirs)
    target = keypoint_target(gt["boxes"])
    steps: dict[str, Callable[[], object]] = {
        "ours": lambda: _train_step(ours, image, target, True),
        "peer": lambda: _train_step(peer, image, target, False),
    }
    rows = []
    if "inference" in cases:
        rows.append(
            compare("inference", infer_ours, infer_peer, repeats=repeats, warmup=warmup, target=TARGET)
        )
    if "train step" in cases:
        got, want = _train_step(ours, image, target, True), _train_step(peer, image, target, False)
        for key, value in want.items():
            if not torch.allclose(got[key], value, rtol=1e-4, atol=1e-5):
                raise RuntimeError(f"training losses disagree: {key} {float(got[key])} vs {float(value)}")
        rows.append(
            compare("train step", steps["ours"], steps["peer"], repeats=repeats, warmup=warmup, target=TARGET)
        )
    return summary(
        (height, width), resized, len(theirs["boxes"]), rows, repeats=repeats, max_keypoint_diff=kp_diff
    )


def _label(result: dict[str, Any], row: Comparison) -> str:
    (h, w), (rh, rw), n = result["image"], result["resized"], result["detections"]
    if row.name == "inference":
        return f"keypointrcnn_resnet50_fpn inference, 1 image {h}x{w} (resized to {rh}x{rw}), {n} detections"
    return f"keypointrcnn_resnet50_fpn train step (forward + backward), 1 image {h}x{w}"


def main(argv: list[str] | None = None) -> str:
    """CLI entry (``structpred bench keypoints``): run, print and return the Markdown table."""
    cli = parser("keypoints", __doc__, repeats=3)
    cli.add_argument("--detections", type=int, default=100, help="box_detections_per_img (torchvision: 100)")
    cli.add_argument("--only", choices=("inference", "train step"), help="time one case only")
    args = cli.parse_args(argv)
    settings: dict[str, Any] = {"box_detections_per_img": args.detections}
    warmup = 1
    if args.quick:
        args.height, args.width, args.repeats, warmup = 96, 128, 1, 0
        settings |= {"min_size": 96, "max_size": 128, "box_detections_per_img": 10}
        settings |= {"rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 100}
    cases = (args.only,) if args.only else ("inference", "train step")
    result = bench_keypoint_rcnn(
        args.height, args.width, args.repeats, args.threads, warmup=warmup, cases=cases, **settings
    )
    return report(
        result, _label, f"; max |keypoint difference| {result['max_keypoint_diff']:.2g} px", args.quick
    )


if __name__ == "__main__":
    main()

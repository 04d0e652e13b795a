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

import argparse
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .detection import calibrate
from .timing import Comparison, compare, format_table

NUM_CLASSES = 2  # torchvision's COCO person head: person + background
NUM_KEYPOINTS = 17
SEED = 0
TARGET = 1.0  # ours / torchvision, every row


def build_pair(image: Tensor, **settings: Any) -> tuple[nn.Module, nn.Module]:
    """(torchvision's Keypoint R-CNN, ours) with the same calibrated random weights, in eval mode.

    ``settings`` go to torchvision's builder (e.g. ``min_size``); ours copies them by conversion.
    """
    from torchvision.models import detection

    from ..models import from_torchvision

    torch.manual_seed(SEED)
    peer = detection.keypointrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, num_keypoints=NUM_KEYPOINTS, **settings
    )
    calibrate(peer, [image])
    return peer.eval(), from_torchvision(peer.eval()).eval()


def keypoint_target(boxes: Tensor, num_keypoints: int = NUM_KEYPOINTS, seed: int = SEED) -> dict[str, Tensor]:
    """A training target for ``boxes [N, 4]``: label 1, keypoints uniform inside each box, visible."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(boxes.shape[0], num_keypoints, 2, generator=g)  # (N, K, 2) in [0, 1)
    xy = boxes[:, None, :2] + u * (boxes[:, None, 2:] - boxes[:, None, :2])  # (N, K, 2) pixels
    keypoints = torch.cat([xy, torch.full_like(xy[..., :1], 2.0)], 2)  # (N, K, 3)
    return {"boxes": boxes, "labels": torch.ones(boxes.shape[0], dtype=torch.int64), "keypoints": keypoints}


def _check(ours: dict[str, Tensor], peer: dict[str, Tensor]) -> float:
    """Max |keypoint difference| (px); raises unless both found the same detections and keypoints."""
    n_ours, n_peer = len(ours["boxes"]), len(peer["boxes"])
    if n_ours != n_peer or n_peer == 0:
        raise RuntimeError(f"detections: structpred {n_ours}, torchvision {n_peer} (need equal, > 0)")
    score_diff = float((ours["scores"] - peer["scores"]).abs().max())
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
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(height, width, repeats, warmup, cases, settings)
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    height: int, width: int, repeats: int, warmup: int, cases: tuple[str, ...], settings: dict[str, Any]
) -> dict[str, Any]:
    from ..data import ShapesWorld

    image, gt = ShapesWorld("test", size=(height, width), num_images=1)[0]
    peer, ours = build_pair(image, **settings)
    resized = tuple(peer.transform([image])[0].image_sizes[0])  # type: ignore[operator]

    def infer_ours() -> dict[str, Tensor]:
        with torch.no_grad():
            return ours.eval()([image])[0][0]

    def infer_peer() -> dict[str, Tensor]:
        with torch.no_grad():
            return peer.eval()([image])[0]

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
    out: dict[str, Any] = {
        "image": (height, width),
        "resized": resized,
        "detections": len(theirs["boxes"]),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "max_keypoint_diff": kp_diff,
        "rows": rows,
    }
    for row in rows:
        out[f"{row.name}_ratio"] = row.ratio
    return out


def _label(result: dict[str, Any], row: Comparison) -> str:
    (h, w), (rh, rw), n = result["image"], result["resized"], result["detections"]
    if row.name == "inference":
        return f"keypointrcnn_resnet50_fpn inference, 1 image {h}x{w} (resized to {rh}x{rw}), {n} detections"
    return f"keypointrcnn_resnet50_fpn train step (forward + backward), 1 image {h}x{w}"


def main(argv: list[str] | None = None) -> str:
    """CLI entry (``structpred bench keypoints``): run, print and return the Markdown table."""
    import torchvision

    parser = argparse.ArgumentParser(
        prog="structpred bench keypoints",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--detections", type=int, default=100, help="box_detections_per_img (torchvision: 100)"
    )
    parser.add_argument("--only", choices=("inference", "train step"), help="time one case only")
    parser.add_argument(
        "--quick", action="store_true", help="96x128 not resized, 10 detections, 1 repeat: a smoke run"
    )
    args = parser.parse_args(argv)
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
    rows = [Comparison(_label(result, r), r.ours_ms, r.peer_ms, r.target) for r in result["rows"]]
    header = (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {result['threads']} threads, "
        f"median of {result['repeats']} alternating runs; identical random weights (seed {SEED}) calibrated "
        f"on the image; max |keypoint difference| {result['max_keypoint_diff']:.2g} px"
    )
    if args.quick:
        header += " (QUICK: tiny input, 100 proposals, 10 detections: not figures)"
    text = f"{header}\n\n{format_table(rows, 'torchvision')}"
    print(text)
    return text


if __name__ == "__main__":
    main()

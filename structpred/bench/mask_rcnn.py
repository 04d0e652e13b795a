"""Mask R-CNN inference benchmark: our ``maskrcnn_resnet50_fpn`` against torchvision's, same weights.

torchvision's ``maskrcnn_resnet50_fpn`` (91 classes, ``weights=None``, seed 0, its default
transform: ``min_size`` 800, ``max_size`` 1333) is calibrated on the benchmark image as in
:mod:`structpred.bench.detection` (batch norms standardised, classifier logits scaled to std 1)
and converted by :func:`structpred.models.from_torchvision`. ``box_score_thresh`` is
lowered to 0.01, so post-processing keeps its cap of ``detections_per_img`` = 100 detections and
the mask path (RoIAlign 14 x 14 of 100 boxes, the mask head, pasting 100 masks into the image)
does full work.

Input: one ShapesWorld test image (default 3 x 480 x 640, resized to 800 x 1066 by both).
Before timing both sides must agree: the same detections (count, scores) and the same mask
probabilities to 1e-3. Cases, each timed alternately (:func:`~structpred.bench.timing.compare`,
medians of ``repeats`` after one warm-up): the whole inference (``eval``, ``no_grad``, image in,
boxes + pasted masks out), and pasting alone (``paste_masks_in_image`` of the 100 detections'
28 x 28 probabilities into the original image: ours against torchvision's).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from .detection import calibrate
from .timing import Comparison, compare, format_table

NUM_CLASSES = 91  # torchvision's COCO head: 90 classes + background
SEED = 0
SCORE_THRESH = 0.01  # low enough that the 100-detection cap is reached
TARGET = 1.0  # ours / torchvision
Result = TypeVar("Result")


# ------------------------------------------- shared with the Keypoint R-CNN benchmark (bench/keypoints)


def build_pair(builder: str, image: Tensor, **settings: Any) -> tuple[nn.Module, nn.Module]:
    """(torchvision's ``detection.<builder>``, ours) with the same calibrated random weights (seed
    :data:`SEED`), both in eval mode.

    ``settings`` go to torchvision's builder (e.g. ``min_size``); ours copies them by conversion.
    """
    from torchvision.models import detection

    from ..models import from_torchvision

    torch.manual_seed(SEED)
    peer = getattr(detection, builder)(weights=None, weights_backbone=None, **settings)
    calibrate(peer, [image])
    return peer.eval(), from_torchvision(peer.eval()).eval()


def check_detections(ours: dict[str, Tensor], peer: dict[str, Tensor]) -> float:
    """Max |score difference|; raises unless both found the same number (> 0) of detections."""
    n_ours, n_peer = len(ours["boxes"]), len(peer["boxes"])
    if n_ours != n_peer or n_peer == 0:
        raise RuntimeError(f"detections: structpred {n_ours}, torchvision {n_peer} (need equal, > 0)")
    return float((ours["scores"] - peer["scores"]).abs().max())


def inference_pair(
    ours: nn.Module, peer: nn.Module, image: Tensor
) -> tuple[Callable[[], dict[str, Tensor]], Callable[[], dict[str, Tensor]]]:
    """``(ours, torchvision's)`` inference on ``image``: eval mode, ``no_grad``, its detections."""

    def infer_ours() -> dict[str, Tensor]:
        with torch.no_grad():
            return ours.eval()([image])[0][0]

    def infer_peer() -> dict[str, Tensor]:
        with torch.no_grad():
            return peer.eval()([image])[0]

    return infer_ours, infer_peer


def with_threads(threads: int | None, run: Callable[[], Result]) -> Result:
    """``run()`` with ``threads`` torch threads (None: torch's setting), the previous count restored."""
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return run()
    finally:
        torch.set_num_threads(previous_threads)


def parser(suite: str, doc: str | None, repeats: int) -> argparse.ArgumentParser:
    """The CLI of ``structpred bench <suite>``: ``--height``, ``--width``, ``--repeats``,
    ``--threads``, ``--quick`` (a smoke run: 96 x 128, not resized)."""
    raw = argparse.RawDescriptionHelpFormatter
    out = argparse.ArgumentParser(prog=f"structpred bench {suite}", description=doc, formatter_class=raw)
    out.add_argument("--height", type=int, default=480)
    out.add_argument("--width", type=int, default=640)
    out.add_argument("--repeats", type=int, default=repeats, help="timed runs per side (median)")
    out.add_argument("--threads", type=int, default=2, help="torch threads")
    out.add_argument(
        "--quick", action="store_true", help="96x128 not resized, 10 detections, 1 repeat: a smoke run"
    )
    return out


def summary(
    image: tuple[int, int], resized: Any, detections: int, rows: list[Comparison], **extra: Any
) -> dict[str, Any]:
    """A run's result: ``image``, ``resized``, ``detections``, ``threads``, ``extra`` (e.g.
    ``repeats``), ``rows`` and per row ``{name}_ours_ms``, ``{name}_torchvision_ms``, ``{name}_ratio``."""
    out: dict[str, Any] = {
        "image": image,
        "resized": resized,
        "detections": detections,
        "threads": torch.get_num_threads(),
        **extra,
        "rows": rows,
    }
    for row in rows:
        out |= {f"{row.name}_ours_ms": row.ours_ms, f"{row.name}_torchvision_ms": row.peer_ms}
        out[f"{row.name}_ratio"] = row.ratio
    return out


def report(
    result: dict[str, Any], label: Callable[[dict[str, Any], Comparison], str], notes: str, quick: bool
) -> str:
    """Print and return the Markdown table of ``result``'s rows (``label`` names each) under a line
    of versions, threads, repeats, the weights and ``notes``."""
    import torchvision

    rows = [Comparison(label(result, r), r.ours_ms, r.peer_ms, r.target) for r in result["rows"]]
    first = (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {result['threads']} threads, "
        f"median of {result['repeats']} alternating runs; identical random weights (seed {SEED}) calibrated "
        f"on the image{notes}"
    )
    if quick:
        first += " (QUICK: tiny input, 100 proposals, 10 detections: not figures)"
    text = f"{first}\n\n{format_table(rows, 'torchvision')}"
    print(text)
    return text


# ---------------------------------------------------------------------------- Mask R-CNN


def _check(ours: dict[str, Tensor], peer: dict[str, Tensor]) -> float:
    """Max |mask difference|; raises unless both found the same detections and masks."""
    score_diff = check_detections(ours, peer)
    mask_diff = float((ours["masks"] - peer["masks"]).abs().max())
    if score_diff > 1e-3 or mask_diff > 1e-3:
        raise RuntimeError(f"predictions disagree: scores by {score_diff:.3g}, masks by {mask_diff:.3g}")
    return mask_diff


def bench_mask_rcnn_inference(
    height: int = 480,
    width: int = 640,
    repeats: int = 5,
    threads: int | None = None,
    min_size: int = 800,
    max_size: int = 1333,
    proposals: int = 1000,
    detections: int = 100,
    warmup: int = 1,
) -> dict[str, Any]:
    """Time both Mask R-CNNs on one ``height x width`` image (see the module docstring).

    Args:
        threads: torch threads for the run (None: leave torch's setting).
        min_size, max_size: the models' resizing; proposals: the RPN's test-time top-n (pre and
            post NMS); detections: ``box_detections_per_img``. torchvision's defaults; smaller
            ones make a smoke run.
        warmup: untimed runs per side before the timed ones.
    Returns:
        ``{"image", "resized", "detections", "threads", "repeats", "max_mask_diff", "rows"}`` and
        per case (``inference``, ``paste``) ``{case}_ours_ms``, ``{case}_torchvision_ms``,
        ``{case}_ratio`` (ours / torchvision); ``rows`` are the :class:`Comparison` rows.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    return with_threads(
        threads, lambda: _run(height, width, repeats, min_size, max_size, proposals, detections, warmup)
    )


def _run(
    height: int,
    width: int,
    repeats: int,
    min_size: int,
    max_size: int,
    proposals: int,
    detections: int,
    warmup: int,
) -> dict[str, Any]:
    from torchvision.models.detection.roi_heads import paste_masks_in_image as peer_paste

    from ..data import ShapesWorld
    from ..ops import paste_masks_in_image

    image, _ = ShapesWorld("test", size=(height, width), num_images=1)[0]
    settings = {"min_size": min_size, "max_size": max_size, "box_detections_per_img": detections}
    settings |= {"rpn_pre_nms_top_n_test": proposals, "rpn_post_nms_top_n_test": proposals}
    peer, ours = build_pair(
        "maskrcnn_resnet50_fpn", image, num_classes=NUM_CLASSES, box_score_thresh=SCORE_THRESH, **settings
    )
    resized = tuple(peer.transform([image])[0].image_sizes[0])  # type: ignore[operator]
    infer_ours, infer_peer = inference_pair(ours, peer, image)

    # Checked once; the peer's call also captures the detections' mask logits for the paste case.
    captured: list[Tensor] = []
    hook = peer.roi_heads.mask_predictor.register_forward_hook(  # type: ignore[union-attr]
        lambda m, args, out: captured.append(out)
    )
    theirs = infer_peer()
    hook.remove()
    mask_diff = _check(infer_ours(), theirs)
    rows = [compare("inference", infer_ours, infer_peer, repeats=repeats, warmup=warmup, target=TARGET)]

    # Pasting alone: the detections' 28 x 28 probabilities and boxes, as post-processing sees them.
    labels = theirs["labels"]
    masks = captured[0][torch.arange(len(labels)), labels][:, None].sigmoid()  # (N, 1, 28, 28)
    boxes = theirs["boxes"]
    rows.append(
        compare(
            "paste",
            lambda: paste_masks_in_image(masks, boxes, (height, width)),
            lambda: peer_paste(masks, boxes, (height, width)),
            repeats=repeats,
            warmup=warmup,
            target=TARGET,
        )
    )
    return summary((height, width), resized, len(labels), rows, repeats=repeats, max_mask_diff=mask_diff)


def _label(result: dict[str, Any], row: Comparison) -> str:
    (h, w), (rh, rw), n = result["image"], result["resized"], result["detections"]
    if row.name == "inference":
        return f"maskrcnn_resnet50_fpn inference, 1 image {h}x{w} (resized to {rh}x{rw}), {n} detections"
    return f"paste_masks_in_image, {n} masks 28x28 into {h}x{w}"


def main(argv: list[str] | None = None) -> str:
    """CLI entry (``structpred bench mask_rcnn``): run, print and return the Markdown table."""
    args = parser("mask_rcnn", __doc__, repeats=5).parse_args(argv)
    small: dict[str, int] = {}
    if args.quick:  # not resized, 100 proposals, 10 detections
        args.height, args.width, args.repeats = 96, 128, 1
        small = {"min_size": 96, "max_size": 128, "proposals": 100, "detections": 10, "warmup": 0}
    result = bench_mask_rcnn_inference(args.height, args.width, args.repeats, args.threads, **small)
    notes = f", box_score_thresh {SCORE_THRESH}; max |mask difference| {result['max_mask_diff']:.2g}"
    return report(result, _label, notes, args.quick)


if __name__ == "__main__":
    main()

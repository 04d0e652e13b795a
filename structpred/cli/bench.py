"""``structpred bench SUITE``: time structpred against its peer (ratios from one run)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

SUITES = (
    "ops", "metrics", "proposals", "detection", "one_stage", "yolo", "keypoints", "mask_rcnn", "crf",
    "segmentation", "rnn", "export", "vit", "swin",
    "flow", "depth", "tracking_metrics", "sint", "multitask",
)  # fmt: skip


def run(args: argparse.Namespace, rest: list[str]) -> int:
    """Run one suite; options after the suite name go to it."""
    importlib.import_module(f"structpred.bench.{args.suite}").main(rest)
    return 0


def add_parser(sub: Any) -> None:
    """Declare ``bench``."""
    p = sub.add_parser(
        "bench",
        help="time structpred against its peer (ratios from one run)",
        description="Time structpred against its peer; extra options go to the suite "
        "(e.g. structpred bench ops --repeats 25).",
    )
    p.add_argument(
        "suite",
        choices=SUITES,
        help="ops: vs torchvision.ops; metrics: vs pycocotools; proposals: Selective Search recall; "
        "detection: Faster R-CNN vs torchvision; one_stage: RetinaNet / FCOS vs torchvision; "
        "yolo: one-stage vs two-stage images per second; keypoints: Keypoint R-CNN vs torchvision; "
        "mask_rcnn: Mask R-CNN inference vs torchvision; "
        "crf: dense CRF vs pydensecrf2; segmentation: crf + mask_rcnn; "
        "rnn: RNN/LSTM vs torch.nn; export: onnxruntime vs eager PyTorch (exported models); "
        "vit / swin: ViT / Swin vs timm (inference, train step, Swin as a 512 px detection backbone); "
        "flow: RAFT vs torchvision, correlation ops; depth: the stereo and monocular depth networks "
        "(images/s, GFLOP/s) beside OpenCV's StereoSGBM; tracking_metrics: MOT metrics vs motmetrics, "
        "HOTA vs trackeval; sint: SINT frames/s beside OpenCV template matching and MIL; multitask: the "
        "unified multi-task network vs its four single-task models in sequence (ratio, per-part "
        "breakdown, GFLOP/s vs matmul peak, parameters)",
    )
    p.set_defaults(func=run)

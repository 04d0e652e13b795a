"""``structpred export``: a trained (or untrained) model to ONNX or a ``torch.export`` program,
checked against eager PyTorch (docs/export.md). Not ``structpred data export`` (datasets)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import key_values

EXAMPLES = """examples:
  structpred export --checkpoint out/run --format onnx --out out/model.onnx
  structpred export --model fasterrcnn_narrow_fpn --format torch-export --out out/detector.pt2
  structpred export --model fcn8s_narrow --model-arg num_classes=3 --out out/fcn.onnx --force

The file takes plain tensors and returns a flat tuple (names per task in docs/export.md); after
writing, it is run (onnxruntime on CPU, or torch.export.load) against eager PyTorch and the max
abs difference is printed.
"""


def run(args: argparse.Namespace, rest: list[str]) -> int:
    """Export; print the file, its inputs/outputs and the parity figure."""
    from ..engine.export import export_model

    report = export_model(
        args.out,
        args.format,
        checkpoint=args.checkpoint,
        model_name=args.model,
        model_kwargs=key_values(args.model_arg, "--model-arg"),
        force=args.force,
        check=not args.no_check,
        image_size=tuple(args.input_size) if args.input_size else None,
        raw_weights=args.raw_weights,
    )
    if args.checkpoint is not None:  # a run trained with --ema exports its weight average
        from ..engine.checkpoint import read_meta
        from ..engine.ema import weights_line

        which = weights_line(read_meta(args.checkpoint)[1], args.raw_weights)
        if which is not None:
            print(which.split(";")[0])
    opset = f", opset {report.opset}" if report.opset is not None else ""
    print(f"{report.model} ({report.task}) -> {report.path} [{report.fmt}{opset}] in {report.seconds:.1f} s")
    for name, shape, axes in zip(report.input_names, report.input_shapes, report.dynamic, strict=True):
        dynamic = ", ".join(f"{axis}={label}" for axis, label in axes.items()) or "none"
        print(f"  input  {name} {list(shape)}, dynamic axes: {dynamic}")
    print(f"  output {', '.join(report.output_names)}")
    if args.no_check:
        print("  not checked (--no-check)")
    else:
        runs = "; ".join(", ".join(str(list(s)) for s in shapes) for shapes in report.checked)
        runtime = "onnxruntime CPU" if report.fmt == "onnx" else "torch.export.load"
        print(f"  {runtime} vs eager on {runs}: max abs diff {report.max_abs_diff:.3g}")
        if report.max_abs_diff > TOLERANCE:
            print(f"error: {report.path} was written but does not match eager PyTorch ({_why(report.task)})",
                  file=sys.stderr)  # fmt: skip
            return 1
    return 0


TOLERANCE = 1e-3  # the largest difference the check accepts (box pixels, logits, probabilities)


def _why(task: str) -> str:
    """What a failed check most likely means for ``task``."""
    if task in ("detection", "instance_segmentation", "keypoints"):
        return (
            "different detections: expected when the model's scores tie, as in an undertrained or "
            "random detector whose RPN gives many anchors the same objectness; onnxruntime's NMS and "
            "top-k break ties differently. docs/export.md, 'Tied scores'"
        )
    return f"more than {TOLERANCE:g} apart: please report it with the model and command"


def add_parser(sub: Any) -> None:
    """Declare ``export``."""
    p = sub.add_parser(
        "export",
        help="export a model to ONNX or a torch.export program, checked against eager PyTorch "
        "(datasets: structpred data export)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="run directory or ckpt-*.json of a trained model")
    which.add_argument("--model", help="a registered model name, untrained (random weights, seed 0)")
    p.add_argument(
        "--model-arg", action="append", metavar="K=V", help="builder keyword argument (with --model)"
    )
    p.add_argument(
        "--format",
        default="onnx",
        help="onnx (opset 18, dynamo exporter) or torch-export (a .pt2 program) (default: %(default)s)",
    )
    p.add_argument("--out", required=True, help="the file to write (never the checkpoint; see --force)")
    p.add_argument(
        "--input-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="the example image's height and width; a detector's program takes exactly this size "
        "(default: its resize target, e.g. 256 x 256 for the narrow models; not train's --image-size N, "
        "the longer side)",
    )
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--no-check", action="store_true", help="skip the parity run against eager PyTorch")
    p.add_argument(
        "--raw-weights",
        action="store_true",
        help="a run trained with --ema: export the raw weights, not their average (default: the EMA)",
    )
    p.set_defaults(func=run)

"""Exported vs eager: onnxruntime (CPU) speed against eager PyTorch, and parity, per model.

``structpred bench export`` (= ``python benchmarks/export.py``) exports each model once
(:mod:`structpred.engine.export`, ONNX opset 18) and times the ONNX file in onnxruntime against
the same model in eager PyTorch (``torch.no_grad``), alternately, in one run: medians and the
ratio onnxruntime / eager (below 1: the exported model is faster). Sizes: the typical one, the
extremes (a tiny and a large image) and a batch, where the program allows them. The max abs
difference over every timed input is printed beside each row.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from ..engine import export as ex
from ..models import get_model
from .timing import Comparison, compare, format_table

#: (model, builder overrides, image sizes (H, W) and batch per row); detectors take one image of
#: the exported size, so their rows are separate exports at each size.
CASES: list[tuple[str, dict, list[tuple[str, tuple[int, ...]]]]] = [
    (
        "fasterrcnn_narrow_fpn",
        {},
        [
            ("256x256 (typical)", (1, 3, 256, 256)),
            ("tiny 64x64", (1, 3, 64, 64)),
            ("large 640x640", (1, 3, 640, 640)),
        ],
    ),
    ("maskrcnn_narrow_fpn", {}, [("256x256 (typical)", (1, 3, 256, 256))]),
    ("fasterrcnn_mobilenet_v3_large_320_fpn", {}, [("320x320 (typical)", (1, 3, 320, 320))]),
    ("fast_rcnn_narrow", {}, [("256x256, 24 proposals", (1, 3, 256, 256))]),
    (
        "fcn8s_narrow",
        {"num_classes": 7},
        [
            ("128x128", (1, 3, 128, 128)),
            ("tiny 32x32", (1, 3, 32, 32)),
            ("large 512x512", (1, 3, 512, 512)),
            ("batch 8 x 128x128", (8, 3, 128, 128)),
        ],
    ),
    ("unet_narrow", {}, [("128x128", (1, 3, 128, 128)), ("batch 8 x 128x128", (8, 3, 128, 128))]),
    ("deeplab_narrow", {}, [("128x128", (1, 3, 128, 128)), ("batch 8 x 128x128", (8, 3, 128, 128))]),
    ("digits_cnn", {}, [("1 x 32x32", (1, 3, 32, 32)), ("batch 64", (64, 3, 32, 32))]),
    ("stn_digits", {}, [("batch 64", (64, 3, 32, 32))]),
    ("lstm_vowels", {}, [("batch 1", (1,)), ("batch 64", (64,))]),
    ("lstm_charlm", {"vocab": "abcdefghijklmnopqrstuvwxyz .,\n"}, [("batch 1", (1,)), ("batch 32", (32,))]),
]
QUICK = {"fasterrcnn_narrow_fpn", "fcn8s_narrow", "digits_cnn"}

# --parity: the GPU-sized models at the registry test's small settings (the same code paths; the
# narrow models, and every other, at their defaults).
_FEW = {"training": 50, "testing": 50}
_DETECTION = {"min_size": 64, "max_size": 96, "rpn_pre_nms_top_n": _FEW, "rpn_post_nms_top_n": _FEW,
              "box_detections_per_img": 10}  # fmt: skip
PARITY_SETTINGS: dict[str, dict] = {
    **{name: _DETECTION for name in ("fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn",
                                     "fasterrcnn_mobilenet_v3_large_320_fpn", "maskrcnn_resnet50_fpn")},
    "fasterrcnn_fpn": {**_DETECTION, "fpn_channels": 32},
    "maskrcnn_fpn": {**_DETECTION, "fpn_channels": 32},
    "fast_rcnn_vgg16": {"min_size": 64, "max_size": 96, "representation_size": 64},
    **{name: {"fc_channels": 64, "width_div": 4} for name in ("fcn32s_vgg16", "fcn16s_vgg16", "fcn8s_vgg16")},
    "deeplabv3": {"backbone": "resnet18"},
    "lstm_charlm": {"vocab": "abcdefgh \n", "hidden_size": 16, "embed_dim": 8},
}  # fmt: skip


@dataclass
class Row:
    """One timed case and its parity figure."""

    comparison: Comparison
    max_abs_diff: float


def _inputs(spec: ex.ExportSpec, shape: tuple[int, ...]) -> tuple[Tensor, ...]:
    """The spec's example with the row's batch (and image size, for image models)."""
    g = torch.Generator().manual_seed(0)
    first = spec.example[0]
    if first.dim() == 4:
        x: Tensor = torch.rand(shape, generator=g)
    else:  # sequences: keep T (fixed), change the batch
        reps = (shape[0] + first.shape[0] - 1) // first.shape[0]
        x = first.repeat(reps, *([1] * (first.dim() - 1)))[: shape[0]]
    return (x, *spec.example[1:])


def run_rows(repeats: int, threads: int, quick: bool, tmp: str) -> list[Row]:
    """Export every case, time onnxruntime vs eager per row."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    torch.set_num_threads(threads)
    rows: list[Row] = []
    for name, kwargs, sizes in CASES:
        if quick and name not in QUICK:
            continue
        torch.manual_seed(0)
        model = get_model(name, **kwargs).eval()
        exported: dict[tuple[int, ...] | None, tuple[ex.ExportSpec, object]] = {}
        for label, shape in sizes[:1] if quick else sizes:
            image_size = tuple(shape[2:]) if len(shape) == 4 else None
            spec = ex.export_spec(name, model, image_size)  # type: ignore[arg-type]
            key = image_size if not spec.dynamic[0] else None  # a fixed-size program: one per size
            if key not in exported:
                path = ex.export_onnx(spec, f"{tmp}/{name}-{len(exported)}.onnx")
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.log_severity_level = 3
                exported[key] = (
                    spec,
                    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]),
                )
            session = exported[key][1]
            x = _inputs(spec, shape)
            diff = ex.max_abs_diff(ex.run_eager(spec, x), ex.run_onnx(session, x))
            c = compare(
                f"{name} {label}",
                lambda s=session, x=x: ex.run_onnx(s, x),  # type: ignore[misc]
                lambda s=spec, x=x: ex.run_eager(s, x),  # type: ignore[misc]
                repeats=repeats,
            )
            rows.append(Row(c, diff))
            print(
                f"  {c.name}: {c.ours_ms:.1f} vs {c.peer_ms:.1f} ms (ratio {c.ratio:.2f}), diff {diff:.2g}",
                flush=True,
            )
    return rows


def parity_rows(names: list[str], tmp: str) -> list[str]:
    """Per model (:data:`PARITY_SETTINGS`, random weights from seed 0): the exported inputs and the max
    abs difference of onnxruntime and of the saved-and-loaded ``torch.export`` program vs eager,
    over :func:`structpred.engine.export.check_inputs` (the example, and one changed along every
    dynamic axis). A Markdown table, one row per model; a failure is a row with its error."""
    from ..models import model_info

    lines = [
        "| model | task | inputs checked | onnxruntime | torch.export | export s |",
        "|---|---|---|---:|---:|---:|",
    ]
    for name in names:
        task = model_info(name).task
        if name in ex.NOT_EXPORTABLE:
            lines.append(f"| {name} | {task} | not exportable: {ex.NOT_EXPORTABLE[name]} | - | - | - |")
            continue
        try:
            torch.manual_seed(0)
            start = time.perf_counter()
            spec = ex.export_spec(name, get_model(name, **PARITY_SETTINGS.get(name, {})).eval())
            program = ex.export_program(spec)
            path = ex.export_onnx(spec, f"{tmp}/{name}.onnx", program=program)
            torch.export.save(program, f"{tmp}/{name}.pt2")
            seconds = time.perf_counter() - start
            inputs = ex.check_inputs(spec)
            onnx_diff = ex.check_file(spec, path, "onnx", inputs)
            program_diff = ex.check_file(spec, f"{tmp}/{name}.pt2", "torch-export", inputs)
        except Exception as err:  # a row that says what failed, not a crash of the whole table
            why = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
            lines.append(f"| {name} | {task} | FAILED: {why} | - | - | - |")
            continue
        shapes = "; ".join(" + ".join("x".join(map(str, t.shape)) for t in x) for x in inputs)
        lines.append(f"| {name} | {task} | {shapes} | {onnx_diff:.1e} | {program_diff:.1e} | {seconds:.0f} |")
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> str:
    """CLI entry: the table (onnxruntime / eager ratios, parity) printed and returned."""
    parser = argparse.ArgumentParser(prog="structpred bench export", description=__doc__)
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per side (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    parser.add_argument("--quick", action="store_true", help="three models, one size each: a smoke run")
    parser.add_argument(
        "--parity",
        nargs="*",
        metavar="MODEL",
        help="instead: parity of every registered model (or those named)",
    )
    args = parser.parse_args(argv)
    if args.parity is not None:
        from ..models import list_models

        with tempfile.TemporaryDirectory() as tmp:
            table = "\n".join(parity_rows(args.parity or list_models(), tmp))
        print(table)
        return table
    previous = torch.get_num_threads()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = run_rows(args.repeats, args.threads, args.quick, tmp)
    finally:
        torch.set_num_threads(previous)
    table = format_table([r.comparison for r in rows], "eager")
    table = table.replace("| op | structpred (ms) |", "| model, input | onnxruntime (ms) |")
    lines = table.splitlines()
    lines[0] += " max abs diff |"
    lines[1] += "---:|"
    lines[2:] = [f"{line} {r.max_abs_diff:.2g} |" for line, r in zip(lines[2:], rows, strict=True)]
    header = (
        f"torch {torch.__version__}, onnxruntime CPU, ONNX opset {ex.OPSET}, {args.threads} threads, "
        f"median of {args.repeats} alternating runs; ratio < 1: onnxruntime faster"
    )
    print(header)
    print("\n".join(lines))
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Models out: ``torch.export`` programs and ONNX files for every registered model.

Shape shorthand: B images or sequences, H, W an image's size, N detections of an image,
K classes, T steps, F features per step, V vocabulary, O regression outputs.

A registered model's forward (``model(inputs) -> (predictions, losses)``, lists of dicts) is not
what a deployment runtime takes, so each task has a thin *export wrapper*: plain tensors in, a
flat tuple of tensors out, in eval mode. The names (ONNX input / output names) per task:

=====================  =======================  =====================================================
task                   inputs                   outputs
=====================  =======================  =====================================================
detection              ``images [1, 3, H, W]``  ``boxes [N, 4]`` (xyxy, original px), ``scores [N]``,
                                                ``labels int64[N]`` (1..K); N may be 0
instance_segmentation  ``images [1, 3, H, W]``  + ``masks [N, 1, H, W]`` (probabilities)
keypoints              ``images [1, 3, H, W]``  + ``keypoints [N, K, 3]`` (x, y, 1; original px),
                                                ``keypoints_scores [N, K]``
semantic_segmentation  ``images [B, 3, H, W]``  ``logits [B, K, H, W]``, ``label_map int64[B, H, W]``
classification         ``images [B, 3, H, W]``  ``class_logits [B, K]``, ``scores [B]``, ``labels int64[B]``
  (sequence models)    ``inputs [B, T, F]``     the same
regression             ``inputs [B, T, F]``     ``value [B, O]``
optical_flow           ``frame0 [B, 3, H, W]``, ``flow [B, 2, H, W]`` (H x W fixed at export)
                       ``frame1 [B, 3, H, W]``
stereo_disparity       ``left [B, 3, H, W]``,   ``disparity [B, 1, H, W]`` (px, left view; H x W fixed)
                       ``right [B, 3, H, W]``
monocular_depth        ``image [B, 3, H, W]``   ``disparity [B, 1, H, W]`` (px; H x W fixed)
language_model         ``ids int64[B, T]``      ``token_logits [B, T, V]``
=====================  =======================  =====================================================

Detectors give a varying number of boxes per image, so their programs take one image (batch 1);
every other family takes a dynamic batch. Dynamic axes per model: :func:`export_spec`.
:data:`NOT_EXPORTABLE` lists what cannot export and why (the registry-wide test reads it).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..heads.items import BatchedItems
from ..models import model_info
from ..tasks import get_task

log = logging.getLogger(__name__)

#: The ONNX opset we write (the dynamo exporter's default in torch 2.14; onnxruntime 1.31 runs it).
OPSET = 18
FORMATS = ("onnx", "torch-export")
#: Upper bounds of the dynamic axes.
MAX_SIZE = {"batch": 4096, "height": 16384, "width": 16384, "proposals": 65536}

#: Registered models that cannot be exported, with the precise reason. Empty reasons are a bug.
NOT_EXPORTABLE: dict[str, str] = {
    "sint_narrow": "SINT tracks with a data-dependent loop: each frame's best candidate (an argmax) sets "
    "the next frame's candidate boxes, over a clip of any length T; there is no fixed-shape graph to export",
    "video_detector": "the linker assigns detections to tubes frame by frame in Python (scipy's "
    "linear_sum_assignment, a Viterbi search over a varying number of boxes): export its detector "
    "(structpred export --model fasterrcnn_narrow_fpn) and link the exported detector's boxes with "
    "structpred.ops.link_online / link_tubes_dp",
}
#: The pair tasks: their two inputs' names and their one output.
PAIR_OUTPUTS = {
    "optical_flow": ("frame0", "frame1", "flow"),
    "stereo_disparity": ("left", "right", "disparity"),
}
#: The tasks whose models are detectors (one image in, N detections out) and their extra outputs.
DETECTION_OUTPUTS: dict[str, tuple[str, ...]] = {
    "detection": (),
    "instance_segmentation": ("masks",),
    "keypoints": ("keypoints", "keypoints_scores"),
}


# ------------------------------------------------------------------------------------ wrappers
class DetectionExport(nn.Module):
    """``images [1, 3, H, W]`` (+ ``proposals [P, 4]`` for Fast R-CNN) -> ``(boxes [N, 4],
    scores [N], labels [N])`` (+ ``masks [N, 1, H, W]``, or ``extra`` prediction keys in order)."""

    def __init__(self, model: nn.Module, masks: bool = False, extra: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.model, self.masks, self.extra = model, masks, extra

    def forward(self, images: Tensor, proposals: Tensor | None = None) -> tuple[Tensor, ...]:
        if proposals is None:
            preds, _ = self.model([images[0]])
        else:
            preds, _ = self.model([images[0]], proposals=[proposals])
        p = preds[0]
        out = (p["boxes"], p["scores"], p["labels"], *(p[k] for k in self.extra))
        return (*out, p["masks"]) if self.masks else out


class MultiTaskExport(nn.Module):
    """``images [1, 3, H, W]`` -> every head's outputs, ``outputs`` = ``((head, key), ...)`` in
    order: a detection head's ``boxes [N, 4]``, ``scores``, ``labels``; a segmentation head's
    ``logits [1, K, H, W]``, ``label_map``; a depth head's ``disparity [1, 1, H, W]``."""

    def __init__(self, model: nn.Module, outputs: tuple[tuple[str, str], ...]) -> None:
        super().__init__()
        self.model, self.outputs = model, outputs

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        preds, _ = self.model([images[0]])
        picked = []
        for head, key in self.outputs:
            p = preds[head]
            picked.append(p[0][key] if isinstance(p, list) else p[key])  # detections: the image's dict
        return tuple(picked)


class SegmentationExport(nn.Module):
    """``images [B, 3, H, W]`` -> ``(logits [B, K, H, W], label_map [B, H, W])``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        preds, _ = self.model(images)
        return preds["logits"], preds["label_map"]


class PairExport(nn.Module):
    """Two views ``[B, 3, H, W]`` each (in [0, 1]) -> ``(preds[key],)``: optical flow's
    ``frame0, frame1 -> flow [B, 2, H, W]``, stereo's ``left, right -> disparity [B, 1, H, W]``.

    Two inputs rather than one ``[B, 2, 3, H, W]``: the names say which view is which."""

    def __init__(self, model: nn.Module, key: str) -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, view0: Tensor, view1: Tensor) -> tuple[Tensor]:
        preds, _ = self.model(torch.stack([view0, view1], dim=1))  # 2 x (B, 3, H, W) -> (B, 2, 3, H, W)
        return (preds[self.key],)


class SingleViewExport(nn.Module):
    """``image [B, 3, H, W]`` -> ``(preds[key],)`` of a pair model that also reads single views
    (a monocular depth model: ``disparity [B, 1, H, W]``)."""

    def __init__(self, model: nn.Module, key: str) -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, image: Tensor) -> tuple[Tensor]:
        preds, _ = self.model(image[:, None])  # (B, 3, H, W) -> (B, 1, 3, H, W): one view per item
        return (preds[self.key],)


class StackedExport(nn.Module):
    """A batched input -> the per-item prediction dicts' ``keys``, each stacked over the batch."""

    def __init__(self, model: nn.Module, keys: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, inputs: Tensor) -> tuple[Tensor, ...]:
        preds, _ = self.model(inputs)
        if isinstance(preds, BatchedItems):  # under torch.export: the batch stays symbolic
            return tuple(preds.batched[k] for k in self.keys)
        return tuple(torch.stack([p[k] for p in preds]) for k in self.keys)


# -------------------------------------------------------------------------------------- specs
@dataclass
class ExportSpec:
    """How one model exports: its wrapper, names, example inputs and their dynamic axes."""

    name: str
    task: str
    wrapper: nn.Module
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    example: tuple[Tensor, ...]
    dynamic: tuple[dict[int, str], ...]  # per input: axis -> name ("batch", "height"...)
    opset: int = OPSET

    def dynamic_shapes(self) -> tuple[dict[int, Any], ...]:
        """``torch.export`` dynamic shapes of the inputs, each bounded by :data:`MAX_SIZE` (an
        unbounded axis lets data-dependent sizes' range checks overflow int64 in ONNX)."""
        auto = torch.export.Dim.AUTO
        return tuple({a: auto(max=MAX_SIZE[name]) for a, name in axes.items()} for axes in self.dynamic)


def _example(model: nn.Module, task_name: str) -> Tensor:
    """A realistic input from the task's sample batch, as the wrapper takes it."""
    inputs, _ = get_task(task_name).sample_batch(model, batch_size=2, seed=0)
    if task_name in DETECTION_OUTPUTS:
        return inputs[0][None]  # (3, H, W) -> (1, 3, H, W)
    if isinstance(inputs, Tensor):
        return inputs
    # Sizes may differ within the batch: cut to the smallest so they stack.
    smallest = [min(s) for s in zip(*(x.shape for x in inputs), strict=True)]
    return torch.stack([x[tuple(slice(0, n) for n in smallest)] for x in inputs])


def example_proposals(image: Tensor, count: int = 24, seed: int = 0) -> Tensor:
    """``count`` random xyxy boxes ``[P, 4]`` inside ``image [1, 3, H, W]`` (Fast R-CNN's input)."""
    g = torch.Generator().manual_seed(seed)
    H, W = image.shape[-2:]
    xy = torch.rand(count, 2, generator=g) * torch.tensor([W * 0.6, H * 0.6])  # (P, 2) top-left
    wh = 4 + torch.rand(count, 2, generator=g) * torch.tensor([W * 0.4 - 4, H * 0.4 - 4])
    return torch.cat([xy, xy + wh], 1)


def detector_size(model: nn.Module) -> tuple[int, int]:
    """The square side a detector resizes to (its transform's test ``min_size``, capped by
    ``max_size``): the default fixed input size of its exported program."""
    transform: Any = getattr(model, "transform", None)
    side = min(int(transform.min_size[-1]), int(transform.max_size)) if transform is not None else 256
    return side, side


def export_spec(name: str, model: nn.Module, image_size: tuple[int, int] | None = None) -> ExportSpec:
    """The export wrapper, names and dynamic axes of registered model ``name`` (built: ``model``);
    image models' example is resized to ``image_size`` ``(H, W)`` (detectors: their fixed size,
    default :func:`detector_size`)."""
    task = model_info(name).task
    if name in NOT_EXPORTABLE:
        raise ValueError(f"{name} cannot be exported: {NOT_EXPORTABLE[name]}")
    model.eval()
    x = _example(model, task)
    if task in (*DETECTION_OUTPUTS, "multi_task") and image_size is None:
        image_size = detector_size(model)
    if image_size is not None and x.dim() == 4:
        if len(image_size) != 2 or min(image_size) < 8:
            raise ValueError(f"--image-size must be two sides >= 8 px (H W), got {image_size}")
        x = torch.nn.functional.interpolate(x, size=tuple(image_size), mode="bilinear", align_corners=False)
    # Sequence models unroll their RNN over the steps in Python (layers/rnn.py): T is fixed.
    steps, image = {0: "batch"}, {0: "batch", 2: "height", 3: "width"}
    wrapper: nn.Module
    if task in DETECTION_OUTPUTS:
        masks = task == "instance_segmentation"
        extra = () if masks else DETECTION_OUTPUTS[task]
        outs = ("boxes", "scores", "labels", *DETECTION_OUTPUTS[task])
        wrapper = DetectionExport(model, masks, extra)
        # The resize to min_size..max_size is computed in Python from the input size: fixed H x W.
        if hasattr(model, "proposal_fn"):  # Fast R-CNN: proposals come from outside the network
            return ExportSpec(
                name,
                task,
                wrapper,
                ("images", "proposals"),
                outs,
                (x, example_proposals(x)),
                ({}, {0: "proposals"}),
            )
        return ExportSpec(name, task, wrapper, ("images",), outs, (x,), ({},))
    if task == "multi_task":  # one image of the model's size, every head's outputs (as a detector's)
        head_keys = {"detection": ("boxes", "scores", "labels"), "depth": ("disparity",)}
        heads = list(getattr(model, "heads", {}))
        outputs = tuple((head, key) for head in heads for key in head_keys.get(head, ("logits", "label_map")))
        names = tuple(f"{head}_{key}" for head, key in outputs)
        return ExportSpec(name, task, MultiTaskExport(model, outputs), ("images",), names, (x[:1],), ({},))
    if task == "semantic_segmentation":
        wrapper = SegmentationExport(model)
        if getattr(getattr(model, "config", None), "padding", None) in ("valid", "same"):
            # U-Nets' mirror pad and crops: onnxruntime gets them at the traced size only.
            image = {0: "batch"}
        return ExportSpec(name, task, wrapper, ("images",), ("logits", "label_map"), (x,), (image,))
    if task in PAIR_OUTPUTS:
        # H x W fixed (RAFT: the correlation pyramid's level sizes and lookup bounds are guards
        # torch.export cannot solve symbolically, docs/raft.md; stereo: the padding to the cost
        # volume's stride); the batch is dynamic.
        first, second, key = PAIR_OUTPUTS[task]
        views = (x[:, 0].contiguous(), x[:, 1].contiguous())  # (B, 2, 3, H, W) -> 2 x (B, 3, H, W)
        batch = {0: "batch"}
        return ExportSpec(name, task, PairExport(model, key), (first, second), (key,), views, (batch, batch))
    if task == "monocular_depth":  # the left view alone, as the model predicts (H x W fixed)
        left = x[:, 0].contiguous()  # (B, 2, 3, H, W) -> (B, 3, H, W)
        wrapper = SingleViewExport(model, "disparity")
        return ExportSpec(name, task, wrapper, ("image",), ("disparity",), (left,), ({0: "batch"},))
    keys = {
        "classification": ("class_logits", "scores", "labels"),
        "regression": ("value",),
        "language_model": ("token_logits",),
    }.get(task)
    if keys is None:
        raise ValueError(f"{name}: no export wrapper for task {task!r}")
    if task == "language_model":
        return ExportSpec(name, task, StackedExport(model, keys), ("ids",), keys, (x,), (steps,))
    if x.dim() == 3:  # a sequence model: (B, T, F)
        return ExportSpec(name, task, StackedExport(model, keys), ("inputs",), keys, (x,), (steps,))
    return ExportSpec(name, task, StackedExport(model, keys), ("images",), keys, (x,), (image,))


# ------------------------------------------------------------------------------------ export
def export_program(spec: ExportSpec) -> torch.export.ExportedProgram:
    """``torch.export`` of the spec's wrapper with its dynamic axes."""
    with torch.no_grad():
        return torch.export.export(
            spec.wrapper, spec.example, dynamic_shapes=spec.dynamic_shapes(), strict=False
        )


def _nms_onnx(boxes: Any, scores: Any, iou_threshold: float) -> Any:
    """``structpred::nms`` in ONNX: ``NonMaxSuppression`` over one batch and one class, its
    ``box_index`` column. Kept boxes come by decreasing score; suppression at IoU ``>`` the
    threshold, as ours."""
    from onnxscript import opset18

    op: Any = opset18  # onnxscript's stubs do not take Python lists for INT64 inputs
    b = op.Unsqueeze(boxes, [0])  # (N, 4) -> (1, N, 4)
    s = op.Unsqueeze(scores, [0, 1])  # (N,) -> (1, 1, N)
    n = op.Shape(boxes, start=0, end=1)  # keep up to all N
    selected = op.NonMaxSuppression(b, s, n, op.Constant(value_float=iou_threshold))  # (M, 3)
    return op.Reshape(op.Slice(selected, [2], [3], [1]), [-1])  # (M, 1) -> (M,)


def _roi_pool_onnx(input: Any, rois: Any, pooled_h: int, pooled_w: int, spatial_scale: float) -> Any:
    """``structpred::roi_pool`` in ONNX: ``MaxRoiPool`` (Caffe's RoIPool, as ours and torchvision's:
    corners rounded half away from zero, bins floor/ceil, empty bins 0)."""
    from onnxscript import opset18

    op: Any = opset18
    return op.MaxRoiPool(input, rois, pooled_shape=[pooled_h, pooled_w], spatial_scale=spatial_scale)


#: Our custom operators and their ONNX translations.
ONNX_TRANSLATIONS: dict[Any, Callable[..., Any]] = {
    torch.ops.structpred.nms.default: _nms_onnx,
    torch.ops.structpred.roi_pool.default: _roi_pool_onnx,
}


def export_onnx(
    spec: ExportSpec,
    out: str | Path,
    program: torch.export.ExportedProgram | None = None,
    optimize: bool = True,
) -> Path:
    """Write the spec's ONNX file (opset :data:`OPSET`, dynamo exporter) to ``out``, from
    ``program`` (the spec's ``torch.export`` program) if given. ``optimize``: the exporter's
    graph clean-up (constant folding, dead nodes); about half the export time, and
    onnxruntime optimises the graph again when it loads it."""
    out = Path(out)
    program = program if program is not None else export_program(spec)
    # torch.export's runtime range checks on data-dependent sizes (``u0 >= 0``, ``u0 <= 3 * 2**64``)
    # have no ONNX form (the bound overflows int64): the ONNX graph goes without them.
    graph = program.graph_module.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten._assert_scalar.default:
            graph.erase_node(node)
    graph.eliminate_dead_code()
    program.graph_module.recompile()
    onnx_program = torch.onnx.export(
        program,
        spec.example,
        input_names=list(spec.input_names),
        output_names=list(spec.output_names),
        opset_version=spec.opset,
        custom_translation_table=ONNX_TRANSLATIONS,
        dynamo=True,
        verbose=False,
        optimize=optimize,
    )
    assert onnx_program is not None
    onnx_program.save(str(out))
    return out


def run_eager(spec: ExportSpec, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The wrapper's outputs in eager PyTorch (no grad)."""
    with torch.no_grad():
        return tuple(spec.wrapper(*inputs))


def onnx_session(path: str | Path) -> Any:
    """An onnxruntime CPU session for ``path``."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The ONNX file's outputs on ``inputs`` through ``session``."""
    feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs, strict=True)}
    return tuple(torch.from_numpy(o) for o in session.run(None, feed))


def max_abs_diff(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> float:
    """The largest ``|a - b|`` over every output (``inf`` when shapes differ)."""
    if len(a) != len(b):
        return float("inf")
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape:
            return float("inf")
        if x.numel():
            worst = max(worst, float((x.detach().double() - y.detach().double()).abs().max()))
    return worst


def resized_input(x: Tensor, axes: dict[int, str], seed: int = 1) -> Tensor:
    """A random input like ``x`` with its dynamic ``axes`` changed: a batch of 3, 1.5x the height,
    0.75x the width, 2 more steps, or 2 more proposals (inside the smallest image we export)."""
    if "proposals" in axes.values():
        return example_proposals(torch.zeros(1, 3, 64, 64), count=x.shape[0] + 2, seed=seed)
    shape = list(x.shape)
    for axis, name in axes.items():
        change = {"batch": 3, "height": shape[axis] * 3 // 2, "width": shape[axis] * 3 // 4}
        shape[axis] = change.get(name, shape[axis] + 2)
    g = torch.Generator().manual_seed(seed)
    if x.is_floating_point():
        return torch.rand(shape, generator=g, dtype=x.dtype)
    return torch.randint(0, int(x.max()) + 1, shape, generator=g, dtype=x.dtype)  # ids in range


def check_inputs(spec: ExportSpec) -> list[tuple[Tensor, ...]]:
    """The inputs a written file is checked on: the example and, where any axis is dynamic, the
    example changed along every dynamic axis (:func:`resized_input`)."""
    out = [spec.example]
    if any(spec.dynamic):
        out.append(
            tuple(
                resized_input(x, axes) if axes else x
                for x, axes in zip(spec.example, spec.dynamic, strict=True)
            )
        )
    return out


def check_file(spec: ExportSpec, path: str | Path, fmt: str, inputs: list[tuple[Tensor, ...]]) -> float:
    """Max abs difference between the written file (onnxruntime CPU or ``torch.export.load``)
    and eager PyTorch over ``inputs``."""
    if fmt == "onnx":
        session = onnx_session(path)
        run: Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]] = lambda x: run_onnx(session, x)  # noqa: E731
    else:
        module = torch.export.load(str(path)).module()
        run = lambda x: tuple(module(*x))  # noqa: E731
    worst = 0.0
    for x in inputs:
        diff = max_abs_diff(run_eager(spec, x), run(x))
        log.info("%s %s on %s: max abs diff %.3g", spec.name, fmt, [tuple(t.shape) for t in x], diff)
        worst = max(worst, diff)
    return worst


# ------------------------------------------------------------------------------ entry point
@dataclass
class ExportReport:
    """What :func:`export_model` wrote and how it compares with eager PyTorch."""

    path: Path
    fmt: str
    model: str
    task: str
    input_names: tuple[str, ...]
    input_shapes: list[tuple[int, ...]]
    output_names: tuple[str, ...]
    dynamic: tuple[dict[int, str], ...]
    opset: int | None
    max_abs_diff: float
    checked: list[list[tuple[int, ...]]]
    seconds: float


def _check_out(out: Path, force: bool, protected: list[Path]) -> None:
    """Refuse an ``--out`` that is an input of the export, a folder, or (without force) a file."""
    target = out.resolve()
    for p in protected:
        if target == p.resolve():
            raise ValueError(f"--out {out} is the checkpoint's own file; outputs never overwrite inputs")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name (e.g. {out / 'model.onnx'})")
    if out.exists() and not force:
        raise ValueError(f"--out {out} exists; pass --force to overwrite it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {out}: cannot create its folder ({err.strerror or err})") from err
    if not os.access(out.parent, os.W_OK):
        raise ValueError(f"--out {out}: its folder is not writable")


def load_for_export(
    checkpoint: str | Path | None,
    model_name: str | None,
    model_kwargs: dict[str, Any] | None,
    seed: int = 0,
    raw: bool = False,
) -> tuple[str, nn.Module, list[Path]]:
    """``(name, model in eval mode, the checkpoint's files)`` from a checkpoint or a registered name
    (random weights from ``seed``). A checkpoint trained with ``--ema`` gives its weight average
    unless ``raw``."""
    if (checkpoint is None) == (model_name is None):
        raise ValueError("give exactly one of --checkpoint RUN_DIR and --model NAME")
    if checkpoint is not None:
        from .run import load_model

        if model_kwargs:
            raise ValueError("--model-arg goes with --model; a checkpoint records its own settings")
        path = Path(checkpoint)
        if not path.exists():
            raise ValueError(f"--checkpoint {checkpoint}: no such run directory or file")
        model, config = load_model(checkpoint, raw=raw)
        run_dir = path if path.is_dir() else path.parent
        files = [path, *run_dir.glob("ckpt-*"), run_dir / "best.json"]  # every checkpoint file of the run
        return str(config.model_name), model.eval(), files
    assert model_name is not None
    model_info(model_name)  # unknown names: a ValueError listing the known ones
    from ..models import get_model

    torch.manual_seed(seed)
    return model_name, get_model(model_name, **(model_kwargs or {})).eval(), []


def export_model(
    out: str | Path,
    fmt: str = "onnx",
    *,
    checkpoint: str | Path | None = None,
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    force: bool = False,
    check: bool = True,
    image_size: tuple[int, int] | None = None,
    raw_weights: bool = False,
) -> ExportReport:
    """Export a checkpoint's model (or an untrained registered one) to ``out`` as ONNX or a
    ``torch.export`` program (``.pt2``), then compare it with eager PyTorch on the example and,
    where an axis is dynamic, on a second size. The file is written whole or not at all.
    ``raw_weights``: a run trained with ``--ema`` exports its raw weights, not their average."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    out = Path(out)
    _check_out(out, force, [Path(checkpoint)] if checkpoint is not None else [])  # before the slow build

    name, model, files = load_for_export(checkpoint, model_name, model_kwargs, raw=raw_weights)
    _check_out(out, force, files)
    t0 = time.perf_counter()
    spec = export_spec(name, model, image_size)
    tmp = out.with_name(f".tmp-{out.name}")  # same suffix: torch.export.save wants .pt2
    try:
        if fmt == "onnx":
            export_onnx(spec, tmp)
        else:
            torch.export.save(export_program(spec), str(tmp))
        tmp.replace(out)
    except OSError as err:
        raise ValueError(f"--out {out}: cannot write ({err.strerror or err})") from err
    finally:
        tmp.unlink(missing_ok=True)
    inputs = check_inputs(spec) if check else []
    diff = check_file(spec, out, fmt, inputs) if check else float("nan")
    return ExportReport(
        out,
        fmt,
        name,
        spec.task,
        spec.input_names,
        [tuple(x.shape) for x in spec.example],
        spec.output_names,
        spec.dynamic,
        spec.opset if fmt == "onnx" else None,
        diff,
        [[tuple(t.shape) for t in x] for x in inputs],
        time.perf_counter() - t0,
    )

"""YOLO v1 (Redmon, Divvala, Girshick, Farhadi, "You Only Look Once", CVPR 2016).

Shape shorthand:
    N: images, H, W: an original image, I: the square input side (448 in the paper),
    S: grid cells per side, B: boxes per cell, C: object classes, D = B*5 + C.

Pipeline: :class:`~structpred.layers.transform.DetectionTransform` with a fixed size (every
image is *warped* to ``I x I``, aspect ratio not kept, as the paper's 448 x 448 input; then
normalised) -> the convolutional stack (:data:`PAPER_LAYERS`: 24 convs, leaky ReLU 0.1) ->
:class:`~structpred.heads.yolo_v1.YOLOv1Head` (two FC layers) -> ``[N, S, S, D]`` -> loss /
decoding (:mod:`structpred.heads.yolo_v1`) -> boxes scaled back to the original image (the
warp is undone per axis).

Contract (DESIGN.md §3): ``model(images, targets=None, *, predict=True) -> (predictions,
losses)``; with targets the four ``loss_*`` terms of the paper's loss in train and eval mode;
predictions (``boxes`` xyxy in original pixels, ``scores``, ``labels`` 1..C) in either mode.

Grid rule: ``input_size`` must be a multiple of ``grid_size`` (whole-pixel cells) and of the
conv stack's stride (64 for the paper's: 448 -> 7); otherwise a ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import Tensor, nn

from ..heads.yolo_v1 import YOLOv1ConvHead, YOLOv1Head, check_grid, decode_yolo_v1, yolo_v1_loss
from ..layers.conv import ConvNormAct
from ..layers.transform import IMAGENET_MEAN, IMAGENET_STD, DetectionTransform
from .contract import check_request, checked_targets
from .faster_rcnn import check_num_classes, check_targets, make_config
from .registry import register_model

# A conv layer (kernel, out channels, stride) or "M" (2x2 max-pool, stride 2).
Layer = tuple[int, int, int] | str

# The paper's Figure 3: 24 convolutional layers (1x1 reductions then 3x3 convs), 448 -> 7x7x1024.
PAPER_LAYERS: tuple[Layer, ...] = (
    (7, 64, 2), "M",
    (3, 192, 1), "M",
    (1, 128, 1), (3, 256, 1), (1, 256, 1), (3, 512, 1), "M",
    *((1, 256, 1), (3, 512, 1)) * 4, (1, 512, 1), (3, 1024, 1), "M",
    *((1, 512, 1), (3, 1024, 1)) * 2, (3, 1024, 1), (3, 1024, 2),
    (3, 1024, 1), (3, 1024, 1),
)  # fmt: skip

# The narrow CPU variant: 9 convs as Fast YOLO, 16..256 channels, 256 -> 8x8x64 (stride 32);
# a stride-2 first conv and an early pool as the paper's (7x7/2 + pool): full-resolution layers
# cost memory traffic, not FLOPs, on a CPU.
NARROW_LAYERS: tuple[Layer, ...] = (
    (3, 16, 2), "M",
    (3, 32, 1), "M",
    (3, 64, 1), "M",
    (1, 32, 1), (3, 128, 1), "M",
    (1, 64, 1), (3, 256, 1), (3, 256, 1), (1, 64, 1),
)  # fmt: skip


class DarknetV1(nn.Sequential):
    """The convolutional stack of ``layers`` (:data:`PAPER_LAYERS`), leaky ReLU 0.1 after every
    conv; ``batch_norm`` adds BatchNorm after each (YOLO v2's addition, not the paper's);
    ``width_div`` divides every width (small test models). ``stride``: total downsampling."""

    def __init__(self, layers: Sequence[Layer], batch_norm: bool = False, width_div: int = 1) -> None:
        modules: list[nn.Module] = []
        channels, stride = 3, 1
        for layer in layers:
            if isinstance(layer, str):
                if layer != "M":
                    raise ValueError(f"DarknetV1: a layer is (kernel, width, stride) or 'M', got {layer!r}")
                modules.append(nn.MaxPool2d(2, 2))
                stride *= 2
                continue
            k, width, s = layer
            out = max(width // width_div, 1)
            norm = nn.BatchNorm2d if batch_norm else None
            modules.append(
                ConvNormAct(channels, out, k, stride=s, norm_layer=norm, act_layer=partial(nn.LeakyReLU, 0.1))
            )
            channels, stride = out, stride * s
        super().__init__(*modules)
        self.out_channels, self.stride = channels, stride


class YOLOv1(nn.Module):
    """transform -> backbone -> head, each injected; see the module docstring.

    Args:
        backbone: ``[N, 3, I, I] -> [N, F', I / stride, I / stride]`` with ``stride``.
        head: a :class:`YOLOv1Head` (grid S, boxes B, classes C).
        transform: a fixed-size :class:`DetectionTransform` (``I x I``).
        lambda_coord, lambda_noobj: the loss weights (paper: 5 and 0.5).
        score_thresh, nms_thresh, detections_per_img: decoding.
    """

    class_dependent_tensors = (r"head\.cell_predictor\.(?:weight|bias)",)

    def __init__(
        self,
        backbone: nn.Module,
        head: YOLOv1Head | YOLOv1ConvHead,
        transform: DetectionTransform,
        lambda_coord: float = 5.0,
        lambda_noobj: float = 0.5,
        score_thresh: float = 0.001,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        if transform.fixed_size is None or transform.fixed_size[0] != transform.fixed_size[1]:
            raise ValueError(
                f"YOLOv1: the transform must warp to a fixed square size, got {transform.fixed_size}"
            )
        self.transform, self.backbone, self.head = transform, backbone, head
        self.input_size = int(transform.fixed_size[0])
        self.num_classes = head.num_classes
        self.lambda_coord, self.lambda_noobj = lambda_coord, lambda_noobj
        self.score_thresh, self.nms_thresh, self.detections_per_img = (
            score_thresh,
            nms_thresh,
            detections_per_img,
        )

    def forward(
        self,
        images: Sequence[Tensor] | Tensor,
        targets: Sequence[dict[str, Tensor]] | None = None,
        *,
        predict: bool = True,
    ) -> tuple[list[dict[str, Tensor]] | None, dict[str, Tensor]]:
        """Detections per image (None with ``predict=False``) and the loss terms (with ``targets``)."""
        check_request(targets is not None, predict, type(self).__name__)
        targets = checked_targets(images, targets, lambda t, sizes: check_targets(t, sizes, self.num_classes))
        batch, image_sizes, original_sizes, resized = self.transform(images, targets)  # (N, 3, I, I)
        out = self.head(self.backbone(batch)).float()  # (N, S, S, D), float32 under autocast too
        losses: dict[str, Tensor] = {}
        if resized is not None:
            I = float(self.input_size)  # noqa: E741  boxes relative to the (square) input
            losses = yolo_v1_loss(
                out,
                [t["boxes"] / I for t in resized],
                [t["labels"] for t in resized],
                self.head.boxes_per_cell,
                self.lambda_coord,
                self.lambda_noobj,
            )
        if not predict:
            return None, losses
        detections = decode_yolo_v1(
            out,
            image_sizes,
            self.head.boxes_per_cell,
            self.score_thresh,
            self.nms_thresh,
            self.detections_per_img,
        )
        return self.transform.postprocess(detections, image_sizes, original_sizes), losses


@dataclass
class YOLOv1Config:
    """The knobs of :func:`build_yolo_v1` (the paper's values)."""

    input_size: int = 448
    grid_size: int = 7
    boxes_per_cell: int = 2
    hidden: int = 4096
    dropout: float = 0.5  # after the first FC layer (the paper's), in training only
    head: str = "fc"  # "fc": the paper's two FC layers; "conv": a shared-weight conv head (ablation)
    batch_norm: bool = False
    width_div: int = 1
    lambda_coord: float = 5.0
    lambda_noobj: float = 0.5
    score_thresh: float = 0.001
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    image_mean: Sequence[float] = IMAGENET_MEAN
    image_std: Sequence[float] = IMAGENET_STD


def build_yolo_v1(layers: Sequence[Layer], num_classes: int, config: YOLOv1Config | None = None) -> YOLOv1:
    """The module tree, written out: the conv stack of ``layers``, the FC head, the warp transform."""
    check_num_classes(num_classes)
    c = config or YOLOv1Config()
    backbone = DarknetV1(layers, c.batch_norm, c.width_div)
    side = check_grid(c.input_size, c.grid_size, backbone.stride)
    head: YOLOv1Head | YOLOv1ConvHead
    if c.head == "fc":
        head = YOLOv1Head(
            backbone.out_channels * side * side,
            c.grid_size,
            c.boxes_per_cell,
            num_classes,
            c.hidden,
            c.dropout,
        )
    elif c.head == "conv" and side == c.grid_size:
        head = YOLOv1ConvHead(
            backbone.out_channels, c.grid_size, c.boxes_per_cell, num_classes, c.hidden, c.dropout
        )
    else:
        raise ValueError(
            f"YOLO v1: head must be 'fc' or 'conv' (a conv head needs input_size / stride = grid_size, "
            f"here {side} vs {c.grid_size}), got {c.head!r}"
        )
    transform = DetectionTransform(
        c.input_size,
        c.input_size,
        c.image_mean,
        c.image_std,
        size_divisible=1,
        fixed_size=(c.input_size, c.input_size),
    )
    return YOLOv1(
        backbone,
        head,
        transform,
        c.lambda_coord,
        c.lambda_noobj,
        c.score_thresh,
        c.nms_thresh,
        c.detections_per_img,
    )


def _config(**overrides: Any) -> YOLOv1Config:
    return make_config(YOLOv1Config, overrides, "YOLO v1")


@register_model(task="detection")
def yolo_v1(num_classes: int = 20, **config: Any) -> YOLOv1:
    """YOLO v1 as the paper has it: 24 convs + 2 FC at 448 x 448, S=7, B=2 (7x7x30 for VOC's 20)."""
    return build_yolo_v1(PAPER_LAYERS, num_classes, _config(**config))


# Why these settings: the shapes world's images are 128 px with objects of 5..47 px (median 18);
# 256 px input doubles them, and S=8 (32 px cells) puts two object centres in one cell for ~2%
# of the objects (S=7 at 448 px is the paper's 64 px cells). Nine convs (Fast YOLO's depth),
# widths 16..256, a 1x1 reduction to 64 channels before the 512-unit FC keep it CPU-sized;
# BatchNorm (YOLO v2's addition) lets it train from scratch without ImageNet pre-training.
NARROW_SETTINGS: dict[str, Any] = {"input_size": 256, "grid_size": 8, "hidden": 512, "batch_norm": True}


@register_model(task="detection")
def yolo_v1_narrow(num_classes: int = 6, **config: Any) -> YOLOv1:
    """YOLO v1 narrow for CPU training: 9 convs (16..256 channels) + BatchNorm, 256 px, S=8, B=2."""
    return build_yolo_v1(NARROW_LAYERS, num_classes, _config(**{**NARROW_SETTINGS, **config}))

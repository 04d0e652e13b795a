"""A modern anchor-free YOLO (YOLOv8's design: Jocher et al. 2023, after YOLOX, Ge et al. 2021,
and YOLOv6, Li et al. 2022): CSP backbone, PAN neck, decoupled head, DFL + CIoU, task-aligned
assignment (TOOD).

Shape shorthand:
    B: images, H, W: an original image, Hr, Wr: resized, Hp, Wp: the padded batch,
    K: object classes (background excluded), L: detection levels (strides 8, 16, 32),
    A: anchor points over all levels, R: DFL bins.

Pipeline: :class:`~structpred.layers.transform.DetectionTransform` (resize so the longer side
is ``max_size`` keeping the aspect ratio, pad bottom-right to a multiple of 32: a letterbox
anchored at the top-left corner, so no box offset to undo) -> backbone (named maps) -> the
three maps at strides 8 / 16 / 32, 1x1-projected to the neck widths when the backbone is not
the neck's own -> :class:`~structpred.layers.pan.PAN` -> :class:`~structpred.heads.yolo_head.YOLOHead`
-> loss (:func:`~structpred.heads.yolo_head.yolo_loss`) and/or detections
(:func:`~structpred.heads.yolo_head.yolo_postprocess`) scaled back to the original pixels.
Images are taken in [0, 1] without mean / std normalisation (the YOLO family's input).

Contract (DESIGN.md §3): ``model(images, targets=None) -> (predictions, losses)``; with
targets ``loss_cls``, ``loss_box``, ``loss_dfl`` in train *and* eval mode; predictions
(``boxes`` xyxy in original pixels, ``scores``, ``labels`` 1..K) in either mode, None only
with ``predict=False``. Design choices and figures: docs/yolo.md.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..heads.yolo_head import YOLOHead, anchor_points, yolo_loss, yolo_postprocess
from ..layers.conv import init_conv_norm
from ..layers.csp import conv, fuse_conv_bn_
from ..layers.pan import PAN
from ..layers.transform import DetectionTransform
from .contract import check_request, checked_targets
from .faster_rcnn import check_num_classes, check_targets, make_config
from .registry import register_model


@dataclass
class YOLOConfig:
    """The knobs of :func:`build_yolo` (YOLOv8's defaults, except the input size and the NMS IoU)."""

    min_size: int = 640
    max_size: int = 640
    image_mean: Sequence[float] = (0.0, 0.0, 0.0)
    image_std: Sequence[float] = (1.0, 1.0, 1.0)
    neck_depth: int = 1  # bottlenecks per PAN C2f block
    head_norm: str = "group"  # "group" (GroupNorm, 8 groups: per-image statistics) or "batch" (YOLOv8's)
    head_depth: int = 2  # 3x3 convs per head branch (YOLOv8: 2)
    reg_max: int = 16
    box_channels: int | None = None
    cls_channels: int | None = None
    topk: int = 10
    alpha: float = 0.5
    beta: float = 6.0
    cls_gain: float = 0.5
    box_gain: float = 7.5
    dfl_gain: float = 1.5
    score_thresh: float = 0.001
    nms_thresh: float = 0.5  # YOLOv8 validates at 0.7; 0.5 measured +0.005 val map_50 here (docs/yolo.md)
    detections_per_img: int = 100
    pre_nms_top_n: int = 1000


class YOLONeck(nn.Module):
    """The backbone's maps at ``levels`` -> optional 1x1 projections to ``channels`` -> PAN."""

    def __init__(
        self, levels: Sequence[str], in_channels: Sequence[int], channels: Sequence[int], depth: int
    ) -> None:
        super().__init__()
        self.levels = list(levels)
        self.lateral = nn.ModuleList(
            nn.Identity() if c_in == c else conv(c_in, c, 1)
            for c_in, c in zip(in_channels, channels, strict=True)
        )
        init_conv_norm(self.lateral)
        self.pan = PAN(channels, depth)

    def forward(self, features: dict[str, Tensor]) -> list[Tensor]:
        """``{name: [B, C, h, w]}`` -> ``L`` maps ``[B, C_l, H_l, W_l]`` finest first."""
        return self.pan([lat(features[k]) for k, lat in zip(self.levels, self.lateral, strict=True)])


class YOLO(nn.Module):
    """transform -> backbone -> neck -> head, each injected (see the module docstring).

    Args:
        backbone: ``images [B, 3, Hp, Wp] -> dict[str, Tensor]``.
        neck: a :class:`YOLONeck` over the backbone's maps at the head's strides.
        head: a :class:`YOLOHead`.
        transform: a :class:`DetectionTransform`.
        num_classes: K, object classes (background excluded).
        config: the loss and post-processing settings.
    """

    # Fine-tuning: the tensors whose shape depends on K (each class branch's last conv, the biases).
    # The predictor is each branch's last child, a plain conv (the blocks before it are ConvNormAct).
    class_dependent_tensors: tuple[str, ...] = (r"head\.cls\.\d+\.\d+\.weight", r"head\.cls_bias")

    def __init__(
        self,
        backbone: nn.Module,
        neck: YOLONeck,
        head: YOLOHead,
        transform: DetectionTransform,
        num_classes: int,
        config: YOLOConfig | None = None,
    ) -> None:
        super().__init__()
        self.transform, self.backbone, self.neck, self.head = transform, backbone, neck, head
        self.num_classes = num_classes
        self.config = config or YOLOConfig()
        self.is_fused = False

    def fuse(self) -> YOLO:
        """A copy for inference: every conv + BatchNorm pair folded into one conv
        (:func:`~structpred.layers.csp.fuse_conv_bn_`), GroupNorm (a per-image statistic) kept,
        the tensors channels-last: the same detections within float rounding, fewer operator
        calls. The copy is in eval mode and refuses ``train()``; ``self`` is unchanged."""
        fused = copy.deepcopy(self).eval()
        fuse_conv_bn_(fused)
        fused.is_fused = True
        # Channels-last weights, and the batch converted in forward: 10-20 % faster on CPU
        # (docs/yolo.md), the same function.
        return fused.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True) -> YOLO:
        """``nn.Module.train``; a :meth:`fuse`d copy has no batch norms left to train."""
        if mode and getattr(self, "is_fused", False):
            raise ValueError("this YOLO is fused for inference (YOLO.fuse()); train the unfused model")
        return super().train(mode)

    def forward(
        self,
        images: Sequence[Tensor] | Tensor,
        targets: Sequence[dict[str, Tensor]] | None = None,
        *,
        predict: bool = True,
    ) -> tuple[list[dict[str, Tensor]] | None, dict[str, Tensor]]:
        """Detections per image (None with ``predict=False``) and losses (with ``targets``)."""
        check_request(targets is not None, predict, type(self).__name__)
        targets = checked_targets(images, targets, lambda t, sizes: check_targets(t, sizes, self.num_classes))
        batch, image_sizes, original_sizes, resized = self.transform(images, targets)  # (B, 3, Hp, Wp)
        if self.is_fused:
            batch = batch.contiguous(memory_format=torch.channels_last)  # the fused weights' layout
        features = self.backbone(batch)
        maps = self.neck(features)  # L x (B, C_l, H_l, W_l)
        cls_logits, box_logits, map_sizes = self.head(maps)  # (B, A, K), (B, A, 4R)
        points, strides = anchor_points(map_sizes, self.head.strides, box_logits.float())  # (A, 2), (A,)
        c = self.config
        losses: dict[str, Tensor] = {}
        if resized is not None:
            gains = (c.cls_gain, c.box_gain, c.dfl_gain)
            losses = yolo_loss(
                self.head, cls_logits, box_logits, points, strides, resized, c.topk, c.alpha, c.beta, gains
            )
        if not predict:
            return None, losses
        boxes = self.head.decode(box_logits.float(), points, strides)  # (B, A, 4)
        detections = yolo_postprocess(
            cls_logits,
            boxes,
            image_sizes,
            c.score_thresh,
            c.nms_thresh,
            c.detections_per_img,
            c.pre_nms_top_n,
        )
        return self.transform.postprocess(detections, image_sizes, original_sizes), losses


def build_yolo(
    backbone: nn.Module,
    num_classes: int,
    config: YOLOConfig | None = None,
    neck_channels: Sequence[int] | None = None,
    levels: Sequence[str] | None = None,
) -> YOLO:
    """The module tree: ``backbone``'s maps at strides 8 / 16 / 32 (``levels``, default found by
    stride) -> PAN of ``neck_channels`` (default the maps' own widths) -> head for K classes."""
    check_num_classes(num_classes)
    c = config or YOLOConfig()
    strides: dict[str, int] = dict(backbone.strides)  # type: ignore[arg-type]
    channels: dict[str, int] = dict(backbone.out_channels)  # type: ignore[arg-type]
    if levels is None:
        by_stride = {s: k for k, s in reversed(list(strides.items()))}  # the first map of each stride
        missing = [s for s in (8, 16, 32) if s not in by_stride]
        if missing:
            raise ValueError(f"the YOLO head needs maps at strides 8, 16, 32; the backbone has {strides}")
        levels = [by_stride[s] for s in (8, 16, 32)]
    in_channels = [channels[k] for k in levels]
    widths = list(neck_channels) if neck_channels is not None else in_channels
    neck = YOLONeck(levels, in_channels, widths, c.neck_depth)
    if c.head_norm not in ("group", "batch"):
        raise ValueError(f"head_norm must be 'group' or 'batch', got {c.head_norm!r}")
    head_norm = (lambda ch: nn.GroupNorm(8, ch)) if c.head_norm == "group" else None
    head = YOLOHead(
        widths,
        [strides[k] for k in levels],
        num_classes,
        c.reg_max,
        c.box_channels,
        c.cls_channels,
        c.max_size,
        head_norm,
        c.head_depth,
    )
    transform = DetectionTransform(c.min_size, c.max_size, c.image_mean, c.image_std, size_divisible=32)
    return YOLO(backbone, neck, head, transform, num_classes, c)


def _config(**overrides: Any) -> YOLOConfig:
    return make_config(YOLOConfig, overrides, "YOLO")


# ---------------------------------------------------------------------------- builders


@register_model(task="detection")
def yolov8(num_classes: int = 80, scale: str = "n", **config: Any) -> YOLO:
    """YOLOv8's layout at size ``scale`` (n: PAN widths 64 / 128 / 256; s: 128 / 256 / 512; m),
    CSP-Darknet + PAN + decoupled head, 640 px, from scratch."""
    from ..backbones.csp import csp_darknet

    return build_yolo(csp_darknet(scale), num_classes, _config(**config))


# The CPU model: see docs/yolo.md for how each setting was chosen.
NARROW_SETTINGS: dict[str, Any] = {
    "min_size": 256,
    "max_size": 256,
    "reg_max": 8,
    "box_channels": 32,
    "pre_nms_top_n": 300,
}


@register_model(task="detection")
def yolo_narrow(
    num_classes: int = 6,
    widths: Sequence[int] = (16, 16, 32, 64, 128),
    depths: Sequence[int] = (1, 1, 1, 1),
    **config: Any,
) -> YOLO:
    """The small from-scratch model for CPU training: a CSP-Darknet of ``widths`` (stem, c2..c5)
    and C2f ``depths``, PAN, decoupled head, 256 px (:data:`NARROW_SETTINGS`)."""
    from ..backbones.csp import CSPDarknet

    return build_yolo(CSPDarknet(widths, depths), num_classes, _config(**{**NARROW_SETTINGS, **config}))


# The lean CPU layout (docs/yolo.md, "yolo_lite"): no C2f block at stride 4, one 3x3 conv per
# head branch. Inference through YOLO.fuse() (conv + BN folded).
LITE_LAYOUT: dict[str, Any] = {
    "widths": (16, 16, 32, 64, 128),
    "depths": (0, 1, 1, 1),
    "head_depth": 1,
    "head_norm": "batch",  # folded into the convs by YOLO.fuse() (GroupNorm would stay)
}


@register_model(task="detection")
def yolo_lite(num_classes: int = 6, **config: Any) -> YOLO:
    """:func:`yolo_narrow` with fewer layers for CPU inference (:data:`LITE_LAYOUT`): the stride-4
    stage is its stride-2 conv alone, and each head branch has one 3x3 conv; 256 px."""
    layout = {**LITE_LAYOUT, **config}
    return yolo_narrow(num_classes, layout.pop("widths"), layout.pop("depths"), **layout)


@register_model(task="detection")
def yolo_fpn(
    num_classes: int = 6,
    backbone: str = "resnet18",
    neck_channels: Sequence[int] = (64, 128, 256),
    backbone_args: dict[str, Any] | None = None,
    **config: Any,
) -> YOLO:
    """The YOLO neck and head over any registered backbone with maps at strides 8 / 16 / 32
    (``structpred.backbones.list_backbones()``), projected to ``neck_channels``."""
    from ..backbones.registry import get_backbone

    return build_yolo(
        get_backbone(backbone, **(backbone_args or {})), num_classes, _config(**config), neck_channels
    )

"""The structured heads of the multi-task network (:mod:`.multitask`), each over the shared pyramid.

Shape shorthand: B images, D pyramid channels, K classes, H x W the input images (one size per
batch), Hr x Wr the images after the model's resize, Hp x Wp the padded batch, N boxes.

A head is a task's last stage: it reads :class:`SharedFeatures` (the pyramid, finest first, at
strides 4, 8, ..., and the sizes), takes only its own target keys, and returns its task's
predictions under that task's contract (:mod:`structpred.tasks`) and its loss terms:

* :class:`DetectionHead`, task ``detection``: FCOS's stage (:meth:`~.fcos.FCOS.detect`, the
  one-stage issue's head) over levels 1..5 (strides 8..128); boxes in the input's pixels.
* :class:`SegmentationHead`, task ``semantic_segmentation``: for any label map (``semantic``,
  ``parts``); ``logits`` / ``label_map`` at the input's resolution.
* :class:`DepthHead`, task ``monocular_depth``: one channel, a disparity
  ``max_disparity * W * sigmoid(x)`` (Godard et al.'s output), supervised (L1 of log disparity) by the
  item's ``disparity`` or by ``depth`` through the camera (``focal * baseline / depth``).

A dense head's ``branch`` is either a :class:`~structpred.heads.dense_fpn.DensePredictor` on the
network's shared dense decoder's map (:attr:`SharedFeatures.dense`, Panoptic FPN's semantic branch
over levels 0..3 computed once for every dense head), or its own whole Panoptic FPN branch
(:class:`~structpred.heads.dense_fpn.FPNDenseHead`, reading the pyramid: the ``per_head`` layout).
Either gives a stride-4 map of the padded batch; the resized images' part of it is resampled once
to ``H x W`` (:func:`~structpred.heads.dense_fpn.to_input_pixels`), so outputs and targets are in
the input's pixels whatever the model's internal size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..heads.dense_fpn import DensePredictor, FPNDenseHead, to_input_pixels
from ..layers.transform import resize_boxes
from .faster_rcnn import DetectorInput
from .fcos import FCOS
from .segmenter import masked_cross_entropy, stack_labels

HeadOutput = tuple[Any, dict[str, Tensor]]  # (the task's predictions or None, {"loss_*": scalar})


class SharedFeatures(NamedTuple):
    """What every head reads: the shared pyramid of one batch and its sizes."""

    maps: list[Tensor]  # finest first, [B, D, Hp / 4, Wp / 4], [B, D, Hp / 8, Wp / 8], ...
    padded_size: tuple[int, int]  # (Hp, Wp)
    image_size: tuple[int, int]  # (Hr, Wr): the resized images inside the padded batch
    original_size: tuple[int, int]  # (H, W): the input images
    dense: Tensor | None = None  # the shared dense decoder's map [B, C, Hp / 4, Wp / 4], if any

    def select(self, index: Tensor) -> SharedFeatures:
        """The same batch restricted to the items ``index`` (int64 ``[B']``)."""
        dense = self.dense.index_select(0, index) if self.dense is not None else None
        return self._replace(maps=[m.index_select(0, index) for m in self.maps], dense=dense)


class TaskHead(nn.Module):
    """A head: ``forward(features, targets | None, predict) -> (predictions | None, losses)``."""

    task: ClassVar[str] = ""  # the registered task whose prediction contract the head keeps
    target_keys: tuple[str, ...] = ()  # what an item needs for this head's loss
    reads_dense: bool = False  # reads SharedFeatures.dense (the network's shared dense decoder)

    def check_targets(self, targets: Sequence[dict[str, Any]], size: tuple[int, int], where: str) -> None:
        """Raise a ``ValueError`` starting with ``where`` unless the targets fit this head."""

    def metric_targets(self, targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The targets as the task's metric reads them (default: unchanged)."""
        return targets


DenseBranch = FPNDenseHead | DensePredictor  # a dense head's own branch, or its predictor


def _check_branch(branch: nn.Module, where: str) -> None:
    if not isinstance(branch, FPNDenseHead | DensePredictor):
        raise ValueError(f"{where}: the branch must be an FPNDenseHead or a DensePredictor, "
                         f"got {type(branch).__name__}")  # fmt: skip


def _dense_output(branch: DenseBranch, x: SharedFeatures, where: str) -> Tensor:
    """The branch's stride-4 map resampled once to the input's pixels: ``[B, K, H, W]``."""
    if isinstance(branch, FPNDenseHead):
        out = branch(x.maps)  # its own decoder on the pyramid: (B, K, Hp/4, Wp/4)
    elif x.dense is None:
        raise ValueError(f"{where} predicts on the shared dense decoder's map; the features have none")
    else:
        out = branch(x.dense)  # (B, C, Hp/4, Wp/4) -> (B, K, Hp/4, Wp/4)
    return to_input_pixels(out, x.image_size, x.original_size)  # (B, K, H, W)


def label_map(logits: Tensor) -> Tensor:
    """``[B, K, H, W]`` -> int64 ``[B, H, W]``: ``logits.argmax(1)``, bit for bit (the first
    largest class; a NaN counts as the largest), computed as ``max(1).indices`` (~3x faster on CPU)."""
    return logits.max(1).indices


class DetectionHead(TaskHead):
    """Boxes, scores, labels: FCOS's head, matching and post-processing on the shared pyramid.

    Args:
        fcos: an :class:`~.fcos.FCOS` whose ``backbone`` and ``transform`` are unused (the
            network's own run first): built by :func:`~.fcos.build_fcos` over a
            :class:`PyramidSpec`. Its ``score_thresh``, ``nms_thresh``, ... are the head's settings.
        first_level: the pyramid level of FCOS's first (finest) map; it reads
            ``len(fcos.anchor_sizes)`` levels from there.
    """

    task = "detection"
    target_keys = ("boxes", "labels")

    def __init__(self, fcos: FCOS, first_level: int = 1) -> None:
        super().__init__()
        self.fcos = fcos
        self.first_level = first_level
        self.num_classes = fcos.num_classes  # the detection task reads K here

    def check_targets(self, targets: Sequence[dict[str, Any]], size: tuple[int, int], where: str) -> None:
        try:
            self.fcos.validate_targets(targets, [size] * len(targets))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

    def forward(self, x: SharedFeatures, targets: list[dict[str, Any]] | None, predict: bool) -> HeadOutput:
        levels = self.first_level + len(self.fcos.anchor_sizes)
        if len(x.maps) < levels:
            raise ValueError(f"detection head: the pyramid has {len(x.maps)} maps, it reads levels "
                             f"{self.first_level}..{levels - 1}")  # fmt: skip
        maps = {str(i): m for i, m in enumerate(x.maps[self.first_level : levels])}
        B = x.maps[0].shape[0]
        resized = None
        if targets is not None:  # boxes in the resized images' pixels, as FCOS matches them
            resized = [
                {**t, "boxes": resize_boxes(t["boxes"].to(x.maps[0].device), x.original_size, x.image_size)}
                for t in targets
            ]
        detections, losses = self.fcos.detect(
            DetectorInput(maps, x.padded_size, [x.image_size] * B, resized), predict
        )
        if detections is not None:
            for d in detections:  # back to the input's pixels
                d["boxes"] = resize_boxes(d["boxes"], x.image_size, x.original_size)
        return detections, losses


@dataclass
class SegmentationConfig:
    """What the semantic-segmentation task reads of a segmenter (``num_classes``, ``target_key``...)."""

    num_classes: int
    target_key: str = "semantic"
    ignore_index: int = 255


class SegmentationHead(TaskHead):
    """Per-pixel classes of one label map (``target_key``): ``logits`` and ``label_map``."""

    task = "semantic_segmentation"

    def __init__(self, branch: DenseBranch, target_key: str = "semantic", ignore_index: int = 255) -> None:
        super().__init__()
        _check_branch(branch, f"{target_key} head")
        self.branch = branch
        self.reads_dense = isinstance(branch, DensePredictor)
        self.config = SegmentationConfig(branch.out_channels, target_key, ignore_index)
        self.target_keys = (target_key,)

    def _labels(self, targets: Sequence[dict[str, Any]], size: tuple[int, int]) -> Tensor:
        c = self.config
        return stack_labels(targets, c.target_key, size, c.num_classes, c.ignore_index)  # (B, H, W)

    def check_targets(self, targets: Sequence[dict[str, Any]], size: tuple[int, int], where: str) -> None:
        try:
            self._labels(targets, size)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

    def forward(self, x: SharedFeatures, targets: list[dict[str, Any]] | None, predict: bool) -> HeadOutput:
        logits = _dense_output(self.branch, x, f"head {self.config.target_key!r}")  # (B, K, H, W)
        losses = {}
        if targets is not None:
            labels = self._labels(targets, x.original_size).to(logits.device)
            losses["loss_ce"] = masked_cross_entropy(logits.float(), labels, self.config.ignore_index)
        if not predict:
            return None, losses
        return {"logits": logits, "label_map": label_map(logits)}, losses  # label_map (B, H, W)


class DepthHead(TaskHead):
    """Disparity of the (only) view, in pixels of the input width; supervised.

    Args:
        branch: an :class:`FPNDenseHead` or a :class:`DensePredictor` with one output channel.
        target_key: ``"disparity"`` (px, ``[1, H, W]``) or ``"depth"`` (m, ``[1, H, W]``):
            ``disparity = focal * baseline / depth`` with the camera's ``focal`` px and ``baseline``
            m (a dataset with those attributes sets them); without a camera the head learns
            ``1 / depth`` (focal x baseline = 1 px m) and the depth metric median-scales it.
        max_disparity: the largest disparity as a fraction of the width (Godard et al.: 0.3).
    Pixels with no finite positive target (or ``valid`` False, when the item has it) carry no loss.
    """

    task = "monocular_depth"

    def __init__(
        self,
        branch: DenseBranch,
        target_key: str = "depth",
        focal: float | None = None,
        baseline: float | None = None,
        max_disparity: float = 0.3,
    ) -> None:
        super().__init__()
        _check_branch(branch, "depth head")
        if branch.out_channels != 1:
            raise ValueError(f"depth head: the branch must give 1 channel, got {branch.out_channels}")
        if target_key not in ("depth", "disparity"):
            raise ValueError(f"depth head: target_key must be 'depth' or 'disparity', got {target_key!r}")
        calibrated = focal is not None and baseline is not None
        if calibrated and not (math.isfinite(focal * baseline) and focal > 0 and baseline > 0):  # type: ignore[operator]
            raise ValueError(f"depth head: focal and baseline must be positive, got {focal}, {baseline}")
        if not 0 < max_disparity <= 1:
            raise ValueError(
                f"depth head: max_disparity is a fraction of the width in (0, 1], got {max_disparity}"
            )
        self.branch = branch
        self.reads_dense = isinstance(branch, DensePredictor)
        self.target_key = target_key
        self.target_keys = (target_key,)
        self.focal: float | None = float(focal) if calibrated and focal is not None else None
        self.baseline: float | None = float(baseline) if calibrated and baseline is not None else None
        self.max_disparity = max_disparity

    def _target_disparity(
        self, targets: Sequence[dict[str, Any]], size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """``(disparity [B, 1, H, W] px, valid bool[B, 1, H, W])`` from the targets, checked."""
        maps, valids = [], []
        for i, t in enumerate(targets):
            m = t.get(self.target_key) if isinstance(t, dict) else None
            if not isinstance(m, Tensor) or tuple(m.shape) != (1, *size) or not m.is_floating_point():
                got = f"{m.dtype} {tuple(m.shape)}" if isinstance(m, Tensor) else type(m).__name__
                raise ValueError(f"targets[{i}][{self.target_key!r}] must be a float Tensor[1, {size[0]}, "
                                 f"{size[1]}], got {got}")  # fmt: skip
            valid = torch.isfinite(m) & (m > 0)
            if isinstance(t.get("valid"), Tensor):
                valid &= t["valid"].to(torch.bool).reshape(1, *size)
            if self.target_key == "depth":
                m = self._focal_baseline() / torch.where(valid, m, torch.ones_like(m))
            maps.append(torch.where(valid, m, torch.zeros_like(m)))
            valids.append(valid)
        return torch.stack(maps), torch.stack(valids)

    def _focal_baseline(self) -> float:
        """focal x baseline (px m): disparity = this / depth (1 without a camera: inverse depth)."""
        return self.focal * self.baseline if self.focal is not None and self.baseline is not None else 1.0

    def check_targets(self, targets: Sequence[dict[str, Any]], size: tuple[int, int], where: str) -> None:
        try:
            self._target_disparity(targets, size)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

    def metric_targets(self, targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The camera added to each target without one, so the depth metric is in metres."""
        if self.focal is None or self.baseline is None:
            return targets
        camera = {"focal": torch.tensor(self.focal), "baseline": torch.tensor(self.baseline)}
        return [t if "focal" in t else {**t, **camera} for t in targets]

    def forward(self, x: SharedFeatures, targets: list[dict[str, Any]] | None, predict: bool) -> HeadOutput:
        raw = _dense_output(self.branch, x, "head 'depth'").float()  # (B, 1, H, W)
        # log disparity in px of the input width, formed in the log domain: a very negative output
        # would underflow sigmoid to 0 and its log to -inf
        log_disparity = math.log(self.max_disparity * x.original_size[1]) + F.logsigmoid(raw)
        disparity = torch.exp(log_disparity)  # max_disparity * W * sigmoid(raw)
        losses = {}
        if targets is not None:
            target, valid = self._target_disparity(targets, x.original_size)
            target, valid = target.to(raw.device), valid.to(raw.device)
            # |log d - log d*| = |log z - log z*|: the relative error AbsRel measures, and of the
            # classification losses' scale, so that fixed weights of 1 balance the heads
            error = (log_disparity - torch.log(torch.where(valid, target, 1.0))).abs() * valid
            losses["loss_log_l1"] = error.sum() / valid.sum().clamp(min=1)  # (B, 1, H, W) -> ()
        if not predict:
            return None, losses
        return {"disparity": disparity}, losses


class PyramidSpec(nn.Identity):
    """A stand-in backbone for :func:`~.fcos.build_fcos`: the shared pyramid's width, no layers."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels

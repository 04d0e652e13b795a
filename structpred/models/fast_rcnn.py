"""Fast R-CNN (Girshick, ICCV 2015): one conv pass per image, external proposals RoI-pooled from it.

Shape shorthand:
    B: images, H, W: an original image, Hr, Wr: resized, Hp, Wp: the padded batch,
    Hf, Wf = Hp / s, Wp / s: the feature map of stride s, C: its channels, T: RoI cells (T x T),
    P: proposals of one image, S: RoIs of the batch, K: object classes (background excluded).

Pipeline: :class:`~structpred.layers.transform.DetectionTransform` (normalise, resize, pad) ->
conv trunk, once for the whole image -> one map ``[B, C, Hf, Wf]`` (VGG-16 conv5_3, s = 16) ->
every proposal max-pooled into T x T cells at ``spatial_scale = 1/s`` (or SPP levels 1, 2, 4:
``C * 21`` features, or RoIAlign) -> fc6, fc7 -> softmax over K+1 classes and per-class box
deltas (:class:`~structpred.heads.roi_heads.RoIHeads`). Loss: cross-entropy + smooth L1 on
64 RoIs per image, 25 % foreground (IoU >= 0.5 with a ground-truth box), the rest background
with best IoU in ``[0.1, 0.5)`` -- the 0.1 floor is the paper's hard-example heuristic.

Proposals are class-agnostic xyxy boxes in *original-image* pixels, taken from the first of:
    1. ``model(images, proposals=[Tensor[P, 4], ...])``;
    2. ``targets[i]["proposals"]`` (see :class:`~structpred.proposals.WithProposals`);
    3. Selective Search ("fast", 2000 boxes) on the image, cached on the module by
       ``(targets[i]["image_id"], image content)`` when an ``image_id`` is given.
They are scaled with the image, clipped to it; boxes wholly outside are dropped.

Contract (DESIGN.md §3) as :class:`~structpred.models.faster_rcnn.FasterRCNN`, with the losses
``loss_classifier``, ``loss_box_reg`` (train and eval mode, whenever targets are given).

Departures from the paper: smooth L1 beta 1/9 (RoIHeads, shared with Faster R-CNN; paper: 1),
ImageNet RGB normalisation (torchvision's VGG weights), no truncated SVD, single scale.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..heads.roi_heads import FastRCNNPredictor, RoIHeads, TwoMLPHead
from ..layers.poolers import RoIPooler
from ..layers.transform import DetectionTransform, as_image_list, resize_boxes
from ..ops import BackgroundFloorMatcher, clip_boxes_to_image
from ..proposals import ProposalFn, WithProposals, check_proposals, image_fingerprint, selective_search
from .contract import check_request
from .faster_rcnn import check_targets
from .registry import register_model

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- model
class FastRCNN(nn.Module):
    """transform -> backbone (once per image) -> RoI pooling of proposals -> RoI heads.

    Args:
        backbone: ``images [B, 3, Hp, Wp] -> dict[str, Tensor]`` or one Tensor (named ``"0"``).
        roi_heads: a :class:`RoIHeads` whose pooler reads the backbone's map.
        transform: a :class:`DetectionTransform`.
        num_classes: K, object classes (background excluded).
        proposal_fn: image -> proposals when none are given; ``None``: Selective Search, fast.
        cache_size: computed proposals kept (least recently used dropped); 0 disables.
    """


    def __init__(
        self,
        backbone: nn.Module,
        roi_heads: RoIHeads,
        transform: DetectionTransform,
        num_classes: int,
        proposal_fn: ProposalFn | None = None,
        cache_size: int = 10000,
    ) -> None:
        super().__init__()
        self.transform, self.backbone, self.roi_heads = transform, backbone, roi_heads
        self.num_classes = num_classes
        self.proposal_fn = proposal_fn or partial(selective_search, mode="fast", max_proposals=2000)
        self.cache_size = cache_size
        self.proposal_cache: OrderedDict[tuple[int | str, str], Tensor] = OrderedDict()

    def wrap_dataset(self, dataset: Dataset) -> WithProposals:
        """``dataset`` with this model's proposals precomputable (see :class:`WithProposals`)."""
        return WithProposals(dataset, proposal_fn=self.proposal_fn)

    def _computed(self, image: Tensor, image_id: Any) -> Tensor:
        """Proposals of one image from ``proposal_fn``, through the cache when ``image_id`` is set."""
        key = None
        ident = image_id.item() if isinstance(image_id, Tensor) and image_id.numel() == 1 else image_id
        if isinstance(ident, (int, str)) and self.cache_size > 0:
            key = (ident, image_fingerprint(image))
            if key in self.proposal_cache:
                self.proposal_cache.move_to_end(key)
                return self.proposal_cache[key].to(image.device)
        tic = time.perf_counter()
        boxes = self.proposal_fn(image)
        logger.debug("proposals: %d boxes in %.3f s", boxes.shape[0], time.perf_counter() - tic)
        if key is not None:
            self.proposal_cache[key] = boxes.detach()
            while len(self.proposal_cache) > self.cache_size:
                self.proposal_cache.popitem(last=False)
        return boxes

    def _proposals(
        self,
        images: list[Tensor],
        targets: Sequence[dict[str, Any]] | None,
        proposals: Sequence[Tensor] | None,
    ) -> list[Tensor]:
        """Validated proposals per image in original pixels (see the module docstring)."""
        if proposals is not None and len(proposals) != len(images):
            raise ValueError(f"{len(proposals)} proposals tensors for {len(images)} images")
        out = []
        for i, image in enumerate(images):
            size = (int(image.shape[1]), int(image.shape[2]))
            target = targets[i] if targets is not None else {}
            if proposals is not None and torch.compiler.is_exporting():
                # Exported: no value checks (no data-dependent branch); clip and drop empty boxes
                # as check_proposals does.
                clipped = clip_boxes_to_image(proposals[i], size)
                out.append(clipped[(clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])])
            elif proposals is not None:
                out.append(check_proposals(proposals[i], size, f"proposals[{i}]"))
            elif "proposals" in target:
                out.append(check_proposals(target["proposals"], size, f"targets[{i}]['proposals']"))
            else:
                boxes = self._computed(image, target.get("image_id"))
                out.append(check_proposals(boxes.to(image.device, image.dtype), size, "computed proposals"))
        return out

    def forward(
        self,
        images: Sequence[Tensor] | Tensor,
        targets: Sequence[dict[str, Tensor]] | None = None,
        proposals: Sequence[Tensor] | None = None,
        *,
        predict: bool = True,
    ) -> tuple[list[dict[str, Tensor]] | None, dict[str, Tensor]]:
        """Detections (unless ``predict=False``: None) and losses (with ``targets``), in either
        mode; ``proposals`` per image, optional."""
        check_request(targets is not None, predict, type(self).__name__)
        image_list = as_image_list(images)
        sizes = [(int(im.shape[1]), int(im.shape[2])) for im in image_list]
        if targets is not None:
            if len(targets) != len(sizes):
                raise ValueError(f"{len(targets)} targets for {len(sizes)} images")
            targets = check_targets(targets, sizes, self.num_classes)
        boxes = self._proposals(image_list, targets, proposals)
        if targets is not None:  # the transform scales gt boxes only: proposals are scaled below
            targets = [{k: v for k, v in t.items() if k != "proposals"} for t in targets]
        batch, image_sizes, original_sizes, resized = self.transform(image_list, targets)  # (B, 3, Hp, Wp)
        boxes = [
            clip_boxes_to_image(resize_boxes(b, original, size), size)
            for b, original, size in zip(boxes, original_sizes, image_sizes, strict=True)
        ]
        features = self.backbone(batch)  # (B, C, Hf, Wf) by name
        if isinstance(features, Tensor):
            features = {"0": features}
        detections, losses = self.roi_heads(features, boxes, image_sizes, resized, predict=predict)
        if detections is None:
            return None, losses
        return self.transform.postprocess(detections, image_sizes, original_sizes), losses


@dataclass
class FastRCNNConfig:
    """The knobs of :func:`build_fast_rcnn`; defaults are the paper's (VGG-16, VOC)."""

    min_size: int | Sequence[int] = 600
    max_size: int = 1000
    image_mean: Sequence[float] = (0.485, 0.456, 0.406)
    image_std: Sequence[float] = (0.229, 0.224, 0.225)
    pool: str = "roi_pool"  # "roi_pool" | "spp" | "roi_align"
    pool_size: int = 7
    spp_levels: Sequence[int] = (1, 2, 4)
    sampling_ratio: int = 2  # roi_align only
    representation_size: int = 4096
    dropout: float = 0.5  # VGG16Head only
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    bg_iou_floor: float = 0.1
    batch_size_per_image: int = 64  # R = 128 RoIs from N = 2 images
    positive_fraction: float = 0.25
    bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0)
    score_thresh: float = 0.05
    nms_thresh: float = 0.3
    detections_per_img: int = 100
    proposal_mode: str = "fast"
    max_proposals: int = 2000
    cache_size: int = 10000


def build_fast_rcnn(
    backbone: nn.Module,
    pooler: RoIPooler,
    box_head: nn.Module,
    head_width: int,
    num_classes: int,
    config: FastRCNNConfig | None = None,
) -> FastRCNN:
    """The module tree, written out: a one-map backbone, its pooler, fc6/fc7, K object classes."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes (object classes, background excluded) must be >= 1, got {num_classes!r}"
        )
    c = config or FastRCNNConfig()
    predictor = FastRCNNPredictor(head_width, num_classes + 1)
    # The paper's initialisation: N(0, 0.01) scores, N(0, 0.001) deltas, zero biases.
    for layer, std in ((predictor.cls_score, 0.01), (predictor.bbox_pred, 0.001)):
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)
    roi_heads = RoIHeads(
        pooler, box_head, predictor,
        fg_iou_thresh=c.fg_iou_thresh, bg_iou_thresh=c.bg_iou_thresh,
        batch_size_per_image=c.batch_size_per_image, positive_fraction=c.positive_fraction,
        bbox_reg_weights=c.bbox_reg_weights, score_thresh=c.score_thresh,
        nms_thresh=c.nms_thresh, detections_per_img=c.detections_per_img,
        matcher=BackgroundFloorMatcher(c.fg_iou_thresh, c.bg_iou_thresh, c.bg_iou_floor),
    )  # fmt: skip
    transform = DetectionTransform(c.min_size, c.max_size, c.image_mean, c.image_std)
    proposal_fn = partial(selective_search, mode=c.proposal_mode, max_proposals=c.max_proposals)
    return FastRCNN(backbone, roi_heads, transform, num_classes, proposal_fn, c.cache_size)


# ---------------------------------------------------------------------------- builders
def _config(**overrides: Any) -> FastRCNNConfig:
    """The default config with keyword overrides; unknown names are a ``ValueError``."""
    known = {f.name for f in fields(FastRCNNConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown Fast R-CNN settings {unknown}; known: {sorted(known)}")
    return FastRCNNConfig(**overrides)


@register_model(task="detection")
def fast_rcnn_vgg16(num_classes: int = 20, trainable_from: int = 10, **config: Any) -> FastRCNN:
    """Fast R-CNN, VGG-16 (the paper's model L): conv5_3 (stride 16) -> 7x7 RoI pooling ->
    fc6/fc7 (25088 -> 4096 -> 4096, dropout 0.5); conv1_x, conv2_x frozen (``trainable_from=10``).
    Load ImageNet weights into ``backbone`` / ``roi_heads.box_head`` (see backbones.vgg)."""
    from ..backbones.vgg import VGG16Head, vgg16

    c = _config(**config)
    pooler = RoIPooler("c5", 16, c.pool, c.pool_size, c.spp_levels, c.sampling_ratio)
    head = VGG16Head(pooler.out_features(512), c.representation_size, c.dropout)
    backbone = vgg16(trainable_from=trainable_from)
    return build_fast_rcnn(backbone, pooler, head, head.out_features, num_classes, c)


@register_model(task="detection")
def fast_rcnn_narrow(num_classes: int = 6, width: int = 16, featmap: str = "c3", **config: Any) -> FastRCNN:
    """The small from-scratch model for CPU training: NarrowNet cut after ``featmap`` ("c3":
    stride 8, 2*width channels; "c4": stride 16), a 256-wide fc6/fc7, images kept at 128-256 px."""
    from ..backbones.narrow import NarrowNet

    depth = {"c2": 1, "c3": 2, "c4": 3, "c5": 4}
    if featmap not in depth:
        raise ValueError(f"featmap must be one of {tuple(depth)}, got {featmap!r}")
    net = NarrowNet((width, 2 * width, 4 * width, 8 * width))
    # Only the stages up to ``featmap``: later ones would hold parameters without gradients.
    stages = [net.layer1, net.layer2, net.layer3, net.layer4][: depth[featmap]]
    trunk = nn.Sequential(net.stem, *stages)  # (B, 3, Hp, Wp) -> (B, C, Hp/s, Wp/s)
    settings: dict[str, Any] = {"min_size": 128, "max_size": 256, "representation_size": 256, **config}
    c = _config(**settings)
    pooler = RoIPooler("0", net.strides[featmap], c.pool, c.pool_size, c.spp_levels, c.sampling_ratio)
    head = TwoMLPHead(pooler.out_features(net.out_channels[featmap]), c.representation_size)
    return build_fast_rcnn(trunk, pooler, head, c.representation_size, num_classes, c)

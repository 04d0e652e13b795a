"""DeepLab-style segmentation: an atrous (dilated) backbone, a dense head, bilinear upsampling, and
an optional fully-connected CRF on top.

* DeepLab-v3 (Chen, Papandreou, Schroff & Adam 2017, "Rethinking Atrous Convolution for Semantic
  Image Segmentation"): ResNet-50 with layer3 / layer4 dilated instead of strided (output
  stride 8), then ASPP (:mod:`structpred.heads.deeplab_head`). ``deeplabv3_resnet50`` is
  torchvision's model of that name, module for module.
* ``fcn_resnet50``: torchvision's "FCN" on the same dilated ResNet-50 (a 3x3 conv-BN-ReLU-dropout
  -1x1 head, :class:`structpred.heads.fcn_head.FCNHead`); the VGG FCN of the paper is ``models.fcn``.
* The CRF: DeepLab v1/v2 (Chen et al. 2015 / 2017) post-process the network's probabilities with
  a fully-connected CRF (Krähenbühl & Koltun 2011). Here it is the ``refine`` hook: with
  ``config.crf``, the label map is read from ``log(dense_crf(softmax(logits), image))`` in both
  modes (``predictions["logits"]`` stay the network's own; training steps skip the CRF).

Shape shorthand: B images, K classes, H x W input, h x w the backbone's stride-8 map.

Convention:
    * Input: ``[0, 1]`` images, normalised inside with ImageNet mean / std (torchvision's
      segmentation models expect the normalised batch; see ``models.weights.torchvision_segmentation``).
    * Logits are resized to the input with ``F.interpolate(..., mode="bilinear",
      align_corners=False)``, as torchvision.
    * Auxiliary head (``aux=True``): FCNHead on layer3 (1024 channels for ResNet-50); its
      loss is ``aux_weight`` (0.5, torchvision's reference recipe) x cross-entropy, and its logits
      are returned as ``predictions["aux_logits"]`` in both modes.
    * Backbone norms are trainable ``nn.BatchNorm2d`` (torchvision's segmentation builders); the
      image-pooling branch needs batches of 2+ in training.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones.registry import check_backbone, get_backbone
from ..heads.deeplab_head import DeepLabHead
from ..heads.fcn_head import FCNHead
from .registry import register_model
from .segmenter import SegmenterConfig, SemanticSegmenter, config_from

logger = logging.getLogger(__name__)

HEADS = ("deeplabv3", "fcn")


class AtrousNet(nn.Module):
    """Normalised ``[B, 3, H, W]`` -> ``{"out": [B, K, H, W], "aux"?: [B, K, H, W]}``.

    Args:
        backbone: any ``forward_features(x) -> dict`` backbone (a dilated ResNet / NarrowNet).
        head: ``[B, C, h, w] -> [B, K, h, w]`` on ``features[out_key]``.
        aux_head: the same on ``features[aux_key]``, or ``None``.
        out_key, aux_key: which backbone maps feed them (``c5`` = layer4, ``c4`` = layer3).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        aux_head: nn.Module | None = None,
        *,
        out_key: str = "c5",
        aux_key: str = "c4",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head
        self.out_key = out_key
        self.aux_key = aux_key

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """x: normalised ``[B, 3, H, W]`` -> logits at the input's size."""
        size = x.shape[-2:]
        feats = self.backbone.forward_features(x)  # type: ignore[operator]
        out = self.head(feats[self.out_key])  # (B, K, h, w)
        result = {"out": F.interpolate(out, size=size, mode="bilinear", align_corners=False)}  # (B, K, H, W)
        if self.aux_head is not None:
            aux = self.aux_head(feats[self.aux_key])  # (B, K, h, w)
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result


@dataclasses.dataclass
class DeepLabConfig(SegmenterConfig):
    """The knobs of :func:`build_atrous`; defaults are torchvision's ``deeplabv3_resnet50``.

    The CRF parameters are :func:`structpred.ops.dense_crf`'s (its defaults, the common
    pydensecrf settings); DeepLab cross-validates them per data set.
    """

    head: str = "deeplabv3"  # or "fcn" (torchvision's fcn_resnet50 head)
    aux: bool = False
    aux_weight: float = 0.5
    atrous_rates: tuple[int, ...] = (12, 24, 36)
    aspp_channels: int = 256
    dropout: float = 0.5  # after the ASPP projection (the FCN head uses 0.1, torchvision's)
    crf: bool = False
    crf_num_iters: int = 5
    crf_sxy_gaussian: float = 3.0
    crf_compat_gaussian: float = 3.0
    crf_sxy_bilateral: float = 80.0
    crf_srgb_bilateral: float = 13.0
    crf_compat_bilateral: float = 10.0

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.crf_num_iters < 0:
            raise ValueError(f"crf_num_iters must be >= 0, got {self.crf_num_iters}")
        self.atrous_rates = tuple(int(r) for r in self.atrous_rates)


def _dense_crf() -> Callable[..., Tensor]:
    """``structpred.ops.dense_crf``, imported when first needed."""
    from ..ops import dense_crf

    return dense_crf


class AtrousSegmenter(SemanticSegmenter):
    """:class:`SemanticSegmenter` whose label map may come from a dense CRF (``config.crf``)."""

    config: DeepLabConfig

    def refine(self, logits: Tensor, images: Tensor) -> Tensor:
        """``[B, K, H, W]`` logits -> ``log`` of the CRF marginals (or unchanged without ``crf``).

        ``images`` are the ``[0, 1]`` inputs; the CRF's appearance kernel reads them as uint8 RGB.
        """
        c = self.config
        if not c.crf:
            return logits
        dense_crf = _dense_crf()
        probs = logits.float().softmax(dim=1)  # (B, K, H, W)
        image_u8 = (images.clamp(0, 1) * 255).round().to(torch.uint8)  # (B, 3, H, W)
        q = dense_crf(
            probs,
            image_u8,
            num_iters=c.crf_num_iters,
            sxy_gaussian=c.crf_sxy_gaussian,
            compat_gaussian=c.crf_compat_gaussian,
            sxy_bilateral=c.crf_sxy_bilateral,
            srgb_bilateral=c.crf_srgb_bilateral,
            compat_bilateral=c.crf_compat_bilateral,
        )
        return q.clamp_min(torch.finfo(q.dtype).tiny).log().to(logits.dtype)


def build_atrous(backbone: nn.Module, config: DeepLabConfig) -> AtrousSegmenter:
    """An :class:`AtrousSegmenter` with the head ``config.head`` on ``backbone``'s last (coarsest)
    map and, with ``config.aux``, an FCNHead on the map before it (layer4 / layer3 of a ResNet)."""
    check_backbone(backbone, "build_atrous")
    channels: dict[str, int] = backbone.out_channels  # type: ignore[assignment]
    if len(channels) < 2:
        raise ValueError(f"build_atrous needs a backbone with >= 2 maps, got {list(channels)}")
    (aux_key, aux_channels), (out_key, in_channels) = list(channels.items())[-2:]
    c, K = config, config.num_classes
    head: nn.Module
    if c.head == "deeplabv3":
        head = DeepLabHead(in_channels, K, c.atrous_rates, channels=c.aspp_channels, dropout=c.dropout)
    else:
        head = FCNHead(in_channels, K)
    aux_head = FCNHead(aux_channels, K) if c.aux else None
    return AtrousSegmenter(AtrousNet(backbone, head, aux_head, out_key=out_key, aux_key=aux_key), c)


def _resnet50_model(
    head: str, num_classes: int, target_key: str, aux: bool, config: dict[str, Any]
) -> AtrousSegmenter:
    overrides = {"head": head, "num_classes": num_classes, "target_key": target_key, "aux": aux}
    c = config_from(DeepLabConfig, {**config, **overrides})
    return build_atrous(get_backbone("resnet50", norm_layer=nn.BatchNorm2d, output_stride=8), c)


@register_model(task="semantic_segmentation", peer_weights=("torchvision",))
def deeplabv3_resnet50(
    num_classes: int = 21, target_key: str = "semantic", aux: bool = False, **config: Any
) -> AtrousSegmenter:
    """DeepLab-v3, dilated ResNet-50 (output stride 8), ASPP rates (12, 24, 36); torchvision's layout.

    ``num_classes`` counts background. Load ImageNet ResNet-50 weights into ``net.backbone``.
    """
    return _resnet50_model("deeplabv3", num_classes, target_key, aux, config)


@register_model(task="semantic_segmentation", peer_weights=("torchvision",))
def fcn_resnet50(
    num_classes: int = 21, target_key: str = "semantic", aux: bool = False, **config: Any
) -> AtrousSegmenter:
    """torchvision's ``fcn_resnet50``: dilated ResNet-50, FCNHead (2048 -> 512 -> K)."""
    return _resnet50_model("fcn", num_classes, target_key, aux, config)


@register_model(task="semantic_segmentation")
def deeplab_narrow(
    num_classes: int = 7,
    target_key: str = "semantic",
    aux: bool = False,
    widths: tuple[int, int, int, int] = (16, 32, 64, 128),
    **config: Any,
) -> AtrousSegmenter:
    """DeepLab-v3 on a small from-scratch backbone for CPU training (shapes world: 7 classes).

    :class:`structpred.backbones.NarrowNet` with layer3 / layer4 dilated (output stride 8: a
    16 x 16 map for 128 x 128 images), ASPP of 64 channels with rates (2, 4, 6) (the paper's
    rates assume a ~65 x 65 map; these cover a 16 x 16 one), dropout 0.1.
    """
    settings = {"atrous_rates": (2, 4, 6), "aspp_channels": 64, "dropout": 0.1, **config}
    c = config_from(
        DeepLabConfig, {**settings, "num_classes": num_classes, "target_key": target_key, "aux": aux}
    )
    return build_atrous(get_backbone("narrow", widths=tuple(widths), output_stride=8), c)


@register_model(task="semantic_segmentation")
def deeplabv3(
    num_classes: int = 21,
    target_key: str = "semantic",
    backbone: str = "resnet50",
    output_stride: int = 8,
    aux: bool = False,
    backbone_args: dict[str, Any] | None = None,
    **config: Any,
) -> AtrousSegmenter:
    """DeepLab-v3 (ASPP head) over any registered backbone (``structpred.backbones.list_backbones()``)
    at ``output_stride``; batch norm trains unless ``backbone_args`` says otherwise. ``head="fcn"``
    gives an FCN head instead."""
    overrides = {"num_classes": num_classes, "target_key": target_key, "aux": aux}
    c = config_from(DeepLabConfig, {**config, **overrides})
    args = {"output_stride": output_stride, **(backbone_args or {})}
    if backbone in ("resnet18", "resnet50", "mobilenet_v3_large"):  # their default norm is frozen
        args.setdefault("norm_layer", nn.BatchNorm2d)
    return build_atrous(get_backbone(backbone, **args), c)

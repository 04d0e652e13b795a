"""A backbone's maps through a Feature Pyramid Network, and the FPN backbones of the detectors.

Parameter names are torchvision's: ``BackboneWithFPN``'s ``body.*`` / ``fpn.*`` keys are
torchvision's ``backbone.body.*`` / ``backbone.fpn.*`` keys without the ``backbone.`` prefix.

Shape shorthand: B images, D the FPN width (``out_channels``).

Builders (state dict keys = torchvision's ``backbone.*`` keys without the prefix):

* :func:`fpn_backbone` (any registered backbone by name): all of the body's maps (finest
  first) through an FPN of D channels, outputs ``"0"``, ``"1"``, ... and ``"pool"``.
* ``resnet50_fpn`` / ``resnet18_fpn``: ``body.{conv1,bn1,layer1..4}.*`` + ``fpn.*``; outputs
  ``"0".."3"`` (C2..C5, strides 4..32) and ``"pool"`` (stride 64), D = 256, as
  ``resnet_fpn_backbone``.
* ``mobilenet_v3_large_fpn``: ``body.{0..16}.*`` + ``fpn.*``; outputs ``"0"`` (stage 4, 160 ch)
  and ``"1"`` (stage 5, 960 ch), both stride 32, and ``"pool"`` (stride 64), D = 256, as
  ``fasterrcnn_mobilenet_v3_large_fpn``'s ``_mobilenet_extractor(fpn=True)``.
* ``narrow_fpn``: the from-scratch ``NarrowNet`` with a D = 64 FPN (no torchvision twin).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, cast

from torch import Tensor, nn

from ..layers.conv import NormLayer
from ..layers.fpn import FeaturePyramidNetwork
from .mobilenet import MobileNetV3Features
from .narrow import NarrowNet
from .registry import Backbone, check_backbone, get_backbone


class BackboneWithFPN(nn.Module):
    """A backbone's named maps through an FPN; outputs ``"0"``, ``"1"``, ... (+ ``"pool"``) like torchvision.

    Args:
        body: a :class:`~structpred.backbones.registry.Backbone` (``forward_features``, ``out_channels``,
            ``strides``).
        in_keys: which of the body's maps feed the FPN, finest first; output ``str(i)`` is ``in_keys[i]``.
        out_channels: the FPN width D.
        extra_block: see ``FeaturePyramidNetwork``.
        norm_layer: optional norm inside the FPN.
    Attributes:
        body, fpn: the two parts (state dict keys ``body.*``, ``fpn.*``).
        out_channels (int): D.
    """

    def __init__(
        self,
        body: nn.Module,
        in_keys: Sequence[str],
        out_channels: int,
        extra_block: str | nn.Module | None = "maxpool",
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        check_backbone(body, f"BackboneWithFPN body ({type(body).__name__})")
        body_channels: dict[str, int] = body.out_channels  # type: ignore[assignment]
        if len(in_keys) == 0:
            raise ValueError("in_keys must name at least one feature map")
        missing = [k for k in in_keys if k not in body_channels]
        if missing:
            raise ValueError(f"in_keys {missing} are not among the body's maps {list(body_channels)}")
        self.body = body
        self.in_keys = list(in_keys)
        self.fpn = FeaturePyramidNetwork(
            [body_channels[k] for k in in_keys], out_channels, extra_block=extra_block, norm_layer=norm_layer
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """x: ``[B, 3, H, W]`` -> ``{"0": [B, D, H0, W0], ..., "pool": [B, D, ...]}``, finest first."""
        feats = cast(Backbone, self.body).forward_features(x)
        return self.fpn(OrderedDict((str(i), feats[k]) for i, k in enumerate(self.in_keys)))


# ---------------------------------------------------------------------------- builders
# Laid out as torchvision's detection backbones (state dict keys = its ``backbone.*`` keys).

_RESNET_KEYS = ("c2", "c3", "c4", "c5")


def resnet50_fpn(
    *,
    trainable_layers: int = 3,
    norm_layer: NormLayer | None = None,
    out_channels: int = 256,
    in_keys: Sequence[str] = _RESNET_KEYS,
    extra_block: str | nn.Module | None = "maxpool",
) -> BackboneWithFPN:
    """ResNet-50 (FrozenBN unless ``norm_layer``) + FPN: ``"0".."3"``, ``"pool"``, each D channels."""
    return fpn_backbone(
        "resnet50", out_channels=out_channels, in_keys=in_keys, extra_block=extra_block,
        norm_layer=norm_layer, trainable_layers=trainable_layers,
    )  # fmt: skip


def resnet18_fpn(
    *,
    trainable_layers: int = 3,
    norm_layer: NormLayer | None = None,
    out_channels: int = 256,
    in_keys: Sequence[str] = _RESNET_KEYS,
    extra_block: str | nn.Module | None = "maxpool",
) -> BackboneWithFPN:
    """ResNet-18 (FrozenBN unless ``norm_layer``) + FPN: ``"0".."3"``, ``"pool"``, each D channels."""
    return fpn_backbone(
        "resnet18", out_channels=out_channels, in_keys=in_keys, extra_block=extra_block,
        norm_layer=norm_layer, trainable_layers=trainable_layers,
    )  # fmt: skip


def mobilenet_v3_large_fpn(
    *,
    trainable_layers: int = 3,
    norm_layer: NormLayer | None = None,
    out_channels: int = 256,
    dilated: bool = False,
    extra_block: str | nn.Module | None = "maxpool",
) -> BackboneWithFPN:
    """MobileNetV3-Large trunk (FrozenBN by default) + FPN on stages 4, 5: ``"0"``, ``"1"``, ``"pool"``.

    ``trainable_layers`` is 0..6 (torchvision's default for this model is 3).
    """
    body = MobileNetV3Features(
        norm_layer=norm_layer, dilated=dilated, return_stages=(4, 5), trainable_layers=trainable_layers
    )
    return BackboneWithFPN(body, ["stage4", "stage5"], out_channels, extra_block=extra_block)


def narrow_fpn(
    *,
    out_channels: int = 64,
    widths: Sequence[int] = (16, 32, 64, 128),
    norm_layer: NormLayer | None = None,
    extra_block: str | nn.Module | None = "maxpool",
) -> BackboneWithFPN:
    """``NarrowNet`` + FPN: ``"0".."3"`` (strides 4..32) and ``"pool"`` (64), each ``out_channels`` wide."""
    body = NarrowNet(widths, norm_layer=norm_layer)
    return BackboneWithFPN(body, _RESNET_KEYS, out_channels, extra_block=extra_block)


def fpn_backbone(
    name: str,
    *,
    out_channels: int = 256,
    in_keys: Sequence[str] | None = None,
    extra_block: str | nn.Module | None = "maxpool",
    fpn_norm_layer: NormLayer | None = None,
    **backbone_kwargs: Any,
) -> BackboneWithFPN:
    """The registered backbone ``name`` (built with ``backbone_kwargs``) + an FPN of ``out_channels``
    over ``in_keys`` (default: all its maps, finest first) with ``fpn_norm_layer`` in the FPN."""
    body = get_backbone(name, **backbone_kwargs)
    keys = list(in_keys) if in_keys is not None else list(body.out_channels)  # type: ignore[arg-type]
    return BackboneWithFPN(body, keys, out_channels, extra_block=extra_block, norm_layer=fpn_norm_layer)

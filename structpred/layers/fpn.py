"""Feature Pyramid Network (Lin et al. 2017) and a backbone + FPN wrapper.

Parameter names are torchvision's: ``inner_blocks.{i}.0`` (lateral 1x1), ``layer_blocks.{i}.0``
(output 3x3), ``.1`` for the optional norm. So a ``torchvision.ops.FeaturePyramidNetwork`` state
dict loads as is, and ``BackboneWithFPN``'s ``body.*`` / ``fpn.*`` keys are torchvision's
``backbone.body.*`` / ``backbone.fpn.*`` keys without the ``backbone.`` prefix.

Shape shorthand: B images, L input levels (finest first), Ci channels of level i, D the FPN
width (``out_channels``), Hi x Wi the size of level i.

Builders (state dict keys = torchvision's ``backbone.*`` keys without the prefix):

* ``resnet50_fpn`` / ``resnet18_fpn``: ``body.{conv1,bn1,layer1..4}.*`` + ``fpn.*``; outputs
  ``"0".."3"`` (C2..C5, strides 4..32) and ``"pool"`` (stride 64), D = 256, as
  ``resnet_fpn_backbone``.
* ``mobilenet_v3_large_fpn``: ``body.{0..16}.*`` + ``fpn.*``; outputs ``"0"`` (stage 4, 160 ch)
  and ``"1"`` (stage 5, 960 ch), both stride 32, and ``"pool"`` (stride 64), D = 256, as
  ``fasterrcnn_mobilenet_v3_large_fpn``'s ``_mobilenet_extractor(fpn=True)``.
* ``narrow_fpn``: the from-scratch ``NarrowNet`` with a D = 64 FPN (no torchvision twin).

Convention: the top-down path upsamples with nearest neighbour *to the lateral's size*
(``F.interpolate(size=...)``), so odd sizes (ceil-rounded strides) need no cropping.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, cast

import torch.nn.functional as F
from torch import Tensor, nn

NormLayer = Callable[[int], nn.Module]


class LastLevelMaxPool(nn.Module):
    """Extra level ``"pool"``: the last FPN map subsampled by 2 (``max_pool2d``, kernel 1, stride 2).

    Faster R-CNN's RPN uses it as P6 (stride 64 on ResNet). Extra blocks share one call
    signature, ``(results, inputs, names) -> (results, names)``, so RetinaNet's P6/P7 can plug in.
    """

    def forward(
        self, results: list[Tensor], inputs: list[Tensor], names: list[str]
    ) -> tuple[list[Tensor], list[str]]:
        p = F.max_pool2d(
            results[-1], kernel_size=1, stride=2, padding=0
        )  # (B, D, H, W) -> (B, D, ⌈H/2⌉, ⌈W/2⌉)
        return [*results, p], [*names, "pool"]


def _conv_norm(c_in: int, c_out: int, kernel: int, norm_layer: NormLayer | None) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, padding=(kernel - 1) // 2, bias=norm_layer is None)
    ]
    if norm_layer is not None:
        layers.append(norm_layer(c_out))
    return nn.Sequential(*layers)


def _make_extra_block(extra_block: str | nn.Module | None) -> nn.Module | None:
    if extra_block is None or isinstance(extra_block, nn.Module):
        return extra_block
    if extra_block == "maxpool":
        return LastLevelMaxPool()
    raise ValueError(f"extra_block must be 'maxpool', None or a module, got {extra_block!r}")


class FeaturePyramidNetwork(nn.Module):
    """Top-down pathway with lateral connections over L feature maps.

    Args:
        in_channels_list: ``[C0, ..., C(L-1)]``, finest level first.
        out_channels: D, the width of every output map.
        extra_block: ``"maxpool"`` (``LastLevelMaxPool``, adds ``"pool"``), ``None``, or a module with
            ``(results, inputs, names) -> (results, names)``.
        norm_layer: optional norm after each conv (then the convs have no bias).
    """

    def __init__(
        self,
        in_channels_list: Sequence[int],
        out_channels: int,
        extra_block: str | nn.Module | None = "maxpool",
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        if len(in_channels_list) == 0 or any(c <= 0 for c in in_channels_list):
            raise ValueError(
                f"in_channels_list must hold positive channel counts, got {list(in_channels_list)}"
            )
        if out_channels <= 0:
            raise ValueError(f"out_channels must be positive, got {out_channels}")
        self.in_channels_list = list(in_channels_list)
        self.out_channels = out_channels
        self.inner_blocks = nn.ModuleList(
            _conv_norm(c, out_channels, 1, norm_layer) for c in in_channels_list
        )
        self.layer_blocks = nn.ModuleList(
            _conv_norm(out_channels, out_channels, 3, norm_layer) for _ in in_channels_list
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # Uniform with gain 1 (a=1), as the reference implementations.
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.extra_block = _make_extra_block(extra_block)

    def forward(self, x: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
        """x: L maps ``[B, Ci, Hi, Wi]`` finest first -> same names (+ extras), ``[B, D, Hi, Wi]``."""
        names = list(x.keys())
        feats = list(x.values())
        if len(feats) != len(self.inner_blocks):
            raise ValueError(f"FPN built for {len(self.inner_blocks)} levels, got {len(feats)}: {names}")
        for name, f, c in zip(names, feats, self.in_channels_list, strict=True):
            if f.dim() != 4 or f.shape[1] != c:
                raise ValueError(f"FPN level {name!r} must be [B, {c}, H, W], got {tuple(f.shape)}")
        last_inner = self.inner_blocks[-1](feats[-1])  # (B, D, H_last, W_last)
        results = [self.layer_blocks[-1](last_inner)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.inner_blocks[i](feats[i])  # (B, Ci, Hi, Wi) -> (B, D, Hi, Wi)
            top_down = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")  # (B, D, Hi, Wi)
            last_inner = lateral + top_down
            results.insert(0, self.layer_blocks[i](last_inner))
        if self.extra_block is not None:
            results, names = self.extra_block(results, feats, names)
        return OrderedDict(zip(names, results, strict=True))


class FeatureBackbone(Protocol):
    """What ``BackboneWithFPN`` needs from its body (every structpred backbone has it)."""

    out_channels: dict[str, int]

    def forward_features(self, x: Tensor) -> dict[str, Tensor]: ...


class BackboneWithFPN(nn.Module):
    """A backbone's named maps through an FPN; outputs ``"0"``, ``"1"``, ... (+ ``"pool"``) like torchvision.

    Args:
        body: a module with ``forward_features(x) -> dict`` and ``out_channels: dict[str, int]``.
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
        body_channels = getattr(body, "out_channels", None)
        if not callable(getattr(body, "forward_features", None)) or not isinstance(body_channels, dict):
            raise ValueError(
                f"body ({type(body).__name__}) needs forward_features(x) and an out_channels dict"
            )
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
        feats = cast(FeatureBackbone, self.body).forward_features(x)
        return self.fpn(OrderedDict((str(i), feats[k]) for i, k in enumerate(self.in_keys)))


# Builders, laid out as torchvision's detection backbones (see the module doc). They import the
# backbones when called: the backbones import ``structpred.layers`` (frozen BN), so a top-level
# import here would make a cycle as soon as ``layers/__init__`` re-exports this module.

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
    from ..backbones.resnet import resnet50

    body = resnet50(norm_layer=norm_layer, trainable_layers=trainable_layers)
    return BackboneWithFPN(body, in_keys, out_channels, extra_block=extra_block)


def resnet18_fpn(
    *,
    trainable_layers: int = 3,
    norm_layer: NormLayer | None = None,
    out_channels: int = 256,
    in_keys: Sequence[str] = _RESNET_KEYS,
    extra_block: str | nn.Module | None = "maxpool",
) -> BackboneWithFPN:
    """ResNet-18 (FrozenBN unless ``norm_layer``) + FPN: ``"0".."3"``, ``"pool"``, each D channels."""
    from ..backbones.resnet import resnet18

    body = resnet18(norm_layer=norm_layer, trainable_layers=trainable_layers)
    return BackboneWithFPN(body, in_keys, out_channels, extra_block=extra_block)


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
    from ..backbones.mobilenet import MobileNetV3Features

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
    from ..backbones.narrow import NarrowNet

    body = NarrowNet(widths, norm_layer=norm_layer)
    return BackboneWithFPN(body, _RESNET_KEYS, out_channels, extra_block=extra_block)

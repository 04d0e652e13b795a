"""Feature Pyramid Network (Lin et al. 2017): the top-down pathway with lateral connections.

Parameter names are torchvision's: ``inner_blocks.{i}.0`` (lateral 1x1), ``layer_blocks.{i}.0``
(output 3x3), ``.1`` for the optional norm. So a ``torchvision.ops.FeaturePyramidNetwork`` state
dict loads as is, and ``BackboneWithFPN``'s ``body.*`` / ``fpn.*`` keys are torchvision's
``backbone.body.*`` / ``backbone.fpn.*`` keys without the ``backbone.`` prefix.

Shape shorthand: B images, L input levels (finest first), Ci channels of level i, D the FPN
width (``out_channels``), Hi x Wi the size of level i.

A backbone + FPN wrapper and the detection backbones built on it are in
:mod:`structpred.backbones.fpn`.

Convention: the top-down path upsamples with nearest neighbour *to the lateral's size*
(``F.interpolate(size=...)``), so odd sizes (ceil-rounded strides) need no cropping.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .conv import NormLayer


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


class LastLevelP6P7(nn.Module):
    """Extra levels ``"p6"``, ``"p7"`` (RetinaNet, Lin et al. 2017): two stride-2 3x3 convs.

    ``p6 = conv(x)``, ``p7 = conv(relu(p6))`` with ``x`` the last FPN output (P5) when
    ``in_channels == out_channels`` (torchvision's ``use_P5``, RetinaNet v1) or else the last
    backbone map (C5, v2). Parameter names ``p6.*``, ``p7.*`` are torchvision's.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        for conv in (self.p6, self.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)  # type: ignore[arg-type]
        self.use_p5 = in_channels == out_channels

    def forward(
        self, results: list[Tensor], inputs: list[Tensor], names: list[str]
    ) -> tuple[list[Tensor], list[str]]:
        x = results[-1] if self.use_p5 else inputs[-1]
        p6 = self.p6(x)  # (B, C, H, W) -> (B, D, ⌈H/2⌉, ⌈W/2⌉)
        p7 = self.p7(F.relu(p6))  # (B, D, H6, W6) -> (B, D, ⌈H6/2⌉, ⌈W6/2⌉)
        return [*results, p6, p7], [*names, "p6", "p7"]


def _conv_norm(c_in: int, c_out: int, kernel: int, norm_layer: NormLayer | None) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, padding=(kernel - 1) // 2, bias=norm_layer is None)
    ]
    if norm_layer is not None:
        layers.append(norm_layer(c_out))
    return nn.Sequential(*layers)


EXTRA_BLOCKS = ("maxpool", "p6p7", "p6p7_c5")


def _make_extra_block(
    extra_block: str | nn.Module | None, last_in_channels: int = 0, out_channels: int = 0
) -> nn.Module | None:
    if extra_block is None or isinstance(extra_block, nn.Module):
        return extra_block
    if extra_block == "maxpool":
        return LastLevelMaxPool()
    if extra_block == "p6p7":  # from P5 (RetinaNet v1)
        return LastLevelP6P7(out_channels, out_channels)
    if extra_block == "p6p7_c5":  # from the last backbone map (RetinaNet v2)
        return LastLevelP6P7(last_in_channels, out_channels)
    raise ValueError(f"extra_block must be one of {EXTRA_BLOCKS}, None or a module, got {extra_block!r}")


class FeaturePyramidNetwork(nn.Module):
    """Top-down pathway with lateral connections over L feature maps.

    Args:
        in_channels_list: ``[C0, ..., C(L-1)]``, finest level first.
        out_channels: D, the width of every output map.
        extra_block: ``"maxpool"`` (``LastLevelMaxPool``, adds ``"pool"``), ``"p6p7"`` /
            ``"p6p7_c5"`` (``LastLevelP6P7`` from P5 / from the last input, adds ``"p6"``, ``"p7"``),
            ``None``, or a module with
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
        self.extra_block = _make_extra_block(extra_block, self.in_channels_list[-1], out_channels)

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

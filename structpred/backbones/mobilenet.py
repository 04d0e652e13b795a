"""MobileNetV3-Large (Howard et al. 2019): inverted residuals, squeeze-excitation, hard-swish.

``MobileNetV3Features`` is the ``features`` trunk as one ``nn.Sequential`` whose children
``0`` .. ``16`` are named as in torchvision's ``mobilenet_v3_large().features``:

* ``0``: stem ``ConvNormAct`` (3x3 stride 2, hard-swish) -> ``0.0`` conv, ``0.1`` norm;
* ``1`` .. ``15``: ``InvertedResidual`` with ``block.{j}`` = [expand 1x1], depthwise kxk,
  [squeeze-excitation ``fc1`` / ``fc2``], project 1x1 (no activation);
* ``16``: last 1x1 conv to 960 channels (hard-swish).

``MobileNetV3Large`` wraps it as ``.features``, so a torchvision classification state dict loads
with ``strict=False`` (only ``classifier.*`` unexpected). Detection uses the trunk directly, as
torchvision's ``_mobilenet_extractor`` does (``backbone.body.{i}`` = ``features.{i}``).

Stages (torchvision's numbering): stage 0 is the stem, stages 1..4 end at the four stride-2
blocks (children 2, 4, 7, 13), stage 5 is the last conv (child 16). Stage ``k``'s map is the
*output* of that child, so its strides are 2, 4, 8, 16, 32, 32 (with ``dilated=True`` the last
three blocks use dilation 2 instead of stride 2: 2, 4, 8, 16, 16, 16). Faster R-CNN's FPN reads
stages 4 and 5: 160 and 960 channels, both at stride 32.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..layers.conv import ActLayer, ConvNormAct, NormLayer, init_conv_norm
from ..layers.frozen_bn import FrozenBatchNorm2d
from ._common import check_images, check_trainable_layers
from .registry import register_backbone

# Table 1 of the paper, after the stem (16 channels out):
# (kernel, expanded channels, out channels, squeeze-excite, activation, stride)
LARGE_CONFIG: tuple[tuple[int, int, int, bool, str, int], ...] = (
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),  # stage 1
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),  # stage 2
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),  # stage 3
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),  # stage 4
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
)
_DILATED_FROM = 12  # with dilated=True, rows 12.. trade their stride for dilation 2
_STEM_CHANNELS = 16
_LAST_CHANNELS = 960


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (at least ``divisor``), never below 90% of ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class SqueezeExcitation(nn.Module):
    """Channel gate: global average -> 1x1 ``fc1`` -> ReLU -> 1x1 ``fc2`` -> hard-sigmoid -> scale ``x``."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.avgpool(x)  # (B, C, H, W) -> (B, C, 1, 1)
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(scale))))  # (B, C, 1, 1)
        return x * scale


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise kxk -> [SE] -> project 1x1; residual when shape is kept."""

    def __init__(
        self,
        in_channels: int,
        kernel: int,
        expanded: int,
        out_channels: int,
        use_se: bool,
        act_layer: ActLayer,
        stride: int,
        dilation: int,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(ConvNormAct(in_channels, expanded, 1, norm_layer=norm_layer, act_layer=act_layer))
        layers.append(
            ConvNormAct(
                expanded,
                expanded,
                kernel,
                stride=1 if dilation > 1 else stride,
                groups=expanded,
                dilation=dilation,
                norm_layer=norm_layer,
                act_layer=act_layer,
            )
        )
        if use_se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4)))
        layers.append(ConvNormAct(expanded, out_channels, 1, norm_layer=norm_layer, act_layer=None))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels
        # A stage boundary even when dilated (then the stride is traded for dilation), as torchvision.
        self.is_strided = stride > 1
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


class MobileNetV3Features(nn.Sequential):
    """The MobileNetV3-Large trunk (children ``0`` .. ``16``, see the module doc).

    Args:
        norm_layer: ``None`` means ``FrozenBatchNorm2d`` (eps 1e-5), as torchvision's detection
            builders; torchvision's classifier uses ``partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)``.
        dilated: dilation 2 instead of stride 2 in the last stage (output stride 16).
        return_stages: which stages (0..5) ``forward_features`` returns, as ``"stage{k}"``.
        trainable_layers: 0..6, torchvision's ``trainable_backbone_layers``: the last
            ``trainable_layers`` stages (from the child that starts them) keep ``requires_grad``.
    """

    def __init__(
        self,
        *,
        norm_layer: NormLayer | None = None,
        dilated: bool = False,
        return_stages: Sequence[int] = (4, 5),
        trainable_layers: int = 6,
    ) -> None:
        norm: NormLayer = FrozenBatchNorm2d if norm_layer is None else norm_layer
        layers: list[nn.Module] = [
            ConvNormAct(3, _STEM_CHANNELS, 3, stride=2, norm_layer=norm, act_layer=nn.Hardswish)
        ]
        in_channels = _STEM_CHANNELS
        # Channels and output stride of each child, for out_channels / strides below.
        child_channels, child_strides = [_STEM_CHANNELS], [2]
        for i, (kernel, expanded, out, use_se, act, stride) in enumerate(LARGE_CONFIG):
            dilation = 2 if dilated and i >= _DILATED_FROM else 1
            act_layer: ActLayer = nn.Hardswish if act == "HS" else nn.ReLU
            layers.append(
                InvertedResidual(
                    in_channels, kernel, expanded, out, use_se, act_layer, stride, dilation, norm
                )
            )
            in_channels = out
            child_channels.append(out)
            child_strides.append(child_strides[-1] * (stride if dilation == 1 else 1))
        child_channels.append(_LAST_CHANNELS)
        child_strides.append(child_strides[-1])
        layers.append(ConvNormAct(in_channels, _LAST_CHANNELS, 1, norm_layer=norm, act_layer=nn.Hardswish))
        super().__init__(*layers)

        strided = [i for i, m in enumerate(self) if getattr(m, "is_strided", False)]
        self.stage_indices: list[int] = [0, *strided, len(self) - 1]  # [0, 2, 4, 7, 13, 16]
        n_stages = len(self.stage_indices)
        if not return_stages or any(not 0 <= k < n_stages for k in return_stages):
            raise ValueError(
                f"return_stages must be a non-empty subset of 0..{n_stages - 1}, got {return_stages}"
            )
        self.return_stages = sorted(set(return_stages))
        self.out_channels: dict[str, int] = {
            f"stage{k}": child_channels[self.stage_indices[k]] for k in self.return_stages
        }
        self.strides: dict[str, int] = {
            f"stage{k}": child_strides[self.stage_indices[k]] for k in self.return_stages
        }
        init_conv_norm(self)
        self.set_trainable_layers(trainable_layers)

    def set_trainable_layers(self, trainable_layers: int) -> None:
        """Freeze children before the start of the last ``trainable_layers`` stages (0 freezes all)."""
        n_stages = len(self.stage_indices)
        check_trainable_layers(trainable_layers, n_stages, "MobileNetV3Features")
        first_trained = (
            len(self) if trainable_layers == 0 else self.stage_indices[n_stages - trainable_layers]
        )
        for i, child in enumerate(self):
            for p in child.parameters():
                p.requires_grad_(i >= first_trained)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """x: ``[B, 3, H, W]`` -> ``{"stage{k}": [B, out_channels, H/stride, W/stride]}`` (sizes round up)."""
        check_images(x, 3, "MobileNetV3.forward_features")
        wanted = {self.stage_indices[k]: f"stage{k}" for k in self.return_stages}
        out: dict[str, Tensor] = {}
        for i, layer in enumerate(self):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
                if len(out) == len(wanted):
                    break
        return out

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Same as ``forward_features``."""
        return self.forward_features(x)


class MobileNetV3Large(nn.Module):
    """``MobileNetV3Features`` under the name ``features`` (torchvision's classification key layout)."""

    def __init__(self, features: MobileNetV3Features | None = None) -> None:
        super().__init__()
        self.features = MobileNetV3Features() if features is None else features
        self.out_channels = self.features.out_channels
        self.strides = self.features.strides

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """See ``MobileNetV3Features.forward_features``."""
        return self.features.forward_features(x)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Same as ``forward_features``."""
        return self.forward_features(x)


@register_backbone("mobilenet_v3_large")
def mobilenet_v3_large(
    *,
    norm_layer: NormLayer | None = None,
    dilated: bool = False,
    return_stages: Sequence[int] = (4, 5),
    trainable_layers: int = 6,
    output_stride: int | None = None,
) -> MobileNetV3Large:
    """MobileNetV3-Large; default ``out_channels = {stage4: 160, stage5: 960}``, both stride 32.
    ``output_stride=16`` is ``dilated=True`` (the last stage dilated, as torchvision's DeepLab)."""
    if output_stride is not None:
        if output_stride not in (32, 16):
            raise ValueError(f"mobilenet_v3_large: output_stride must be 32 or 16, got {output_stride!r}")
        dilated = output_stride == 16
    return MobileNetV3Large(
        MobileNetV3Features(
            norm_layer=norm_layer,
            dilated=dilated,
            return_stages=return_stages,
            trainable_layers=trainable_layers,
        )
    )

"""ResNet-18 / ResNet-50 (He et al. 2016), v1.5: the stride sits in the bottleneck's 3x3 conv.

Module and parameter names are torchvision's (``conv1``, ``bn1``, ``layer1`` .. ``layer4``, each
block's ``conv{1,2,3}``, ``bn{1,2,3}``, ``downsample.0`` / ``downsample.1``), without ``fc``: a
torchvision ``resnet*`` state dict loads with ``strict=False``, leaving only ``fc.*`` unexpected.

``replace_stride_with_dilation`` is torchvision's (DeepLab's atrous backbone): a ``True`` for
layer2 / layer3 / layer4 keeps that stage at stride 1 and dilates its 3x3 convs instead, the first
block with the previous dilation, the others with the new one (doubled); ``(False, True, True)``
gives output stride 8. Unlike torchvision, ``BasicBlock`` supports dilation too.

Shape shorthand: B images, H x W input; stage ``ck`` has stride ``strides[ck]`` (``2**k`` without
dilation) and ``out_channels[ck]`` channels (C2..C5 of the FPN paper).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..layers.conv import NormLayer, init_conv_norm
from ..layers.frozen_bn import FrozenBatchNorm2d
from ._common import check_images, check_trainable_layers, dilation_for
from .registry import register_backbone

# Which children trainable_layers = 1..5 unfreezes, last stage first (torchvision's order).
_TRAINABLE_ORDER = ("layer4", "layer3", "layer2", "layer1", "conv1")


def _conv3x3(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        norm_layer: NormLayer,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, planes, stride, dilation)
        self.bn1 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place, as torchvision: one less [B, C, H, W] temporary
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided, v1.5) -> 1x1 expand by 4, plus shortcut; ResNet-50+."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        norm_layer: NormLayer,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_channels, planes)
        self.bn1 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = norm_layer(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity  # in place, as torchvision: one less [B, C, H, W] temporary
        return self.relu(out)


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(nn.Module):
    """ResNet trunk without the classifier.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18, ``(3, 4, 6, 3)`` for ResNet-50.
        norm_layer: norm built from a channel count; ``None`` means ``FrozenBatchNorm2d`` (detection).
        trainable_layers: 0..5, torchvision's ``trainable_backbone_layers``: how many of
            ``layer4, layer3, layer2, layer1, conv1`` (in that order) keep ``requires_grad``;
            5 also trains ``bn1``. Everything else is frozen.
        replace_stride_with_dilation: for layer2, layer3, layer4: dilate instead of striding
            (see the module doc).
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        *,
        norm_layer: NormLayer | None = None,
        trainable_layers: int = 5,
        replace_stride_with_dilation: Sequence[bool] = (False, False, False),
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {tuple(layers)}")
        if len(replace_stride_with_dilation) != 3:
            raise ValueError(
                "replace_stride_with_dilation must be three booleans (layer2, layer3, layer4), "
                f"got {tuple(replace_stride_with_dilation)}"
            )
        check_trainable_layers(trainable_layers, 5, "ResNet")
        norm: NormLayer = FrozenBatchNorm2d if norm_layer is None else norm_layer
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels, stride, dilation = 64, 4, 1
        dilate = (False, *(bool(d) for d in replace_stride_with_dilation))
        stages: list[nn.Sequential] = []
        self.strides: dict[str, int] = {}
        for i, (planes, n_blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            step = 1 if i == 0 else 2
            stage, in_channels, dilation = self._make_stage(
                block, in_channels, planes, n_blocks, step, norm, dilate[i], dilation
            )
            stride *= 1 if dilate[i] else step
            self.strides[f"c{i + 2}"] = stride
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        width = 64 * block.expansion
        self.out_channels: dict[str, int] = {f"c{k + 2}": width * 2**k for k in range(4)}
        init_conv_norm(self)
        self.set_trainable_layers(trainable_layers)

    @staticmethod
    def _make_stage(
        block: Block,
        in_channels: int,
        planes: int,
        n_blocks: int,
        stride: int,
        norm: NormLayer,
        dilate: bool,
        dilation: int,
    ) -> tuple[nn.Sequential, int, int]:
        """The stage, its output channels and the dilation of its last blocks."""
        out_channels = planes * block.expansion
        first_dilation = dilation  # torchvision: the first block keeps the previous dilation
        if dilate:
            dilation, stride = dilation * stride, 1
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = nn.Sequential(_conv1x1(in_channels, out_channels, stride), norm(out_channels))
        blocks: list[nn.Module] = [block(in_channels, planes, stride, downsample, norm, first_dilation)]
        blocks += [block(out_channels, planes, 1, None, norm, dilation) for _ in range(n_blocks - 1)]
        return nn.Sequential(*blocks), out_channels, dilation

    def set_trainable_layers(self, trainable_layers: int) -> None:
        """Set ``requires_grad`` as torchvision's ``trainable_backbone_layers`` does (see class doc)."""
        check_trainable_layers(trainable_layers, 5, "ResNet")
        train = set(_TRAINABLE_ORDER[:trainable_layers])
        if trainable_layers == 5:
            train.add("bn1")
        for name, child in self.named_children():
            for p in child.parameters():
                p.requires_grad_(name in train)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """x: ``[B, 3, H, W]`` (normalised) -> ``{"c2": [B, C2, H/4, W/4], ..., "c5": [B, C5, H/32, W/32]}``.

        Sizes round up at each stride-2 step (``ceil``), as the convs and max-pool pad. With
        dilation a stage keeps its input's size (``strides`` says which).
        """
        check_images(x, 3, "ResNet.forward_features")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        c2 = self.layer1(x)  # (B, C2, H/4, W/4)
        c3 = self.layer2(c2)  # (B, C3, H/8, W/8)    (H/4 if layer2 is dilated ...)
        c4 = self.layer3(c3)  # (B, C4, H/16, W/16)  (H/8 with (False, True, True))
        c5 = self.layer4(c4)  # (B, C5, H/32, W/32)  (H/8 with (False, True, True))
        return {"c2": c2, "c3": c3, "c4": c4, "c5": c5}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Same as ``forward_features``."""
        return self.forward_features(x)


@register_backbone("resnet18")
def resnet18(
    *,
    norm_layer: NormLayer | None = None,
    trainable_layers: int = 5,
    replace_stride_with_dilation: Sequence[bool] = (False, False, False),
    output_stride: int | None = None,
) -> ResNet:
    """ResNet-18: ``out_channels = {c2: 64, c3: 128, c4: 256, c5: 512}``; FrozenBN by default.
    ``output_stride`` 16 / 8, when given, sets ``replace_stride_with_dilation``."""
    if output_stride is not None:
        replace_stride_with_dilation = dilation_for(output_stride, "resnet18")
    return ResNet(
        BasicBlock,
        (2, 2, 2, 2),
        norm_layer=norm_layer,
        trainable_layers=trainable_layers,
        replace_stride_with_dilation=replace_stride_with_dilation,
    )


@register_backbone("resnet50")
def resnet50(
    *,
    norm_layer: NormLayer | None = None,
    trainable_layers: int = 5,
    replace_stride_with_dilation: Sequence[bool] = (False, False, False),
    output_stride: int | None = None,
) -> ResNet:
    """ResNet-50: ``out_channels = {c2: 256, c3: 512, c4: 1024, c5: 2048}``; FrozenBN by default.
    ``output_stride`` 16 / 8, when given, sets ``replace_stride_with_dilation``."""
    if output_stride is not None:
        replace_stride_with_dilation = dilation_for(output_stride, "resnet50")
    return ResNet(
        Bottleneck,
        (3, 4, 6, 3),
        norm_layer=norm_layer,
        trainable_layers=trainable_layers,
        replace_stride_with_dilation=replace_stride_with_dilation,
    )

"""DeepLab-v3's head (Chen, Papandreou, Schroff & Adam 2017, "Rethinking Atrous Convolution"):
atrous spatial pyramid pooling (ASPP), then a 3x3 conv-BN-ReLU and a 1x1 classifier.

ASPP runs, in parallel on the backbone's last map: a 1x1 conv, three 3x3 convs with atrous
rates ``(12, 24, 36)`` (the paper's rates at output stride 8), and image pooling (global average
-> 1x1 conv -> broadcast back); each is conv-BN-ReLU with 256 channels. The five are concatenated,
projected by a 1x1 conv-BN-ReLU and dropped out (0.5). This is torchvision's ``DeepLabHead``.

Shape shorthand: B images, C input channels, D = ASPP width (256), K classes, h x w the map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..layers.conv import ConvNormAct, NormLayer


class ImagePooling(ConvNormAct):
    """Global average pool -> 1x1 conv-BN-ReLU -> broadcast to the map: ``[B, C, h, w] -> [B, D, h, w]``.

    The broadcast equals torchvision's bilinear resize of a 1x1 map. In training the batch needs
    more than one image (batch norm of a ``[B, D, 1, 1]`` map), as in torchvision.
    """

    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__(in_channels, out_channels, 1, norm_layer=norm_layer)

    def forward(self, x: Tensor) -> Tensor:
        B, _, h, w = x.shape
        if self.training and B < 2 and isinstance(self[1], nn.BatchNorm2d):
            raise ValueError(
                "ASPP image pooling: batch norm of the pooled [B, D, 1, 1] map needs 2+ images per "
                "training batch (got 1); use larger batches, eval mode, or another norm_layer"
            )
        pooled = super().forward(x.mean(dim=(2, 3), keepdim=True))  # (B, C, 1, 1) -> (B, D, 1, 1)
        return pooled.expand(-1, -1, h, w)  # (B, D, h, w)


class ASPP(nn.Module):
    """``[B, C, h, w] -> [B, D, h, w]``: 1x1, atrous 3x3 at each rate, image pooling; concat, project.

    Args:
        in_channels: C.
        atrous_rates: dilation of each 3x3 branch (the paper's ``(12, 24, 36)`` at output stride 8).
        out_channels: D (256).
        dropout: after the projection (0.5).
        norm_layer: built from a channel count.
    """

    def __init__(
        self,
        in_channels: int,
        atrous_rates: Sequence[int] = (12, 24, 36),
        out_channels: int = 256,
        *,
        dropout: float = 0.5,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if any(r < 1 for r in atrous_rates):
            raise ValueError(f"ASPP: atrous rates must be >= 1, got {tuple(atrous_rates)}")
        branches: list[nn.Module] = [ConvNormAct(in_channels, out_channels, 1, norm_layer=norm_layer)]
        branches += [
            ConvNormAct(in_channels, out_channels, 3, dilation=r, norm_layer=norm_layer) for r in atrous_rates
        ]
        self.branches = nn.ModuleList(branches)
        self.pooling = ImagePooling(in_channels, out_channels, norm_layer)
        n = len(branches) + 1
        self.project = ConvNormAct(n * out_channels, out_channels, 1, norm_layer=norm_layer)
        self.dropout = nn.Dropout(dropout)
        self.atrous_rates = tuple(int(r) for r in atrous_rates)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[B, C, h, w]`` -> ``[B, D, h, w]``."""
        parts = [branch(x) for branch in self.branches] + [self.pooling(x)]  # each (B, D, h, w)
        return self.dropout(self.project(torch.cat(parts, dim=1)))  # (B, n * D, h, w) -> (B, D, h, w)


class DeepLabHead(nn.Module):
    """ASPP -> 3x3 conv-BN-ReLU -> 1x1 conv: ``[B, C, h, w] -> [B, K, h, w]`` logits.

    Args:
        in_channels: C (2048 for ResNet-50's layer4).
        num_classes: K.
        atrous_rates, channels, dropout, norm_layer: of the :class:`ASPP` (channels = D).
        aspp: an ASPP to use instead of building one (``None``: build it from the above).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        atrous_rates: Sequence[int] = (12, 24, 36),
        *,
        channels: int = 256,
        dropout: float = 0.5,
        norm_layer: NormLayer = nn.BatchNorm2d,
        aspp: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.aspp = aspp or ASPP(in_channels, atrous_rates, channels, dropout=dropout, norm_layer=norm_layer)
        self.conv = ConvNormAct(channels, channels, 3, norm_layer=norm_layer)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[B, C, h, w]`` -> logits ``[B, K, h, w]``."""
        return self.classifier(self.conv(self.aspp(x)))

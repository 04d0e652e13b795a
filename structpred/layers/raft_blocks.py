"""RAFT's feature and context encoders (Teed & Deng, ECCV 2020): residual / bottleneck blocks, /8.

Shape shorthand: N images (both frames of B pairs: N = 2B for the feature encoder, B for the
context encoder), C channels, H x W input pixels, h = H / 8, w = W / 8.

The encoder is a 7 x 7 stride-2 conv-norm-ReLU, three stages of two blocks (strides 1, 2, 2) and
a 1 x 1 conv to the output width: ``[N, 3, H, W] -> [N, C_out, h, w]``. RAFT-large uses residual
blocks (two 3 x 3 conv-norm-ReLU, a 1 x 1 projection when the stride is 2, ReLU after the sum);
RAFT-small bottleneck blocks (1 x 1 to C / 4, 3 x 3, 1 x 1 back). Every conv keeps its bias even
before a norm, as in the paper's code. Module names are torchvision's
(``convnormrelu``, ``layer1.0.convnormrelu1.0.weight``, ``downsample``...), so its state dict maps
one to one (:mod:`structpred.models.weights.torchvision_raft`).

Norms (``norm``): ``"instance"`` (InstanceNorm2d without affine parameters: the feature
encoders), ``"batch"`` (BatchNorm2d: RAFT-large's context encoder) or ``None`` (RAFT-small's).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

NORMS = ("instance", "batch", None)


def _norm(kind: str | None, channels: int) -> nn.Module | None:
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return None


def conv_norm_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    norm: str | None = None,
    relu: bool = True,
) -> nn.Sequential:
    """``Conv2d (bias, "same" padding) -> [norm] -> [ReLU]`` as children 0, 1, 2 (torchvision's order)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2)
    ]
    norm_layer = _norm(norm, out_channels)
    if norm_layer is not None:
        layers.append(norm_layer)
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Two 3 x 3 conv-norm-ReLU, a strided 1 x 1 projection when ``stride > 1``, ReLU of the sum."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: str | None, stride: int = 1) -> None:
        super().__init__()
        self.convnormrelu1 = conv_norm_relu(in_channels, out_channels, 3, stride=stride, norm=norm)
        self.convnormrelu2 = conv_norm_relu(out_channels, out_channels, 3, norm=norm)
        self.downsample: nn.Module = (
            nn.Identity()
            if stride == 1
            else conv_norm_relu(in_channels, out_channels, 1, stride=stride, norm=norm, relu=False)
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.convnormrelu2(self.convnormrelu1(x))  # (N, C_in, H, W) -> (N, C_out, H / s, W / s)
        return self.relu(self.downsample(x) + y)


class BottleneckBlock(nn.Module):
    """1 x 1 to ``C_out / 4``, 3 x 3 (stride), 1 x 1 to ``C_out`` (each conv-norm-ReLU), projection, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: str | None, stride: int = 1) -> None:
        super().__init__()
        mid = out_channels // 4
        self.convnormrelu1 = conv_norm_relu(in_channels, mid, 1, norm=norm)
        self.convnormrelu2 = conv_norm_relu(mid, mid, 3, stride=stride, norm=norm)
        self.convnormrelu3 = conv_norm_relu(mid, out_channels, 1, norm=norm)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = (
            nn.Identity()
            if stride == 1
            else conv_norm_relu(in_channels, out_channels, 1, stride=stride, norm=norm, relu=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.convnormrelu3(self.convnormrelu2(self.convnormrelu1(x)))  # (N, C_out, H / s, W / s)
        return self.relu(self.downsample(x) + y)


BLOCKS: dict[str, type[ResidualBlock] | type[BottleneckBlock]] = {
    "residual": ResidualBlock,
    "bottleneck": BottleneckBlock,
}


class RaftEncoder(nn.Module):
    """``[N, 3, H, W] -> [N, layers[4], H / 8, W / 8]`` (H, W multiples of 8).

    Args:
        layers: five widths: the stem, the three stages, the 1 x 1 output conv (RAFT-large
            ``(64, 64, 96, 128, 256)``).
        block: ``"residual"`` or ``"bottleneck"``.
        norm: ``"instance"``, ``"batch"`` or None.
    """

    def __init__(
        self,
        layers: Sequence[int] = (64, 64, 96, 128, 256),
        block: str = "residual",
        norm: str | None = "batch",
    ) -> None:
        super().__init__()
        if len(layers) != 5 or any(not isinstance(c, int) or c < 4 for c in layers):
            raise ValueError(f"RaftEncoder: layers must be five widths >= 4, got {tuple(layers)}")
        if block not in BLOCKS:
            raise ValueError(f"RaftEncoder: block must be one of {sorted(BLOCKS)}, got {block!r}")
        if norm not in NORMS:
            raise ValueError(f"RaftEncoder: norm must be one of {NORMS}, got {norm!r}")
        make = BLOCKS[block]
        self.convnormrelu = conv_norm_relu(3, layers[0], 7, stride=2, norm=norm)
        self.layer1 = nn.Sequential(
            make(layers[0], layers[1], norm=norm), make(layers[1], layers[1], norm=norm)
        )
        self.layer2 = nn.Sequential(
            make(layers[1], layers[2], norm=norm, stride=2), make(layers[2], layers[2], norm=norm)
        )
        self.layer3 = nn.Sequential(
            make(layers[2], layers[3], norm=norm, stride=2), make(layers[3], layers[3], norm=norm)
        )
        self.conv = nn.Conv2d(layers[3], layers[4], kernel_size=1)
        self.out_channels = layers[4]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.convnormrelu(x)  # (N, 3, H, W) -> (N, C0, H / 2, W / 2)
        x = self.layer3(self.layer2(self.layer1(x)))  # -> (N, C3, H / 8, W / 8)
        return self.conv(x)  # (N, C_out, h, w)

"""Shared convolution blocks: the norm / activation layer types, conv-norm-act, He init.

Used by every backbone and by the dense heads (FCN, DeepLab); the FPN takes the same
``NormLayer`` type.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

# A norm layer is built from the channel count alone: nn.BatchNorm2d, FrozenBatchNorm2d,
# functools.partial(nn.BatchNorm2d, eps=1e-3), lambda c: nn.GroupNorm(8, c), ...
NormLayer = Callable[[int], nn.Module]
# Activation modules are built as ``act_layer(inplace=True)``: nn.ReLU, nn.Hardswish.
ActLayer = Callable[..., nn.Module]


class ConvNormAct(nn.Sequential):
    """``Conv2d -> norm -> activation`` as children ``0``, ``1``, ``2`` (torchvision's naming).

    The conv has no bias when a norm follows (the norm's shift makes it redundant).
    "Same" padding for odd kernels: ``(k - 1) // 2 * dilation``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        norm_layer: NormLayer | None = nn.BatchNorm2d,
        act_layer: ActLayer | None = nn.ReLU,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=(kernel_size - 1) // 2 * dilation,
                dilation=dilation,
                groups=groups,
                bias=norm_layer is None,
            )
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if act_layer is not None:
            layers.append(act_layer(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


def init_conv_norm(module: nn.Module) -> None:
    """He init (fan-out) for convs, unit scale / zero shift for trainable norms."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

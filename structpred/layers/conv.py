"""Shared convolution blocks: the norm / activation layer types, conv-norm-act, He init.

Used by every backbone and by the dense heads (FCN, DeepLab); the FPN takes the same
``NormLayer`` type.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

# A norm layer is built from the channel count alone: nn.BatchNorm2d, FrozenBatchNorm2d,
# functools.partial(nn.BatchNorm2d, eps=1e-3), lambda c: nn.GroupNorm(8, c), ...
NormLayer = Callable[[int], nn.Module]
# Activation modules are built as ``act_layer(inplace=True)``: nn.ReLU, nn.Hardswish.
ActLayer = Callable[..., nn.Module]


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that takes oneDNN's kernel on the CPU, where PyTorch would not.

    PyTorch (2.14) runs a float32 CPU input of batch 1 with a 3-wide kernel through its reference
    ``slow_conv3d`` when ``N * C * D * H <= 20480`` (the size heuristic of aten's ``use_mkldnn``):
    on a GC-Net cost volume (16-32 channels, 8-16 disparity planes) that path is 4-14x slower than
    oneDNN's (e.g. 16 -> 16 channels on 16 x 64 x 128: 196 vs 15 ms). Same weights, results
    within float rounding (2e-6), same gradients. Elsewhere — CUDA, other dtypes, autocast,
    ``torch.export`` / ``torch.compile`` tracing, unbatched inputs, string or non-zero padding modes
    — it is ``nn.Conv3d``.
    """

    def forward(self, input: Tensor) -> Tensor:
        if (
            input.device.type == "cpu"
            and input.dtype == torch.float32
            and input.dim() == 5
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
            and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()
            and not torch.compiler.is_exporting()
        ):
            return torch.mkldnn_convolution(
                input, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
            )
        return super().forward(input)


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

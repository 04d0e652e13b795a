"""Cross-stage-partial blocks of the modern YOLOs: ``Conv`` (conv-BN-SiLU), ``Bottleneck``, ``C2f``, ``SPPF``.

Shape shorthand: B images, C channels, H x W a feature map.

* CSP (Wang et al. 2020, "CSPNet"): split a stage's channels, send one part through the
  residual blocks and concatenate it with the other, so half the gradient paths skip the blocks.
* ``C2f`` (YOLOv8's "CSP bottleneck with 2 convolutions, faster"): a 1x1 conv to ``2c``, split
  into two halves ``a, b``; ``n`` bottlenecks applied in a chain to ``b``, and *every* chain
  output is kept (ELAN-style, Wang et al. 2022); the ``2 + n`` pieces are concatenated and mixed
  by a 1x1 conv.
* ``SPPF`` (YOLOv5): spatial pyramid pooling as three chained 5x5 stride-1 max pools (the same
  receptive fields as SPP's parallel 5 / 9 / 13 pools, cheaper).

Norm: BatchNorm with ``eps=1e-3, momentum=0.03`` (the YOLO family's), activation SiLU.

Inference: :func:`fuse_conv_bn_` folds each ``Conv2d -> BatchNorm2d`` pair into one conv with
a bias (``w' = w * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta``, the
running statistics ``m``, ``v``): one operator call instead of two, the same function in eval
mode (ultralytics' ``fuse()``). Training keeps the unfused model.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from .conv import ConvNormAct, NormLayer

YOLO_NORM: NormLayer = functools.partial(nn.BatchNorm2d, eps=1e-3, momentum=0.03)


def conv(
    c_in: int, c_out: int, k: int = 1, stride: int = 1, norm_layer: NormLayer = YOLO_NORM
) -> ConvNormAct:
    """Conv(k x k, "same" padding) -> BN -> SiLU: ``[B, c_in, H, W] -> [B, c_out, H/stride, W/stride]``."""
    return ConvNormAct(c_in, c_out, k, stride=stride, norm_layer=norm_layer, act_layer=nn.SiLU)


class Bottleneck(nn.Module):
    """Two 3x3 convs, ``+ x`` when ``shortcut`` (and the widths agree): ``[B, C, H, W]`` in and out."""

    def __init__(
        self, c_in: int, c_out: int, shortcut: bool = True, norm_layer: NormLayer = YOLO_NORM
    ) -> None:
        super().__init__()
        self.cv1 = conv(c_in, c_out, 3, norm_layer=norm_layer)
        self.cv2 = conv(c_out, c_out, 3, norm_layer=norm_layer)
        self.add = shortcut and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C_in, H, W] -> [B, C_out, H, W]``."""
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """YOLOv8's CSP block (see the module docstring): ``[B, C_in, H, W] -> [B, C_out, H, W]``.

    Args:
        c_in, c_out: channels in and out.
        n: bottlenecks in the chain.
        shortcut: residual bottlenecks (the backbone's) or plain ones (the neck's).
        expansion: hidden width ``c = c_out * expansion`` of each half.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        n: int = 1,
        shortcut: bool = False,
        expansion: float = 0.5,
        norm_layer: NormLayer = YOLO_NORM,
    ) -> None:
        super().__init__()
        self.c = int(c_out * expansion)
        self.cv1 = conv(c_in, 2 * self.c, 1, norm_layer=norm_layer)
        self.cv2 = conv((2 + n) * self.c, c_out, 1, norm_layer=norm_layer)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, norm_layer) for _ in range(n))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C_in, H, W] -> [B, C_out, H, W]``."""
        parts = list(self.cv1(x).chunk(2, 1))  # (B, 2c, H, W) -> 2 x (B, c, H, W)
        for block in self.m:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, 1))  # (B, (2 + n) c, H, W) -> (B, C_out, H, W)


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast (YOLOv5): ``[B, C_in, H, W] -> [B, C_out, H, W]``."""

    def __init__(self, c_in: int, c_out: int, k: int = 5, norm_layer: NormLayer = YOLO_NORM) -> None:
        super().__init__()
        hidden = c_in // 2
        self.cv1 = conv(c_in, hidden, 1, norm_layer=norm_layer)
        self.cv2 = conv(hidden * 4, c_out, 1, norm_layer=norm_layer)
        self.pool = nn.MaxPool2d(k, stride=1, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C_in, H, W] -> [B, C_out, H, W]``: three chained pools = receptive fields 5, 9, 13."""
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, 1))  # (B, 4 hidden, H, W) -> (B, C_out, H, W)


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One ``Conv2d`` (with bias) equal to ``bn(conv(x))`` with ``bn`` in eval mode."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"fold_conv_bn: {bn} has no running statistics to fold")
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=True,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        var, mean = bn.running_var.double(), bn.running_mean.double()
        gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
        beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
        scale = gamma / torch.sqrt(var + bn.eps)  # (C_out,)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
        fused.weight.copy_(conv.weight.double() * scale[:, None, None, None])  # (C_out, C_in/g, k, k)
        fused.bias.copy_((bias - mean) * scale + beta)  # type: ignore[union-attr]
    return fused


def fuse_conv_bn_(module: nn.Module) -> int:
    """In place: in every ``nn.Sequential`` of ``module`` (``ConvNormAct`` among them), each
    ``Conv2d`` directly followed by a ``BatchNorm2d`` becomes the folded conv and the norm an
    ``nn.Identity``. Returns how many pairs were folded. Only for inference (eval mode)."""
    folded = 0
    for seq in list(module.modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv_, bn = seq._modules[first], seq._modules[second]
            if isinstance(conv_, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[first] = fold_conv_bn(conv_, bn)
                seq._modules[second] = nn.Identity()
                folded += 1
    return folded

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

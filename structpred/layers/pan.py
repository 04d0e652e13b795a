"""Path-aggregation neck (PANet, Liu et al. 2018) with C2f blocks, as YOLOv8 lays it out.

Shape shorthand: B images; level ``l`` of ``L`` has ``C_l`` channels at stride ``s_l`` (finest first).

An FPN only sends coarse semantics down (top-down); PAN adds a bottom-up path after it so the
coarse levels also get the fine levels' localisation in a few layers::

    top-down:  t_L = x_L;  t_l = C2f(cat(up2(t_{l+1}), x_l))          (C_l channels)
    bottom-up: p_1 = t_1;  p_l = C2f(cat(conv3x3/2(p_{l-1}), t_l))    (C_l channels)

Outputs ``p_1 .. p_L`` keep each input level's channel count and size. The upsampling is
nearest to the finer map's size, so odd sides (a stride-2 conv's ``ceil(H / 2)``) line up too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conv import NormLayer, init_conv_norm
from .csp import YOLO_NORM, C2f, conv


class PAN(nn.Module):
    """YOLOv8's PAN over ``L >= 2`` levels: ``L`` maps ``[B, C_l, H_l, W_l]`` in, the same shapes out.

    Args:
        channels: ``C_1 .. C_L``, finest first (also the output widths).
        depth: bottlenecks per C2f block.
    """

    def __init__(self, channels: Sequence[int], depth: int = 1, norm_layer: NormLayer = YOLO_NORM) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < 2 or any(c <= 0 for c in channels):
            raise ValueError(f"PAN needs >= 2 positive channel counts, got {channels}")
        self.channels = channels
        L = len(channels)
        # top_down[i] makes t_i from cat(up(t_{i+1}), x_i), for i = L-2 .. 0 (0-based)
        self.top_down = nn.ModuleList(
            C2f(channels[i + 1] + channels[i], channels[i], depth, norm_layer=norm_layer)
            for i in range(L - 1)
        )
        # down[i] halves p_i; bottom_up[i] makes p_{i+1} from cat(down(p_i), t_{i+1})
        self.down = nn.ModuleList(conv(channels[i], channels[i], 3, 2, norm_layer) for i in range(L - 1))
        self.bottom_up = nn.ModuleList(
            C2f(channels[i] + channels[i + 1], channels[i + 1], depth, norm_layer=norm_layer)
            for i in range(L - 1)
        )
        init_conv_norm(self)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """``[x_1 .. x_L]`` -> ``[p_1 .. p_L]``, each ``[B, C_l, H_l, W_l]``."""
        if len(features) != len(self.channels):
            raise ValueError(f"PAN takes {len(self.channels)} maps, got {len(features)}")
        L = len(features)
        top = [features[-1]]  # t_L .. t_1, coarse first
        for i in range(L - 2, -1, -1):
            up = F.interpolate(top[-1], size=features[i].shape[-2:], mode="nearest")  # (B, C_{l+1}, H_l, W_l)
            top.append(self.top_down[i](torch.cat([up, features[i]], 1)))  # -> (B, C_l, H_l, W_l)
        top.reverse()  # t_1 .. t_L
        out = [top[0]]
        for i in range(L - 1):
            down = self.down[i](out[-1])  # (B, C_l, H_l, W_l) -> (B, C_l, H_{l+1}, W_{l+1})
            out.append(self.bottom_up[i](torch.cat([down, top[i + 1]], 1)))  # -> (B, C_{l+1}, ...)
        return out

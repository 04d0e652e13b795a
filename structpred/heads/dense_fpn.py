"""Panoptic FPN's semantic branch (Kirillov, Girshick, He, Dollár, 2019): one dense map from a pyramid.

Shape shorthand: B images, D pyramid channels, C the branch's channels, K output channels,
L levels of strides ``4 * 2**l`` (l = 0..L-1), Hp x Wp the padded input.

Every level is brought to stride 4 by ``l`` stages of (3x3 conv -> GroupNorm -> ReLU -> 2x
bilinear upsampling) (level 0 by one conv and no upsampling); the L maps are summed, a 1x1 conv
gives K channels at stride 4 and a 4x bilinear upsampling the input's resolution. The paper's
branch predicts semantic classes; with K = 1 the same branch regresses a dense quantity (depth).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def _stage(c_in: int, c_out: int, groups: int, upsample: bool) -> nn.Sequential:
    """3x3 conv -> GroupNorm -> ReLU (-> 2x bilinear upsampling)."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.GroupNorm(groups, c_out),
        nn.ReLU(inplace=True),
    ]
    if upsample:
        layers.append(nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False))
    return nn.Sequential(*layers)


class FPNDenseHead(nn.Module):
    """Pyramid maps (strides 4, 8, 16, ...) -> one ``[B, K, Hp, Wp]`` map.

    Args:
        in_channels: D, the pyramid's width.
        out_channels: K.
        num_levels: L, how many of the finest maps are read (strides 4 .. 4 * 2**(L-1)).
        channels: C (the paper: 128).
        norm_groups: GroupNorm groups (the paper: 32; must divide C).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_levels: int = 4,
        channels: int = 128,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        if num_levels < 1 or out_channels < 1 or channels < 1:
            raise ValueError(f"FPNDenseHead: num_levels, out_channels, channels must be >= 1, got "
                             f"{num_levels}, {out_channels}, {channels}")  # fmt: skip
        if norm_groups < 1 or channels % norm_groups:
            raise ValueError(f"FPNDenseHead: norm_groups {norm_groups} must divide channels {channels}")
        self.num_levels = num_levels
        self.out_channels = out_channels
        branches = []
        for level in range(num_levels):
            stages = [_stage(in_channels, channels, norm_groups, upsample=level > 0)]
            stages += [_stage(channels, channels, norm_groups, upsample=True) for _ in range(level - 1)]
            branches.append(nn.Sequential(*stages))
        self.branches = nn.ModuleList(branches)
        self.predictor = nn.Conv2d(channels, out_channels, 1)

    def forward(self, maps: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        """``maps`` finest first (at least L; the first L are read), ``size`` = ``(Hp, Wp)`` ->
        ``[B, K, Hp, Wp]``."""
        if len(maps) < self.num_levels:
            raise ValueError(f"FPNDenseHead: {len(maps)} maps for {self.num_levels} levels")
        fine = maps[0].shape[-2:]  # (Hp/4, Wp/4) up to rounding
        total: Tensor | None = None
        for branch, x in zip(self.branches, maps[: self.num_levels], strict=True):
            y = branch(x)  # (B, D, Hl, Wl) -> (B, C, ~Hp/4, ~Wp/4)
            if y.shape[-2:] != fine:  # odd sizes round up at each stride
                y = F.interpolate(y, size=fine, mode="bilinear", align_corners=False)
            total = y if total is None else total + y
        assert total is not None
        out = self.predictor(total)  # (B, C, Hp/4, Wp/4) -> (B, K, Hp/4, Wp/4)
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)  # (B, K, Hp, Wp)

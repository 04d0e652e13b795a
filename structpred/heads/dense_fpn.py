"""Panoptic FPN's semantic branch (Kirillov, Girshick, He, Dollár, 2019): one dense map from a pyramid.

Shape shorthand: B images, D pyramid channels, C the branch's channels, K output channels,
L levels of strides ``4 * 2**l`` (l = 0..L-1), Hp x Wp the padded input, Hr x Wr the resized
images inside it, H x W the input images.

:class:`FPNDenseDecoder`: every level is brought to stride 4 by ``l`` stages of (3x3 conv ->
GroupNorm -> ReLU -> 2x bilinear upsampling) (level 0 by one conv and no upsampling) and the L
maps are summed: ``[B, C, Hp/4, Wp/4]``. :class:`FPNDenseHead` is the paper's whole branch: the
decoder and a 1x1 conv to K channels. :class:`DensePredictor` is a light task-specific predictor
on a decoder's map shared by several dense tasks (``convs`` x (3x3 conv -> GroupNorm -> ReLU), then
1x1 to K). :func:`to_input_pixels` takes a stride-4 map to the input's pixels in one bilinear
resample. The paper's branch predicts semantic classes; with K = 1 it regresses a dense quantity.

Convention: pixel centres, ``align_corners=False``; output pixel ``y`` of the input image reads
the stride-4 map at ``(y + 0.5) * Hr / (4 H) - 0.5``.
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


def _check_width(where: str, channels: int, norm_groups: int) -> None:
    if norm_groups < 1 or channels % norm_groups:
        raise ValueError(f"{where}: norm_groups {norm_groups} must divide channels {channels}")


class FPNDenseDecoder(nn.Module):
    """Pyramid maps (strides 4, 8, 16, ...) -> one ``[B, C, Hp/4, Wp/4]`` map (no predictor).

    Args:
        in_channels: D, the pyramid's width.
        num_levels: L, how many of the finest maps are read (strides 4 .. 4 * 2**(L-1)).
        channels: C (the paper: 128).
        norm_groups: GroupNorm groups (the paper: 32; must divide C).
    """

    def __init__(
        self, in_channels: int, num_levels: int = 4, channels: int = 128, norm_groups: int = 32
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if num_levels < 1 or channels < 1:
            raise ValueError(f"{name}: num_levels and channels must be >= 1, got {num_levels}, {channels}")
        _check_width(name, channels, norm_groups)
        self.num_levels = num_levels
        self.channels = channels
        branches = []
        for level in range(num_levels):
            stages = [_stage(in_channels, channels, norm_groups, upsample=level > 0)]
            stages += [_stage(channels, channels, norm_groups, upsample=True) for _ in range(level - 1)]
            branches.append(nn.Sequential(*stages))
        self.branches = nn.ModuleList(branches)

    def last_layer(self) -> list[nn.Module]:
        """The last stage of every level's branch: the decoder's last layer (parallel convs summed)."""
        return [branch[-1] for branch in self.branches]  # type: ignore[index]

    def decode(self, maps: Sequence[Tensor]) -> Tensor:
        """``maps`` finest first (at least L; the first L are read) -> ``[B, C, Hp/4, Wp/4]``."""
        if len(maps) < self.num_levels:
            raise ValueError(f"{type(self).__name__}: {len(maps)} maps for {self.num_levels} levels")
        fine = maps[0].shape[-2:]  # (Hp/4, Wp/4) up to rounding
        total: Tensor | None = None
        for branch, x in zip(self.branches, maps[: self.num_levels], strict=True):
            y = branch(x)  # (B, D, Hl, Wl) -> (B, C, ~Hp/4, ~Wp/4)
            if y.shape[-2:] != fine:  # odd sizes round up at each stride
                y = F.interpolate(y, size=fine, mode="bilinear", align_corners=False)
            total = y if total is None else total + y
        assert total is not None
        return total

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        return self.decode(maps)


class FPNDenseHead(FPNDenseDecoder):
    """Panoptic FPN's whole branch: :class:`FPNDenseDecoder` + 1x1 conv -> ``[B, K, Hp/4, Wp/4]``.

    Args: as :class:`FPNDenseDecoder`, and ``out_channels`` K (second).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_levels: int = 4,
        channels: int = 128,
        norm_groups: int = 32,
    ) -> None:
        if out_channels < 1:
            raise ValueError(f"FPNDenseHead: out_channels must be >= 1, got {out_channels}")
        super().__init__(in_channels, num_levels, channels, norm_groups)
        self.out_channels = out_channels
        self.predictor = nn.Conv2d(channels, out_channels, 1)

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        """``maps`` finest first -> ``[B, K, Hp/4, Wp/4]``."""
        return self.predictor(self.decode(maps))  # (B, C, Hp/4, Wp/4) -> (B, K, Hp/4, Wp/4)


class DensePredictor(nn.Module):
    """A task's predictor on a shared decoder's map: ``convs`` x (3x3 conv -> GroupNorm -> ReLU),
    then 1x1 conv: ``[B, C, h, w] -> [B, K, h, w]``.

    Args:
        channels: C, the decoder's width.
        out_channels: K.
        convs: the 3x3 stages before the 1x1 (0: a 1x1 conv alone).
        norm_groups: GroupNorm groups (must divide C).
    """

    def __init__(self, channels: int, out_channels: int, convs: int = 1, norm_groups: int = 32) -> None:
        super().__init__()
        if channels < 1 or out_channels < 1 or convs < 0:
            raise ValueError(f"DensePredictor: channels, out_channels must be >= 1 and convs >= 0, got "
                             f"{channels}, {out_channels}, {convs}")  # fmt: skip
        if convs:
            _check_width("DensePredictor", channels, norm_groups)
        self.out_channels = out_channels
        self.convs = nn.Sequential(
            *(_stage(channels, channels, norm_groups, upsample=False) for _ in range(convs))
        )
        self.predictor = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.predictor(self.convs(x))  # (B, C, h, w) -> (B, K, h, w)


def to_input_pixels(x: Tensor, image_size: tuple[int, int], original_size: tuple[int, int]) -> Tensor:
    """A stride-4 map of the padded batch ``[B, K, Hp/4, Wp/4]`` -> ``[B, K, H, W]`` in the input's
    pixels: the resized images' part (``image_size`` = ``(Hr, Wr)``) resampled once (bilinear) to
    ``original_size`` = ``(H, W)``, pixel centres mapped exactly (see the module's Convention)."""
    (Hr, Wr), (H, W) = image_size, original_size
    h4, w4 = -(-Hr // 4), -(-Wr // 4)  # ceil: the stride-4 cells the resized images touch
    crop = x[..., :h4, :w4]  # (B, K, Hp/4, Wp/4) -> (B, K, h4, w4)
    if Hr % 4 == 0 and Wr % 4 == 0:  # the crop is exactly the images: scale H / h4 = 4 H / Hr
        return F.interpolate(crop, size=(H, W), mode="bilinear", align_corners=False)
    # otherwise the scale 4 H / Hr given explicitly (not recomputed from the sizes); the tiny
    # factor keeps floor(h4 * scale) >= H against rounding, the extra rows/columns are cut
    scale = (4 * H / Hr * (1 + 1e-9), 4 * W / Wr * (1 + 1e-9))
    out = F.interpolate(
        crop, scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=False
    )
    return out[..., :H, :W]  # (B, K, >=H, >=W) -> (B, K, H, W)

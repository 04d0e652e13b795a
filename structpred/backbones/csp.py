"""CSP-Darknet with C2f stages (YOLOv8's backbone): ``c2`` .. ``c5`` at strides 4 .. 32.

Stem: conv 3x3 stride 2. Stage k (k = 2..5): conv 3x3 stride 2, then a C2f block of (none if 0)
``depths[k-2]`` residual bottlenecks; the last stage ends with SPPF. YOLOv8's sizes are
``widths = (64, 128, 256, 512, 1024) x width_multiple`` (stem first, capped at ``max_channels``)
and ``depths = (3, 6, 6, 3) x depth_multiple`` rounded up: n = (1/3, 1/4, 1024), s = (1/3, 1/2,
1024), m = (2/3, 3/4, 768).

Shape shorthand: B images, H x W input, Ck = ``widths[k - 1]`` (``widths[0]`` is the stem's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from ..layers.conv import init_conv_norm
from ..layers.csp import SPPF, C2f, conv
from ._common import check_images
from .registry import register_backbone

# (depth_multiple, width_multiple, max_channels) of YOLOv8's named sizes.
SCALES: dict[str, tuple[float, float, int]] = {
    "n": (1 / 3, 0.25, 1024),
    "s": (1 / 3, 0.50, 1024),
    "m": (2 / 3, 0.75, 768),
}


def scaled(
    depth_multiple: float, width_multiple: float, max_channels: int = 1024
) -> tuple[list[int], list[int]]:
    """YOLOv8's widths (stem, c2..c5) and C2f depths (c2..c5) for the given multipliers."""
    widths = [
        int(math.ceil(min(c, max_channels) * width_multiple / 8) * 8) for c in (64, 128, 256, 512, 1024)
    ]
    depths = [max(round(n * depth_multiple), 1) for n in (3, 6, 6, 3)]
    return widths, depths


class CSPDarknet(nn.Module):
    """Stem + four C2f stages + SPPF (see the module docstring).

    Args:
        widths: channels of the stem, c2, c3, c4, c5.
        depths: bottlenecks of the C2f blocks of c2 .. c5 (0: no C2f block in that stage).
    """

    def __init__(
        self, widths: Sequence[int] = (16, 32, 64, 128, 256), depths: Sequence[int] = (1, 2, 2, 1)
    ) -> None:
        super().__init__()
        if len(widths) != 5 or any(int(w) <= 0 for w in widths):
            raise ValueError(
                f"widths must be five positive channel counts (stem, c2..c5), got {tuple(widths)}"
            )
        if len(depths) != 4 or any(int(d) < 0 for d in depths):
            raise ValueError(f"depths must be four counts >= 0 (c2..c5), got {tuple(depths)}")
        self.stem = conv(3, widths[0], 3, 2)
        stages: list[nn.Sequential] = []
        for k in range(4):
            layers: list[nn.Module] = [conv(widths[k], widths[k + 1], 3, 2)]
            if depths[k] > 0:  # depth 0: the stride-2 conv alone (a lighter stage than v8's)
                layers.append(C2f(widths[k + 1], widths[k + 1], depths[k], True))
            if k == 3:
                layers.append(SPPF(widths[4], widths[4]))
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels: dict[str, int] = {f"c{k + 2}": int(widths[k + 1]) for k in range(4)}
        self.strides: dict[str, int] = {f"c{k + 2}": 2 ** (k + 2) for k in range(4)}
        init_conv_norm(self)  # He init: the signal keeps its scale in eval mode from the start

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """x: ``[B, 3, H, W]`` -> ``{"c2": [B, C2, H/4, W/4], ..., "c5": [B, C5, H/32, W/32]}`` (ceil)."""
        check_images(x, 3, "CSPDarknet.forward_features")
        x = self.stem(x)  # (B, C1, H/2, W/2)
        c2 = self.layer1(x)  # (B, C2, H/4, W/4)
        c3 = self.layer2(c2)  # (B, C3, H/8, W/8)
        c4 = self.layer3(c3)  # (B, C4, H/16, W/16)
        c5 = self.layer4(c4)  # (B, C5, H/32, W/32)
        return {"c2": c2, "c3": c3, "c4": c4, "c5": c5}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Same as ``forward_features``."""
        return self.forward_features(x)


@register_backbone("csp_darknet")
def csp_darknet(
    scale: str | None = "n",
    *,
    widths: Sequence[int] | None = None,
    depths: Sequence[int] | None = None,
    output_stride: int | None = None,
) -> CSPDarknet:
    """YOLOv8's backbone at size ``scale`` (n / s / m), or explicit ``widths`` (stem, c2..c5) and
    ``depths`` (c2..c5); ``output_stride`` must be 32 or None (no dilated variant)."""
    if output_stride not in (None, 32):
        raise ValueError(f"csp_darknet: output_stride must be 32 (no dilated stages), got {output_stride!r}")
    if widths is None or depths is None:
        if scale not in SCALES:
            raise ValueError(f"csp_darknet: scale must be one of {sorted(SCALES)}, got {scale!r}")
        w, d = scaled(*SCALES[scale])
        widths, depths = widths or w, depths or d
    return CSPDarknet(widths, depths)

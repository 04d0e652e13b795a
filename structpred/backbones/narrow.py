"""A narrow conv backbone that trains from scratch on a CPU in minutes (128 x 128 images).

Stem (3x3 stride 2), then four stages of [3x3 stride 2, then ``depth - 1`` 3x3 stride 1]
conv-norm-ReLU layers, widths 16 / 32 / 64 / 128 by default. Same API as the big backbones:
``forward_features`` returns ``c2`` .. ``c5`` at strides 4, 8, 16, 32. ``replace_stride_with_dilation``
works as in :mod:`structpred.backbones.resnet` (a dilated stage's first conv keeps the previous
dilation, its others double it): ``(False, True, True)`` gives output stride 8, for DeepLab.

Shape shorthand: B images, H x W input, Ck = ``widths[k - 2]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..layers.conv import ConvNormAct, NormLayer, init_conv_norm
from ._common import check_images, dilation_for
from .registry import register_backbone


class NarrowNet(nn.Module):
    """Small conv-norm-ReLU pyramid.

    Args:
        widths: channels of c2, c3, c4, c5.
        stem_channels: channels after the stride-2 stem (default ``widths[0]``).
        depth: conv layers per stage (the first one strided).
        norm_layer: built from a channel count; ``None`` means ``nn.BatchNorm2d`` (trained here,
            so batch statistics are fine). Pass e.g. ``lambda c: nn.GroupNorm(8, c)`` for tiny batches.
        replace_stride_with_dilation: for layer2, layer3, layer4: dilate instead of striding.
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64, 128),
        *,
        stem_channels: int | None = None,
        depth: int = 2,
        norm_layer: NormLayer | None = None,
        replace_stride_with_dilation: Sequence[bool] = (False, False, False),
    ) -> None:
        super().__init__()
        if len(replace_stride_with_dilation) != 3:
            raise ValueError(
                "replace_stride_with_dilation must be three booleans (layer2, layer3, layer4), "
                f"got {tuple(replace_stride_with_dilation)}"
            )
        if len(widths) != 4 or any(w <= 0 for w in widths):
            raise ValueError(f"widths must be four positive channel counts, got {tuple(widths)}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        norm: NormLayer = nn.BatchNorm2d if norm_layer is None else norm_layer
        c_in = widths[0] if stem_channels is None else stem_channels
        self.stem = ConvNormAct(3, c_in, 3, stride=2, norm_layer=norm)
        stages: list[nn.Sequential] = []
        dilate = (False, *(bool(d) for d in replace_stride_with_dilation))
        stride, dilation = 2, 1
        self.strides: dict[str, int] = {}
        for k, w in enumerate(widths):
            first = dilation  # a dilated stage's first conv keeps the previous dilation
            if dilate[k]:
                dilation *= 2
            else:
                stride *= 2
            s = 1 if dilate[k] else 2
            layers = [ConvNormAct(c_in, w, 3, stride=s, dilation=first, norm_layer=norm)]
            layers += [ConvNormAct(w, w, 3, dilation=dilation, norm_layer=norm) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*layers))
            self.strides[f"c{k + 2}"] = stride
            c_in = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels: dict[str, int] = {f"c{k + 2}": w for k, w in enumerate(widths)}
        init_conv_norm(self)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """x: ``[B, 3, H, W]`` -> ``{"c2": [B, C2, H/4, W/4], ..., "c5": [B, C5, H/32, W/32]}`` (ceil;
        a dilated stage keeps its input's size, see ``strides``)."""
        check_images(x, 3, "NarrowNet.forward_features")
        x = self.stem(x)  # (B, C_stem, H/2, W/2)
        c2 = self.layer1(x)  # (B, C2, H/4, W/4)
        c3 = self.layer2(c2)  # (B, C3, H/8, W/8)
        c4 = self.layer3(c3)  # (B, C4, H/16, W/16)
        c5 = self.layer4(c4)  # (B, C5, H/32, W/32)
        return {"c2": c2, "c3": c3, "c4": c4, "c5": c5}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Same as ``forward_features``."""
        return self.forward_features(x)


@register_backbone("narrow")
def narrow(
    widths: Sequence[int] = (16, 32, 64, 128),
    *,
    depth: int = 2,
    norm_layer: NormLayer | None = None,
    replace_stride_with_dilation: Sequence[bool] = (False, False, False),
    output_stride: int | None = None,
) -> NarrowNet:
    """The default narrow backbone: ``out_channels = {c2: 16, c3: 32, c4: 64, c5: 128}``;
    ``output_stride`` 16 / 8, when given, sets ``replace_stride_with_dilation``."""
    if output_stride is not None:
        replace_stride_with_dilation = dilation_for(output_stride, "narrow")
    return NarrowNet(
        widths, depth=depth, norm_layer=norm_layer, replace_stride_with_dilation=replace_stride_with_dilation
    )

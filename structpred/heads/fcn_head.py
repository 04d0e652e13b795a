"""FCN's pieces: bilinear-initialised "upconvolution", map geometry and alignment crops, FCNHead.

Shape shorthand: B images, C channels, K classes, h x w a coarse map, H x W the input.

Convention:
    * A map's geometry is a :class:`Grid`: the centre of cell ``i`` of the map lies at input
      pixel coordinate ``stride * i + offset`` (pixel ``j`` of the input has its centre at
      ``j``; the same rule holds for rows and columns, as every kernel here is square with
      symmetric padding). It is what Caffe's ``coord_map`` computes for FCN's crop layers.
    * A ``k x k`` conv / pool with stride ``s``, padding ``p``, dilation ``d`` maps cell ``i`` to
      the centre of its window, ``s * i - p + d * (k - 1) / 2``, in its input's cells.
    * A transposed conv with kernel ``k``, stride ``s``, padding ``p`` puts input cell ``i`` at
      output index ``s * i - p + (k - 1) / 2`` (the centre of the kernel it stamps).
    * :func:`bilinear_kernel` is the tent filter centred in the kernel, so a
      :class:`BilinearUpsample` followed by the crop that the grids give is bilinear interpolation
      between cell centres (``F.interpolate(..., align_corners=False)`` away from the borders,
      where interpolate clamps and the transposed conv sees zeros beyond the map).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..layers.conv import ConvNormAct, NormLayer


def bilinear_kernel(channels: int, factor: int) -> Tensor:
    """``[C, C, k, k]`` weights of a transposed conv that upsamples each channel bilinearly by ``factor``.

    ``k = 2 * factor - factor % 2``; channel ``c`` maps to channel ``c`` only (diagonal), the
    off-diagonal filters are zero (and may be learned).
    """
    if channels < 1 or factor < 1:
        raise ValueError(f"bilinear_kernel: channels and factor must be >= 1, got {channels}, {factor}")
    k = 2 * factor - factor % 2
    centre = factor - 1 if k % 2 == 1 else factor - 0.5
    t = 1 - (torch.arange(k, dtype=torch.float64) - centre).abs() / factor  # (k,) tent
    filt = (t[:, None] * t[None, :]).to(torch.float32)  # (k, k)
    weight = torch.zeros(channels, channels, k, k)
    weight[torch.arange(channels), torch.arange(channels)] = filt
    return weight


class BilinearUpsample(nn.ConvTranspose2d):
    """``[B, C, h, w] -> [B, C, f * (h - 1) + k, f * (w - 1) + k]``, initialised to bilinear upsampling.

    FCN's "upconvolution": no bias, no padding (the crop that follows aligns the result).

    Args:
        channels: C (in and out).
        factor: f, the stride.
        learnable: train the weights (FCN's 2x layers) or keep them fixed to bilinear (its
            final upsampler: a ``requires_grad=False`` parameter the optimizer skips).
    """

    def __init__(self, channels: int, factor: int, *, learnable: bool = True) -> None:
        k = 2 * factor - factor % 2
        super().__init__(channels, channels, k, stride=factor, bias=False)
        self.factor = factor
        self.reset_parameters()
        self.weight.requires_grad_(learnable)

    def reset_parameters(self) -> None:
        """(Re)set the weights to :func:`bilinear_kernel`."""
        if hasattr(self, "factor"):  # nn.ConvTranspose2d.__init__ calls this before factor is set
            with torch.no_grad():
                self.weight.copy_(bilinear_kernel(self.in_channels, self.factor))


@dataclasses.dataclass(frozen=True)
class Grid:
    """Cell ``i`` of a map is centred at input pixel ``stride * i + offset`` (see the module doc)."""

    stride: float = 1.0
    offset: float = 0.0

    def after_conv(self, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> Grid:
        """The grid of a conv / pool's output, this being its input's."""
        centre = -padding + dilation * (kernel - 1) / 2  # of output cell 0, in input cells
        return Grid(self.stride * stride, self.offset + self.stride * centre)

    def after_upsample(self, kernel: int, stride: int, padding: int = 0) -> Grid:
        """The grid of a transposed conv's output, this being its input's."""
        # output index o <- input cell (o + padding - (kernel - 1) / 2) / stride
        return Grid(self.stride / stride, self.offset + self.stride * (padding - (kernel - 1) / 2) / stride)


def _pair(v: int | str | tuple[int, ...]) -> int:
    if isinstance(v, str):
        raise ValueError(f"grid_after: string padding {v!r} is not supported; give it in pixels")
    if isinstance(v, tuple):
        if len(set(v)) != 1:
            raise ValueError(f"only square kernels / strides / paddings are supported, got {v}")
        return int(v[0])
    return int(v)


def grid_after(layers: Iterable[nn.Module], grid: Grid | None = None) -> Grid:
    """The grid after ``layers`` run in order, starting from ``grid`` (the input's by default).

    Convs, transposed convs and max / average pools move the grid; activations, norms and
    dropout do not; any other layer raises a ``ValueError`` (its geometry is unknown).
    """
    g = grid or Grid()
    pointwise = (nn.ReLU, nn.BatchNorm2d, nn.GroupNorm, nn.Dropout, nn.Dropout2d, nn.Identity)
    for m in layers:
        if isinstance(m, nn.ConvTranspose2d):
            g = g.after_upsample(_pair(m.kernel_size), _pair(m.stride), _pair(m.padding))
        elif isinstance(m, nn.Conv2d):
            g = g.after_conv(_pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation))
        elif isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
            kernel, stride = _pair(m.kernel_size), _pair(m.stride or m.kernel_size)
            dilation = _pair(m.dilation) if isinstance(m, nn.MaxPool2d) else 1
            g = g.after_conv(kernel, stride, _pair(m.padding), dilation)
        elif isinstance(m, nn.Sequential):
            g = grid_after(m, g)
        elif not isinstance(m, pointwise):
            raise ValueError(f"grid_after: unknown geometry of {type(m).__name__}")
    return g


def _cells(x: float, where: str) -> int:
    if abs(x - round(x)) > 1e-6:
        raise ValueError(f"{where}: maps are misaligned by a fraction of a cell ({x})")
    return int(round(x))


def align(a: Tensor, grid_a: Grid, b: Tensor, grid_b: Grid) -> tuple[Tensor, Tensor, Grid]:
    """Crop ``a [B, C, ha, wa]`` and ``b [B, C', hb, wb]`` (same stride) to the cells they share.

    FCN's skip crop: returns the two crops (same size, cell for cell at the same place) and
    their grid. Raises a ``ValueError`` if the grids differ in stride or by a fraction of a cell.
    """
    if abs(grid_a.stride - grid_b.stride) > 1e-9:
        raise ValueError(f"align: maps of strides {grid_a.stride} and {grid_b.stride}")
    d = _cells((grid_b.offset - grid_a.offset) / grid_a.stride, "align")  # b's cell 0 is a's cell d
    crops = []
    for dim in (2, 3):
        start, stop = max(0, d), min(a.shape[dim], d + b.shape[dim])
        if stop <= start:
            raise ValueError(f"align: maps {tuple(a.shape)} and {tuple(b.shape)} do not overlap")
        crops.append((start, stop))
    (y0, y1), (x0, x1) = crops
    a = a[:, :, y0:y1, x0:x1]
    b = b[:, :, y0 - d : y1 - d, x0 - d : x1 - d]
    return a, b, Grid(grid_a.stride, grid_a.offset + y0 * grid_a.stride)


def crop_to_input(x: Tensor, grid: Grid, size: tuple[int, int]) -> Tensor:
    """``[B, C, h, w]`` at stride 1 -> ``[B, C, H, W]``: the cells centred on input pixels ``0 .. H - 1``."""
    if abs(grid.stride - 1) > 1e-9:
        raise ValueError(f"crop_to_input: the map has stride {grid.stride}, not 1")
    start = _cells(-grid.offset, "crop_to_input")
    H, W = size
    if start < 0 or start + H > x.shape[2] or start + W > x.shape[3]:
        raise ValueError(
            f"crop_to_input: the {tuple(x.shape[-2:])} map starting at pixel {-start} does not cover the "
            f"{H}x{W} input (too little padding for this input size)"
        )
    return x[:, :, start : start + H, start : start + W]


class FCNHead(nn.Module):
    """torchvision's ``FCNHead``: 3x3 conv ``C -> C/4``, BN, ReLU, dropout, 1x1 conv to K.

    ``[B, C, h, w] -> [B, K, h, w]``; FCN on a dilated ResNet, and DeepLab's auxiliary classifier.

    Args:
        in_channels: C.
        num_classes: K.
        hidden: width of the 3x3 conv (``C // 4`` by default, torchvision's).
        dropout: 0.1 in torchvision.
        norm_layer: built from a channel count (``nn.BatchNorm2d``).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        hidden: int | None = None,
        dropout: float = 0.1,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        hidden = in_channels // 4 if hidden is None else hidden
        self.conv = ConvNormAct(in_channels, hidden, 3, norm_layer=norm_layer)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(hidden, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[B, C, h, w]`` -> logits ``[B, K, h, w]``."""
        return self.classifier(self.dropout(self.conv(x)))

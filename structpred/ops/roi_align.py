"""RoIAlign (He et al., Mask R-CNN, 2017), drop-in for ``torchvision.ops.roi_align``.

Shape shorthand:
    N: images, C: channels, H, W: feature map size, K: RoIs,
    PH, PW: output bins per RoI, gh, gw: bilinear samples per bin (per RoI), T: taps.

Convention: boxes are xyxy in *image* pixels; ``spatial_scale`` maps them onto the feature
map (1/16 for a stride-16 map). With ``aligned=False`` (the original paper's code) a
pixel's centre is at integer coordinates and RoIs are at least 1x1; with ``aligned=True``
boxes are shifted by -0.5 first so a pixel's centre is at +0.5 (Detectron2's fix).

How it is computed: every output bin is the mean of ``gh x gw`` bilinear samples, and every
sample is a weighted sum of 4 feature vectors. So each bin is a weighted sum of at most
``4 gh gw`` rows of the feature map laid out as a ``[N*H*W, C]`` table: RoIAlign is a sparse
linear map. We build the (row, weight) lists of all bins at once — variable ``gh, gw`` per
RoI included — and let ``embedding_bag(mode="sum")`` do the gather-and-reduce without
materialising the gathered vectors. Its backward is the transposed map (an index-add), so
gradients come from autograd.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.fx.experimental.symbolic_shapes import guard_or_false, guard_or_true

from ._checks import fx_leaf, pair, rois_from_boxes

# Taps handled per embedding_bag call; bounds the index/weight lists (~24 bytes per tap).
_MAX_TAPS = 1 << 23


def _axis_taps(coord: Tensor, size: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear taps along one axis, with torchvision's boundary rules.

    Args:
        coord (Tensor[S]): sample coordinates on the feature map.
        size (Tensor[S]): map length along this axis for each sample.
    Returns:
        low, high (int64[S]) neighbour indices and their weights (Tensor[S]); a sample
        more than one pixel outside the map gets weight 0.
    """
    inside = (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0)
    low = coord.floor().to(torch.int64)
    at_edge = low >= size - 1
    low = torch.where(at_edge, size - 1, low)
    high = torch.where(at_edge, low, low + 1)
    coord = torch.where(at_edge, low.to(coord.dtype), coord)
    frac = coord - low
    keep = inside.to(coord.dtype)
    return low, high, (1 - frac) * keep, frac * keep


# Per-RoI geometry: y1, x1, bin_h, bin_w (on its map), row_base, height, width (int64).
Geometry = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def _align_group(table: Tensor, geometry: Geometry, out_hw: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """RoIAlign of k RoIs that share one sampling grid ``(gh, gw)`` -> ``[k*PH*PW, C]``.

    Args:
        table (Tensor[R, C]): feature rows.
        geometry: each ``[k]``: RoI start ``y1, x1`` and bin size ``bin_h, bin_w`` on its map;
            ``row_base, height, width``: where the RoI's map starts in ``table``, its size.
    """
    y1, x1, bin_h, bin_w, row_base, height, width = geometry
    ph_bins, pw_bins = out_hw
    gh, gw = grid
    k = y1.shape[0]
    dtype, dev = table.dtype, table.device
    # Sample positions, same operation order as torchvision:
    # start + bin * bin_size + (sample + .5) * bin_size / grid
    bin_y = torch.arange(ph_bins, device=dev, dtype=dtype).repeat_interleave(gh)  # (PH*gh,)
    smp_y = torch.arange(gh, device=dev, dtype=dtype).repeat(ph_bins) + 0.5
    ys = y1[:, None] + bin_y * bin_h[:, None] + smp_y * bin_h[:, None] / gh  # (k, PH*gh)
    bin_x = torch.arange(pw_bins, device=dev, dtype=dtype).repeat_interleave(gw)  # (PW*gw,)
    smp_x = torch.arange(gw, device=dev, dtype=dtype).repeat(pw_bins) + 0.5
    xs = x1[:, None] + bin_x * bin_w[:, None] + smp_x * bin_w[:, None] / gw  # (k, PW*gw)

    y_lo, y_hi, wy_lo, wy_hi = _axis_taps(ys, height[:, None])
    x_lo, x_hi, wx_lo, wx_hi = _axis_taps(xs, width[:, None])
    # (k, PH*gh) x 2 taps -> (k, PH, 2*gh): the rows read by each bin, and their weights
    y_idx = torch.stack((y_lo, y_hi), -1).view(k, ph_bins, 2 * gh)
    y_w = torch.stack((wy_lo, wy_hi), -1).view(k, ph_bins, 2 * gh)
    x_idx = torch.stack((x_lo, x_hi), -1).view(k, pw_bins, 2 * gw)  # (k, PW, 2*gw)
    x_w = torch.stack((wx_lo, wx_hi), -1).view(k, pw_bins, 2 * gw)

    # Bag of bin (k, ph, pw) = outer product of its y taps and x taps:
    # (k, PH, 1, 2gh, 1) and (k, 1, PW, 1, 2gw) -> (k, PH, PW, 2gh, 2gw)
    y_rows = row_base[:, None, None] + y_idx * width[:, None, None]  # (k, PH, 2gh)
    rows = y_rows[:, :, None, :, None] + x_idx[:, None, :, None, :]
    weights = y_w[:, :, None, :, None] * x_w[:, None, :, None, :] / max(gh * gw, 1)
    bags = k * ph_bins * pw_bins
    if torch.compiler.is_exporting():
        # ONNX's embedding_bag is a loop over bags (and fails on none): gather, weight and sum.
        # (bags, 4gh*gw) -> (bags, 4gh*gw, C) -> (bags, C)
        n = 4 * gh * gw  # taps per bag, static (a -1 would be ambiguous with no bags)
        taps = table[rows.reshape(bags, n)]
        return (taps * weights.reshape(bags, n, 1)).sum(1)
    # (k, PH, PW, 2gh, 2gw) -> (k*PH*PW, 4*gh*gw): one fixed-size bag per bin
    return F.embedding_bag(
        rows.reshape(bags, -1), table, mode="sum", per_sample_weights=weights.reshape(bags, -1)
    )


def roi_align_table(
    table: Tensor,
    boxes: Tensor,
    row_base: Tensor,
    height: Tensor,
    width: Tensor,
    scale: Tensor,
    output_size: tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """RoIAlign from a channels-last feature table; the engine behind :func:`roi_align`.

    Args:
        table (Tensor[R, C]): feature maps flattened to rows in (image, y, x) order, possibly
            several maps (pyramid levels) one after another.
        boxes (Tensor[K, 4]): xyxy RoIs in image pixels.
        row_base, height, width (int64[K]): where each RoI's map starts in ``table`` and its size.
        scale (Tensor[K]): image-to-map scale of each RoI's map.
    Returns:
        Tensor[K, C, PH, PW].
    """
    ph_bins, pw_bins = output_size
    channels = table.shape[1]
    num_rois = boxes.shape[0]
    # guard_or_*: under torch.export the RoI count is data-dependent; the general path holds for 0.
    if guard_or_false(num_rois == 0) or guard_or_false(table.shape[0] == 0):
        return table.new_zeros(num_rois, channels, ph_bins, pw_bins)
    offset = 0.5 if aligned else 0.0
    x1 = boxes[:, 0] * scale - offset
    y1 = boxes[:, 1] * scale - offset
    roi_w = boxes[:, 2] * scale - offset - x1
    roi_h = boxes[:, 3] * scale - offset - y1
    if not aligned:  # the original code forces malformed RoIs to be 1x1
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    bin_h = roi_h / ph_bins
    bin_w = roi_w / pw_bins
    geometry: Geometry = (y1, x1, bin_h, bin_w, row_base, height, width)

    def rois_per_call(grid: tuple[int, int]) -> int:
        # Bound the index/weight lists (~24 bytes per tap) for huge grids.
        return max(1, _MAX_TAPS // (4 * max(grid[0] * grid[1], 1) * ph_bins * pw_bins))

    if sampling_ratio > 0 and guard_or_true(num_rois <= rois_per_call((sampling_ratio, sampling_ratio))):
        # The common case: one grid for every RoI, one embedding_bag call.
        pooled = _align_group(table, geometry, (ph_bins, pw_bins), (sampling_ratio, sampling_ratio))
        # (K*PH*PW, C) -> (K, PH, PW, C) -> (K, C, PH, PW)
        return pooled.view(num_rois, ph_bins, pw_bins, channels).permute(0, 3, 1, 2).contiguous()

    if sampling_ratio > 0:
        gh = torch.full((num_rois,), sampling_ratio, dtype=torch.int64, device=boxes.device)
        gw = gh
    else:  # adaptive: ceil(bin size) samples per axis, so RoIs differ
        gh = torch.ceil(bin_h).to(torch.int64)
        gw = torch.ceil(bin_w).to(torch.int64)
    # RoIs that share a grid are pooled together: a few groups, as bins span a few cells.
    span = int(gw.max()) + 1
    key = gh * span + gw
    out = table.new_zeros(num_rois, ph_bins * pw_bins, channels)
    for k in torch.unique(key).tolist():
        grid = (k // span, k % span)
        if grid[0] * grid[1] == 0:  # empty RoI (aligned, zero size): no samples, bins stay 0
            continue
        ids = (key == k).nonzero()[:, 0]
        step = rois_per_call(grid)
        for lo in range(0, ids.numel(), step):
            part = ids[lo : lo + step]
            y1_, x1_, bh_, bw_, base_, h_, w_ = (t[part] for t in geometry)
            pooled = _align_group(
                table, (y1_, x1_, bh_, bw_, base_, h_, w_), (ph_bins, pw_bins), grid
            )  # (k*PH*PW, C)
            out[part] = pooled.view(-1, ph_bins * pw_bins, channels)
    # (K, PH*PW, C) -> (K, PH, PW, C) -> (K, C, PH, PW)
    return out.view(num_rois, ph_bins, pw_bins, channels).permute(0, 3, 1, 2).contiguous()


def _quantized_roi_align(
    input: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """:func:`roi_align` of a per-tensor quantized map: pooled in float32, requantized with
    the input's scale and zero point (torchvision's quantized kernel keeps them too)."""
    if input.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        raise ValueError(f"input: only per-tensor quantization is supported, got {input.qscheme()}")

    def plain(b: Tensor) -> Tensor:
        return b.dequantize() if isinstance(b, Tensor) and b.is_quantized else b

    rois = plain(boxes) if isinstance(boxes, Tensor) else [plain(b) for b in boxes]
    pooled = roi_align(input.dequantize(), rois, output_size, spatial_scale, sampling_ratio, aligned)
    return torch.quantize_per_tensor(pooled, input.q_scale(), input.q_zero_point(), input.dtype)


@fx_leaf
def roi_align(
    input: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """Bilinear RoI pooling into a fixed ``PH x PW`` grid.

    Args:
        input (Tensor[N, C, H, W]): feature map, float.
        boxes (Tensor[K, 5] or list[Tensor[L, 4]]): ``(batch_index, x1, y1, x2, y2)`` rows,
            or one xyxy tensor per image; image pixels.
        output_size: ``PH`` or ``(PH, PW)``.
        spatial_scale: image pixels -> feature cells (1/stride).
        sampling_ratio: samples per bin along each axis; ``<= 0`` means ``ceil(bin size)``.
        aligned: shift boxes by -0.5 cell (pixel-centre convention).
    Returns:
        Tensor[K, C, PH, PW], ``input``'s dtype.

    A quantized map (``quint8``, ``qint8``, ``qint32``, per-tensor; boxes float or quantized)
    gives a map quantized with the input's scale and zero point, as torchvision's.

    Differences from torchvision: a ``float16``/``bfloat16`` map is pooled in float32 and
    the result cast back, always (torchvision does so under autocast only). A quantized map may
    hold several images (torchvision's quantized kernel takes one). Bad
    arguments raise ``ValueError`` naming the argument (torchvision: ``RuntimeError`` from its
    kernel, ``AssertionError`` for a box tensor of the wrong shape). ``torch.fx.symbolic_trace``
    records a call as one node (as torchvision's ``torch.fx.wrap``); TorchScript is not
    supported (``torch.export`` is).
    """
    if isinstance(input, Tensor) and input.is_quantized:
        return _quantized_roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    if isinstance(input, Tensor) and input.dtype in (torch.float16, torch.bfloat16):
        # Sample coordinates and bilinear weights in 8-10 mantissa bits are off by up to ~0.06
        # of the map's range; pool in float32 and cast back, as torchvision's autocast does.
        pooled = roi_align(input.float(), boxes, output_size, spatial_scale, sampling_ratio, aligned)
        return pooled.to(input.dtype)
    out_hw = pair(output_size, "output_size")
    batch_idx, xyxy = rois_from_boxes(boxes, input)
    num_images, channels, height, width = input.shape
    # (N, C, H, W) -> (N, H, W, C) -> (N*H*W, C): one row per feature-map cell
    table = input.permute(0, 2, 3, 1).reshape(num_images * height * width, channels)
    k = xyxy.shape[0]
    h = torch.full((k,), height, dtype=torch.int64, device=input.device)
    w = torch.full((k,), width, dtype=torch.int64, device=input.device)
    scale = torch.full((k,), spatial_scale, dtype=input.dtype, device=input.device)
    return roi_align_table(
        table, xyxy, batch_idx * height * width, h, w, scale, out_hw, int(sampling_ratio), aligned
    )

"""RoI max pooling (Girshick, Fast R-CNN, 2015) and SPP pooling of RoIs (He et al., SPPnet, 2014).

Shape shorthand:
    N: images, C: channels, H, W: feature map size, K: RoIs, PH, PW: bins per RoI,
    B = K*PH*PW bins, R = N*H*W feature cells.

Convention (torchvision's ``roi_pool``): RoI corners are rounded to the nearest feature
cell (half away from zero) after ``* spatial_scale``; the RoI spans
``x2 - x1 + 1`` cells; bin ``p`` covers cells ``[floor(p * size / P), ceil((p + 1) * size / P))``
clipped to the map; an empty bin gives 0. The gradient of a bin goes to its arg-max cell,
the *first* maximal cell in row-major order, as torchvision's kernel does. One deliberate
difference: a NaN in a bin makes the bin NaN (torchvision's ``>`` test skips NaNs silently).

How it is computed: a bin's maximum is a range-maximum query, answered with a **sparse
table** (the classic RMQ structure): ``T[k, l][y, x] = max`` over the ``2^k x 2^l`` block at
``(y, x)``; any ``h x w`` window is covered by 4 such blocks with ``2^k <= h``, ``2^l <= w``,
so each bin costs 4 lookups of a C-vector whatever its size. Tables are built level by
level (one elementwise max each) and only for the block sizes some bin needs. To make
"first maximal cell" fall out of a plain max, every cell is encoded as one int64 key —
(value's order code, then the reversed cell index) — so ties go to the lowest index. The
keys give the arg-max cell; the output is a differentiable ``gather`` of the input there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.fx.experimental.symbolic_shapes import guard_or_false, guard_or_true

from ._checks import fx_leaf, pair, rois_from_boxes

_LOW = 1 << 32  # keys: order code * 2^32 + (2^32 - 1 - cell index)


def _round_half_away(v: Tensor) -> Tensor:
    """C's ``round``: halves go away from zero (``torch.round`` sends them to even)."""
    trunc = v.trunc()
    return torch.where((v - trunc).abs() == 0.5, trunc + v.sign(), torch.round(v))


def _order_codes(table: Tensor) -> Tensor:
    """int64 codes ordered like the values of ``table`` ``[R, C]``, equal values -> equal codes."""
    if table.dtype == torch.float64:
        # float64 does not fit beside a 32-bit index: use dense ranks instead.
        return torch.unique(table, return_inverse=True)[1].to(torch.int64)
    # IEEE float32 bits as int32 order like the floats once negatives' magnitude bits are
    # flipped; -0.0 + 0.0 = +0.0 so both zeros share a code.
    bits = (table.float() + 0.0).view(torch.int32)
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(torch.int64)


def _bins(start: Tensor, end: Tensor, bins: int, size: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Bin limits along one axis: ``[lo, hi)`` of every bin, ``int64[K, bins]``, clipped to the map."""
    length = (end - start + 1).clamp(min=1)
    bin_size = length.to(dtype) / bins  # (K,)
    p = torch.arange(bins, device=start.device, dtype=dtype)
    lo = torch.floor(p * bin_size[:, None]).to(torch.int64) + start[:, None]  # (K, bins)
    hi = torch.ceil((p + 1) * bin_size[:, None]).to(torch.int64) + start[:, None]
    return lo.clamp(0, size), hi.clamp(0, size)


def _floor_log2(n: Tensor, levels: int) -> Tensor:
    """Exact ``floor(log2(n))`` for ``1 <= n < 2^levels`` (int64)."""
    powers = 2 ** torch.arange(levels, device=n.device)
    return (n[:, None] >= powers).sum(1) - 1


def _window_max(table: Tensor, y0: Tensor, y1: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
    """Maximum of every window over a channels-last map, with the sparse table.

    Args:
        table (Tensor[N, H, W, C]): values (or int64 keys).
        y0, y1, x0, x1 (int64[B]): non-empty windows ``[y0, y1) x [x0, x1)``, rows counted
            across images (``n * H + y``).
    Returns:
        Tensor[B, C]: the elementwise maximum over each window.
    """
    num_images, height, width, channels = table.shape
    k = _floor_log2(y1 - y0, height.bit_length())  # (B,) block height 2^k
    lw = _floor_log2(x1 - x0, width.bit_length())  # (B,) block width 2^lw
    # Windows grouped by block size (k, l): one contiguous run of `order` per level pair.
    level = k * (width.bit_length() + 1) + lw
    order = torch.sort(level, stable=True).indices
    level_ids, level_sizes = torch.unique_consecutive(level[order], return_counts=True)
    starts = (torch.cumsum(level_sizes, 0) - level_sizes).tolist()
    runs = {int(v): (a, int(n)) for v, a, n in zip(level_ids, starts, level_sizes, strict=True)}
    img = y0 // height
    top, left = y0 - img * height, x0  # (B,) top-left inside the image
    best = table.new_empty(y0.shape[0], channels)
    base_k = table  # T[k, 0]
    for kk in range(int(k.max()) + 1):
        if kk > 0:  # T[k, 0][y] = max(T[k-1, 0][y], T[k-1, 0][y + 2^(k-1)])
            s = 1 << (kk - 1)
            base_k = torch.maximum(base_k[:, :-s], base_k[:, s:])
        level_table = base_k
        for ll in range(int(lw.max()) + 1):
            if ll > 0:  # T[k, l][x] = max(T[k, l-1][x], T[k, l-1][x + 2^(l-1)])
                s = 1 << (ll - 1)
                level_table = torch.maximum(level_table[:, :, :-s], level_table[:, :, s:])
            run = runs.get(kk * (width.bit_length() + 1) + ll)
            if run is None:
                continue
            sel = order[run[0] : run[0] + run[1]]  # the windows of this level pair
            t_h, t_w = level_table.shape[1], level_table.shape[2]
            flat = level_table.reshape(num_images * t_h * t_w, channels)  # rows (n, y, x)
            i_s, y_top, x_left = img[sel], top[sel], left[sel]
            y_bottom = y1[sel] - i_s * height - (1 << kk)  # last block's top row
            x_right = x1[sel] - (1 << ll)
            # The 4 corner blocks of every window in one gather: (4, n) -> (4n, C) -> (4, n, C) -> (n, C)
            ys = torch.stack((y_top, y_top, y_bottom, y_bottom))
            xs = torch.stack((x_left, x_right, x_left, x_right))
            rows = flat.index_select(0, ((i_s * t_h + ys) * t_w + xs).reshape(-1))
            best.index_copy_(0, sel, rows.view(4, -1, channels).amax(0))
    return best


@torch.library.custom_op("structpred::roi_pool", mutates_args=())
def _roi_pool_op(input: Tensor, rois: Tensor, pooled_h: int, pooled_w: int, spatial_scale: float) -> Tensor:
    """:func:`roi_pool` of ``rois [K, 5]`` as one opaque operator, for ``torch.export``: the sparse
    table's data-dependent loops stay out of the graph; the ONNX exporter maps it to ``MaxRoiPool``
    (:mod:`structpred.engine.export`)."""
    return roi_pool(input, rois, (pooled_h, pooled_w), spatial_scale)


@_roi_pool_op.register_fake
def _roi_pool_fake(input: Tensor, rois: Tensor, pooled_h: int, pooled_w: int, spatial_scale: float) -> Tensor:
    return input.new_empty(rois.shape[0], input.shape[1], pooled_h, pooled_w)


@fx_leaf
def roi_pool(
    input: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """Max-pool each RoI into a fixed ``PH x PW`` grid of bins (Fast R-CNN).

    Args:
        input (Tensor[N, C, H, W]): feature map, float.
        boxes (Tensor[K, 5] or list[Tensor[L, 4]]): ``(batch_index, x1, y1, x2, y2)`` rows,
            or one xyxy tensor per image; image pixels.
        output_size: ``PH`` or ``(PH, PW)``.
        spatial_scale: image pixels -> feature cells (1/stride).
    Returns:
        Tensor[K, C, PH, PW]; empty bins are 0.

    Differences from torchvision: quantized maps are not supported (``dequantize()`` first);
    bad arguments raise ``ValueError`` naming the argument (torchvision: ``RuntimeError`` from
    its kernel, ``AssertionError`` for a box tensor of the wrong shape). Bin limits are
    computed in the input's dtype, as torchvision's kernel does. ``torch.fx.symbolic_trace``
    records a call as one node; TorchScript is not supported (``torch.export`` is).
    """
    ph_bins, pw_bins = pair(output_size, "output_size")
    batch_idx, xyxy = rois_from_boxes(boxes, input)
    if torch.compiler.is_exporting():
        rois = torch.cat([batch_idx[:, None].to(xyxy.dtype), xyxy], 1)  # (K, 5)
        return _roi_pool_op(input, rois, ph_bins, pw_bins, float(spatial_scale))
    num_images, channels, height, width = input.shape
    num_rois = xyxy.shape[0]
    # guard_or_*: under torch.export the RoI count is data-dependent; the general path holds for 0.
    if guard_or_false(num_rois == 0) or guard_or_false(num_images * height * width == 0):
        return input.new_zeros(num_rois, channels, ph_bins, pw_bins)
    if num_images * height * width >= _LOW:
        raise ValueError(f"input has {num_images * height * width} cells; roi_pool supports < 2^32")
    # (N, C, H, W) -> (N, H, W, C) -> (R, C): one row per feature cell
    table = input.permute(0, 2, 3, 1).reshape(num_images * height * width, channels)
    corners = _round_half_away(xyxy * spatial_scale).to(torch.int64)  # (K, 4) in cells
    hs, he = _bins(corners[:, 1], corners[:, 3], ph_bins, height, input.dtype)  # (K, PH)
    ws, we = _bins(corners[:, 0], corners[:, 2], pw_bins, width, input.dtype)  # (K, PW)
    # Per bin (K, PH, PW), flattened to B: window rows counted across images (n * H + y).
    y0 = (hs + batch_idx[:, None] * height)[:, :, None].expand(-1, -1, pw_bins).reshape(-1)
    y1 = (he + batch_idx[:, None] * height)[:, :, None].expand(-1, -1, pw_bins).reshape(-1)
    x0 = ws[:, None, :].expand(-1, ph_bins, -1).reshape(-1)
    x1 = we[:, None, :].expand(-1, ph_bins, -1).reshape(-1)
    empty = ((y1 <= y0) | (x1 <= x0)).nonzero()[:, 0]  # bins outside the map -> 0
    # Give empty bins a 1x1 window so every bin takes the same path; zeroed below.
    y0 = y0.clamp(max=num_images * height - 1)
    y1 = torch.maximum(y1, y0 + 1)
    x0 = x0.clamp(max=width - 1)
    x1 = torch.maximum(x1, x0 + 1)
    if torch.is_grad_enabled() and input.requires_grad:
        # The gradient needs the arg-max cell: run the table on keys, then gather.
        with torch.no_grad():
            index = torch.arange(table.shape[0], device=input.device)[:, None]  # (R, 1)
            keys = _order_codes(table) * _LOW + (_LOW - 1 - index)  # (R, C)
            best = _window_max(keys.view(num_images, height, width, channels), y0, y1, x0, x1)
            cell = (_LOW - 1) - (best & (_LOW - 1))  # (B, C) decoded cell index
        pooled = torch.gather(table, 0, cell)  # (B, C), differentiable w.r.t. input
    else:
        pooled = _window_max(table.view(num_images, height, width, channels), y0, y1, x0, x1)
    if guard_or_true(empty.numel() > 0):
        pooled = pooled.index_fill(0, empty, 0.0)
    # (B, C) -> (K, PH, PW, C) -> (K, C, PH, PW)
    return pooled.view(num_rois, ph_bins, pw_bins, channels).permute(0, 3, 1, 2).contiguous()


@fx_leaf
def spp(
    input: Tensor,
    boxes: Tensor | Sequence[Tensor],
    levels: Sequence[int] = (1, 2, 4),
    spatial_scale: float = 1.0,
) -> Tensor:
    """Spatial pyramid pooling of RoIs (SPPnet): max-pool each RoI into ``n x n`` bins for every
    pyramid level ``n`` and concatenate, giving a fixed-length vector whatever the RoI size.

    Args:
        input (Tensor[N, C, H, W]), boxes, spatial_scale: as in :func:`roi_pool`.
        levels: bins per side of each pyramid level.
    Returns:
        Tensor[K, C * sum(n^2 for n in levels)]: per level the ``[C, n, n]`` bins flattened,
        levels in the given order.
    """
    if len(levels) == 0 or any(int(n) <= 0 for n in levels):
        raise ValueError(f"levels must be a non-empty list of positive ints, got {levels!r}")
    # (K, C, n, n) -> (K, C*n*n) per level, concatenated
    return torch.cat([roi_pool(input, boxes, int(n), spatial_scale).flatten(1) for n in levels], dim=1)

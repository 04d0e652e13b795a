"""Keypoints <-> per-RoI heatmaps (Mask R-CNN's keypoint head, He et al. 2017), torchvision-compatible.

Shape shorthand:
    Q: RoIs, K: keypoints per object, M: heatmap side (56 for Keypoint R-CNN),
    h_q, w_q: RoI ``q``'s size rounded up to whole pixels.

Convention (torchvision's ``keypoints_to_heatmap`` / ``heatmaps_to_keypoints``, so its weights
give the same keypoints): keypoints are ``(x, y, v)`` in absolute pixels, ``v > 0`` labelled.
A keypoint's target is the one heatmap cell it falls into, ``floor((x - x1) * M / (x2 - x1))``
(a keypoint exactly on the RoI's right / bottom edge goes to the last cell); keypoints outside
the RoI or unlabelled are not valid targets. Back from a heatmap, each RoI's ``M x M`` logits are
resized bicubically (``align_corners=False``) to ``h_q x w_q`` pixels, the argmax cell ``(i, j)``
is the keypoint at the cell's centre ``x1 + (j + 0.5) * w / w_q`` (Heckbert's ``c = d + 0.5``),
and its score is the resized logit there.

Static form (:func:`heatmaps_to_keypoints_static`, what ``torch.export`` traces): the resize is
separable, ``R_q = Wy_q @ map @ Wx_q^T`` with ``Wy_q [h_q, M]`` the bicubic taps of each output
row, so it is written with fixed-size matrices over a bound ``(By, Bx)`` on every RoI's pixel
size (the image's size: detections are clipped to it), rows and columns beyond the RoI's own
size masked out of the argmax. The same values up to float32 rounding (~1e-5: another summation
order than ``F.interpolate``'s kernel); only a near-tie closer than that can pick another cell.
Chunked over keypoints and output rows so each step holds at most ``chunk_elements`` values per
RoI: peak memory ``~ 4 * Q * (chunk_elements + (By + Bx) * M)`` bytes (float32), about 260 MB
for ``Q = 100``, an 800 x 1333 image and ``M = 56`` with the default ``2**19``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "heatmaps_to_keypoints",
    "heatmaps_to_keypoints_static",
    "keypoints_to_heatmap",
    "resize_keypoints",
]

#: Values held per RoI in one step of :func:`heatmaps_to_keypoints_static` (its memory bound).
CHUNK_ELEMENTS = 2**19
#: What a cell beyond a RoI's own size scores in the static form (heatmap logits are far above it).
_OUTSIDE = -1e30


def _check_rois(rois: Tensor, n: int, what: str) -> None:
    if rois.dim() != 2 or rois.shape[1] != 4:
        raise ValueError(f"rois must be Tensor[Q, 4] (xyxy), got {tuple(rois.shape)}")
    if rois.shape[0] != n:
        raise ValueError(f"{n} RoIs in {what} but {rois.shape[0]} rois")


def keypoints_to_heatmap(keypoints: Tensor, rois: Tensor, heatmap_size: int) -> tuple[Tensor, Tensor]:
    """Each keypoint's target cell in its RoI's ``M x M`` heatmap, as a flat index.

    Args:
        keypoints (Tensor[Q, K, 3]): ``(x, y, v)`` in pixels, the gt keypoints of each RoI.
        rois (Tensor[Q, 4]): xyxy RoIs in the same pixels.
        heatmap_size: ``M``.
    Returns:
        ``(targets int64[Q, K], valid int64[Q, K])``: ``y * M + x`` of the cell (0 where not
        valid) and 1 where the keypoint is labelled and inside the RoI (torchvision's dtypes).
    """
    if keypoints.dim() != 3 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must be Tensor[Q, K, 3], got {tuple(keypoints.shape)}")
    _check_rois(rois, keypoints.shape[0], "keypoints")
    M = int(heatmap_size)
    x1, y1 = rois[:, 0:1], rois[:, 1:2]  # (Q, 1)
    scale_x = M / (rois[:, 2:3] - x1)  # (Q, 1): heatmap cells per pixel
    scale_y = M / (rois[:, 3:4] - y1)
    x, y = keypoints[..., 0], keypoints[..., 1]  # (Q, K)
    on_right = x == rois[:, 2:3]
    on_bottom = y == rois[:, 3:4]
    col = ((x - x1) * scale_x).floor().long()
    row = ((y - y1) * scale_y).floor().long()
    # A keypoint on the far edge would fall one cell outside: it belongs to the last one.
    col = torch.where(on_right, torch.full_like(col, M - 1), col)
    row = torch.where(on_bottom, torch.full_like(row, M - 1), row)
    inside = (col >= 0) & (row >= 0) & (col < M) & (row < M)
    valid = (inside & (keypoints[..., 2] > 0)).long()
    return (row * M + col) * valid, valid


def _roi_pixels(rois: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(widths, heights, w_q, h_q)`` [Q] of the RoIs: at least one pixel, and rounded up."""
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1).to(dtype)  # (Q,) RoIs at least one pixel wide
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1).to(dtype)
    return widths, heights, widths.ceil(), heights.ceil()


def _to_pixels(
    rois: Tensor, col: Tensor, row: Tensor, scores: Tensor, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """The argmax cells ``(col, row)`` [Q, K] back to ``(keypoints [Q, K, 3], scores [Q, K])``."""
    widths, heights, widths_px, heights_px = _roi_pixels(rois, dtype)
    # Cell centres back to pixels: the resized map has w_q cells over the RoI's w pixels.
    x = (col.to(dtype) + 0.5) * (widths / widths_px)[:, None] + rois[:, 0:1].to(dtype)
    y = (row.to(dtype) + 0.5) * (heights / heights_px)[:, None] + rois[:, 1:2].to(dtype)
    keypoints = torch.stack([x, y, torch.ones_like(x)], dim=2)  # (Q, K, 3)
    return keypoints, scores.to(dtype)


def heatmaps_to_keypoints(
    maps: Tensor, rois: Tensor, max_size: tuple[int, int] | None = None
) -> tuple[Tensor, Tensor]:
    """Keypoints (argmax of each RoI's heatmap resized to the RoI's pixels) and their scores.

    Args:
        maps (Tensor[Q, K, M, M]): heatmap logits.
        rois (Tensor[Q, 4]): xyxy RoIs (detections) in pixels.
        max_size: ``(H, W)``, a bound on every RoI's pixel size (the image's size); needed under
            ``torch.export``, which traces :func:`heatmaps_to_keypoints_static` with it.
    Returns:
        ``(keypoints [Q, K, 3], scores [Q, K])``, float32 (float64 for float64 maps):
        ``(x, y, 1)`` in the RoIs' pixels and the resized logit at the chosen cell.
    """
    if maps.dim() != 4:
        raise ValueError(f"maps must be Tensor[Q, K, M, M], got {tuple(maps.shape)}")
    _check_rois(rois, maps.shape[0], "maps")
    if torch.compiler.is_exporting():
        if max_size is None:
            raise ValueError(
                "heatmaps_to_keypoints under torch.export needs max_size (H, W), the image's size"
            )
        return heatmaps_to_keypoints_static(maps, rois, max_size)
    Q, K = maps.shape[:2]
    dtype = torch.promote_types(maps.dtype, torch.float32)
    if Q == 0:
        empty = torch.zeros(0, K, dtype=dtype, device=maps.device)
        return torch.zeros(0, K, 3, dtype=dtype, device=maps.device), empty
    _, _, widths_px, heights_px = _roi_pixels(rois, dtype)
    cols, rows, scores = [], [], []
    # One resize per RoI: each RoI has its own pixel size (torchvision's loop; the argmax must be
    # taken on exactly these bicubic values for equal keypoints).
    for q, (w, h) in enumerate(zip(widths_px.tolist(), heights_px.tolist(), strict=True)):
        size = (int(h), int(w))
        roi_map = F.interpolate(maps[q][:, None], size=size, mode="bicubic", align_corners=False)
        flat = roi_map.reshape(K, -1)  # (K, 1, h_q, w_q) -> (K, h_q * w_q)
        pos = flat.argmax(dim=1)  # (K,) the first maximum, as torchvision
        scores.append(flat.gather(1, pos[:, None])[:, 0])
        cols.append(pos % int(w))
        rows.append(torch.div(pos, int(w), rounding_mode="floor"))
    return _to_pixels(rois, torch.stack(cols), torch.stack(rows), torch.stack(scores), dtype)


def _cubic_taps(cells: Tensor, size: Tensor, M: int) -> tuple[Tensor, Tensor]:
    """The 4 map cells and bicubic weights (Keys, ``a = -0.75``) of output cells ``cells [Q, N]``
    when ``M`` map cells are resized to ``size [Q]`` (``align_corners=False``; taps beyond the
    map clamped to its edge): ``(index int64[Q, N, 4], weights [Q, N, 4])``."""
    a = -0.75
    src = (M / size)[:, None] * (cells + 0.5) - 0.5  # (Q, N) source coordinate of each output cell
    base = src.floor()
    t = (src - base).clamp(0, 1)
    near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1  # noqa: E731  |x| <= 1
    far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # noqa: E731  1 < |x| < 2
    weights = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=2)  # (Q, N, 4)
    taps = torch.arange(-1, 3, device=size.device)  # (4,)
    return (base.long()[..., None] + taps).clamp(0, M - 1), weights


def _cubic_matrix(size: Tensor, bound: int, M: int) -> Tensor:
    """``[Q, bound, M]``: row ``i`` holds the bicubic weights of output cell ``i`` when ``M`` cells
    are resized to ``size[q]`` (:func:`_cubic_taps`; clamped taps add up on the edge cell);
    zero rows for ``i >= size[q]``."""
    Q = size.shape[0]
    i = torch.arange(bound, device=size.device, dtype=size.dtype)  # (B,)
    index, weights = _cubic_taps(i.expand(Q, bound), size, M)  # (Q, B, 4)
    weights = weights * (i < size[:, None]).to(size.dtype)[..., None]  # rows beyond the RoI: zero
    return torch.zeros(Q, bound, M, device=size.device, dtype=size.dtype).scatter_add(2, index, weights)


def _resized_at(maps: Tensor, rows: Tensor, cols: Tensor, heights_px: Tensor, widths_px: Tensor) -> Tensor:
    """The resized maps' values at cells ``(rows, cols) [Q, K]`` from their 4 x 4 taps, in float64
    (closer to exact than either float32 form: the score owes nothing to the search's rounding)."""
    Q, K, M, _ = maps.shape
    iy, wy = _cubic_taps(rows.double(), heights_px.double(), M)  # (Q, K, 4)
    ix, wx = _cubic_taps(cols.double(), widths_px.double(), M)
    flat = (iy[..., :, None] * M + ix[..., None, :]).reshape(Q, K, 16)  # (Q, K, 4, 4) -> (Q, K, 16)
    taps = maps.double().reshape(Q, K, M * M).gather(2, flat)  # (Q, K, 16)
    return (taps * (wy[..., :, None] * wx[..., None, :]).reshape(Q, K, 16)).sum(2)


def _resize_across(m: Tensor, wx: Tensor) -> Tensor:
    """``m [Q, kc, M, M]`` maps, ``wx [Q, M + 2, Bx]`` (resize matrix, column mask, outside row)
    -> ``[Q, kc, M + 1, Bx]``: every map row resized, masked, and the outside row, in one product."""
    Q, k, M, _ = m.shape
    ones = m.new_ones(Q, k, M, 1)
    top = torch.cat([m, ones, torch.zeros_like(ones)], 3)  # (Q, kc, M, M + 2): [map, 1, 0]
    bottom = m.new_zeros(Q, k, 1, M + 2)
    bottom[..., M:] = 1  # [0, 1, 1]
    rows = torch.cat([top, bottom], 2)  # (Q, kc, M + 1, M + 2)
    # (Q, kc*(M+1), M+2) @ (Q, M+2, Bx): one batched product, no copy of wx per keypoint
    return (rows.reshape(Q, k * (M + 1), M + 2) @ wx).reshape(Q, k, M + 1, wx.shape[2])


def heatmaps_to_keypoints_static(
    maps: Tensor, rois: Tensor, max_size: tuple[int, int], chunk_elements: int = CHUNK_ELEMENTS
) -> tuple[Tensor, Tensor]:
    """:func:`heatmaps_to_keypoints` with shapes fixed by a bound instead of each RoI's size
    (exportable; module docstring). ``max_size``: ``(By, Bx)``, at least every RoI's pixel
    height / width rounded up (RoIs beyond it: a ValueError in eager, cut to it when traced).
    ``chunk_elements``: values held per RoI in one step (the memory bound)."""
    if maps.dim() != 4 or maps.shape[2] != maps.shape[3]:
        raise ValueError(f"maps must be Tensor[Q, K, M, M], got {tuple(maps.shape)}")
    _check_rois(rois, maps.shape[0], "maps")
    By, Bx = (int(s) for s in max_size)
    if By < 1 or Bx < 1:
        raise ValueError(f"max_size must be two sides >= 1 px (H, W), got {tuple(max_size)}")
    Q, K, M, _ = maps.shape
    dtype = torch.promote_types(maps.dtype, torch.float32)
    _, _, widths_px, heights_px = _roi_pixels(rois, dtype)
    if not torch.compiler.is_exporting() and Q:
        h_max, w_max = int(heights_px.max()), int(widths_px.max())
        if h_max > By or w_max > Bx:
            raise ValueError(f"a RoI of {h_max} x {w_max} px exceeds max_size {(By, Bx)}")
    widths_px, heights_px = widths_px.clamp(max=Bx), heights_px.clamp(max=By)
    # Cells beyond a RoI's own size must never win the argmax, but a masked_fill over every
    # resized value costs as much as the resize: the matrices carry the mask. The resize across
    # is one product [[map, 1, 0], [0, 1, 1]] @ [[Wx^T], [column mask], [_OUTSIDE]]: each map row
    # resized plus _OUTSIDE at the columns beyond w_q, and one more row _OUTSIDE everywhere, on
    # which the output rows beyond h_q put weight 1 (other weights sum to 1): ~_OUTSIDE or below.
    wx = _cubic_matrix(widths_px, Bx, M).transpose(1, 2)  # (Q, Bx, M) -> (Q, M, Bx)
    cols_outside = torch.arange(Bx, device=maps.device, dtype=dtype) >= widths_px[:, None]  # (Q, Bx)
    outside = torch.full_like(cols_outside, _OUTSIDE, dtype=dtype)  # (Q, Bx)
    wx = torch.cat([wx, (cols_outside.to(dtype) * _OUTSIDE)[:, None], outside[:, None]], 1)  # (Q, M + 2, Bx)
    wy = _cubic_matrix(heights_px, By, M)  # (Q, By, M)
    rows_outside = torch.arange(By, device=maps.device, dtype=dtype) >= heights_px[:, None]  # (Q, By)
    wy = torch.cat([wy, rows_outside.to(dtype)[..., None]], 2)[:, None]  # (Q, 1, By, M + 1)
    # Steps of kc keypoints x R output rows: kc * Bx * (M + 1 + R) values per RoI at most.
    kc = max(1, min(K, chunk_elements // (2 * (M + 1) * Bx)))
    R = max(1, min(By, chunk_elements // (kc * Bx) - M - 1))
    best_cols, best_rows = [], []
    for k0 in range(0, K, kc):
        across = _resize_across(maps[:, k0 : k0 + kc].to(dtype), wx)  # (Q, kc, M + 1, Bx)
        k = across.shape[1]
        best = torch.full((Q, k), float("-inf"), device=maps.device, dtype=dtype)
        row = torch.zeros((Q, k), device=maps.device, dtype=torch.long)
        col = torch.zeros_like(row)
        for r0 in range(0, By, R):
            # (Q, 1, r, M + 1) @ (Q, kc, M + 1, Bx) -> (Q, kc, r, Bx) -> (Q, kc): the first maximum
            value, pos = (wy[:, :, r0 : r0 + R] @ across).flatten(2).max(dim=2)
            # Rows come in order: a later chunk wins only when strictly greater (the first maximum).
            better = value > best
            best = torch.where(better, value, best)
            row = torch.where(better, torch.div(pos, Bx, rounding_mode="floor") + r0, row)
            col = torch.where(better, pos % Bx, col)
        del across  # before the next chunk's: one at a time
        best_cols.append(col)
        best_rows.append(row)
    cols, rows = torch.cat(best_cols, 1), torch.cat(best_rows, 1)  # (Q, K)
    scores = _resized_at(maps, rows, cols, heights_px, widths_px)
    return _to_pixels(rois, cols, rows, scores, dtype)


def resize_keypoints(keypoints: Tensor, original_size: Sequence[int], new_size: Sequence[int]) -> Tensor:
    """Scale ``keypoints (Tensor[N, K, 3])`` from an ``(H, W)`` image to ``(H', W')``; ``v`` kept."""
    ratio_h = torch.tensor(new_size[0], dtype=torch.float32, device=keypoints.device) / original_size[0]
    ratio_w = torch.tensor(new_size[1], dtype=torch.float32, device=keypoints.device) / original_size[1]
    scale = torch.stack([ratio_w, ratio_h, torch.ones_like(ratio_h)]).to(keypoints.dtype)  # (3,)
    return keypoints * scale

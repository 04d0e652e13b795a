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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["heatmaps_to_keypoints", "keypoints_to_heatmap", "resize_keypoints"]


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


def heatmaps_to_keypoints(maps: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
    """Keypoints (argmax of each RoI's heatmap resized to the RoI's pixels) and their scores.

    Args:
        maps (Tensor[Q, K, M, M]): heatmap logits.
        rois (Tensor[Q, 4]): xyxy RoIs (detections) in pixels.
    Returns:
        ``(keypoints [Q, K, 3], scores [Q, K])``, float32 (float64 for float64 maps):
        ``(x, y, 1)`` in the RoIs' pixels and the resized logit at the chosen cell.
    """
    if maps.dim() != 4:
        raise ValueError(f"maps must be Tensor[Q, K, M, M], got {tuple(maps.shape)}")
    _check_rois(rois, maps.shape[0], "maps")
    Q, K = maps.shape[:2]
    dtype = torch.promote_types(maps.dtype, torch.float32)
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)  # (Q,) RoIs at least one pixel wide
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    widths_px, heights_px = widths.ceil(), heights.ceil()
    if Q == 0:
        empty = torch.zeros(0, K, dtype=dtype, device=maps.device)
        return torch.zeros(0, K, 3, dtype=dtype, device=maps.device), empty
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
    col, row = torch.stack(cols), torch.stack(rows)  # (Q, K)
    # Cell centres back to pixels: the resized map has w_q cells over the RoI's w pixels.
    x = (col.to(dtype) + 0.5) * (widths / widths_px)[:, None] + rois[:, 0:1]
    y = (row.to(dtype) + 0.5) * (heights / heights_px)[:, None] + rois[:, 1:2]
    keypoints = torch.stack([x, y, torch.ones_like(x)], dim=2).to(dtype)  # (Q, K, 3)
    return keypoints, torch.stack(scores).to(dtype)


def resize_keypoints(keypoints: Tensor, original_size: Sequence[int], new_size: Sequence[int]) -> Tensor:
    """Scale ``keypoints (Tensor[N, K, 3])`` from an ``(H, W)`` image to ``(H', W')``; ``v`` kept."""
    ratio_h = torch.tensor(new_size[0], dtype=torch.float32, device=keypoints.device) / original_size[0]
    ratio_w = torch.tensor(new_size[1], dtype=torch.float32, device=keypoints.device) / original_size[1]
    scale = torch.stack([ratio_w, ratio_h, torch.ones_like(ratio_h)]).to(keypoints.dtype)  # (3,)
    return keypoints * scale

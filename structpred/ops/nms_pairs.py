"""Suppression pairs for greedy NMS: which score-ordered boxes ``(i, j)``, ``i < j``, overlap.

Shape shorthand: N boxes, already in *work order* (decreasing score, stable; for
:func:`segment_pairs` grouped by label, then by score), P suppression pairs, T row tiles.

Block IoUs and three pair searches (the pairs sorted by source ``i``):

- :func:`box_table` / :func:`block_iou` / :func:`above_host`: the IoU of a block of rows
  against columns, from a ``[2k + 1, N]`` table of interval starts, ends and areas (``k = 3``
  with a label axis), and its ``> threshold`` test as a host bool array (the scans run there).
- :func:`band_pairs`: IoU tiles of an x-sorted band. Two boxes can have IoU > 0 only if their
  x-intervals overlap, so after sorting by ``(label, x1)`` a tile of 256 rows is tested only
  against the columns up to the last ``x1`` inside any of its rows' x-intervals
  (``searchsorted``). Bounded by the dense upper triangle (``N^2 / 2`` IoUs, reached when
  boxes span the image or ``threshold < 0``); about ``N * (256 + boxes per x-interval)`` for
  small, tiny or chained boxes.
- :func:`segment_pairs`: every same-label pair one by one (``repeat_interleave``, no loop):
  many small classes. :func:`padded_pairs`: labels of similar sizes in one ``[L, M, M]`` batch.

The IoU is computed in the order of torchvision's CPU kernel (areas, ``w * h``, ``inter /
(area_i + area_j - inter)``; every step is symmetric in ``i, j``) and compared with the
threshold as a float64, so the pairs, and hence the kept boxes, are exactly torchvision's.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

# Row block for the dense search: a [256, N] float block stays in cache.
ROWS = 256
# Cost of one gathered candidate pair against one IoU in a tile (gathers, index arithmetic).
_SWEEP_COST = 8


def above(iou: Tensor, threshold: float) -> Tensor:
    """``iou > threshold`` with ``threshold`` kept in float64, like the C++ kernel.

    Comparing a float32 tensor with a Python float casts the float to float32, which can
    round it up (0.3 -> 0.30000001) and flip the result for an IoU equal to the rounded
    value. The smallest float32 above ``threshold`` is the exact test.
    """
    t = _rounded(float(threshold), iou.dtype)
    return iou >= t if t > threshold else iou > t


def _rounded(value: float, dtype: torch.dtype) -> float:
    """``value`` rounded to ``dtype`` (round to nearest even), without a tensor round trip."""
    if dtype == torch.float32 and math.isfinite(value):
        try:
            return float(struct.unpack("f", struct.pack("f", value))[0])
        except OverflowError:  # beyond float32's range: the tensor cast gives inf
            pass
    return torch.tensor(value, dtype=dtype).item() if dtype != torch.float64 else value


def outer(fn: Callable[..., Tensor], a: Tensor, b: Tensor) -> Tensor:
    """``fn(a[..., :, None], b[..., None, :])`` -> ``[..., R, C]``, written into a contiguous tensor.

    Left to itself, a broadcasting op picks its output layout from the inputs' zero strides,
    and on large tiles that layout made ``minimum`` ~10x slower than with ``out=``.
    """
    out = torch.empty(
        (*a.shape, b.shape[-1]), dtype=torch.bool if fn is torch.eq else a.dtype, device=a.device
    )
    return fn(a.unsqueeze(-1), b.unsqueeze(-2), out=out)


def pair_iou(b1: Tensor, b2: Tensor) -> Tensor:
    """IoU of paired boxes ``[..., 4]`` x ``[..., 4]`` -> ``[...]``, in the kernel's operation order."""
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    w = (torch.minimum(b1[..., 2], b2[..., 2]) - torch.maximum(b1[..., 0], b2[..., 0])).clamp(min=0)
    h = (torch.minimum(b1[..., 3], b2[..., 3]) - torch.maximum(b1[..., 1], b2[..., 1])).clamp(min=0)
    inter = w * h
    return inter / (area1 + area2 - inter)


def box_table(boxes: Tensor, labels: Tensor | None = None) -> Tensor:
    """Box table ``[2k + 1, N]``: the intervals' starts, their ends, then the area (kernel order).

    ``k = 2`` axes (x1, y1 | x2, y2 | area), or 3 with ``labels``: a label axis ``[l, l + 1)``
    on which boxes of one label overlap by exactly 1 and others by nothing, so the
    intersection is multiplied by 1 (exact) or 0 and no separate label mask is needed.
    ``labels`` must be exact in the boxes' dtype (:func:`label_axis`).
    """
    corners = boxes.t()  # (N, 4) -> (4, N)
    area = (corners[2] - corners[0]) * (corners[3] - corners[1])  # (N,)
    if labels is None:
        return torch.cat([corners, area[None]])  # (5, N)
    lab = labels.to(boxes.dtype)[None]  # (1, N)
    return torch.cat([corners[:2], lab, corners[2:], lab + 1, area[None]])  # (7, N)


def label_axis(labels: Tensor, dtype: torch.dtype) -> Tensor:
    """``labels`` as small integers that ``dtype`` holds exactly (dense ids if they are large)."""
    limit = 1 << (23 if dtype == torch.float32 else 52)  # l and l + 1 exact
    if labels.numel() and int(labels.abs().max()) >= limit:
        return torch.unique(labels, return_inverse=True)[1]
    return labels


def block_iou(rows: Tensor, cols: Tensor) -> Tensor:
    """IoU of box tables ``rows [2k + 1, R]`` x ``cols [2k + 1, C]`` -> ``[R, C]`` (kernel order).

    All axes at once: ``[k, R, C]`` minima of the ends minus maxima of the starts.
    """
    k = rows.shape[0] // 2
    wh = outer(torch.minimum, rows[k : 2 * k], cols[k : 2 * k])  # (k, R, C) overlaps per axis
    wh = wh.sub_(outer(torch.maximum, rows[:k], cols[:k])).clamp_(min=0)
    inter = wh[0].mul_(wh[1])  # (R, C)
    if k == 3:
        inter.mul_(wh[2])  # x 1 (same label) or x 0
    return inter.div_(outer(torch.add, rows[2 * k], cols[2 * k]).sub_(inter))


def block_iou_host(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """:func:`block_iou` on host (NumPy) tables: for a few boxes, NumPy's fixed cost per
    operation is several times lower; the IEEE operations, and so the bits, are the same."""
    k = rows.shape[0] // 2
    with np.errstate(all="ignore"):  # inf and NaN corners: NaN IoUs, as in torch (no warnings)
        wh = np.minimum(rows[k : 2 * k, :, None], cols[k : 2 * k, None, :])  # (k, R, C)
        wh -= np.maximum(rows[:k, :, None], cols[:k, None, :])
        np.maximum(wh, 0, out=wh)
        inter = wh[0]
        inter *= wh[1]
        if k == 3:
            inter *= wh[2]
        union = rows[2 * k][:, None] + cols[2 * k][None, :]
        union -= inter
        inter /= union
    return inter


def host_threshold(threshold: float, dtype: np.dtype) -> tuple[float, bool]:
    """``(t, inclusive)``: for IoUs of NumPy ``dtype``, ``iou > threshold`` (in float64) is
    ``iou >= t`` if ``inclusive``, else ``iou > t`` (see :func:`above`)."""
    t = _rounded(float(threshold), torch.float32 if dtype == np.float32 else torch.float64)
    return t, t > threshold


def above_host(iou: Tensor | np.ndarray, threshold: float) -> np.ndarray:
    """:func:`above` as a host (NumPy) bool array: a comparison there is several times faster."""
    x = iou.cpu().numpy() if isinstance(iou, Tensor) else iou
    t, inclusive = host_threshold(threshold, x.dtype)
    return x >= t if inclusive else x > t


def band_pairs(
    boxes: Tensor, threshold: float, labels: Tensor | None = None, share: float = 1.0
) -> tuple[Tensor, Tensor] | None:
    """All suppression pairs of work-ordered ``boxes [N, 4]``, from IoU tiles of an x-sorted band.

    Boxes are sorted by ``(label, x1)``. Two boxes can have IoU > 0 only if their x-intervals
    overlap, so row tile ``[a, b)`` is tested only against columns ``[a, e)``, ``e`` the first
    box whose ``x1`` is past every row's ``x2`` (``searchsorted``). For ``threshold < 0`` (or
    NaN) every pair can suppress and the band is the whole upper triangle. With ``labels``,
    keys ``label * (N + 1) + rank(x1)`` are integers, so bands never cross labels through a
    rounded float offset; a tile spanning two labels masks the cross-label pairs. ``None``
    if the band holds more than ``share`` of the full tiles' IoUs (boxes wide against their
    spread: then skipping dropped boxes, not distant ones, is what saves work).
    """
    n = boxes.shape[0]
    # NaN -> +inf: a box with a NaN corner never pairs (its IoUs are NaN), and searchsorted
    # is only a binary search on NaN-free input.
    x1 = boxes[:, 0].nan_to_num(nan=math.inf, posinf=math.inf, neginf=-math.inf)
    xs = torch.sort(x1).values  # (N,)
    # rank(v) = #{x1 < v}: x1_q < x2_p  <=>  rank(x1_q) < rank(x2_p).
    lo = torch.searchsorted(xs, x1)  # (N,)
    hi = torch.searchsorted(xs, boxes[:, 2].nan_to_num(nan=math.inf, posinf=math.inf, neginf=-math.inf))
    lab = None
    if labels is not None:
        lab = torch.unique(labels, return_inverse=True)[1]  # (N,) dense label ids
        lo, hi = lo + lab * (n + 1), hi + lab * (n + 1)
    keys, by_x = torch.sort(lo, stable=True)  # (N,) x-order -> work position
    tiles = -(-n // ROWS)
    if threshold >= 0:
        end = torch.searchsorted(keys, hi[by_x])  # (N,) first x-position past p's interval
        count = (end - torch.arange(n, device=end.device) - 1).clamp_(min=0)  # (N,) x-neighbours after p
        end = torch.nn.functional.pad(end, (0, tiles * ROWS - n))  # (T * ROWS,)
        tile_end = end.view(tiles, ROWS).amax(1).tolist()  # (T,)
    else:
        tile_end = [n] * tiles
    starts = range(0, n, ROWS)
    band = sum(max(e, min(a + ROWS, n)) - a for a, e in zip(starts, tile_end, strict=True))
    if band > share * sum(n - a for a in starts):
        return None
    if threshold >= 0 and (total := int(count.sum())) * _SWEEP_COST <= band * ROWS:
        return _sweep(boxes, threshold, by_x, count, total)  # few x-neighbours: pairs one by one
    bx1, by1, bx2, by2 = boxes[by_x].t().contiguous().unbind(0)  # (N, 4) -> 4 x (N,) x-ordered
    area = (bx2 - bx1) * (by2 - by1)
    if lab is not None:
        lab = lab[by_x]
    rows, cols = [], []
    for t in range(tiles):
        a, b = t * ROWS, min(t * ROWS + ROWS, n)
        e = max(tile_end[t], b)
        r, c = slice(a, b), slice(a, e)
        # Row boxes (b - a, 1) against the band a..e (1, e - a); in place, no autograd here.
        w = outer(torch.minimum, bx2[r], bx2[c]).sub_(outer(torch.maximum, bx1[r], bx1[c]))
        h = outer(torch.minimum, by2[r], by2[c]).sub_(outer(torch.maximum, by1[r], by1[c]))
        inter = w.clamp_(min=0).mul_(h.clamp_(min=0))
        union = outer(torch.add, area[r], area[c]).sub_(inter)
        over = above(inter.div_(union), threshold)  # (b - a, e - a)
        if lab is not None and lab[a] != lab[e - 1]:
            over &= outer(torch.eq, lab[r], lab[c])
        over[:, : b - a].triu_(1)  # each pair once: only q > p (column 0 is row a)
        p, q = over.nonzero(as_tuple=True)
        rows.append(p + a)
        cols.append(q + a)
    p, q = (rows[0], cols[0]) if tiles == 1 else (torch.cat(rows), torch.cat(cols))
    i, j = by_x[p], by_x[q]  # (P,) work positions
    src, dst = torch.minimum(i, j), torch.maximum(i, j)
    by_src = torch.sort(src).indices
    return src[by_src], dst[by_src]


def _sweep(boxes: Tensor, threshold: float, by_x: Tensor, count: Tensor, total: int) -> tuple[Tensor, Tensor]:
    """The band's candidates one by one: x-position ``p`` against its ``count[p]`` next boxes."""
    p = torch.repeat_interleave(torch.arange(count.numel(), device=count.device), count)  # (C,)
    first = torch.cumsum(count, 0) - count  # (N,) where p's candidates start
    q = p + 1 + torch.arange(total, device=count.device) - first[p]  # (C,)
    i, j = by_x[p], by_x[q]  # (C,) work positions
    over = above(pair_iou(boxes[i], boxes[j]), threshold)
    i, j = i[over], j[over]
    src, dst = torch.minimum(i, j), torch.maximum(i, j)  # (P,)
    by_src = torch.sort(src).indices
    return src[by_src], dst[by_src]


def padded_pairs(boxes: Tensor, threshold: float, counts: Tensor) -> tuple[Tensor, Tensor]:
    """Suppression pairs of boxes grouped by label (runs of ``counts`` (L,)), all labels at once.

    Every label's boxes go into one row of a ``[L, M, 4]`` batch (``M`` the largest label),
    so one batched ``[L, M, M]`` IoU replaces a loop over labels; padding never pairs.
    """
    n = boxes.shape[0]
    num, m = counts.numel(), int(counts.max())
    device = boxes.device
    label = torch.repeat_interleave(torch.arange(num, device=device), counts)  # (N,)
    start = torch.cumsum(counts, 0) - counts  # (L,) first work position of each label
    rank = torch.arange(n, device=device) - start[label]  # (N,) position inside its label
    slot = label * m + rank  # (N,) flat index into the (L * M) batch
    corners = boxes.new_zeros(4, num * m)
    corners[:, slot] = boxes.t()  # (4, L * M)
    x1, y1, x2, y2 = corners.view(4, num, m).unbind(0)  # 4 x (L, M)
    w = outer(torch.minimum, x2, x2).sub_(outer(torch.maximum, x1, x1))
    h = outer(torch.minimum, y2, y2).sub_(outer(torch.maximum, y1, y1))
    inter = w.clamp_(min=0).mul_(h.clamp_(min=0))  # (L, M, M)
    area = (x2 - x1) * (y2 - y1)  # (L, M)
    over = above(inter.div_(outer(torch.add, area, area).sub_(inter)), threshold)
    valid = torch.zeros(num * m, dtype=torch.bool, device=device)
    valid[slot] = True
    over &= valid.view(num, 1, m)  # padding columns never pair (they would for threshold < 0)
    c, i, j = over.triu_(1).nonzero(as_tuple=True)  # (P,) each, sorted by (label, i)
    return start[c] + i, start[c] + j


def segment_pairs(boxes: Tensor, threshold: float, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Suppression pairs when ``boxes [N, 4]`` are grouped by label: only same-label pairs.

    Every box ``i`` is paired with the boxes after it in its label segment; the
    ``sum_c n_c^2 / 2`` candidates are built with ``repeat_interleave``, no Python loop.
    """
    n = boxes.shape[0]
    device = boxes.device
    _, seg_len = torch.unique_consecutive(labels, return_counts=True)
    seg_end = torch.repeat_interleave(torch.cumsum(seg_len, 0), seg_len)  # (N,) end of i's segment
    pos = torch.arange(n, device=device)
    after = seg_end - pos - 1  # (N,) boxes after i in its segment
    src = torch.repeat_interleave(pos, after)  # (P,)
    first = torch.cumsum(after, 0) - after  # (N,) where i's pairs start in the pair list
    dst = src + 1 + torch.arange(src.numel(), device=device) - first[src]  # (P,)
    over = above(pair_iou(boxes[src], boxes[dst]), threshold)
    return src[over], dst[over]

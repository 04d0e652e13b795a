"""Selective Search's region features and hierarchical grouping (Uijlings et al., IJCV 2013, §3).

Regions start as the segments of a label map; their features are the size, the bounding box,
an L1-normalised colour histogram (25 bins per channel) and an L1-normalised texture histogram
(8 half-wave oriented Gaussian derivatives, sigma 1, x 10 bins per channel). Grouping merges
the most similar pair of 4-connected neighbours, with similarity the sum of the chosen terms

    s_color   = sum_k min(c_i^k, c_j^k)            (histogram intersection)
    s_texture = sum_k min(t_i^k, t_j^k)
    s_size    = 1 - (size_i + size_j) / size_im
    s_fill    = 1 - (BB_ij - size_i - size_j) / size_im   (BB_ij: area of the box around both)

until one region is left. A merged region's histograms are the size-weighted mean of its
parts', so features are never recomputed from pixels.

Shape shorthand: H, W image; C channels; R initial regions; M = 2R - 1 regions of a hierarchy
(the R initial ones, then one per merge); E adjacent pairs; D histogram length.

Convention: boxes are xyxy integer pixels, the box of a region (min col, min row, max col + 1,
max row + 1), so a region of one pixel at (row 0, col 0) has the box (0, 0, 1, 1).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
from skimage.filters import gaussian

SIMILARITIES = ("color", "texture", "size", "fill")
COLOR_BINS = 25
TEXTURE_BINS = 10
TEXTURE_ORIENTATIONS = 8
TEXTURE_SIGMA = 1.0


# ------------------------------------------------------------------------------ similarities


def histogram_intersection(hist_a: np.ndarray, hist_b: np.ndarray) -> np.ndarray:
    """``sum_k min(a_k, b_k)`` over the last axis: the colour and texture similarity.

    ``hist_a`` ``[..., D]`` and ``hist_b`` ``[..., D]`` broadcast; for L1-normalised
    histograms the result is in [0, 1] (1 = identical).
    """
    return np.minimum(hist_a, hist_b).sum(axis=-1)


def size_similarity(size_a: np.ndarray, size_b: np.ndarray, image_size: float) -> np.ndarray:
    """``1 - (size_a + size_b) / image_size``: small regions merge first."""
    return 1.0 - (np.asarray(size_a) + np.asarray(size_b)) / image_size


def fill_similarity(
    box_a: np.ndarray, box_b: np.ndarray, size_a: np.ndarray, size_b: np.ndarray, image_size: float
) -> np.ndarray:
    """``1 - (BB_ab - size_a - size_b) / image_size`` with ``BB_ab`` the area of the box around both.

    Boxes ``[..., 4]`` xyxy; high when the two regions fill the gaps of each other's box.
    """
    box_a, box_b = np.asarray(box_a), np.asarray(box_b)
    w = np.maximum(box_a[..., 2], box_b[..., 2]) - np.minimum(box_a[..., 0], box_b[..., 0])
    h = np.maximum(box_a[..., 3], box_b[..., 3]) - np.minimum(box_a[..., 1], box_b[..., 1])
    return 1.0 - (w * h - np.asarray(size_a) - np.asarray(size_b)) / image_size


# ---------------------------------------------------------------------------------- features


def relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer label map ``[H, W]`` -> (labels ``0..R-1`` with no gaps, R)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.min() >= 0 and np.bincount(labels.ravel()).all():  # already 0..R-1 (skimage's output)
        return labels, int(labels.max()) + 1
    uniq, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape), int(uniq.size)


def region_boxes(labels: np.ndarray, num_regions: int) -> np.ndarray:
    """Label map ``[H, W]`` (values ``0..R-1``) -> int64 ``[R, 4]`` xyxy boxes of the regions."""
    H, W = labels.shape
    flat = labels.ravel()
    rows = np.repeat(np.arange(H), W)  # (H*W,) row of each pixel, raster order
    cols = np.tile(np.arange(W), H)
    boxes = np.empty((num_regions, 4), dtype=np.int64)
    boxes[:, :2] = [W, H]
    boxes[:, 2:] = -1
    np.minimum.at(boxes[:, 0], flat, cols)
    np.minimum.at(boxes[:, 1], flat, rows)
    np.maximum.at(boxes[:, 2], flat, cols)
    np.maximum.at(boxes[:, 3], flat, rows)
    boxes[:, 2:] += 1  # inclusive max -> exclusive edge
    return boxes


def adjacency(labels: np.ndarray, num_regions: int) -> np.ndarray:
    """4-connected neighbour pairs of a label map ``[H, W]`` -> int64 ``[E, 2]``, ``a < b``, unique."""
    pairs = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        differ = a != b
        pairs.append((a[differ], b[differ]))
    a = np.concatenate([p[0] for p in pairs])
    b = np.concatenate([p[1] for p in pairs])
    key = np.unique(np.minimum(a, b) * num_regions + np.maximum(a, b))  # one id per unordered pair
    return np.stack([key // num_regions, key % num_regions], axis=1)


def _histograms(labels: np.ndarray, codes: np.ndarray, num_regions: int, length: int) -> np.ndarray:
    """Per-region L1-normalised histograms from per-pixel bin codes, with one ``bincount``.

    ``codes`` int ``[H, W, K]``: the histogram bin (``0..length-1``) each of a pixel's K
    features falls in -> float64 ``[R, length]``.
    """
    index = labels[..., None] * length + codes  # (H, W, K) into the flat [R, length]
    counts = np.bincount(index.ravel(), minlength=num_regions * length)
    hist = counts.reshape(num_regions, length).astype(np.float64)
    hist /= hist.sum(axis=1, keepdims=True)
    return hist


def _codes(values: np.ndarray, num_bins: int) -> np.ndarray:
    """Values ``[H, W, K]`` in [0, 1] -> int64 histogram bins: feature k's ``num_bins`` bins
    start at ``k * num_bins`` (1.0 goes to the last bin)."""
    bins = np.clip((values * num_bins).astype(np.int64), 0, num_bins - 1)
    return bins + np.arange(values.shape[-1]) * num_bins


def color_histograms(labels: np.ndarray, image: np.ndarray, num_regions: int) -> np.ndarray:
    """``image`` float ``[H, W, C]`` in [0, 1] -> float64 ``[R, 25 C]`` L1-normalised histograms."""
    C = image.shape[-1]
    return _histograms(labels, _codes(image, COLOR_BINS), num_regions, C * COLOR_BINS)


def texture_codes(image: np.ndarray) -> np.ndarray:
    """Per-pixel texture bins of ``image`` float ``[H, W, C]`` -> int64 ``[H, W, 8 C]``.

    The derivative of the sigma-1 Gaussian-smoothed channel along 0, 45, 90 and 135 degrees,
    split into its positive and negative halves (8 non-negative responses, SIFT-like as in
    the paper), each scaled by its maximum over the image and cut into 10 bins; entry
    ``(c, o)`` holds its bin in the ``80 C``-long texture histogram. Depends on the image
    only, so one call serves every Felzenszwalb k of a colour space.
    """
    smooth = gaussian(image.astype(np.float32), sigma=TEXTURE_SIGMA, channel_axis=-1, preserve_range=True)
    gy, gx = np.gradient(smooth, axis=(0, 1))  # each (H, W, C)
    H, W, C = image.shape
    resp = np.empty((H, W, C, TEXTURE_ORIENTATIONS), dtype=np.float32)
    for o, angle in enumerate(np.arange(TEXTURE_ORIENTATIONS // 2) * np.pi / (TEXTURE_ORIENTATIONS // 2)):
        d = np.float32(np.cos(angle)) * gx + np.float32(np.sin(angle)) * gy
        np.maximum(d, 0.0, out=resp[..., 2 * o])
        np.maximum(-d, 0.0, out=resp[..., 2 * o + 1])
    peak = resp.max(axis=(0, 1), keepdims=True)  # (1, 1, C, 8)
    resp *= 1.0 / np.where(peak > 0, peak, 1.0)
    return _codes(resp.reshape(H, W, C * TEXTURE_ORIENTATIONS), TEXTURE_BINS)


def texture_histograms(labels: np.ndarray, codes: np.ndarray, num_regions: int) -> np.ndarray:
    """``codes`` from :func:`texture_codes` -> float64 ``[R, 80 C]`` L1-normalised histograms."""
    return _histograms(labels, codes, num_regions, codes.shape[-1] * TEXTURE_BINS)


# ---------------------------------------------------------------------------------- grouping


@dataclass
class Hierarchy:
    """The result of grouping: every region of the hierarchy, in creation order.

    Attributes:
        boxes: int64 ``[M, 4]`` xyxy; rows ``0..R-1`` are the initial regions, row ``R + m``
            the region made by merge ``m``; the last row is the whole image.
        merges: int64 ``[R - 1, 2]``: the two regions (row ids) merged into region ``R + m``.
        num_initial: R.
    """

    boxes: np.ndarray
    merges: np.ndarray
    num_initial: int


def hierarchical_grouping(
    labels: np.ndarray,
    color_hist: np.ndarray | None,
    texture_hist: np.ndarray | None,
    similarities: Sequence[str] = SIMILARITIES,
) -> Hierarchy:
    """Greedy bottom-up grouping of a segmentation into one region (paper's Algorithm 1).

    Args:
        labels: int ``[H, W]`` label map with values ``0..R-1`` (see :func:`relabel`).
        color_hist, texture_hist: float ``[R, D]`` L1-normalised histograms of the regions;
            may be None when ``similarities`` does not use them.
        similarities: a non-empty subset of ``("color", "texture", "size", "fill")``, summed.
    Returns:
        the :class:`Hierarchy`: R - 1 merges, ties broken by the lower region ids.
    """
    use = set(similarities)
    if not use or not use <= set(SIMILARITIES):
        raise ValueError(f"similarities must be a non-empty subset of {SIMILARITIES}, got {similarities}")
    if labels.ndim != 2 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty [H, W] array, got shape {labels.shape}")
    if labels.dtype.kind not in "iu" or labels.min() < 0:
        raise ValueError(f"labels must be non-negative integers (see relabel), got {labels.dtype}")
    R = int(labels.max()) + 1
    M = 2 * R - 1
    image_size = float(labels.size)

    for name, hist in (("color", color_hist), ("texture", texture_hist)):
        if name in use and (hist is None or hist.ndim != 2 or hist.shape[0] != R):
            raise ValueError(
                f"{name} similarity needs [R={R}, D] histograms, got {getattr(hist, 'shape', None)}"
            )
    # One row per region: [histograms (D), x1, y1, -x2, -y2]. Colour and texture are both
    # intersections, summed, and the box around two regions is the element-wise min of
    # (x1, y1, -x2, -y2): so one np.minimum of two rows gives every term of the similarity.
    parts = [
        h for name, h in (("color", color_hist), ("texture", texture_hist)) if name in use and h is not None
    ]
    D = sum(h.shape[1] for h in parts)
    rows = np.empty((M, D + 4), dtype=np.float64)  # (M, D + 4)
    if parts:
        rows[:R, :D] = np.concatenate(parts, axis=1)
    initial_boxes = region_boxes(labels, R)
    rows[:R, D:] = initial_boxes * np.array([1, 1, -1, -1])
    size = np.zeros(M, dtype=np.float64)  # for vectorised look-ups; ``sizes`` for scalar work
    size[:R] = np.bincount(labels.ravel(), minlength=R)
    if not size[:R].all():
        raise ValueError(f"labels must use every value 0..{R - 1} (see relabel); some are missing")
    sizes = size.tolist()
    use_size, use_fill = "size" in use, "fill" in use
    inv_im = 1.0 / image_size

    def similarity(a: np.ndarray | int, b: np.ndarray) -> np.ndarray:
        """Similarities of regions ``a`` and ``b`` (ids; ``a`` may be one id) -> ``[len(b)]``."""
        low = rows.take(b, axis=0)  # (E, D + 4)
        np.minimum(low, rows[a], out=low)
        s = low[:, :D].sum(axis=1) if parts else np.zeros(len(b))
        if use_fill:
            # (x1 - x2, y1 - y2) of the box around both = minus its (width, height).
            box_area = (low[:, D : D + 2] + low[:, D + 2 :]).prod(axis=1)  # (E, 2) -> (E,)
            if use_size:  # s_size + s_fill = 2 - BB / size_im
                s += 2.0 - box_area * inv_im
            else:
                s += 1.0 - (box_area - size[a] - size.take(b)) * inv_im
        elif use_size:
            s += 1.0 - (size[a] + size.take(b)) * inv_im
        return s

    edges = adjacency(labels, R)  # (E, 2)
    neighbours: list[set[int]] = [set() for _ in range(M)]
    for a, b in edges.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    # Max-heap of (-similarity, a, b); an entry is stale once a or b has been merged away.
    heap = list(zip((-similarity(edges[:, 0], edges[:, 1])).tolist(), *edges.T.tolist(), strict=True))
    heapq.heapify(heap)
    alive = bytearray(M)
    alive[:R] = b"\x01" * R
    merges: list[tuple[int, int]] = []
    pop, push = heapq.heappop, heapq.heappush
    live = len(heap)  # entries whose two regions are both alive = edges of the current graph
    t = R
    while t < M and heap:
        if len(heap) > 4 * live + 1024:
            # Mostly stale: filtering in one pass is far cheaper than popping them one by one.
            heap = [e for e in heap if alive[e[1]] and alive[e[2]]]
            heapq.heapify(heap)
        _, i, j = pop(heap)
        if not (alive[i] and alive[j]):
            continue
        si, sj = sizes[i], sizes[j]
        sizes[t] = size[t] = si + sj
        if parts:  # size-weighted mean of the histograms
            np.add(rows[i, :D] * (si / (si + sj)), rows[j, :D] * (sj / (si + sj)), out=rows[t, :D])
        rows[t, D:] = np.minimum(rows[i, D:], rows[j, D:])
        alive[i] = alive[j] = 0
        alive[t] = 1
        pair = (i, j)
        around = neighbours[i] | neighbours[j]
        around.difference_update(pair)
        for n in around:
            ring = neighbours[n]
            ring.difference_update(pair)
            ring.add(t)
        live += len(around) - len(neighbours[i]) - len(neighbours[j]) + 1  # (i, j) was counted twice
        neighbours[t] = around
        neighbours[i] = neighbours[j] = set()
        if around:
            ids = list(around)
            negated = (-similarity(t, np.array(ids, dtype=np.int64))).tolist()
            for entry in zip(negated, ids, repeat(t, len(ids)), strict=True):  # (-s, n, t) tuples built in C
                push(heap, entry)
        merges.append(pair)
        t += 1
    # A label map on a pixel grid is connected under 4-adjacency, so everything merges.
    assert t == M, f"grouping stopped after {t - R} of {R - 1} merges"
    boxes = (rows[:, D:] * np.array([1, 1, -1, -1])).astype(np.int64)  # (M, 4) xyxy
    return Hierarchy(boxes=boxes, merges=np.array(merges, dtype=np.int64).reshape(-1, 2), num_initial=R)

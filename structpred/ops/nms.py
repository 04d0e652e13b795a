"""Greedy non-maximum suppression with torchvision's exact results and a bounded worst case.

Greedy NMS keeps the best-scoring box, drops every later box whose IoU with it exceeds
the threshold, and repeats. It is inherently sequential (box ``j``'s fate depends on whether
the boxes that could drop it were themselves kept), so it is split into a parallel part
that does all the arithmetic and a sequential part that does only bookkeeping:

1. **Suppression pairs** (:mod:`structpred.ops.nms_pairs`). In score order, the pairs
   ``(i, j)``, ``i < j``, with ``IoU > threshold`` (and, for :func:`batched_nms`, the same
   label), every IoU in vectorised tensor code. Up to 256 boxes: one ``[N, N]`` matrix (least
   fixed cost). Above: IoU tiles of an *x-sorted band* -- two boxes can only overlap if their
   x-intervals do, so each 256-row tile is tested only against the boxes whose ``x1`` falls
   inside one of its rows' x-intervals (small, tiny or chained boxes: ~``N * (256 + w)``
   IoUs instead of ``N^2 / 2``). :func:`batched_nms` picks by label sizes: same-label
   pairs one by one (many tiny labels), one padded ``[L, M, M]`` batch (similar sizes), or a
   loop over labels (large uneven ones).
2. **Greedy scan.** The pairs, sorted by ``i``, are walked once in score order: box ``i`` is
   kept iff no kept box has dropped it yet; a kept box marks its partners dropped. Because
   ``i < j`` in every pair, ``i``'s fate is final when its turn comes. One pass, no rounds:
   ``O(boxes with a partner + partners of kept boxes)`` set operations, whatever the shape of
   the suppression graph. (The former fixed-point formulation needed "longest suppression
   chain + 1" vectorised rounds: 30x torchvision on chains.)

When boxes are wide against their spread (clustered detections), the band would hold more
than half of the full tiles, and skipping *dropped* boxes saves more than skipping distant
ones: :func:`_tiled_greedy` walks 256-row tiles in score order, resolves each tile's alive
rows among themselves, then tests only its kept rows against the boxes still alive after it
-- about ``kept x alive`` IoUs, torchvision's own bound. So the worst case is ``N^2 / 2`` IoUs
(every box kept and overlapping every x-interval, as in torchvision's kernel), plus a host
scan linear in the pairs, and never a function of chain length. The scan walks host-side
lists (``tolist``; on a GPU one copy of the pairs, as torchvision's CUDA kernel copies its
bitmask); on an accelerator with many pairs, tensor-only pruning rounds
(:func:`_prune_on_device`) shrink them on the device first. Details and figures: docs/nms.md.

Numerics: float16 and bfloat16 boxes are computed in float32 (float16 areas of boxes over
~256 px overflow to inf; torchvision upcasts too, its autocast and CUDA kernels), quantized
boxes on their integer representation (scale and zero point cancel in the IoU, as in
torchvision's quantized kernel). The IoU arithmetic and the strict ``>`` follow torchvision's
CPU kernel, including how a float32 IoU is compared with a float64 threshold, so the kept
indices and their order are equal. :func:`batched_nms` is exact per-class NMS (torchvision's
own path above 1,000 boxes); below that torchvision shifts each class's boxes by
``label * (max coordinate + 1)``, which can round an IoU across the threshold when labels
are large (thousands): there we keep the exact answer.

Differences from torchvision, by design: bad arguments raise ``ValueError`` naming the
argument (torchvision raises ``RuntimeError`` from its C++ checks); quantized boxes need not
share the scores' dtype; float ``idxs`` are refused unless empty.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import Tensor

from ._checks import check_boxes, fx_leaf
from .nms_pairs import ROWS, above, band_pairs, outer, padded_pairs, segment_pairs, small_pairs

# Above this many same-label candidate pairs, the blocked search uses less memory.
_MAX_SEGMENT_PAIRS = 1 << 22
# batched_nms: same-label pairs one by one below this many per box, else a loop over labels
# once they average this many boxes (a loop costs a few dozen operations per label).
_SEGMENT_PAIRS_PER_BOX = 16
_PER_LABEL_BOXES = 48
# Largest [L, M, M] IoU batch for labels of similar sizes (elements).
_MAX_PADDED = 1 << 24
# Up to this many boxes, one [N, N] IoU matrix (fewest operations).
_SMALL = 256
# The x-band is used while it holds at most this share of the full row tiles' IoUs.
_BAND_SHARE = 0.5
# On an accelerator, prune on the device while there are more pairs than this per box.
_DEVICE_PAIRS_PER_BOX = 4


def _greedy_scan(src: Tensor, dst: Tensor, dropped: set[int]) -> list[int]:
    """Walk ``(src, dst)`` (sorted by ``src``, ``src < dst``) once; add the dropped to ``dropped``.

    ``src`` is visited in increasing order, so when its turn comes every pair that could drop
    it (all have a smaller source) has been seen: one pass gives the greedy answer.
    Returns the targets dropped by this call (with repeats).
    """
    if src.numel() == 0:
        return []
    nodes, counts = torch.unique_consecutive(src, return_counts=True)
    targets = dst.tolist()
    lost: list[int] = []
    if len(targets) <= 3 * nodes.numel():  # few partners per box (chains): pair by pair is cheaper
        for i, j in zip(src.tolist(), targets, strict=True):
            if i not in dropped:
                dropped.add(j)
                lost.append(j)
        return lost
    ends = torch.cumsum(counts, 0).tolist()
    start = 0
    for node, end in zip(nodes.tolist(), ends, strict=True):
        if node not in dropped:
            lost += targets[start:end]  # C-level: the partners of a kept box are dropped
            dropped.update(targets[start:end])
        start = end
    return lost


def _scan_pairs(pairs: list[list[int]]) -> list[int]:
    """:func:`_greedy_scan` for few pairs ``[[src, dst], ...]`` (sorted by ``src``): pair by pair."""
    dropped: set[int] = set()
    for i, j in pairs:
        if i not in dropped:
            dropped.add(j)
    return list(dropped)


def _drop(order: Tensor, lost: list[int]) -> Tensor:
    """``order`` without the work positions in ``lost``."""
    if not lost:
        return order
    gone = set(lost)
    kept = [p for p in range(order.shape[0]) if p not in gone]
    return order[torch.tensor(kept, dtype=torch.int64, device=order.device)]


def _prune_on_device(n: int, src: Tensor, dst: Tensor, max_pairs: int) -> tuple[Tensor, Tensor, Tensor]:
    """Vectorised greedy rounds until at most ``max_pairs`` undecided pairs remain.

    A box with no remaining incoming pair is kept for sure, so its partners are dropped;
    pairs touching a dropped box are then irrelevant. The first remaining source is always
    such a root, so every round removes a pair: at most P rounds (``max_pairs=0`` solves the
    whole problem with tensor ops only, no host copy). Returns ``(dropped bool[N], src, dst)``.
    """
    dropped = torch.zeros(n, dtype=torch.bool, device=src.device)
    while src.numel() > max_pairs:
        has_in = torch.zeros(n, dtype=torch.bool, device=src.device)
        has_in[dst] = True
        dropped[dst[~has_in[src]]] = True
        live = ~(dropped[src] | dropped[dst])
        src, dst = src[live], dst[live]
    return dropped, src, dst


def _resolve(n: int, src: Tensor, dst: Tensor, *, device_rounds: bool) -> Tensor:
    """Keep mask ``bool[N]`` of greedy NMS given its suppression pairs (sorted by ``src``)."""
    keep = torch.ones(n, dtype=torch.bool, device=src.device)
    if device_rounds:
        dropped, src, dst = _prune_on_device(n, src, dst, _DEVICE_PAIRS_PER_BOX * n)
        keep &= ~dropped
    lost = _greedy_scan(src, dst, set())
    if lost:
        keep[torch.tensor(lost, dtype=torch.int64, device=src.device)] = False
    return keep


def _as_float(t: Tensor) -> Tensor:
    """Coordinates or scores as a float tensor NMS can rank and compare exactly."""
    if t.is_quantized:  # integer representation: scale and zero point cancel in the IoU
        return t.int_repr().float()
    if t.dtype in (torch.float16, torch.bfloat16):  # exact upcast; areas no longer overflow
        return t.float()
    return t


def _nms(boxes: Tensor, scores: Tensor, threshold: float, labels: Tensor | None) -> Tensor:
    check_boxes(boxes, "boxes", rank2=True)
    if not isinstance(scores, Tensor) or scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a Tensor[{boxes.shape[0]}] (one per box), got {shape}")
    if not (boxes.is_floating_point() or boxes.is_quantized):
        raise ValueError(f"boxes must be a floating point tensor, got {boxes.dtype}")
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    # indices carry no gradient: the IoU tiles write into preallocated outputs (out=), which autograd refuses
    boxes, scores = _as_float(boxes.detach()), _as_float(scores.detach())
    # Stable: among equal scores the earlier box wins, as in torchvision's kernel.
    order = torch.sort(scores, descending=True, stable=True).indices
    if n <= _SMALL:  # one IoU matrix, scanned pair by pair: the least fixed cost
        pairs = small_pairs(boxes[order], threshold, None if labels is None else labels[order])
        return _drop(order, _scan_pairs(pairs))
    label_strategy = "" if labels is None else _label_strategy(labels)
    if labels is not None and label_strategy:
        # Work order (label, score): each label one contiguous run.
        order = order[torch.sort(labels[order], stable=True).indices]
        if label_strategy in ("segment", "padded"):  # many small labels: all labels at once
            if label_strategy == "padded":
                runs = torch.unique_consecutive(labels[order], return_counts=True)[1]
                src, dst = padded_pairs(boxes[order], threshold, runs)
            else:
                src, dst = segment_pairs(boxes[order], threshold, labels[order])
            kept = order[_resolve(n, src, dst, device_rounds=boxes.device.type != "cpu")]
        else:  # large labels: NMS per label, each with the strategy that suits its size
            runs = torch.unique_consecutive(labels[order], return_counts=True)[1].tolist()
            parts = [run[_nms(boxes[run], scores[run], threshold, None)] for run in order.split(runs)]
            kept = torch.cat(parts)
        kept = torch.sort(kept).values  # back to decreasing score, ties by index
        return kept[torch.sort(scores[kept], descending=True, stable=True).indices]
    # Work order = score order; pairs never cross labels, so one scan is per-label greedy.
    work, work_labels = boxes[order], None if labels is None else labels[order]
    band = band_pairs(work, threshold, work_labels, share=_BAND_SHARE)
    if band is None:  # wide boxes: skip the rows and columns already dropped instead
        return _drop(order, _tiled_greedy(work, threshold, work_labels))
    return order[_resolve(n, *band, device_rounds=boxes.device.type != "cpu")]


def _tiled_greedy(boxes: Tensor, threshold: float, labels: Tensor | None) -> list[int]:
    """Dropped work positions of score-ordered ``boxes [N, 4]``, row tile by row tile.

    For tile ``[a, a + 256)``: its alive rows are first resolved among themselves (a
    ``[k, k]`` block, scanned), then only the *kept* rows are tested against the boxes after
    the tile that are still alive; whatever they overlap is dropped. Dropped boxes cost
    nothing later: like torchvision's kernel, about ``kept x alive`` IoUs, not ``N^2 / 2``.
    """
    n = boxes.shape[0]
    corners = boxes.t().contiguous()  # (N, 4) -> (4, N)
    area = (corners[2] - corners[0]) * (corners[3] - corners[1])  # (N,)
    alive = torch.ones(n, dtype=torch.bool, device=boxes.device)
    dropped: set[int] = set()

    def over(rows: Tensor, cols: Tensor) -> Tensor:
        """``IoU > threshold`` (same label) of boxes ``rows`` (R,) x ``cols`` (C,) -> (R, C)."""
        rx1, ry1, rx2, ry2 = corners[:, rows].unbind(0)  # 4 x (R,)
        cx1, cy1, cx2, cy2 = corners[:, cols].unbind(0)  # 4 x (C,)
        w = outer(torch.minimum, rx2, cx2).sub_(outer(torch.maximum, rx1, cx1)).clamp_(min=0)  # (R, C)
        h = outer(torch.minimum, ry2, cy2).sub_(outer(torch.maximum, ry1, cy1)).clamp_(min=0)
        inter = w.mul_(h)
        out = above(inter.div_(outer(torch.add, area[rows], area[cols]).sub_(inter)), threshold)
        if labels is not None:
            out &= outer(torch.eq, labels[rows], labels[cols])
        return out

    for a in range(0, n, ROWS):
        rows = alive[a : a + ROWS].nonzero()[:, 0] + a  # (k,) alive rows of the tile
        if rows.numel() == 0:
            continue
        i, j = over(rows, rows).triu_(1).nonzero(as_tuple=True)  # pairs inside the tile, by source
        if i.numel():
            _greedy_scan(rows[i], rows[j], dropped)
            rows = rows[[p not in dropped for p in rows.tolist()]]  # (k',) the tile's kept rows
        later = alive[a + ROWS :].nonzero()[:, 0] + a + ROWS  # (C,) alive boxes after the tile
        if later.numel() == 0:
            break
        lost = later[over(rows, later).any(0)]  # (D,) overlapped by a kept row: dropped
        if lost.numel():
            alive[lost] = False
            dropped.update(lost.tolist())
    return list(dropped)


def _label_strategy(labels: Tensor) -> str:
    """``"segment"``, ``"padded"``, ``"per_label"`` or ``""`` (labels in the band's keys)."""
    counts = torch.unique(labels, return_counts=True)[1]
    if counts.numel() == 1:
        return ""
    candidates = int((counts * (counts - 1) // 2).sum())
    n = labels.numel()
    if candidates < min(n * _SEGMENT_PAIRS_PER_BOX, _MAX_SEGMENT_PAIRS):
        return "segment"  # a few gathered pairs per box: cheaper than any loop
    padded = counts.numel() * int(counts.max()) ** 2  # IoUs of the [L, M, M] batch
    if padded <= min(8 * candidates, _MAX_PADDED):
        return "padded"  # labels of similar sizes: one batched IoU for all of them
    # Per label: a few dozen operations each, worth it once labels hold enough boxes.
    return "per_label" if n >= _PER_LABEL_BOXES * counts.numel() else ""


@torch.library.custom_op("structpred::nms", mutates_args=())
def _nms_op(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """:func:`nms` as one opaque operator, for ``torch.export``: its data-dependent loop stays
    out of the graph, and the ONNX exporter maps it to ``NonMaxSuppression``
    (:mod:`structpred.engine.export`)."""
    return _nms(boxes, scores, iou_threshold, None)


@_nms_op.register_fake
def _nms_fake(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    kept = torch.library.get_ctx().new_dynamic_size()  # how many survive depends on the data
    return boxes.new_empty(kept, dtype=torch.int64)


def _offset_by_class(boxes: Tensor, idxs: Tensor) -> Tensor:
    """Boxes of different ``idxs`` moved apart so that they never overlap (torchvision's trick;
    exact unless labels reach the thousands, see the module docstring)."""
    top = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()  # 0 for no boxes
    return boxes + (idxs.to(boxes) * (top + 1))[:, None]


@fx_leaf
def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression (torchvision's results; algorithm in the module docstring).

    Args:
        boxes (Tensor[N, 4]): xyxy boxes: float (float16/bfloat16 are computed in float32)
            or quantized (computed on the integer representation, like torchvision).
        scores (Tensor[N]): one score per box.
        iou_threshold: a box is dropped if its IoU with a kept, higher-scoring box is ``>`` this.
    Returns:
        int64[K]: indices of the kept boxes, by decreasing score (ties: smaller index first).
    Raises:
        ValueError: bad shapes or dtypes (torchvision raises ``RuntimeError`` there).

    ``torch.fx.symbolic_trace`` records the call as one node; ``torch.export`` sees one
    custom operator, ``structpred::nms``.
    """
    if torch.compiler.is_exporting():
        return _nms_op(boxes, scores, iou_threshold)
    return _nms(boxes, scores, iou_threshold, None)


@fx_leaf
def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS independently per category: boxes of different ``idxs`` never suppress each other.

    Args:
        boxes (Tensor[N, 4]), scores (Tensor[N]): as in :func:`nms`.
        idxs (Tensor[N]): integer category of each box (any dtype when ``N == 0``).
    Returns:
        int64[K]: indices of the kept boxes, by decreasing score.
    Raises:
        ValueError: bad shapes or dtypes (torchvision raises ``RuntimeError`` there).
    """
    if not torch.compiler.is_exporting() and isinstance(boxes, Tensor) and boxes.numel() == 0:
        # torchvision answers any empty input with an empty result, whatever scores and idxs are
        # (checked after is_exporting: under torch.export the box count is symbolic)
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if not isinstance(idxs, Tensor) or idxs.dim() != 1 or idxs.shape[0] != boxes.shape[0]:
        shape = tuple(idxs.shape) if isinstance(idxs, Tensor) else type(idxs).__name__
        raise ValueError(f"idxs must be a Tensor[{boxes.shape[0]}] (one per box), got {shape}")
    if idxs.is_floating_point() and idxs.numel() > 0:
        raise ValueError(f"idxs must hold integer categories, got {idxs.dtype}")
    if torch.compiler.is_exporting():
        return _nms_op(_offset_by_class(boxes, idxs), scores, iou_threshold)
    return _nms(boxes, scores, iou_threshold, idxs)

"""Greedy non-maximum suppression with torchvision's exact results and a bounded worst case.

Greedy NMS keeps the best-scoring box, drops every later box whose IoU with it exceeds
the threshold, and repeats. It is inherently sequential (box ``j``'s fate depends on whether
the boxes that could drop it were themselves kept), so the arithmetic (IoUs, vectorised
tensor code) is separated from the bookkeeping (a host scan), and the algorithm is chosen by
how much suppression there is, found out on the input itself. Boxes are put in *work order*
(decreasing score, stable). On a CPU, up to 10,000 boxes, all of it runs in NumPy
(:mod:`structpred.ops.nms_small`: a small fixed cost; it steps aside for the cases listed
there). Otherwise:

1. **Up to 256 boxes: one ``[N, N]`` overlap matrix** (the fewest operations), scanned on the
   host: pair by pair when pairs are few (``greedy_pairs``), else with torchvision's
   bitmask scan (``greedy_bits``: the matrix packed into Python ints, one step per *kept*
   box, dropped boxes cost nothing).
2. **Above: a probe.** :func:`_blocks` takes the best alive boxes (a block of 8-256 rows,
   sized so that a block is ~16k IoUs), tests them against every box still alive, resolves
   the block with the bitmask scan and drops whatever its kept rows overlap. Boxes already
   dropped are never tested again: about ``kept x alive`` IoUs, torchvision's own bound.
   Dense clusters and repeated boxes are solved by a few blocks. As soon as a block drops
   fewer than its own size or 1/16 of the rest (sparse suppression), the probe stops.
3. **The rest: suppression pairs** (:mod:`structpred.ops.nms_pairs`): the remaining boxes
   are an independent problem (dropped boxes never suppress; kept ones have already
   dropped what they overlap). Small, tiny or chained boxes: IoU tiles of an *x-sorted
   band* (only boxes whose x-intervals overlap, ~``N * (256 + w)`` IoUs), the pairs walked
   once in score order (``greedy_scan``: no rounds, whatever the chain length).
   Wide boxes (the band would hold more than half the tiles): blocks of 256 rows again.
   :func:`batched_nms` picks by label sizes: same-label pairs one by one (many tiny
   labels), one padded ``[L, M, M]`` batch (similar sizes), or each label on its own (large
   labels, >= 256 boxes on average, or large uneven ones).

Labels ride on the block IoUs as a third interval axis ``[label, label + 1)`` (the
intersection is multiplied by exactly 1 or 0), so no label mask is built. The worst case is
``N^2 / 2`` IoUs (every box kept and overlapping every x-interval, as in torchvision's kernel)
plus a host scan linear in the pairs or the kept boxes, never a function of chain length.
The scans read host copies (numpy; on a GPU one copy, as torchvision's CUDA kernel copies its
bitmask); on an accelerator with many pairs, tensor-only pruning rounds
(``prune_on_device``) shrink a pair list on the device first. Scans: :mod:`structpred.ops.nms_scan`.
Details, crossovers and figures: docs/nms.md.

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

from collections.abc import Callable

import numpy as np
import torch
import torch.fx
from torch import Tensor

from ._checks import _tracer_of, check_boxes
from .nms_pairs import (
    ROWS,
    above_host,
    band_pairs,
    block_iou,
    box_table,
    label_axis,
    padded_pairs,
    segment_pairs,
)
from .nms_scan import greedy_bits, greedy_pairs, resolve
from .nms_small import host_nms, host_solve

# Above this many same-label candidate pairs, the blocked search uses less memory.
_MAX_SEGMENT_PAIRS = 1 << 22
# batched_nms: same-label pairs one by one below this many per box, else a loop over labels
# once they average this many boxes (a loop costs a few dozen operations per label).
_SEGMENT_PAIRS_PER_BOX = 16
_PER_LABEL_BOXES = 48
# ... and always once they average this many (measured: 2x faster than one padded batch at 5,000 boxes in 6).
_OWN_SOLVE_BOXES = 256
# Largest [L, M, M] IoU batch for labels of similar sizes (elements).
_MAX_PADDED = 1 << 24
# Up to this many boxes, one [N, N] IoU matrix (fewest operations).
_SMALL = 256
# Up to this many boxes on a CPU, all in NumPy (structpred.ops.nms_small: a fraction of torch's
# fixed cost per operation; measured crossover: see docs/nms.md).
_HOST_BOXES = 10000
# One matrix: above this many pairs per box, the bitmask scan (a step per kept box) beats the pair list.
_SMALL_PAIRS_PER_BOX = 3
# Probe blocks: about this many IoUs each (their arithmetic and their few dozen operations'
# fixed cost of one order; measured best of 2^12-2^17), 8 to 256 rows.
_BLOCK_IOUS = 1 << 15
_FIRST_PROBE_IOUS = 1 << 13  # (sparse inputs pay only for this one: ~5% faster at 1,000 boxes)
_MIN_ROWS = 8
# The probe goes on while each block drops at least its own size and 1 / this of the rest.
_PROBE_SHARE = 16
_PROBE = True  # (tests switch the probe off to reach the pair searches directly)
# The x-band is used while it holds at most this share of the full row tiles' IoUs.
_BAND_SHARE = 0.5
# On an accelerator, prune on the device while there are more pairs than this per box.
_DEVICE_PAIRS_PER_BOX = 4


def _resolve(n: int, src: Tensor, dst: Tensor, *, device_rounds: bool) -> Tensor:
    """Keep mask ``bool[N]`` from pairs sorted by ``src`` (device rounds first on an accelerator)."""
    return resolve(n, src, dst, _DEVICE_PAIRS_PER_BOX * n if device_rounds else None)


def _as_float(t: Tensor) -> Tensor:
    """Coordinates or scores as a float tensor NMS can rank and compare exactly."""
    if t.is_quantized:  # integer representation: scale and zero point cancel in the IoU
        return t.int_repr().float()
    if t.dtype in (torch.float16, torch.bfloat16):  # exact upcast; areas no longer overflow
        return t.float()
    return t


def _over(table: Tensor, threshold: float, labels: Tensor | None, rows: Tensor, cols: Tensor) -> np.ndarray:
    """``IoU > threshold`` (same label) of positions ``rows (R,)`` x ``cols (C,)`` -> host ``bool[R, C]``.

    ``cols`` must be increasing; when it holds every box, the table is used as it is.
    """
    everything = cols.numel() == table.shape[1]  # then cols == arange(N) and rows == arange(R)
    row_table = table[:, : rows.numel()] if everything else table[:, rows]
    over = above_host(block_iou(row_table, table if everything else table[:, cols]), threshold)
    if labels is not None and not threshold >= 0:  # other labels' IoU 0 passes a negative threshold
        lab = labels.cpu().numpy()
        over &= lab[rows.cpu().numpy(), None] == lab[None, cols.cpu().numpy()]
    return over


def _small(work: Tensor, threshold: float, labels: Tensor | None) -> Tensor:
    """Kept work positions (increasing) of a few boxes: one ``[N, N]`` overlap matrix.

    Few pairs: listed and scanned one by one; many (dense clusters, repeated boxes): the
    bitmask scan, whose cost is one step per *kept* box. On a CPU, the NumPy path.
    """
    on_cpu = work.device.type == "cpu" and (labels is None or labels.device.type == "cpu")
    if on_cpu and work.shape[0] <= _HOST_BOXES:
        keep = host_solve(work.numpy(), threshold, None if labels is None else labels.numpy())
        if keep is not None:
            return torch.from_numpy(keep.nonzero()[0])
    table = box_table(work, labels)  # (5 or 7, N)
    over = above_host(block_iou(table, table), threshold)  # (N, N)
    if labels is not None and not threshold >= 0:  # other labels' IoU 0 passes a negative threshold
        lab = labels.cpu().numpy()
        over &= lab[:, None] == lab[None, :]
    return torch.tensor(_scan_matrix(over), dtype=torch.int64, device=work.device)


def _scan_matrix(over: np.ndarray) -> list[int]:
    """Kept rows of a square overlap matrix: listed pairs if few, else the bitmask scan."""
    # Symmetric with a true diagonal (finite boxes): 2 x pairs + N entries set.
    many = np.count_nonzero(over) > (2 * _SMALL_PAIRS_PER_BOX + 1) * over.shape[0]
    return greedy_bits(over) if many else greedy_pairs(over)


def _blocks(
    table: Tensor, threshold: float, live: Tensor, labels: Tensor | None, probe: bool
) -> tuple[list[Tensor], Tensor]:
    """Greedy NMS on the alive work positions ``live`` (increasing), a block of alive boxes at a time.

    A block's rows are resolved among themselves (:func:`greedy_bits`), then its kept rows drop
    every later alive box they overlap, so dropped boxes cost nothing later: about
    ``kept x alive`` IoUs, torchvision's own bound, in a few tensor operations per block.
    With ``probe``, stops after a block that dropped fewer later boxes than its own rows
    (sparse suppression: the pair searches are cheaper). Returns ``(kept positions per
    block, positions still undecided)``.
    """
    kept: list[Tensor] = []
    budget = _FIRST_PROBE_IOUS  # the first probe block is the cheap measurement
    while live.numel():
        block = live[: max(_MIN_ROWS, min(ROWS, budget // live.numel())) if probe else ROWS]  # (r,)
        budget = _BLOCK_IOUS
        r = block.numel()
        over = _over(table, threshold, labels, block, live)  # (r, C): the block, then the rest
        local = greedy_bits(np.ascontiguousarray(over[:, :r]))  # (k,) kept rows of the block
        kept.append(block[torch.tensor(local, dtype=torch.int64, device=live.device)])
        rest = live[r:]  # (C - r,)
        if rest.numel() == 0:
            return kept, rest
        hit = torch.from_numpy(over[local, r:].any(0)).to(live.device)  # (C - r,) dropped by the block
        live = rest[~hit]  # (C',) still alive after this block
        if probe and (rest.numel() - live.numel()) * _PROBE_SHARE < max(r * _PROBE_SHARE, rest.numel()):
            break
    return kept, live


def _solve(work: Tensor, threshold: float, labels: Tensor | None) -> Tensor:
    """Kept work positions (increasing) of score-ordered ``work [N, 4]`` (``labels [N]``).

    Up to 256 boxes: one matrix. Above: a probe block of the best boxes first; while blocks
    drop many later boxes (clusters, repeated boxes) they go on, and whatever remains goes
    to the pair searches (:func:`_pair_solve`) as an independent problem: boxes dropped
    already never suppress, and the kept ones have already dropped what they overlap.
    """
    n = work.shape[0]
    if n <= _SMALL:
        return _small(work, threshold, labels)
    if not _PROBE:
        return _pair_solve(work, threshold, labels)
    table = box_table(work, labels)  # (5 or 7, N)
    kept, live = _blocks(table, threshold, torch.arange(n, device=work.device), labels, True)
    if live.numel():
        kept.append(live[_pair_solve(work[live], threshold, None if labels is None else labels[live])])
    return torch.sort(torch.cat(kept)).values


def _pair_solve(work: Tensor, threshold: float, labels: Tensor | None) -> Tensor:
    """Kept work positions (increasing) from the suppression pairs (sparse suppression)."""
    n = work.shape[0]
    if n <= _SMALL:
        return _small(work, threshold, labels)
    device_rounds = work.device.type != "cpu"
    label_strategy = "" if labels is None else _label_strategy(labels)
    if labels is not None and label_strategy:
        # Work positions grouped by label (score order inside): each label one contiguous run.
        by_label = torch.sort(labels, stable=True).indices  # (N,)
        if label_strategy == "per_label":  # large labels: each solved with what suits its size
            runs = torch.unique_consecutive(labels[by_label], return_counts=True)[1].tolist()
            parts = [run[_solve(work[run], threshold, None)] for run in by_label.split(runs)]
            return torch.sort(torch.cat(parts)).values
        if label_strategy == "padded":  # labels of similar sizes: one batched IoU
            runs = torch.unique_consecutive(labels[by_label], return_counts=True)[1]
            src, dst = padded_pairs(work[by_label], threshold, runs)
        else:  # many small labels: same-label pairs one by one
            src, dst = segment_pairs(work[by_label], threshold, labels[by_label])
        return torch.sort(by_label[_resolve(n, src, dst, device_rounds=device_rounds)]).values
    band = band_pairs(work, threshold, labels, share=_BAND_SHARE)
    if band is None:  # wide boxes: blocks that skip the boxes already dropped
        live = torch.arange(n, device=work.device)
        kept, _ = _blocks(box_table(work, labels), threshold, live, labels, False)
        return torch.sort(torch.cat(kept)).values
    return _resolve(n, *band, device_rounds=device_rounds).nonzero()[:, 0]


def _nms(boxes: Tensor, scores: Tensor, threshold: float, labels: Tensor | None) -> Tensor:
    check_boxes(boxes, "boxes", rank2=True)
    if not isinstance(scores, Tensor) or scores.ndim != 1 or scores.shape[0] != boxes.shape[0]:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a Tensor[{boxes.shape[0]}] (one per box), got {shape}")
    if not (boxes.is_floating_point() or boxes.is_quantized):
        raise ValueError(f"boxes must be a floating point tensor, got {boxes.dtype}")
    n = boxes.shape[0]
    if n <= 1:  # nothing to compare: the box, if any, is kept
        return torch.zeros(n, dtype=torch.int64, device=boxes.device)
    # indices carry no gradient (and NumPy and the IoU tiles' out= writes refuse tensors that need one)
    if boxes.requires_grad or scores.requires_grad:
        boxes, scores = boxes.detach(), scores.detach()
    boxes, scores = _as_float(boxes), _as_float(scores)
    if n <= _HOST_BOXES and boxes.is_cpu and scores.is_cpu and scores.is_floating_point():
        if labels is None or labels.is_cpu:
            host_labels = None if labels is None else labels.numpy()
            kept = host_nms(boxes.numpy(), scores.numpy(), threshold, host_labels)
            if kept is not None:
                return torch.from_numpy(kept)
    # Stable: among equal scores the earlier box wins, as in torchvision's kernel.
    order = torch.sort(scores, descending=True, stable=True).indices
    # Work order = score order; pairs never cross labels, so greedy in it is per-label greedy.
    work_labels = None if labels is None else label_axis(labels, boxes.dtype)[order]
    return order[_solve(boxes[order], threshold, work_labels)]


def _label_strategy(labels: Tensor) -> str:
    """``"segment"``, ``"padded"``, ``"per_label"`` or ``""`` (labels in the band's keys)."""
    counts = torch.unique(labels, return_counts=True)[1]
    if counts.numel() == 1:
        return ""
    candidates = int((counts * (counts - 1) // 2).sum())
    n = labels.numel()
    if candidates < min(n * _SEGMENT_PAIRS_PER_BOX, _MAX_SEGMENT_PAIRS):
        return "segment"  # a few gathered pairs per box: cheaper than any loop
    if n >= _OWN_SOLVE_BOXES * counts.numel():
        return "per_label"  # large labels: each its own problem (probe, band or blocks)
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


def _traced(fn: Callable[..., Tensor], args: tuple[object, ...]) -> object:
    """A ``torch.fx`` node calling ``fn`` if an argument is a Proxy (``fx_leaf``'s rule), else ``None``."""
    tracer = _tracer_of(args)
    return None if tracer is None else tracer.create_proxy("call_function", fn, args, {})


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
    # Plain tensors and a float (every eager call) skip the Proxy search: ~4 us of 10-30.
    if type(boxes) is not Tensor or type(scores) is not Tensor or type(iou_threshold) is not float:
        node = _traced(nms, (boxes, scores, iou_threshold))
        if node is not None:
            return node  # type: ignore[return-value]
    return _nms(boxes, scores, iou_threshold, None)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS independently per category: boxes of different ``idxs`` never suppress each other.

    Args:
        boxes (Tensor[N, 4]), scores (Tensor[N]): as in :func:`nms`.
        idxs (Tensor[N]): integer category of each box (any dtype when ``N == 0``).
    Returns:
        int64[K]: indices of the kept boxes, by decreasing score.
    Raises:
        ValueError: bad shapes or dtypes (torchvision raises ``RuntimeError`` there).

    ``torch.fx.symbolic_trace`` records the call as one node (as :func:`nms`).
    """
    exporting = torch.compiler.is_exporting()
    plain = type(boxes) is Tensor and type(scores) is Tensor and type(idxs) is Tensor
    if not (exporting or plain and type(iou_threshold) is float):
        node = _traced(batched_nms, (boxes, scores, idxs, iou_threshold))
        if node is not None:
            return node  # type: ignore[return-value]
    if not exporting and isinstance(boxes, Tensor) and boxes.numel() == 0:
        # torchvision answers any empty input with an empty result, whatever scores and idxs are
        # (checked after is_exporting: under torch.export the box count is symbolic)
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if not isinstance(idxs, Tensor) or idxs.ndim != 1 or idxs.shape[0] != boxes.shape[0]:
        shape = tuple(idxs.shape) if isinstance(idxs, Tensor) else type(idxs).__name__
        raise ValueError(f"idxs must be a Tensor[{boxes.shape[0]}] (one per box), got {shape}")
    if idxs.is_floating_point() and idxs.numel() > 0:
        raise ValueError(f"idxs must hold integer categories, got {idxs.dtype}")
    if exporting:
        return _nms_op(_offset_by_class(boxes, idxs), scores, iou_threshold)
    return _nms(boxes, scores, iou_threshold, idxs)

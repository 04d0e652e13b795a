"""Greedy NMS of up to a few thousand boxes on a CPU, in NumPy: a small fixed cost.

At these sizes the cost is the number of calls, not their arithmetic: a NumPy call on a few
hundred elements costs ~1 us (its ``np.*`` wrapper another ~0.5-1 us: methods are called
instead), a torch call 2-3 us, and torchvision's whole C++ kernel 20-200 us. So this path
makes a few dozen NumPy calls, no torch call, and does no work the input does not need.

Shape shorthand: N boxes in *work order* (decreasing score, stable), M boxes still
undecided, R rows of a probe block, W the widest x-neighbourhood, C candidate pairs, P
suppression pairs.

1. Up to :data:`MATRIX_BOXES` boxes: one ``[N, N]`` overlap matrix (:func:`_matrix`).
2. Above: an **x-sweep** (:func:`_sweep`). Sorted by ``x1``, box ``p`` can overlap only the
   boxes after it whose ``x1`` lies below its ``x2``: a contiguous run (``searchsorted``).
   The runs are tested as one ``[M, W]`` window (a strided view, nothing copied) when they
   are of similar lengths, else gathered pair by pair.
3. Where the runs are long (an estimate from the x-extent, :func:`_x_density`: clusters,
   repeated boxes), the **probe** first (:func:`nms_probe._probe`): the best box of each
   label, then blocks of the best undecided boxes (each solved among itself, its kept rows
   then against every undecided box) while they drop many: about ``kept x alive`` IoUs,
   torchvision's bound. The rest goes to the sweep, or to the blocks again when the sweep
   would test many candidates a box and most boxes drop, or when its runs are long and
   uneven (it steps aside): the blocks were measured cheaper there than the tensor path.
4. The scan: the suppression pairs walked once in score order (a ``bytearray`` of dropped
   boxes), or the bitmask scan (:func:`greedy_bits`) when there are many.

Labels: more than :data:`_PROBE_LABELS` labels, no probe (runs keyed by label; where those
step aside, the tensor path answers); fewer, large ones (>= :data:`_OWN_LABEL_BOXES` boxes
on average) each solved alone. IoU blocks and scans: :mod:`structpred.ops.nms_probe`.

The IoU is the kernel's (``w * h``, ``inter / (area_i + area_j - inter)``, each step
symmetric in ``i, j``) in the boxes' dtype, compared with the threshold as a float64
(:func:`nms_pairs.above_host`), so the pairs, and the kept boxes, are torchvision's.
"""

from __future__ import annotations

import numpy as np

from .nms_pairs import host_threshold
from .nms_probe import _blocks, _heads, _matrix, _mostly_dropped, _over, _probe, _scan, _table

# Up to this many boxes, one [N, N] matrix (fewer calls than the sweep).
MATRIX_BOXES = 32
# No probe with more labels than this (each label's best box is a row of the first block).
_PROBE_LABELS = 16
# With at most _PROBE_LABELS labels of this many boxes on average, each label is solved alone.
_OWN_LABEL_BOXES = 256
# Where the probe stopped and the sweep would test more than this many candidates a box, the
# probe's blocks finish the job instead (about kept x alive IoUs; dense clusters, large labels).
_SWEEP_CANDIDATES = 24
# Below this many estimated x-candidates a box (_x_density), no probe: the sweep alone (measured at
# 200 boxes: clustered 17.7 a box, sweep alone 10% faster; dense 22.7, the probe 40% faster).
_PROBE_DENSITY = 20
# The sweep's runs as one [W, M] window while it holds at most this many times the candidates
# or this many IoUs (then its arithmetic costs less than the calls of the pair-by-pair part).
_WINDOW_SHARE = 2
_WINDOW_IOUS = 1 << 13
# After the probe, the first sweep is reused (dropped boxes marked) while 1 / this of the boxes are undecided.
_REUSE_SHARE = 2
# Above this many boxes, the sweep steps aside (the tensor path) for more than this many gathered
# candidates a box (clusters of long, uneven runs).
_BAIL_BOXES = 1000
_BAIL_TAILS = 16
# The window in column chunks of at most this many IoUs (memory).
_MAX_WINDOW = 1 << 21

# Cache of per-call constants: threshold tests.
_TESTS: dict[tuple[float, np.dtype], tuple[float, bool]] = {}


def host_nms(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, labels: np.ndarray | None
) -> np.ndarray | None:
    """Kept indices ``int64[K]`` (decreasing score) of ``boxes [N, 4]``, ``scores [N]``, ``labels [N]``.

    ``None`` where this path does not apply: NaN scores (NumPy sorts NaN last, torch first)
    or, above :data:`MATRIX_BOXES` boxes, a threshold below 0 or NaN (every pair can suppress).
    """
    order = (-scores).argsort(kind="stable")  # (N,) decreasing, ties by index (torch's stable sort)
    last = scores[order[-1]]
    if last != last:  # NaN: sorted last here
        return None
    keep = host_solve(boxes.take(order, axis=0), threshold, None if labels is None else labels.take(order))
    return None if keep is None else order[keep]


def host_solve(work: np.ndarray, threshold: float, labels: np.ndarray | None) -> np.ndarray | None:
    """Keep mask ``bool[N]`` of boxes ``work [N, 4]`` already in work order (``labels [N]``);
    ``None`` above :data:`MATRIX_BOXES` boxes for a threshold below 0 or NaN."""
    n = work.shape[0]
    if n > MATRIX_BOXES and not threshold >= 0:
        return None
    test = _TESTS.get((threshold, work.dtype))
    if test is None:
        if len(_TESTS) > 64:
            _TESTS.clear()
        test = _TESTS[threshold, work.dtype] = host_threshold(threshold, work.dtype)
    lab = None if labels is None else _dense(labels)
    with np.errstate(all="ignore"):  # inf and NaN corners: NaN IoUs, never above (no warnings)
        if n <= MATRIX_BOXES:
            return _matrix(work, test, lab)
        if lab is None:
            return _solve(work, threshold, test, None)
        heads = _heads(lab)
        if heads.size > _PROBE_LABELS or n < _OWN_LABEL_BOXES * heads.size:
            return _solve(work, threshold, test, lab, heads)
        # A few large labels: each its own problem (a label mask would waste most block IoUs).
        by_label = lab.argsort(kind="stable")  # (N,) grouped by label, work order inside
        grouped = lab.take(by_label)
        keep = np.zeros(n, dtype=np.bool_)
        for part in np.split(by_label, (grouped[1:] != grouped[:-1]).nonzero()[0] + 1):
            one = work.take(part, axis=0)  # (n_l, 4)
            if part.size <= MATRIX_BOXES:
                part_keep: np.ndarray | None = _matrix(one, test, None)
            else:
                part_keep = _solve(one, threshold, test, None)
            if part_keep is None:
                return None
            keep[part] = part_keep
        return keep


def _dense(labels: np.ndarray) -> np.ndarray:
    """``labels`` as int64 ids from 0 that ``id * (N + 1) + N`` never overflows."""
    labels = labels.astype(np.int64)
    low, high = int(labels.min()), int(labels.max())
    if high - low < (1 << 62) // (labels.size + 1):
        return labels - low if low else labels
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def _solve(
    work: np.ndarray,
    threshold: float,
    test: tuple[float, bool],
    lab: np.ndarray | None,
    heads: np.ndarray | None = None,
) -> np.ndarray | None:
    """Keep mask ``bool[N]`` of boxes ``work [N, 4]`` (work order).

    Few x-neighbours a box (estimated, :func:`_x_density`): the x-sweep alone. Else the probe
    (the best box of each label, then blocks while they drop many), and for the rest the sweep,
    or the blocks again where the sweep would test many candidates and most boxes are dropped.
    ``None``: many labels and too many long runs for the sweep (the tensor path).
    """
    n = work.shape[0]
    table = _table(work)  # (5, N)
    cut = _cut(threshold, table)
    if heads is None:
        heads = _heads(lab)  # (H,) the best box of each label
    if heads.size > _PROBE_LABELS:  # many labels: a label's best box drops few, no probe
        return _sweep(_runs(table, lab, cut), test, lab)
    keep = np.zeros(n, dtype=np.bool_)
    if _x_density(table, cut) < _PROBE_DENSITY:  # sparse in x: the probe would not pay for itself
        live = np.arange(n)
        done = _sweep(_runs(table, lab, cut), test, lab)
        if done is not None:
            return done
    else:
        live = _probe(table, test, lab, heads, keep)  # (M,) undecided work positions
        if live.size == 0:
            return keep
        reuse = live.size * _REUSE_SHARE >= n  # few dropped: sweep them all, the probe's dropped marked
        rest_lab = lab if reuse or lab is None else lab.take(live)
        runs = _runs(table if reuse else table.take(live, axis=1), rest_lab, cut)
        if runs[3] > _SWEEP_CANDIDATES * runs[0].size and _mostly_dropped(table, test, lab, live):
            # long x-runs and most boxes dropped: the blocks' kept x alive IoUs cost less than the sweep
            _blocks(table, test, lab, live, keep, force=True)
            return keep
        if reuse:
            dropped = ~keep
            dropped[live] = False
            done = _sweep(runs, test, lab, dropped)
            if done is not None:
                return done
        else:
            rest = _sweep(runs, test, rest_lab)
            if rest is not None:
                keep[live[rest]] = True
                return keep
    # Long uneven runs (clusters): the blocks, measured cheaper than gathered tails or the tensor path.
    _blocks(table, test, lab, live, keep, force=True)
    return keep


def _x_density(table: np.ndarray, cut: float) -> float:
    """Estimated x-sweep candidates a box of ``table [5, N]``: ``(1 - cut) sum(w) / range(x1)``
    (exact for x-positions spread evenly; within ~20% on the bench's; inf or NaN when all ``x1`` agree)."""
    return float((1 - cut) * (table[2] - table[0]).sum() / (table[0].max() - table[0].min()))


def _cut(threshold: float, table: np.ndarray) -> float:
    """``t'`` such that a pair with IoU > ``threshold`` has an x-IoU above ``t'`` (0: no such bound).

    The IoU of two boxes is at most the IoU of their x-intervals (``|A1 B1| |A2 B2| /
    (|A1| |A2| + |B1| |B2| - |A1 B1| |A2 B2|)`` against ``|A1 B1| / (|A1| + |B1| - |A1 B1|)``:
    the difference has the sign of ``|A1| (|A2| - |A2 B2|) + |B1| (|B2| - |A2 B2|) >= 0``), so
    box ``q`` with ``x1_q >= x1_p`` can be above the threshold with ``p`` only if
    ``x1_q < x2_p - t' (x2_p - x1_p)``. The float32 IoU is within ~1e-6 of the exact one while
    the areas are normal numbers (checked: >= 1e-30, or no bound); ``t'`` leaves 1e-4.
    """
    if table.dtype != np.float32 or not threshold > 1e-3 or not table[4].min() >= 1e-30:
        return 0.0
    return min(threshold, 1.0) * (1 - 1e-4) - 1e-6


def _runs(
    table: np.ndarray, lab: np.ndarray | None, cut: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The x-sweep's runs of boxes ``table [5, M]``: ``(by_x (M,), x-ordered table, run lengths
    (M,), total)``, the table ``[5, 2M]`` with its first ``M`` columns filled (the rest: room
    for :func:`_sweep`'s window). Box ``p``'s run: the boxes after it in x-order whose ``x1``
    is below ``x2_p - cut * (x2_p - x1_p)`` (:func:`_cut`; float64, exact against float32).
    With labels, boxes are ordered by ``(label, x1)`` and a run never crosses a label.
    """
    m = table.shape[1]
    if cut:
        x2 = table[2].astype(np.float64)
        bound = x2 - cut * (x2 - table[0])  # (M,) in work order
    else:
        bound = table[2]
    if lab is None:
        by_x = table[0].argsort()  # (M,) x-position -> work position
    else:
        # rank(v) = #{x1 < v}, so x1_q < b_p <=> rank(x1_q) < rank(b_p); keys label-major
        xs = np.sort(table[0])
        base = lab * (m + 1)  # (labels are small ids, see _dense)
        lo = xs.searchsorted(table[0])
        lo += base
        hi = xs.searchsorted(bound)
        hi += base
        by_x = lo.argsort()
    tx = np.empty((5, 2 * m), dtype=table.dtype)
    table.take(by_x, axis=1, out=tx[:, :m])  # (5, M) in x-order
    end = tx[0, :m].searchsorted(bound.take(by_x)) if lab is None else lo[by_x].searchsorted(hi[by_x])  # (M,)
    count = end - np.arange(1, m + 1)  # (M,) boxes after p in its run
    np.maximum(count, 0, out=count)
    return by_x, tx, count, int(count.sum())


def _sweep(
    runs: tuple[np.ndarray, np.ndarray, np.ndarray, int],
    test: tuple[float, bool],
    lab: np.ndarray | None,
    dropped: np.ndarray | None = None,
) -> np.ndarray | None:
    """Keep mask ``bool[M]`` of the boxes of ``runs`` (:func:`_runs`) from the x-sweep's pairs
    (``dropped``: boxes known to be dropped already).

    The first ``W`` boxes of every run are tested as one ``[W, M]`` window (a strided view:
    nothing gathered), the rest of the longer runs pair by pair (gathered, ~3x the cost per
    pair); ``W`` covers the whole of ~3/4 of the runs. ``None`` above :data:`_BAIL_BOXES`
    boxes when the gathered tails are too many (the tensor path's row tiles are cheaper there).
    """
    by_x, table, count, total = runs
    m = by_x.size
    if total == 0:
        return np.ones(m, dtype=np.bool_) if dropped is None else ~dropped
    tx = table[:, :m]  # (5, M)
    w = int(count.max())
    longest = w
    if w * m > max(_WINDOW_SHARE * total, _WINDOW_IOUS):  # uneven runs: the window holds the common lengths
        w = int(np.partition(count, m * 3 // 4)[m * 3 // 4])
    if w < longest:  # the runs' tails, pair by pair
        extra = count - w  # (M,)
        np.maximum(extra, 0, out=extra)
        if m > _BAIL_BOXES and int(extra.sum()) > _BAIL_TAILS * m:
            return None
    table[:, m : m + w] = np.nan  # past the last box: NaN never overlaps
    step = table.strides[1]
    chunk = max(1, _MAX_WINDOW // max(w, 1))  # columns per window (memory: ~_MAX_WINDOW IoUs)
    ps, qs = [], []
    for a in range(0, m, chunk):
        b = min(a + chunk, m)
        # window[c, k, p] = table[c, a + p + 1 + k], a strided view (M innermost: long loops)
        window = np.ndarray((5, w, b - a), table.dtype, table, (a + 1) * step, (table.strides[0], step, step))
        k, p = _over(tx[:, None, a:b], window, test).nonzero()  # (P,) each
        p += a
        ps.append(p)
        qs.append(p + k + 1)
    p, q = (ps[0], qs[0]) if len(ps) == 1 else (np.concatenate(ps), np.concatenate(qs))
    if w < longest:
        ar = np.arange(m)
        pe = ar.repeat(extra)  # (C,) x-position of each candidate's first box
        first = extra.cumsum() - extra  # (M,) where p's candidates start
        first -= ar + 1 + w
        qe = np.arange(pe.size) - first.repeat(extra)  # (C,) p + 1 + w, p + 2 + w, ...
        # Gathers: p's side repeated, q's side taken as 32-byte rows (~3x faster than along axis 1).
        rows = np.empty((m, 8), dtype=tx.dtype)  # (M, 8): x1, y1, x2, y2, area, unused
        rows[:, :5] = tx.T
        over = _over(tx.repeat(extra, axis=1), rows.take(qe, axis=0).T, test)  # (C,)
        p, q = np.concatenate([p, pe[over]]), np.concatenate([q, qe[over]])
    if lab is not None:  # the window reaches past the end of a label's run
        lx = lab.take(by_x)
        same = lx[p] == lx[q]
        p, q = p[same], q[same]
    i, j = by_x[p], by_x[q]  # (P,) work positions
    key = np.minimum(i, j) * m  # sorted: by source, then target
    key += np.maximum(i, j)
    key.sort()
    src, dst = np.divmod(key, m)
    return _scan(m, src, dst, dropped=dropped)

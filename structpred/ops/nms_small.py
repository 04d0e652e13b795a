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
3. Where the runs are long (clusters, repeated boxes: many candidates per box), **probe
   blocks** first (:func:`_probe`): the best undecided box, then blocks of them, against
   every undecided box while they drop many (about ``kept x alive`` IoUs, torchvision's
   bound); the rest goes to the sweep.
4. The scan: the suppression pairs walked once in score order (a ``bytearray`` of dropped
   boxes), or the bitmask scan (:func:`greedy_bits`) when there are many.

The IoU is the kernel's (``w * h``, ``inter / (area_i + area_j - inter)``, each step
symmetric in ``i, j``) in the boxes' dtype, compared with the threshold as a float64
(:func:`nms_pairs.above_host`), so the pairs, and the kept boxes, are torchvision's.
"""

from __future__ import annotations

import numpy as np

from .nms_pairs import host_threshold
from .nms_scan import greedy_bits

# Up to this many boxes, one [N, N] matrix (fewer calls than the sweep).
MATRIX_BOXES = 32
# The probe runs where the sweep would test more than this many candidates a box.
_PROBE_CANDIDATES = 8
# No probe with more labels than this (each label's best box is a row of the first block).
_PROBE_LABELS = 16
# With at most _PROBE_LABELS labels of this many boxes on average, each label is solved alone.
_OWN_LABEL_BOXES = 256
# Probe blocks after the first row: about this many IoUs (R rows x M undecided), R >= _MIN_ROWS.
_BLOCK_IOUS = 1 << 12
_MIN_ROWS = 8
# ... and one block for all the undecided once at most this many are left.
_FINISH_BOXES = 96
# The probe goes on while a block drops at least its own size and 1 / this of the rest.
_PROBE_SHARE = 16
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
# ... and above this many, for dense inputs (the probe would go on).
_BAIL_DENSE_BOXES = 2000
# Scan: above this many pairs per box, the bitmask scan (one step per kept box).
_PAIRS_PER_BOX = 3

# Caches of per-call constants: upper-triangle masks of the matrix sizes, threshold tests.
_UPPER: dict[int, np.ndarray] = {}
_TESTS: dict[tuple[float, np.dtype], tuple[float, bool]] = {}


def host_nms(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, labels: np.ndarray | None
) -> np.ndarray | None:
    """Kept indices ``int64[K]`` (decreasing score) of ``boxes [N, 4]``, ``scores [N]``, ``labels [N]``.

    ``None`` where this path does not apply: NaN scores (NumPy sorts NaN last, torch first)
    or, above :data:`MATRIX_BOXES` boxes, a threshold below 0 or NaN (every pair can suppress).
    """
    if labels is not None and scores.size > _BAIL_DENSE_BOXES and _few_labels(labels):
        return None  # a few large labels: the tensor path solves each alone (measured cheaper)
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


def _few_labels(labels: np.ndarray) -> bool:
    """At most :data:`_PROBE_LABELS` distinct labels (a bincount: O(N), no sort)."""
    ids = _dense(labels)
    if int(ids.max()) >= 4 * ids.size:  # sparse ids: bincount would be large
        return False
    return int(np.count_nonzero(np.bincount(ids))) <= _PROBE_LABELS


def _dense(labels: np.ndarray) -> np.ndarray:
    """``labels`` as int64 ids from 0 that ``id * (N + 1) + N`` never overflows."""
    labels = labels.astype(np.int64)
    low, high = int(labels.min()), int(labels.max())
    if high - low < (1 << 62) // (labels.size + 1):
        return labels - low if low else labels
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def _table(work: np.ndarray) -> np.ndarray:
    """``[5, N]``: x1, y1, x2, y2, area of ``work [N, 4]`` (the area in the kernel's order)."""
    table = np.empty((5, work.shape[0]), dtype=work.dtype)
    table[:4] = work.T
    np.subtract(table[2], table[0], out=table[4])
    table[4] *= table[3] - table[1]
    return table


def _over(a: np.ndarray, b: np.ndarray, test: tuple[float, bool]) -> np.ndarray:
    """``IoU > threshold`` of box tables ``a [5, ...]`` x ``b [5, ...]`` (broadcast): bool."""
    wh = np.minimum(a[2:4], b[2:4])  # (2, ...) overlap per axis
    wh -= np.maximum(a[:2], b[:2])
    np.maximum(wh, 0, out=wh)
    inter = wh[0]
    inter *= wh[1]
    union = a[4] + b[4]
    union -= inter
    inter /= union
    value, inclusive = test
    return inter >= value if inclusive else inter > value


def _matrix(work: np.ndarray, test: tuple[float, bool], lab: np.ndarray | None) -> np.ndarray:
    """Keep mask ``bool[N]`` of a few boxes ``work [N, 4]`` from one ``[N, N]`` overlap matrix."""
    n = work.shape[0]
    corners = work.T.copy()  # (4, N), contiguous (a strided view makes the broadcasts' outputs slow)
    sides = corners[2:] - corners[:2]  # (2, N)
    area = sides[0] * sides[1]  # (N,)
    wh = np.minimum(corners[2:, :, None], corners[2:, None, :])  # (2, N, N)
    wh -= np.maximum(corners[:2, :, None], corners[:2, None, :])
    np.maximum(wh, 0, out=wh)
    inter = wh[0]
    inter *= wh[1]
    union = area[:, None] + area[None, :]
    union -= inter
    inter /= union
    value, inclusive = test
    over = inter >= value if inclusive else inter > value  # (N, N), as _over
    upper = _UPPER.get(n)
    if upper is None:
        upper = _UPPER[n] = np.triu(np.ones((n, n), dtype=np.bool_), 1)  # pairs i < j only
    over &= upper
    if lab is not None:
        over &= lab[:, None] == lab[None, :]
    src, dst = over.nonzero()  # row-major: sorted by src
    return _scan(n, src, dst, over)


def _scan(
    n: int,
    src: np.ndarray,
    dst: np.ndarray,
    over: np.ndarray | None = None,
    dropped: np.ndarray | None = None,
) -> np.ndarray:
    """Keep mask ``bool[N]`` of greedy NMS from pairs ``src < dst`` sorted by ``src``.

    Few pairs: walked once (a pair whose source is dropped is skipped). Many: the bitmask
    scan of ``over`` (``[N, N]``, built from the pairs if not given). ``dropped`` (``bool[N]``):
    boxes already known to be dropped (they suppress nothing).
    """
    if src.size == 0:
        return np.ones(n, dtype=np.bool_) if dropped is None else ~dropped
    if src.size <= _PAIRS_PER_BOX * n:
        state = bytearray(n) if dropped is None else bytearray(dropped.tobytes())
        for i, j in zip(src.tolist(), dst.tolist(), strict=True):
            if not state[i]:
                state[j] = 1
        return ~np.frombuffer(state, dtype=np.bool_)
    if over is None:
        over = np.zeros((n, n), dtype=np.bool_)
        over[src, dst] = True
    if dropped is not None:
        over[dropped] = False
    keep = np.zeros(n, dtype=np.bool_)
    keep[greedy_bits(over)] = True
    if dropped is not None:
        keep &= ~dropped
    return keep


def _solve(
    work: np.ndarray,
    threshold: float,
    test: tuple[float, bool],
    lab: np.ndarray | None,
    heads: np.ndarray | None = None,
) -> np.ndarray | None:
    """Keep mask ``bool[N]`` of boxes ``work [N, 4]`` (work order): probe blocks while they drop
    many boxes, then the x-sweep for the rest (``None``: too many long runs for it)."""
    n = work.shape[0]
    table = _table(work)  # (5, N)
    cut = _cut(threshold, table)
    if heads is None:
        heads = _heads(lab)  # (H,) the best box of each label
    if heads.size > _PROBE_LABELS:  # many labels: a label's best box drops few, no probe
        return _sweep(_runs(table, lab, cut), test, lab)
    keep = np.zeros(n, dtype=np.bool_)
    live = _probe(table, test, lab, heads, keep)  # (M,) undecided work positions
    if live is None:
        return None
    if live.size * _REUSE_SHARE >= n:  # few dropped: sweep them all, the probe's dropped marked
        dropped = ~keep
        dropped[live] = False
        return _sweep(_runs(table, lab, cut), test, lab, dropped)
    if live.size:
        rest_lab = None if lab is None else lab.take(live)
        rest = _sweep(_runs(table.take(live, axis=1), rest_lab, cut), test, rest_lab)
        if rest is None:
            return None
        keep[live[rest]] = True
    return keep


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


def _probe(
    table: np.ndarray, test: tuple[float, bool], lab: np.ndarray | None, heads: np.ndarray, keep: np.ndarray
) -> np.ndarray | None:
    """Probe blocks: ``heads``, the best box of each label (nothing can drop them), against every
    box, then blocks of the best undecided boxes (~4k IoUs) against every undecided box, while
    they drop many. Marks the kept in ``keep``; returns the undecided work positions (increasing),
    or ``None`` for a dense input of more than :data:`_BAIL_DENSE_BOXES` boxes."""
    n = table.shape[1]
    rows = table[:, :1] if heads.size == 1 else table.take(heads, axis=1)  # (5, H)
    over = _over(rows[:, :, None], table[:, None, :], test)  # (H, N)
    if lab is not None:
        over &= lab.take(heads)[:, None] == lab[None, :]
    hit = over[0] if heads.size == 1 else over.any(0)  # (N,) dropped (and the heads themselves)
    keep[heads] = True
    hit |= keep
    live = (~hit).nonzero()[0]  # (M,) undecided
    r = heads.size
    while live.size > 1 and (n - r - live.size) * _PROBE_SHARE >= max(r * _PROBE_SHARE, n - r):
        if table.shape[1] > _BAIL_DENSE_BOXES:
            return None  # dense and large: the tensor path's larger probe blocks are cheaper
        n = live.size
        r = n if n <= _FINISH_BOXES else max(_MIN_ROWS, _BLOCK_IOUS // n)  # a few left: one last block
        rows, rest = live[:r], live[r:]  # (R,), (M - R,)
        # (take, not fancy indexing: its transposed layout makes the broadcast ops ~10x slower)
        cols = table.take(live, axis=1)  # (5, M)
        over = _over(cols[:, :r, None], cols[:, None, :], test)  # (R, M): the block, then the rest
        if lab is not None:
            lab_cols = lab.take(live)
            over &= lab_cols[:r, None] == lab_cols[None, :]
        local = greedy_bits(over[:, :r])  # the block resolved among itself first
        keep[rows[local]] = True
        live = rest[~over[local, r:].any(0)]
    if live.size == 1:
        keep[live] = True
        return live[:0]
    return live


def _heads(lab: np.ndarray | None) -> np.ndarray:
    """Work positions (increasing) of the first box of each label (``[0]`` without labels)."""
    if lab is None:
        return np.zeros(1, dtype=np.intp)
    by_label = lab.argsort(kind="stable")  # (N,) grouped by label, score order inside
    grouped = lab.take(by_label)
    first = np.empty(grouped.size, dtype=np.bool_)
    first[0] = True
    np.not_equal(grouped[1:], grouped[:-1], out=first[1:])
    heads = by_label[first]
    heads.sort()
    return heads


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

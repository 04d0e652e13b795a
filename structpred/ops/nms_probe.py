"""The NumPy path's overlap blocks (:mod:`structpred.ops.nms_small`): the IoU test, one small
matrix, the probe blocks that decide dense inputs at about ``kept x alive`` IoUs, and the scan.

Shape shorthand: N boxes in *work order* (decreasing score, stable), M boxes still undecided,
R rows of a block, K rows of it kept, H labels' best boxes, P suppression pairs. A box table is
``[5, N]``: x1, y1, x2, y2, area.

A probe block is solved in two steps: its R best undecided boxes among themselves first (an
``[R, R]`` matrix and the bitmask scan), then only its K kept rows against the other undecided
boxes (``[K, M - R]``). On dense inputs most rows of a block are dropped by an earlier row of the
same block, so this computes ``R^2 + K (M - R)`` IoUs instead of ``R M``; dropped boxes are never
tested again, as in torchvision's loop.
"""

from __future__ import annotations

from typing import cast

import numpy as np

from .nms_scan import greedy_bits

# Scan: above this many pairs per box, the bitmask scan (one step per kept box).
_PAIRS_PER_BOX = 3
# Probe blocks: this many of the best undecided boxes each (R; measured best of 32-128).
_BLOCK_ROWS = 64
# ... and one block for all the undecided once at most this many are left.
_FINISH_BOXES = 96
# The probe goes on while a block drops at least its own size and 1 / this of the rest.
_PROBE_SHARE = 16

# Upper-triangle masks of the matrix sizes (a per-call constant), the heads without labels.
_UPPER: dict[int, np.ndarray] = {}
_FIRST = np.zeros(1, dtype=np.intp)
_FIRST.flags.writeable = False


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
    over &= _upper(n)  # pairs i < j only
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


def _probe(
    table: np.ndarray, test: tuple[float, bool], lab: np.ndarray | None, heads: np.ndarray, keep: np.ndarray
) -> np.ndarray:
    """The probe: ``heads [H]``, the best box of each label (nothing can drop them), against every
    box of ``table [5, N]``, then :func:`_blocks` while they drop many. Marks the kept in ``keep``;
    returns the undecided work positions (increasing). ``keep`` is all false on entry."""
    rows = table[:, :1] if heads.size == 1 else table.take(heads, axis=1)  # (5, H)
    over = _over(rows[:, :, None], table[:, None, :], test)  # (H, N)
    if lab is not None:
        over &= lab.take(heads)[:, None] == lab[None, :]
    if heads.size == 1:  # (scalar writes: ~1 us less than index arrays on every call)
        hit = cast(np.ndarray, over[0])  # (N,) dropped
        hit[0] = keep[0] = True
    else:
        hit = cast(np.ndarray, over.any(0))
        hit[heads] = keep[heads] = True
    live = (~hit).nonzero()[0]  # (M,) undecided
    n, h = table.shape[1], heads.size
    if live.size <= 1 or (n - h - live.size) * _PROBE_SHARE < max(h * _PROBE_SHARE, n - h):
        return _last(live, keep)  # the heads dropped few: sparse so far
    return _blocks(table, test, lab, live, keep, force=False)


def _blocks(
    table: np.ndarray,
    test: tuple[float, bool],
    lab: np.ndarray | None,
    live: np.ndarray,
    keep: np.ndarray,
    force: bool,
) -> np.ndarray:
    """Blocks of the :data:`_BLOCK_ROWS` best undecided boxes ``live (M,)`` (positions in ``table``),
    each solved among itself, its kept rows then tested against the other undecided boxes.

    Marks the kept in ``keep`` and returns the undecided positions: none when ``force``d, else
    those left once a block drops fewer than its own size or 1 / :data:`_PROBE_SHARE` of the rest.
    """
    while live.size > 1:
        m = live.size
        cols = table.take(live, axis=1)  # (5, M) (take: fancy indexing's layout is ~10x slower)
        lab_cols = None if lab is None else lab.take(live)
        if m <= _FINISH_BOXES:  # a few left: one last block
            over = _over(cols[:, :, None], cols[:, None, :], test)  # (M, M)
            if lab_cols is not None:
                over &= lab_cols[:, None] == lab_cols[None, :]
            keep[live[greedy_bits(over)]] = True
            return live[:0]
        r = _BLOCK_ROWS
        block = cols[:, :r]  # (5, R)
        local = _over(block[:, :, None], block[:, None, :], test)  # (R, R)
        if lab_cols is not None:
            local &= lab_cols[:r, None] == lab_cols[None, :r]
        kept = np.array(greedy_bits(local), dtype=np.intp)  # (K,) rows of the block kept
        keep[live[kept]] = True
        over = _over(block.take(kept, axis=1)[:, :, None], cols[:, None, r:], test)  # (K, M - R)
        if lab_cols is not None:
            over &= lab_cols.take(kept)[:, None] == lab_cols[None, r:]
        live = live[r:][~over.any(0)]  # (M',) still undecided
        if not force and (m - r - live.size) * _PROBE_SHARE < max(r * _PROBE_SHARE, m - r):
            break  # the block dropped few: sparse from here on
    return _last(live, keep)


def _mostly_dropped(
    table: np.ndarray, test: tuple[float, bool], lab: np.ndarray | None, live: np.ndarray
) -> bool:
    """Whether most of the :data:`_BLOCK_ROWS` best undecided boxes ``live`` overlap a better one
    among them (a cheap estimate of the keep rate: then the blocks beat the pair searches)."""
    r = min(_BLOCK_ROWS, live.size)
    block = table.take(live[:r], axis=1)  # (5, R)
    local = _over(block[:, :, None], block[:, None, :], test)  # (R, R)
    local &= _upper(r)
    if lab is not None:
        lab_rows = lab.take(live[:r])
        local &= lab_rows[:, None] == lab_rows[None, :]
    return int(np.count_nonzero(local.any(0))) * 2 > r


def _upper(n: int) -> np.ndarray:
    """``bool[N, N]``, true above the diagonal (pairs ``i < j``), cached."""
    upper = _UPPER.get(n)
    if upper is None:
        upper = _UPPER[n] = np.triu(np.ones((n, n), dtype=np.bool_), 1)
    return upper


def _last(live: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``live`` unless it holds one box, which is then kept (nothing left can drop it)."""
    if live.size == 1:
        keep[live] = True
        return live[:0]
    return live


def _heads(lab: np.ndarray | None) -> np.ndarray:
    """Work positions (increasing) of the first box of each label (``[0]`` without labels)."""
    if lab is None:
        return _FIRST
    by_label = lab.argsort(kind="stable")  # (N,) grouped by label, score order inside
    grouped = lab.take(by_label)
    first = np.empty(grouped.size, dtype=np.bool_)
    first[0] = True
    np.not_equal(grouped[1:], grouped[:-1], out=first[1:])
    heads = by_label[first]
    heads.sort()
    return heads

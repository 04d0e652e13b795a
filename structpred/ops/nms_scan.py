"""The sequential half of greedy NMS: scans that turn overlaps into kept boxes, on the host.

Shape shorthand: N boxes in work order (decreasing score), P suppression pairs ``(src, dst)``
with ``src < dst``, R rows of a square overlap block.

- :func:`greedy_scan`: a pair list sorted by ``src``, walked once (chains: one pass, no rounds).
- :func:`greedy_pairs`: the same for a sparse square overlap matrix.
- :func:`greedy_bits`: torchvision's bitmask scan for a dense one: one step per *kept* box.
- :func:`prune_on_device`: tensor-only rounds that shrink a pair list on an accelerator.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def greedy_scan(src: Tensor, dst: Tensor, dropped: set[int]) -> list[int]:
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


def greedy_bits(over: np.ndarray) -> list[int]:
    """Kept rows of greedy NMS on a square overlap matrix ``bool[R, R]`` (row ``i`` before ``j``).

    torchvision's bitmask scan, on the host: the matrix is packed into bits, and a Python int
    ``done`` marks the rows visited or dropped. The next row to keep is the lowest zero bit
    of ``done``, so the loop runs once per *kept* row (dropped rows cost nothing); each step
    ORs the kept row's bits in. Bits at or below the diagonal are already set in ``done``,
    so the matrix may be symmetric.
    """
    r = over.shape[0]
    bits = np.packbits(over, bitorder="little").tobytes()  # row i: bits [i r, (i + 1) r)
    mask = (1 << r) - 1
    done, i, kept = 0, 0, []
    while i < r:
        kept.append(i)
        start = i * r
        row = int.from_bytes(bits[start >> 3 : (start + r + 7) >> 3], "little") >> (start & 7)
        done |= (row & mask) | ((2 << i) - 1)
        i = (~done & (done + 1)).bit_length() - 1  # lowest zero bit: the next row alive
    return kept


def greedy_pairs(over: np.ndarray) -> list[int]:
    """:func:`greedy_bits` for a sparse ``over``: its pairs ``i < j`` (row-major) scanned one by one."""
    r = over.shape[0]
    flat = np.flatnonzero(over)  # (P',) both triangles and the diagonal
    src, dst = np.divmod(flat, r)
    upper = src < dst
    dropped: set[int] = set()
    for i, j in zip(src[upper].tolist(), dst[upper].tolist(), strict=True):
        if i not in dropped:
            dropped.add(j)
    return [p for p in range(r) if p not in dropped]


def prune_on_device(n: int, src: Tensor, dst: Tensor, max_pairs: int) -> tuple[Tensor, Tensor, Tensor]:
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


def resolve(n: int, src: Tensor, dst: Tensor, device_budget: int | None) -> Tensor:
    """Keep mask ``bool[N]`` of greedy NMS given its suppression pairs (sorted by ``src``).

    With a ``device_budget``, :func:`prune_on_device` first shrinks the pairs to that many.
    """
    keep = torch.ones(n, dtype=torch.bool, device=src.device)
    if device_budget is not None:
        dropped, src, dst = prune_on_device(n, src, dst, device_budget)
        keep &= ~dropped
    lost = greedy_scan(src, dst, set())
    if lost:
        keep[torch.tensor(lost, dtype=torch.int64, device=src.device)] = False
    return keep

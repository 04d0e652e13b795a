"""Mirror padding of any size and centre crops: the overlap-tile pieces of valid convolutions.

Shape shorthand: B images, C channels, H x W pixels.

Convention: "mirror" is reflect padding (the edge pixel is not repeated, numpy's
``mode="reflect"``); beyond one image length the reflections repeat, so pads may exceed the
image (``F.pad(mode="reflect")`` refuses pads >= the side).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def mirror_pad(x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
    """``x [B, C, H, W]`` mirrored (reflect: the edge pixel is not repeated) by any amounts.

    Equals ``F.pad(x, (left, right, top, bottom), mode="reflect")`` where that works (pads
    < side) and keeps reflecting beyond (the image alternates with its mirror image). A side
    of 1 is repeated.
    """
    if min(top, bottom, left, right) < 0:
        raise ValueError(f"mirror_pad: pads must be >= 0, got {(top, bottom, left, right)}")
    pads = (top, bottom, left, right)
    if all(type(p) is int for p in pads) and not any(pads):  # nothing to pad (ints: no guard)
        return x
    H, W = x.shape[-2:]
    rows = _reflect_indices(H, top, bottom, x.device)  # (top + H + bottom,)
    cols = _reflect_indices(W, left, right, x.device)  # (left + W + right,)
    return x.index_select(-2, rows).index_select(-1, cols)  # (B, C, H', W')


def _reflect_indices(n: int, before: int, after: int, device: torch.device) -> Tensor:
    i = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(i)
    size: int | Tensor = n
    if isinstance(n, torch.SymInt):  # exported: a tensor, as ONNX takes no symbolic scalar operand
        size = torch.scalar_tensor(n, dtype=torch.int64, device=device)
    period = 2 * (size - 1)
    i = i.remainder(period)  # in [0, period)
    return torch.where(i >= size, period - i, i)


def center_crop(x: Tensor, size: Sequence[int]) -> Tensor:
    """The central ``size = (h, w)`` window of ``x [..., H, W]``; ``(H - h)``, ``(W - w)`` even."""
    H, W = x.shape[-2:]
    h, w = int(size[0]), int(size[1])
    if not (0 <= h <= H and 0 <= w <= W and (H - h) % 2 == 0 and (W - w) % 2 == 0):
        raise ValueError(f"center_crop: cannot take a centred {(h, w)} window of {(H, W)} (even margins)")
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top : top + h, left : left + w]

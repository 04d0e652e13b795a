"""Window helpers of the Swin Transformer (Liu et al. 2021): window partition / reverse, the
relative position index, the shifted-window attention mask and the rule that picks a block's
window and shift for the map it actually sees.

Shape shorthand: B images, H x W tokens of one map (Hp x Wp after padding), C channels,
wh x ww a window (L = wh * ww tokens), nW = (Hp / wh) * (Wp / ww) windows per image, w the
configured (square) window side, s its shift (w // 2 in every other block).

Convention (window rules, both peers' numbers are matched):

- ``"timm"`` (timm 1.0's ``SwinTransformerBlock``, the default): per side, a map side ``r <= w``
  clips the window to ``r`` and turns the shift off on that side; otherwise the window is ``w``
  and the shift ``s``. The map is rolled by ``-s`` *then* zero-padded (bottom / right) to window
  multiples. timm decides this once from its ``img_size``; here it is decided from the map in
  hand, i.e. timm built with ``img_size`` equal to the input size.
- ``"torchvision"`` (torchvision's ``shifted_window_attention``): the window is always ``w``; the
  map is zero-padded to window multiples *then* rolled; the shift is off on a side whose padded
  length is one window (i.e. ``r <= w``, the same condition).

Padding tokens are attended to (neither peer masks them); the shift mask separates the regions
the roll brought together, with -100 on the logits as both peers do.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "WINDOW_RULES",
    "relative_position_index",
    "shift_mask",
    "window_and_shift",
    "window_partition",
    "window_reverse",
]

WINDOW_RULES = ("timm", "torchvision")
MASK_VALUE = -100.0  # both peers' value for cross-region logits


def window_and_shift(
    size: tuple[int, int], window: int, shift: int, rule: str
) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((wh, ww), (sh, sw))`` used on a map of ``size = (H, W)`` by a block configured with a
    square ``window`` and ``shift`` (0 or ``window // 2``), under ``rule`` (see the module doc)."""
    if rule not in WINDOW_RULES:
        raise ValueError(f"window rule must be one of {WINDOW_RULES}, got {rule!r}")
    wins = tuple(r if (rule == "timm" and r <= window) else window for r in size)
    shifts = tuple(0 if r <= window else shift for r in size)
    return (wins[0], wins[1]), (shifts[0], shifts[1])


def window_partition(x: Tensor, wh: int, ww: int) -> Tensor:
    """``[B, Hp, Wp, C] -> [B * nW, wh * ww, C]``, windows in row-major order per image."""
    B, Hp, Wp, C = x.shape
    x = x.view(B, Hp // wh, wh, Wp // ww, ww, C)  # (B, Hp/wh, wh, Wp/ww, ww, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, C)  # (B*nW, L, C)


def window_reverse(windows: Tensor, B: int, Hp: int, Wp: int, wh: int, ww: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``[B * nW, wh * ww, C] -> [B, Hp, Wp, C]``."""
    C = windows.shape[-1]
    x = windows.view(B, Hp // wh, Wp // ww, wh, ww, C)  # (B, Hp/wh, Wp/ww, wh, ww, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)


def relative_position_index(window: int) -> Tensor:
    """``int64[w*w, w*w]``: for query token ``i`` and key token ``j`` of a ``w x w`` window (row-major),
    the row of the ``[(2w-1)^2, heads]`` bias table holding their offset
    ``(dy + w - 1) * (2w - 1) + (dx + w - 1)``, ``dy = y_i - y_j``, ``dx = x_i - x_j`` (timm's and
    torchvision's layout)."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()  # (w*w,)
    dy = ys[:, None] - ys[None, :] + window - 1  # (w*w, w*w) in [0, 2w-2]
    dx = xs[:, None] - xs[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def _regions(length: int, win: int, shift: int, device: torch.device) -> Tensor:
    """Region label (0, 1, 2) of each row (or column) of a rolled, padded map side: the peers'
    slices ``[0, -win)``, ``[-win, -shift)``, ``[-shift, end)``; one region when there is no shift."""
    pos = torch.arange(length, device=device)
    if shift == 0:
        return torch.zeros_like(pos)
    return (pos >= length - win).long() + (pos >= length - shift).long()


def shift_mask(
    Hp: int, Wp: int, wh: int, ww: int, sh: int, sw: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """``[nW, L, L]`` additive mask of a rolled ``Hp x Wp`` map (window multiples): 0 between two
    tokens of one region, -100 between tokens the cyclic roll brought together from different
    regions."""
    region = _regions(Hp, wh, sh, device)[:, None] * 3 + _regions(Wp, ww, sw, device)[None, :]  # (Hp, Wp)
    region = window_partition(region[None, :, :, None], wh, ww)[..., 0]  # (nW, L)
    different = region[:, :, None] != region[:, None, :]  # (nW, L, L)
    zero = torch.zeros((), device=device, dtype=dtype)
    return torch.where(different, torch.full_like(zero, MASK_VALUE), zero)

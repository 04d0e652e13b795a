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

Gathered windows (eager only): pad + roll + partition is one permutation of the padded map's
tokens, and reverse + roll back + crop its inverse, so :func:`window_order` gives both as index
vectors and a block moves its tokens with one ``index_select`` each way: the same values as the
peers' ``roll`` / ``view`` / ``permute`` copies (exactly: only data moves), with one copy instead of
up to three (``torch.roll`` over two dims is two concatenations). :func:`merge_order` does the same
for patch merging's 2x2 gather. The indices are built once per map geometry (a small cache); under
``torch.export`` / ``torch.compile`` / tracing the blocks keep the roll / view path (no constant
index of one size baked into a graph that may take other sizes).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "WINDOW_RULES",
    "cached_shift_mask",
    "eager",
    "gathered_windows",
    "from_windows",
    "merge_order",
    "relative_position_index",
    "shift_mask",
    "to_windows",
    "window_and_shift",
    "window_order",
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


_GATHERED = [True]  # switched by gathered_windows


@contextlib.contextmanager
def gathered_windows(enabled: bool) -> Iterator[None]:
    """Inside the block, the gathered-window paths and the bias cache are on (``True``, the default)
    or off (``False``: the roll / view copies that traced and exported graphs take, the peers'
    computation); for benchmarks and tests. Not thread-safe (a module-level switch)."""
    before = _GATHERED[0]
    _GATHERED[0] = enabled
    try:
        yield
    finally:
        _GATHERED[0] = before


def eager() -> bool:
    """True outside ``torch.export``, ``torch.compile`` and tracing, unless switched off by
    :func:`gathered_windows`: the gathered-window paths and the caches are used only then."""
    if not _GATHERED[0]:
        return False
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting())


@functools.lru_cache(maxsize=64)
def _window_order(
    H: int, W: int, wh: int, ww: int, sh: int, sw: int, rule: str, device: torch.device
) -> tuple[Tensor, Tensor]:
    Hp, Wp = H - H % -wh, W - W % -ww  # window multiples (ceil)
    ys, xs = torch.arange(Hp), torch.arange(Wp)
    if rule == "torchvision":  # pad, then roll the padded map
        src_y, src_x = (ys + sh) % Hp, (xs + sw) % Wp
    else:  # timm: roll the map, then pad (padding positions stay where they are)
        src_y = torch.where(ys < H, (ys + sh) % H, ys)
        src_x = torch.where(xs < W, (xs + sw) % W, xs)
    source = src_y[:, None] * Wp + src_x[None, :]  # (Hp, Wp): padded-map token shown at each place
    gather = window_partition(source[None, :, :, None], wh, ww).reshape(-1)  # (nW * L,)
    inverse = torch.empty_like(gather)
    inverse[gather] = torch.arange(gather.numel())  # (Hp * Wp,): window-order place of each token
    scatter = inverse.view(Hp, Wp)[:H, :W].reshape(-1)  # (H * W,): the map's tokens, padding dropped
    return gather.to(device), scatter.to(device)


def window_order(
    size: tuple[int, int], window: tuple[int, int], shift: tuple[int, int], rule: str, device: torch.device
) -> tuple[Tensor, Tensor]:
    """``(gather int64[nW * L], scatter int64[H * W])`` for a ``size = (H, W)`` map, windows
    ``(wh, ww)`` and shifts ``(sh, sw)`` under ``rule`` (see the module doc), cached per geometry:

    - ``x_padded.view(B, Hp * Wp, C).index_select(1, gather).view(B * nW, L, C)`` equals
      ``window_partition(roll(pad(x)))`` (``"timm"``: ``pad(roll(x))``), with ``x_padded`` the map
      zero-padded at the bottom / right to window multiples;
    - ``out.view(B, nW * L, C).index_select(1, scatter).view(B, H, W, C)`` equals the reverse, roll
      back and crop of the windows' outputs ``out [B * nW, L, C]``.
    """
    if rule not in WINDOW_RULES:
        raise ValueError(f"window rule must be one of {WINDOW_RULES}, got {rule!r}")
    return _window_order(*size, *window, *shift, rule, device)


@functools.lru_cache(maxsize=16)
def merge_order(H2: int, W2: int, device: torch.device) -> Tensor:
    """``int64[H2 * W2 * 4]``: patch merging's gather over an even ``2H2 x 2W2`` map's tokens, in the
    order (row, column offset) (0, 0), (1, 0), (0, 1), (1, 1) per output token (row-major):
    ``x.view(B, 4 * H2 * W2, C).index_select(1, order).view(B, H2, W2, 4 * C)``."""
    i, j = torch.arange(H2)[:, None, None], torch.arange(W2)[None, :, None]  # (H2, 1, 1), (1, W2, 1)
    k = torch.arange(4)[None, None, :]  # (1, 1, 4)
    rows, cols = 2 * i + k % 2, 2 * j + k // 2  # (H2, W2, 4) source row, column
    return (rows * (2 * W2) + cols).reshape(-1).to(device)


@functools.lru_cache(maxsize=32)
def cached_shift_mask(
    Hp: int, Wp: int, wh: int, ww: int, sh: int, sw: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """:func:`shift_mask`, built once per geometry (eager callers only; do not modify it in place)."""
    return shift_mask(Hp, Wp, wh, ww, sh, sw, device, dtype)


def to_windows(x: Tensor, window: tuple[int, int], shift: tuple[int, int], rule: str) -> Tensor:
    """``[B, H, W, C] -> [B * nW, L, C]``: zero-pad (bottom / right) to window multiples, roll by
    ``-shift`` (in ``rule``'s order) and partition; eager by one gather (:func:`window_order`)."""
    B, H, W, C = x.shape
    (wh, ww), (sh, sw) = window, shift
    pad_h, pad_w = -H % wh, -W % ww
    padded = bool(pad_h or pad_w)  # (no copy when the map is already window multiples)
    if eager():
        gather, _ = window_order((H, W), window, shift, rule, x.device)
        if padded:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, C)
        x = x.reshape(B, -1, C).index_select(1, gather)  # (B, nW*L, C)
        return x.view(-1, wh * ww, C)  # (B*nW, L, C)
    pad_first = rule == "torchvision"
    if pad_first and padded:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, C)
    if sh or sw:
        x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
    if not pad_first and padded:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, C)
    return window_partition(x, wh, ww)  # (B*nW, L, C)


def from_windows(
    out: Tensor, B: int, size: tuple[int, int], window: tuple[int, int], shift: tuple[int, int], rule: str
) -> Tensor:
    """Inverse of :func:`to_windows`: ``out [B * nW, L, C] -> [B, H, W, C]`` for ``B`` maps of
    ``size = (H, W)`` (reverse, roll back by ``shift``, crop the padding)."""
    H, W = size
    (wh, ww), (sh, sw) = window, shift
    C = out.shape[-1]
    Hp, Wp = H - H % -wh, W - W % -ww
    if eager():
        _, scatter = window_order(size, window, shift, rule, out.device)
        return out.view(B, -1, C).index_select(1, scatter).view(B, H, W, C)  # (B, nW*L, C) -> (B, H, W, C)
    x = window_reverse(out, B, Hp, Wp, wh, ww)  # (B, Hp, Wp, C)
    pad_first = rule == "torchvision"
    if not pad_first:
        x = x[:, :H, :W]
    if sh or sw:
        x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
    return x[:, :H, :W] if pad_first else x

"""Swin Transformer (Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer using
Shifted Windows"), v1, as a backbone and as the body of a classifier.

A ``p x p`` patch embedding (+ LayerNorm), then four stages of pre-norm blocks whose self-attention
runs inside ``w x w`` windows with a learned relative position bias; every other block rolls the
map by ``-w/2`` first (cyclic shift), with a mask keeping apart the regions the roll joins. Between
stages, patch merging concatenates 2x2 neighbours (4C), normalises and projects them to 2C.

Names and layout are timm 1.0's ``SwinTransformer`` (so its state dicts load by identity rules):
``patch_embed.{proj,norm}``, ``layers.i.downsample.{norm,reduction}`` (stages 1-3 merge at their
start), ``layers.i.blocks.j.{norm1, attn.{qkv, proj, relative_position_bias_table}, norm2,
mlp.{fc1, fc2}}``, ``norm``; the relative position index is a non-persistent buffer and the shift
masks are built per forward for the map in hand.

Any input size: the image is zero-padded to a multiple of the patch, each map to window multiples
inside the attention and to even sides before merging (timm's numbers, which has no padding for the
patch: it refuses such sizes). Window clipping and shift rules: see :mod:`.swin_window`.

Backbone protocol: ``forward_features`` returns the four stage outputs as NCHW maps ``c2..c5``
(strides p, 2p, 4p, 8p = 4..32 for p = 4; channels C, 2C, 4C, 8C) *without* per-stage norms (as
timm's ``features_only``: no parameters beyond the classifier's). :meth:`SwinTransformer.embed` is
the classifier's view: the final-normed last stage averaged over positions.

Freezing (``trainable_layers``, the CNN backbones' rule: the last T units train): the units are the
patch embedding, then each stage (with the merging at its start), the final ``norm`` with the last
stage: 5 for four stages, like a ResNet's stem + layer1..4 (:meth:`SwinTransformer.layer_units`).

Shape shorthand: B images, H x W a map, C channels of a stage, L tokens of a window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.drop_path import StochasticDepth
from ..layers.transformer import Attention, Mlp, PatchEmbed
from ._trainable import set_trainable_units
from .registry import register_backbone
from .swin_window import (
    WINDOW_RULES,
    cached_shift_mask,
    eager,
    from_windows,
    merge_order,
    relative_position_index,
    shift_mask,
    to_windows,
    window_and_shift,
)

__all__ = ["SwinConfig", "SwinTransformer", "swin_base", "swin_narrow", "swin_small", "swin_tiny"]


@dataclass
class SwinConfig:
    patch_size: int = 4
    embed_dim: int = 96  # C: channels of stage 1; stage i has C * 2**i
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int | tuple[int, ...] = 7  # one square window for all stages, or one per stage
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.1  # rises linearly from 0 over all blocks (timm's default 0.1)
    window_rule: str = "timm"  # "timm" | "torchvision": see swin_window


class WindowAttention(Attention):
    """:class:`~structpred.layers.transformer.Attention` plus the relative position bias table
    ``[(2w-1)^2, heads]`` of a ``w x w`` window (timm's ``relative_position_bias_table``)."""

    def __init__(self, dim: int, num_heads: int, window: int, qkv_bias: bool = True) -> None:
        super().__init__(dim, num_heads, qkv_bias)
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.relative_position_index: Tensor
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def position_bias(self, wh: int, ww: int) -> Tensor:
        """``[1, heads, L, L]`` bias of a ``wh x ww`` window (``<= w`` a side: a clipped window uses
        the table rows of the offsets it can hold)."""
        w = self.window
        index = self.relative_position_index
        if (wh, ww) != (w, w):
            index = index.view(w, w, w, w)[:wh, :ww, :wh, :ww].reshape(wh * ww, wh * ww)
        bias = self.relative_position_bias_table[index.reshape(-1)]  # (L*L, heads)
        return bias.view(wh * ww, wh * ww, -1).permute(2, 0, 1).unsqueeze(0)  # (1, heads, L, L)

    def windows(self, x: Tensor, bias: Tensor) -> Tensor:
        """Attention inside windows: ``x [B * nW, L, D]`` (image-major), ``bias [1 or nW, heads, L, L]``
        (the same for every image; or already repeated, ``[B * nW, heads, L, L]``) -> ``[B * nW, L, D]``.

        Without gradients, the fused kernel of :class:`Attention` (SDPA) with the bias repeated per
        image. With gradients, SDPA on CPU falls back to its unfused path anyway and would also
        materialise the repeated bias and its gradient: the logits are then formed here, the bias
        broadcast over images, which is timm's (and torchvision's) computation.
        """
        n, length, dim = x.shape
        nw = bias.shape[0]
        if not (torch.is_grad_enabled() and (x.requires_grad or bias.requires_grad)):
            return super().forward(x, bias.repeat(n // nw, 1, 1, 1) if n > nw > 1 else bias)
        h = self.num_heads
        q, k, v = (
            self.qkv(x).reshape(n, length, 3, h, dim // h).permute(2, 0, 3, 1, 4).unbind(0)
        )  # (N, h, L, d)
        logits = (q * (dim // h) ** -0.5) @ k.transpose(-2, -1)  # (N, h, L, L)
        logits = (logits.view(n // nw, nw, h, length, length) + bias).view(n, h, length, length)
        out = logits.softmax(dim=-1) @ v  # (N, h, L, d)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))  # (N, L, h, d) -> (N, L, D)


class SwinBlock(nn.Module):
    """Pre-norm block: ``x + drop_path(W-MSA(norm1(x)))``, then ``x + drop_path(mlp(norm2(x)))``
    on ``[B, H, W, C]``; ``shift`` 0 (W-MSA) or ``window // 2`` (SW-MSA)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        shift: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        window_rule: str = "timm",
    ) -> None:
        super().__init__()
        if window_rule not in WINDOW_RULES:
            raise ValueError(f"window_rule must be one of {WINDOW_RULES}, got {window_rule!r}")
        self.window, self.shift, self.window_rule = window, shift, window_rule
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window, qkv_bias)
        self.drop_path1 = StochasticDepth(drop_path, "row")
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = StochasticDepth(drop_path, "row")
        self._bias_cache: tuple[tuple[object, ...], Tensor] | None = None  # see attention_bias

    def attention_bias(
        self, size: tuple[int, int], window: tuple[int, int], shift: tuple[int, int], n: int, x: Tensor
    ) -> Tensor:
        """Relative position bias (+ shift mask) of a padded ``size = (Hp, Wp)`` map in ``n`` windows:
        ``[1 or nW, heads, L, L]``, or, cached (eager, no gradient into the table), ``[n, heads, L, L]``
        repeated for the fused kernel's batch. The cache holds one entry, keyed by the geometry,
        ``x``'s dtype / device and the table's identity and version (any in-place update, e.g. an
        optimizer step or ``load_state_dict``, invalidates it)."""
        (wh, ww), (sh, sw) = window, shift
        table = self.attn.relative_position_bias_table
        cache = eager() and not (torch.is_grad_enabled() and table.requires_grad)
        key: tuple[object, ...] = ()  # (data_ptr and _version are eager-only: none under export)
        if cache:
            key = (size, window, shift, n, x.dtype, x.device, id(table), table.data_ptr(), table._version)
            if self._bias_cache and self._bias_cache[0] == key:
                return self._bias_cache[1]
        bias = self.attn.position_bias(wh, ww)  # (1, heads, L, L)
        if sh or sw:
            make_mask = cached_shift_mask if eager() else shift_mask
            mask = make_mask(*size, wh, ww, sh, sw, x.device, x.dtype)  # (nW, L, L)
            bias = bias + mask.unsqueeze(1)  # (nW, heads, L, L)
        if cache:
            nw = bias.shape[0]
            bias = bias.repeat(n // nw, 1, 1, 1) if n > nw > 1 else bias  # (n, heads, L, L), image-major
            self._bias_cache = (key, bias)
        return bias

    def window_attention(self, x: Tensor) -> Tensor:
        """(Shifted) window attention over ``[B, H, W, C]`` (see :mod:`.swin_window` for the rules)."""
        B, H, W, C = x.shape
        (wh, ww), (sh, sw) = window_and_shift((H, W), self.window, self.shift, self.window_rule)
        Hp, Wp = H - H % -wh, W - W % -ww  # padded to window multiples
        n = B * (Hp // wh) * (Wp // ww)  # windows in the batch
        bias = self.attention_bias((Hp, Wp), (wh, ww), (sh, sw), n, x)  # (1, nW or n, heads, L, L)
        windows = to_windows(x, (wh, ww), (sh, sw), self.window_rule)  # (B*nW, L, C)
        return from_windows(self.attn.windows(windows, bias), B, (H, W), (wh, ww), (sh, sw), self.window_rule)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.window_attention(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """``[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), out]``: zero-pad to even sides, concatenate each
    2x2 neighbourhood in the order (0,0), (1,0), (0,1), (1,1) (row, column offsets; timm 1.0's and
    torchvision's order), LayerNorm ``norm`` over 4C, ``reduction`` Linear 4C -> out, no bias."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        H2, W2 = (H + 1) // 2, (W + 1) // 2
        if eager():  # one gather (the same values as the view / permute copy below)
            if H % 2 or W % 2:
                x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))  # (B, 2*H2, 2*W2, C), even sides
            x = x.reshape(B, 4 * H2 * W2, C).index_select(1, merge_order(H2, W2, x.device))  # (B, H2*W2*4, C)
            return self.reduction(self.norm(x.view(B, H2, W2, 4 * C)))  # (B, H/2, W/2, out)
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))  # (B, H', W', C), even sides
        x = x.reshape(B, H2, 2, W2, 2, C).permute(0, 1, 3, 4, 2, 5)  # (B, H/2, W/2, dx, dy, C)
        return self.reduction(self.norm(x.flatten(3)))  # (B, H/2, W/2, 4C) -> (B, H/2, W/2, out)


class SwinStage(nn.Module):
    """``downsample`` (patch merging, or identity for the first stage) then ``blocks``."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        window: int,
        drop_paths: Sequence[float],
        downsample: bool,
        config: SwinConfig,
    ) -> None:
        super().__init__()
        self.downsample: nn.Module = PatchMerging(in_dim, dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(
            *[
                SwinBlock(
                    dim,
                    num_heads,
                    window,
                    0 if j % 2 == 0 else window // 2,
                    config.mlp_ratio,
                    config.qkv_bias,
                    drop_paths[j],
                    config.window_rule,
                )
                for j in range(depth)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


def _stage_windows(window: int | Sequence[int], stages: int) -> tuple[int, ...]:
    windows = (window,) * stages if isinstance(window, int) else tuple(int(w) for w in window)
    if len(windows) != stages or any(w < 1 for w in windows):
        raise ValueError(f"window_size must be >= 1, one or one per stage ({stages}), got {window!r}")
    return windows


class SwinTransformer(nn.Module):
    """The Swin body (timm's names): ``patch_embed``, ``layers`` (stages), ``norm``.

    ``forward_features(x [B, 3, H, W]) -> {"c2".."c5": [B, C*2**i, ceil(H / (p*2**i)), ...]}`` (one
    key per stage); ``embed(x) -> [B, embed_dim]``; ``out_channels``, ``strides``, ``embed_dim``.
    """

    def __init__(self, config: SwinConfig | None = None, trainable_layers: int | None = None) -> None:
        super().__init__()
        self.config = c = config or SwinConfig()
        n = len(c.depths)
        if n < 1 or len(c.num_heads) != n or any(d < 1 for d in c.depths):
            raise ValueError(
                f"Swin: depths {c.depths} and num_heads {c.num_heads} must be as many, each >= 1"
            )
        if c.window_rule not in WINDOW_RULES:
            raise ValueError(f"Swin: window_rule must be one of {WINDOW_RULES}, got {c.window_rule!r}")
        if not 0.0 <= c.drop_path_rate < 1.0:
            raise ValueError(f"Swin: drop_path_rate must be in [0, 1), got {c.drop_path_rate}")
        windows = _stage_windows(c.window_size, n)
        dims = [c.embed_dim * 2**i for i in range(n)]
        total = sum(c.depths)  # drop path rises linearly from 0 to drop_path_rate over all blocks
        rates = [c.drop_path_rate * k / max(total - 1, 1) for k in range(total)]
        self.patch_embed = PatchEmbed(c.patch_size, 3, c.embed_dim, norm=True, pad=True)
        stages, start = [], 0
        for i in range(n):
            stages.append(
                SwinStage(
                    dims[max(i - 1, 0)],
                    dims[i],
                    c.depths[i],
                    c.num_heads[i],
                    windows[i],
                    rates[start : start + c.depths[i]],
                    i > 0,
                    c,
                )
            )
            start += c.depths[i]
        self.layers = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1])
        self.embed_dim = dims[-1]
        names = [f"c{i + 2}" for i in range(n)]
        self.out_channels = dict(zip(names, dims, strict=True))
        self.strides = {name: c.patch_size * 2**i for i, name in enumerate(names)}
        self.apply(_init_weights)
        if trainable_layers is not None:
            self.set_trainable_layers(trainable_layers)

    def layer_units(self) -> list[list[str]]:
        """The freezing units, first to last: ``patch_embed``, each stage (``norm`` with the last)."""
        return [["patch_embed"], *([f"layers.{i}"] for i in range(len(self.layers) - 1)),
                [f"layers.{len(self.layers) - 1}", "norm"]]  # fmt: skip

    def set_trainable_layers(self, trainable_layers: int) -> None:
        """The last ``trainable_layers`` of the ``stages + 1`` units train, the earlier are frozen."""
        set_trainable_units(self, self.layer_units(), trainable_layers, "SwinTransformer")

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"Swin: images must be [B, 3, H, W], got {tuple(x.shape)}")

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Stage outputs as NCHW maps, finest first (no per-stage norms)."""
        self._check(x)
        x = self.patch_embed(x)  # (B, H/p, W/p, C)
        features = {}
        for name, stage in zip(self.out_channels, self.layers, strict=True):
            x = stage(x)  # (B, h, w, C_i)
            features[name] = x.permute(0, 3, 1, 2)  # (B, C_i, h, w)
        return features

    def embed(self, x: Tensor) -> Tensor:
        """Normalised ``[B, 3, H, W]`` -> ``[B, embed_dim]``: last stage, ``norm``, mean over positions."""
        self._check(x)
        x = self.norm(self.layers(self.patch_embed(x)))  # (B, h, w, D)
        return x.mean(dim=(1, 2))  # (B, D)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.forward_features(x)


def _init_weights(module: nn.Module) -> None:
    """timm's Swin init: truncated normal (std 0.02) linear weights, zero biases; LayerNorm 1 / 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ------------------------------------------------------------------------------------ builders

_SIZES: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    "tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "small": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
    # ~0.26 M parameters for 32 px inputs (digits, object crops): patch 4 keeps the protocol's
    # strides 4..32; window 4 gives the 8x8 first map 2x2 windows (so shifting matters there);
    # MLP ratio 2 and one last block keep it near digits_cnn's size.
    "narrow": (16, (2, 2, 2, 1), (1, 2, 4, 8)),
}


def swin_config(size: str, **overrides: object) -> SwinConfig:
    """The :class:`SwinConfig` of ``size`` (tiny / small / base / narrow) with keyword overrides."""
    if size not in _SIZES:
        raise ValueError(f"unknown Swin size {size!r}; known: {', '.join(_SIZES)}")
    dim, depths, heads = _SIZES[size]
    base: dict[str, object] = dict(embed_dim=dim, depths=depths, num_heads=heads)
    if size == "narrow":
        base.update(window_size=4, mlp_ratio=2.0, drop_path_rate=0.0)
    base.update({k: v for k, v in overrides.items() if v is not None})
    depths_given = base["depths"]
    assert isinstance(depths_given, (tuple, list)), depths_given
    base["depths"] = tuple(int(d) for d in depths_given)
    return SwinConfig(**base)  # type: ignore[arg-type]


def _build(
    size: str,
    output_stride: int | None,
    trainable_layers: int | None,
    depths: Sequence[int] | None,
    drop_path_rate: float | None,
    window_size: int | None,
) -> SwinTransformer:
    if output_stride not in (None, 32):
        raise ValueError(
            f"swin_{size}: output_stride must be 32 (Swin merges patches, it cannot dilate), "
            f"got {output_stride}"
        )
    config = swin_config(size, depths=depths, drop_path_rate=drop_path_rate, window_size=window_size)
    return SwinTransformer(config, trainable_layers)


@register_backbone("swin_tiny")
def swin_tiny(
    *,
    depths: Sequence[int] | None = None,
    drop_path_rate: float | None = None,
    window_size: int | None = None,
    output_stride: int | None = None,
    trainable_layers: int | None = None,
) -> SwinTransformer:
    """Swin-T: C 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window 7, patch 4.
    ``trainable_layers`` 0..5: the last units that train (module doc); ``None``: all."""
    return _build("tiny", output_stride, trainable_layers, depths, drop_path_rate, window_size)


@register_backbone("swin_small")
def swin_small(
    *,
    depths: Sequence[int] | None = None,
    drop_path_rate: float | None = None,
    window_size: int | None = None,
    output_stride: int | None = None,
    trainable_layers: int | None = None,
) -> SwinTransformer:
    """Swin-S: C 96, depths (2, 2, 18, 2), heads (3, 6, 12, 24), window 7, patch 4."""
    return _build("small", output_stride, trainable_layers, depths, drop_path_rate, window_size)


@register_backbone("swin_base")
def swin_base(
    *,
    depths: Sequence[int] | None = None,
    drop_path_rate: float | None = None,
    window_size: int | None = None,
    output_stride: int | None = None,
    trainable_layers: int | None = None,
) -> SwinTransformer:
    """Swin-B: C 128, depths (2, 2, 18, 2), heads (4, 8, 16, 32), window 7, patch 4."""
    return _build("base", output_stride, trainable_layers, depths, drop_path_rate, window_size)


@register_backbone("swin_narrow")
def swin_narrow(
    *,
    depths: Sequence[int] | None = None,
    drop_path_rate: float | None = None,
    window_size: int | None = None,
    output_stride: int | None = None,
    trainable_layers: int | None = None,
) -> SwinTransformer:
    """Narrow Swin for this CPU: C 16, depths (2, 2, 2, 1), heads (1, 2, 4, 8), window 4, patch 4,
    MLP ratio 2, no drop path (channels 16, 32, 64, 128; strides 4..32)."""
    return _build("narrow", output_stride, trainable_layers, depths, drop_path_rate, window_size)

"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words") and, for dense
tasks, the ViTDet simple feature pyramid over it (Li et al. 2022, "Exploring Plain Vision
Transformer Backbones for Object Detection").

:class:`VisionTransformer`: ``p x p`` patches -> D channels (``patch_embed``), a learned class
token ``cls_token [1, 1, D]`` put first, learned positions ``pos_embed [1, 1 + N, D]`` added
(N = the native patch grid, ``img_size / p`` squared), ``depth`` pre-norm blocks (``x + attn(norm1(x))``,
then ``x + mlp(norm2(x))``, each branch through drop path), a final LayerNorm ``norm``.
:meth:`VisionTransformer.embed` is the normed class token, what the classifier head reads.
Parameter names and LayerNorm eps (1e-6) are timm's, so a timm ``VisionTransformer`` state dict maps
by near-identity rules (:mod:`structpred.models.weights.timm_vit`).

Convention (other input sizes): the position table of the native grid is resampled to the input's
grid as timm does with ``dynamic_img_size=True`` (bicubic, antialiased, over the patch grid; the
class position kept as is); at the native grid it is used unchanged. An image whose sides are not
multiples of ``p`` is zero-padded at the bottom and right (timm's ``dynamic_img_pad``).

:class:`SimpleFeaturePyramid`: the registered backbones ``vit_tiny`` / ``vit_small`` / ``vit_base`` /
``vit_narrow``. From the stride-``p`` map of patch tokens it builds ``c2`` .. ``c5`` at strides 4, 8,
16, 32: each factor-2 upsampling is a 2x2 stride-2 transposed conv halving the channels (LayerNorm
and GELU between two of them), each factor-2 downsampling a 2x2 max pool. For p = 16 this is
ViTDet's: stride 4 = two transposed convs (D/4 channels), 8 = one (D/2), 16 = the map (D),
32 = max pool (D). ViTDet's per-level 1x1 + 3x3 convs are left to the FPN that detectors put on top.
The pyramid's parameters live outside :class:`VisionTransformer` (``vit.*`` vs ``levels.*``), so a
classifier's state dict holds timm's names and nothing more.

Freezing (``trainable_layers``, the rule of the CNN backbones: the last T units train): the units
are the embedding (``patch_embed``, ``cls_token``, ``pos_embed``), then each block, the final ``norm``
with the last block; ``depth + 1`` in all (:meth:`VisionTransformer.layer_units`). The pyramid's
levels are the neck: they always train.

Loading weights of another input size: :func:`resample_pos_embed` (timm's rule, or torchvision's with
``align_corners=True``) is what the weight loaders apply to a file's position table.

Shape shorthand: B images, H x W pixels, p patch side, h x w = ceil(H / p) x ceil(W / p) patch grid,
L = 1 + h w tokens, D width.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.drop_path import StochasticDepth
from ..layers.transformer import Attention, Mlp, PatchEmbed
from ._common import check_images
from ._trainable import set_trainable_units
from .registry import register_backbone

__all__ = ["Block", "SimpleFeaturePyramid", "VisionTransformer", "resample_pos_embed"]

LN_EPS = 1e-6  # timm's and torchvision's ViT LayerNorm eps


def resample_pos_embed(
    pos_embed: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], *, align_corners: bool = False
) -> Tensor:
    """``[1, 1 + h0 w0, D]`` -> ``[1, 1 + h w, D]``: the patch positions resampled bicubically from
    the ``h0 x w0`` grid to ``h x w``; the class position (first) is kept. Unchanged when the grids
    are equal. ``align_corners=False``: antialiased, as timm's ``resample_abs_pos_embed``;
    ``True``: as torchvision's ``interpolate_embeddings`` (corner cells aligned, no antialiasing)."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    _, length, dim = pos_embed.shape
    if length != 1 + old_grid[0] * old_grid[1]:
        raise ValueError(f"pos_embed has {length} positions, not 1 + {old_grid[0]} x {old_grid[1]}")
    cls_pos, grid = pos_embed[:, :1], pos_embed[:, 1:]
    grid = grid.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)  # (1, D, h0, w0)
    if align_corners:
        grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=True)  # (1, D, h, w)
    else:
        grid = F.interpolate(grid, size=new_grid, mode="bicubic", antialias=True)  # (1, D, h, w)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)  # (1, h w, D)
    return torch.cat([cls_pos, grid.to(pos_embed.dtype)], dim=1)  # (1, 1 + h w, D)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + drop_path(attn(norm1(x)))``, then
    ``x + drop_path(mlp(norm2(x)))``; ``[B, L, D] -> [B, L, D]``."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """ViT with a class token (see the module doc).

    Args:
        img_size: native input side S (the position table covers ``(S / p)^2`` patches).
        patch_size: p.
        embed_dim: D. depth: blocks. num_heads: attention heads (D divisible by them).
        mlp_ratio: MLP hidden width / D. qkv_bias: bias in the q/k/v projection.
        drop_path_rate: stochastic depth of the last block; block i gets ``rate * i / (depth - 1)``
            (linear, as timm).
        in_channels: image channels.
        trainable_layers: ``0..depth + 1``, how many of the last units train (see the module doc);
            ``None``: all of them.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        in_channels: int = 3,
        trainable_layers: int | None = None,
    ) -> None:
        super().__init__()
        if img_size < 1 or patch_size < 1 or img_size % patch_size:
            raise ValueError(
                f"VisionTransformer: img_size {img_size} must be a positive multiple of "
                f"patch_size {patch_size}"
            )
        if depth < 1:
            raise ValueError(f"VisionTransformer: depth must be >= 1, got {depth}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"VisionTransformer: drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.patch_size, self.in_channels, self.embed_dim = patch_size, in_channels, embed_dim
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.patch_embed = PatchEmbed(patch_size, in_channels, embed_dim, pad=True)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size[0] * self.grid_size[1], embed_dim))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(
            *(Block(embed_dim, num_heads, mlp_ratio, qkv_bias, rate) for rate in rates)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self._init_weights()
        if trainable_layers is not None:
            self.set_trainable_layers(trainable_layers)

    def layer_units(self) -> list[list[str]]:
        """The freezing units, first to last: the embedding, each block (``norm`` with the last)."""
        units = [["patch_embed", "cls_token", "pos_embed"]]
        units += [[f"blocks.{i}"] for i in range(len(self.blocks))]
        units[-1].append("norm")
        return units

    def set_trainable_layers(self, trainable_layers: int) -> None:
        """The last ``trainable_layers`` of the ``depth + 1`` units train, the earlier are frozen."""
        set_trainable_units(self, self.layer_units(), trainable_layers, "VisionTransformer")

    def _init_weights(self) -> None:
        # timm's default: truncated normal (std 0.02) positions and linear weights, zero biases,
        # a near-zero class token.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def tokens(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``[B, C, H, W]`` -> the final-normed tokens ``[B, 1 + h w, D]`` (class token first) and
        the patch grid ``(h, w)``."""
        check_images(x, self.in_channels, "VisionTransformer")
        patches = self.patch_embed(x)  # (B, h, w, D), padded to multiples of p
        batch, h, w, dim = patches.shape
        pos = resample_pos_embed(self.pos_embed, self.grid_size, (h, w))  # (1, 1 + h w, D)
        cls = self.cls_token.expand(batch, -1, -1)  # (B, 1, D)
        x = torch.cat([cls, patches.reshape(batch, h * w, dim)], dim=1) + pos  # (B, 1 + h w, D)
        return self.norm(self.blocks(x)), (h, w)

    def embed(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` (normalised) -> the normed class token ``[B, D]``."""
        return self.tokens(x)[0][:, 0]

    def feature_map(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> the normed patch tokens as a stride-p map ``[B, D, h, w]``."""
        tokens, (h, w) = self.tokens(x)
        batch, _, dim = tokens.shape
        return tokens[:, 1:].transpose(1, 2).reshape(batch, dim, h, w)  # (B, h w, D) -> (B, D, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`embed`."""
        return self.embed(x)


class _ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (ViTDet's ``LayerNorm`` between its deconvs)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, H, W) via (B, H, W, C)


def _level(dim: int, steps: int) -> tuple[nn.Module, int]:
    """``(module, out channels)`` taking a stride-p map to stride ``p * 2**steps`` (``steps < 0``:
    upsample by transposed convs halving channels; ``> 0``: max pool; ``0``: identity)."""
    if steps > 0:
        return nn.MaxPool2d(2**steps, 2**steps, ceil_mode=True), dim
    layers: list[nn.Module] = []
    for k in range(-steps):
        if k > 0:
            layers += [_ChannelLayerNorm(dim), nn.GELU()]
        layers.append(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2))
        dim //= 2
    return (nn.Sequential(*layers) if layers else nn.Identity()), dim


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid over a :class:`VisionTransformer` (see the module doc):
    ``forward_features(x) -> {"c2": stride 4, "c3": 8, "c4": 16, "c5": 32}`` NCHW maps, each
    ``ceil(H / s) x ceil(W / s)``."""

    STRIDES = {"c2": 4, "c3": 8, "c4": 16, "c5": 32}

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        p = vit.patch_size
        if p not in (4, 8, 16, 32):
            raise ValueError(f"SimpleFeaturePyramid: patch_size must be 4, 8, 16 or 32, got {p}")
        if vit.embed_dim % 4:
            raise ValueError(f"SimpleFeaturePyramid: embed_dim must be divisible by 4, got {vit.embed_dim}")
        self.vit = vit
        levels: dict[str, nn.Module] = {}
        self.out_channels: dict[str, int] = {}
        for name, stride in self.STRIDES.items():
            levels[name], self.out_channels[name] = _level(vit.embed_dim, int(math.log2(stride / p)))
        self.levels = nn.ModuleDict(levels)
        self.strides: dict[str, int] = dict(self.STRIDES)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """``[B, 3, H, W]`` -> ``{name: [B, C, ceil(H / s), ceil(W / s)]}``, finest first."""
        check_images(x, self.vit.in_channels, "SimpleFeaturePyramid.forward_features")
        height, width = x.shape[-2:]
        grid = self.vit.feature_map(x)  # (B, D, h, w) at stride p
        feats: dict[str, Tensor] = {}
        for name, stride in self.strides.items():
            f = self.levels[name](grid)  # (B, C, >= ceil(H / s), >= ceil(W / s)): padding included
            feats[name] = f[..., : -(-height // stride), : -(-width // stride)]  # (B, C, ceil(H/s), ..)
        return feats

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Same as ``forward_features``."""
        return self.forward_features(x)

    def layer_units(self) -> list[list[str]]:
        """The ViT's freezing units (names under ``vit.``); the levels are not among them."""
        return [[f"vit.{name}" for name in unit] for unit in self.vit.layer_units()]


# name -> (embed_dim, depth, num_heads, patch_size, img_size)
SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "tiny": (192, 12, 3, 16, 224),
    "small": (384, 12, 6, 16, 224),
    "base": (768, 12, 12, 16, 224),
    # ~200k parameters; the classifier vit_narrow uses patch 4 at 32 px (an 8 x 8 grid), the backbone
    # patch 16 (detection / segmentation images of 128-512 px: 8 x 8 to 32 x 32 tokens).
    "narrow": (64, 4, 4, 16, 128),
}


def vit(
    size: str,
    *,
    img_size: int | None = None,
    patch_size: int | None = None,
    depth: int | None = None,
    embed_dim: int | None = None,
    num_heads: int | None = None,
    drop_path_rate: float = 0.0,
    trainable_layers: int | None = None,
) -> VisionTransformer:
    """The ViT of a named size (``SIZES``) with optional overrides; ``trainable_layers`` as
    :class:`VisionTransformer`'s (``None``: everything trains)."""
    if size not in SIZES:
        raise ValueError(f"unknown ViT size {size!r}; known: {', '.join(SIZES)}")
    dim, blocks, heads, patch, side = SIZES[size]
    return VisionTransformer(
        img_size=side if img_size is None else img_size,
        patch_size=patch if patch_size is None else patch_size,
        embed_dim=dim if embed_dim is None else embed_dim,
        depth=blocks if depth is None else depth,
        num_heads=heads if num_heads is None else num_heads,
        drop_path_rate=drop_path_rate,
        trainable_layers=trainable_layers,
    )


def _pyramid(size: str, output_stride: int | None, **overrides: Any) -> SimpleFeaturePyramid:
    if output_stride not in (None, 32):
        raise ValueError(
            f"vit_{size}: output_stride must be 32 (a ViT has no stages to dilate), got {output_stride!r}"
        )
    return SimpleFeaturePyramid(vit(size, **overrides))


@register_backbone("vit_tiny")
def vit_tiny(*, output_stride: int | None = None, **overrides: Any) -> SimpleFeaturePyramid:
    """ViT-Ti/16 (D 192, 12 blocks, 3 heads) + simple feature pyramid: c2..c5 of 48, 96, 192, 192
    channels. Overrides: ``img_size``, ``patch_size``, ``depth``, ``embed_dim``, ``num_heads``,
    ``drop_path_rate``, ``trainable_layers`` (0..depth + 1: the last units that train)."""
    return _pyramid("tiny", output_stride, **overrides)


@register_backbone("vit_small")
def vit_small(*, output_stride: int | None = None, **overrides: Any) -> SimpleFeaturePyramid:
    """ViT-S/16 (D 384, 12 blocks, 6 heads) + simple feature pyramid (96, 192, 384, 384 channels)."""
    return _pyramid("small", output_stride, **overrides)


@register_backbone("vit_base")
def vit_base(*, output_stride: int | None = None, **overrides: Any) -> SimpleFeaturePyramid:
    """ViT-B/16 (D 768, 12 blocks, 12 heads) + simple feature pyramid (192, 384, 768, 768 channels)."""
    return _pyramid("base", output_stride, **overrides)


@register_backbone("vit_narrow")
def vit_narrow(*, output_stride: int | None = None, **overrides: Any) -> SimpleFeaturePyramid:
    """A narrow ViT (D 64, 4 blocks, 4 heads, patch 16, native 128 px) + simple feature pyramid
    (16, 32, 64, 64 channels), for CPU training on the shapes world."""
    return _pyramid("narrow", output_stride, **overrides)

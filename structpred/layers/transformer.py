"""Transformer pieces shared by the ViT and Swin backbones: patch embedding, multi-head
self-attention (with an optional additive bias: Swin's relative positions and shift mask) and the
two-layer MLP. Parameter names are timm's (``proj``, ``norm``, ``qkv``, ``fc1``, ``fc2``), which
torchvision's ViT / Swin tensors are renamed to.

Shape shorthand: N sequences (images, or windows of images), L tokens per sequence, D width,
h heads of width D / h; B images, H x W pixels, p the patch side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Attention", "Mlp", "PatchEmbed"]


class PatchEmbed(nn.Module):
    """Non-overlapping ``p x p`` patches -> D channels (a stride-p convolution ``proj``), then an
    optional LayerNorm ``norm``: ``[B, C, H, W] -> [B, H/p, W/p, D]`` (channels last).

    With ``pad=True`` an image whose sides are not multiples of ``p`` is zero-padded at the bottom
    and right (as timm's ``dynamic_img_pad`` and Swin's padding); otherwise it is a ``ValueError``.
    """

    def __init__(
        self, patch_size: int, in_channels: int, dim: int, norm: bool = False, pad: bool = False
    ) -> None:
        super().__init__()
        if patch_size < 1 or in_channels < 1 or dim < 1:
            raise ValueError(
                f"PatchEmbed: patch_size, in_channels and dim must be >= 1, got "
                f"{patch_size}, {in_channels}, {dim}"
            )
        self.patch_size, self.in_channels, self.pad = patch_size, in_channels, pad
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"PatchEmbed: expected [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        p = self.patch_size
        height, width = x.shape[-2:]
        if height % p or width % p:
            if not self.pad:
                raise ValueError(
                    f"PatchEmbed: image size {height} x {width} is not a multiple of the "
                    f"patch size {p} (build with pad=True to pad it)"
                )
            x = F.pad(x, (0, -width % p, 0, -height % p))  # right, bottom
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # (B, D, H/p, W/p) -> (B, H/p, W/p, D)


class Attention(nn.Module):
    """Multi-head self-attention: ``qkv`` (D -> 3D, q/k/v stacked in that order), scaled dot-product
    attention (``F.scaled_dot_product_attention``), ``proj`` (D -> D).

    ``forward(x [N, L, D], bias=None) -> [N, L, D]``; ``bias`` is added to the attention logits
    before the softmax, broadcastable to ``[N, h, L, L]``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"Attention: dim {dim} is not divisible into {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        n, length, dim = x.shape
        h = self.num_heads
        # unbind, not qkv[0], qkv[1], qkv[2]: its backward stacks the three gradients in one copy,
        # where three selects would each zero-fill and copy a [3, N, h, L, D/h] gradient.
        qkv = self.qkv(x).reshape(n, length, 3, h, dim // h).permute(2, 0, 3, 1, 4)  # (3, N, h, L, D/h)
        q, k, v = qkv.unbind(0)  # (N, h, L, D/h) each
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (N, h, L, D/h)
        out = out.transpose(1, 2)  # (N, L, h, D/h): contiguous from CPU's fused kernel, so reshape is a view
        if torch.compiler.is_exporting():
            # An explicit copy when exporting: torch.export records that reshape as a view, which the
            # ONNX decomposition of SDPA with a mask (row-major output) cannot honour at a dynamic
            # batch (Swin's windows). Eager keeps the free view (timm's computation).
            out = out.clone(memory_format=torch.contiguous_format)
        return self.proj(out.reshape(n, length, dim))  # (N, L, D)


class Mlp(nn.Module):
    """``fc1`` (D -> hidden), GELU (exact, as timm and torchvision), ``fc2`` (hidden -> D)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))

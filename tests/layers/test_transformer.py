"""Shared transformer layers: attention against the softmax formula (with and without a bias),
patch embedding's padding and errors, the MLP."""

from __future__ import annotations

import pytest
import torch

from structpred.layers.transformer import Attention, Mlp, PatchEmbed


def _naive_attention(layer: Attention, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    n, length, dim = x.shape
    h = layer.num_heads
    q, k, v = layer.qkv(x).split(dim, dim=-1)  # (N, L, D) each
    out = torch.zeros_like(x)
    for head in range(h):
        sl = slice(head * dim // h, (head + 1) * dim // h)
        logits = q[..., sl] @ k[..., sl].transpose(1, 2) / (dim // h) ** 0.5  # (N, L, L)
        if bias is not None:
            logits = logits + bias.expand(n, h, length, length)[:, head]
        out[..., sl] = logits.softmax(-1) @ v[..., sl]
    return layer.proj(out)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize(("n", "length", "dim", "heads"), [(1, 1, 8, 1), (2, 7, 12, 3), (3, 49, 32, 4)])
def test_attention_is_the_formula(with_bias: bool, n: int, length: int, dim: int, heads: int) -> None:
    layer = Attention(dim, heads).double()
    x = torch.randn(n, length, dim, dtype=torch.float64)
    bias = torch.randn(1, heads, length, length, dtype=torch.float64) if with_bias else None
    torch.testing.assert_close(layer(x, bias), _naive_attention(layer, x, bias), rtol=1e-10, atol=1e-10)


def test_attention_gradcheck() -> None:
    layer = Attention(6, 2).double()
    x = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: layer(a, b), (x, bias))


def test_attention_heads_must_divide() -> None:
    with pytest.raises(ValueError, match="not divisible into 5 heads"):
        Attention(12, 5)


def test_patch_embed_shapes_padding_and_errors() -> None:
    embed = PatchEmbed(4, 3, 8, norm=True)
    assert embed(torch.randn(2, 3, 16, 12)).shape == (2, 4, 3, 8)
    with pytest.raises(ValueError, match="17 x 12 is not a multiple of the patch size 4"):
        embed(torch.randn(1, 3, 17, 12))
    with pytest.raises(ValueError, match=r"expected \[B, 3, H, W\], got \(1, 1, 16, 16\)"):
        embed(torch.randn(1, 1, 16, 16))
    padded = PatchEmbed(4, 3, 8, pad=True)
    x = torch.randn(1, 3, 17, 13)
    out = padded(x)
    assert out.shape == (1, 5, 4, 8)
    full = torch.zeros(1, 3, 20, 16)
    full[..., :17, :13] = x
    torch.testing.assert_close(out, padded(full))  # zero padding at the bottom and right


def test_mlp() -> None:
    mlp = Mlp(4, 16)
    x = torch.randn(3, 4)
    torch.testing.assert_close(mlp(x), mlp.fc2(torch.nn.functional.gelu(mlp.fc1(x))))

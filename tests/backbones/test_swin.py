"""Swin backbone: the protocol through the registry at sizes off the patch / window grid, padding
that equals padding the image, timm's tensor names, the window rules, window attention against a
naive per-window loop (relative position bias + shift mask), the shift mask against its meaning,
drop path, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from structpred.backbones import get_backbone
from structpred.backbones.swin import SwinBlock, SwinConfig, SwinTransformer
from structpred.backbones.swin_window import (
    relative_position_index,
    shift_mask,
    window_and_shift,
    window_partition,
    window_reverse,
)


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (65, 31), (100, 76), (7, 9)])
def test_swin_narrow_protocol_at_any_size(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = get_backbone("swin_narrow").eval()
    assert net.out_channels == {"c2": 16, "c3": 32, "c4": 64, "c5": 128}
    assert net.strides == {"c2": 4, "c3": 8, "c4": 16, "c5": 32}
    height, width = size
    with torch.no_grad():
        maps = net.forward_features(torch.rand(2, 3, height, width))
    assert list(maps) == ["c2", "c3", "c4", "c5"]
    for name, x in maps.items():
        s = net.strides[name]
        assert x.shape == (2, net.out_channels[name], math.ceil(height / s), math.ceil(width / s)), name
        assert torch.isfinite(x).all()


def test_paper_backbones_channels() -> None:
    for name, dim in (("swin_tiny", 96), ("swin_small", 96), ("swin_base", 128)):
        net = get_backbone(name, depths=(1, 1, 1, 1), drop_path_rate=0.0)
        assert list(net.out_channels.values()) == [dim, 2 * dim, 4 * dim, 8 * dim]
        assert list(net.strides.values()) == [4, 8, 16, 32]
        assert net.embed_dim == 8 * dim


def test_padding_equals_padding_the_image() -> None:
    # An image of 33 x 47 is zero-padded to the patch grid (36 x 48): the maps are those of the padded image.
    torch.manual_seed(0)
    net = get_backbone("swin_narrow", depths=(1, 2, 1, 1)).eval()
    x = torch.rand(1, 3, 33, 47)
    with torch.no_grad():
        ours = net.forward_features(x)
        padded = net.forward_features(F.pad(x, (0, 1, 0, 3)))
    for name in ours:
        torch.testing.assert_close(ours[name], padded[name], rtol=0, atol=1e-6)


def test_state_dict_names_are_timms() -> None:
    timm = pytest.importorskip("timm")
    theirs = timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, num_classes=0, depths=(2, 1, 1, 1)
    )
    ours = get_backbone("swin_tiny", depths=(2, 1, 1, 1))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert all(
        ours.state_dict()[k].shape == v.shape for k, v in theirs.state_dict().items()
    )  # the index and the masks are not saved (non-persistent / built per forward)


def test_window_rules() -> None:
    # timm: a side <= window clips the window and turns the shift off on that side.
    assert window_and_shift((56, 56), 7, 3, "timm") == ((7, 7), (3, 3))
    assert window_and_shift((7, 8), 7, 3, "timm") == ((7, 7), (0, 3))
    assert window_and_shift((4, 9), 7, 3, "timm") == ((4, 7), (0, 3))
    # torchvision: the window is never clipped (the map is padded); the shift is off the same way.
    assert window_and_shift((4, 9), 7, 3, "torchvision") == ((7, 7), (0, 3))
    assert window_and_shift((15, 15), 7, 0, "torchvision") == ((7, 7), (0, 0))
    with pytest.raises(ValueError, match="window rule must be one of .* got 'mmdet'"):
        window_and_shift((8, 8), 7, 3, "mmdet")


def test_window_partition_round_trip() -> None:
    x = torch.randn(2, 6, 8, 5)
    windows = window_partition(x, 3, 4)  # (2 * 2 * 2, 12, 5)
    assert windows.shape == (8, 12, 5)
    torch.testing.assert_close(windows[1], x[0, 0:3, 4:8].reshape(12, 5))  # second window: top right
    assert torch.equal(window_reverse(windows, 2, 6, 8, 3, 4), x)


def test_relative_position_index_against_a_loop() -> None:
    w = 3
    index = relative_position_index(w)
    for i in range(w * w):
        for j in range(w * w):
            dy, dx = i // w - j // w, i % w - j % w
            assert index[i, j] == (dy + w - 1) * (2 * w - 1) + (dx + w - 1)


@pytest.mark.parametrize(
    ("Hp", "Wp", "wh", "ww", "sh", "sw"), [(8, 12, 4, 4, 2, 2), (6, 6, 3, 3, 1, 1), (4, 12, 4, 4, 0, 2)]
)
def test_shift_mask_blocks_exactly_the_wrapped_pairs(
    Hp: int, Wp: int, wh: int, ww: int, sh: int, sw: int
) -> None:
    # After rolling by (-sh, -sw), the token at (y, x) came from ((y + sh) % Hp, (x + sw) % Wp); a pair of
    # one window may attend iff neither or both came around the edge, on each axis.
    mask = shift_mask(Hp, Wp, wh, ww, sh, sw, torch.device("cpu"), torch.float32)
    assert mask.shape == (Hp // wh * (Wp // ww), wh * ww, wh * ww)
    for win in range(mask.shape[0]):
        top, left = win // (Wp // ww) * wh, win % (Wp // ww) * ww
        coords = [(top + t // ww, left + t % ww) for t in range(wh * ww)]
        for i, (yi, xi) in enumerate(coords):
            for j, (yj, xj) in enumerate(coords):
                wrapped_y = (yi >= Hp - sh) != (yj >= Hp - sh)
                wrapped_x = (xi >= Wp - sw) != (xj >= Wp - sw)
                assert mask[win, i, j] == (-100.0 if wrapped_y or wrapped_x else 0.0), (win, i, j)


def _naive_window_attention(block: SwinBlock, x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
    """Roll, pad, then per image and per window: softmax(q k^T / sqrt(d) + B + M) v by explicit loops."""
    B, H, W, C = x.shape
    heads = block.attn.num_heads
    d = C // heads
    rolled = torch.roll(x, (-shift, -shift), (1, 2)) if shift else x
    Hp, Wp = math.ceil(H / window) * window, math.ceil(W / window) * window
    grid = F.pad(rolled, (0, 0, 0, Wp - W, 0, Hp - H))
    out = torch.zeros_like(grid)
    table = block.attn.relative_position_bias_table
    for b in range(B):
        for top in range(0, Hp, window):
            for left in range(0, Wp, window):
                cells = [(top + u, left + v) for u in range(window) for v in range(window)]
                tokens = torch.stack([grid[b, y, z] for y, z in cells])  # (L, C)
                q, k, v = block.attn.qkv(tokens).split(C, dim=-1)
                mixed = []
                for h in range(heads):
                    qh, kh, vh = (t[:, h * d : (h + 1) * d] for t in (q, k, v))
                    logits = qh @ kh.T / math.sqrt(d)
                    for i, (yi, zi) in enumerate(cells):
                        for j, (yj, zj) in enumerate(cells):
                            row = (yi - yj + window - 1) * (2 * window - 1) + (zi - zj + window - 1)
                            apart = shift and (
                                ((yi >= Hp - shift) != (yj >= Hp - shift))
                                or ((zi >= Wp - shift) != (zj >= Wp - shift))
                            )
                            logits[i, j] += table[row, h] - (100.0 if apart else 0.0)
                    mixed.append(logits.softmax(-1) @ vh)
                result = block.attn.proj(torch.cat(mixed, dim=-1))  # (L, C)
                for t, (y, z) in enumerate(cells):
                    out[b, y, z] = result[t]
    out = out[:, :H, :W]
    return torch.roll(out, (shift, shift), (1, 2)) if shift else out


@pytest.mark.parametrize(("size", "shift"), [((6, 6), 0), ((6, 6), 1), ((8, 10), 1)])
def test_window_attention_against_a_naive_loop(size: tuple[int, int], shift: int) -> None:
    torch.manual_seed(0)
    block = SwinBlock(dim=8, num_heads=2, window=3, shift=shift).eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_(0, 1.0)  # a bias large enough to matter
        x = torch.randn(2, *size, 8)
        torch.testing.assert_close(
            block.window_attention(x), _naive_window_attention(block, x, 3, shift), rtol=1e-5, atol=1e-5
        )


def test_window_attention_gradcheck() -> None:
    torch.manual_seed(0)
    block = SwinBlock(dim=4, num_heads=2, window=2, shift=1).double()
    x = torch.randn(1, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block.window_attention, (x,))


def test_clipped_window_uses_the_central_table_rows() -> None:
    # A 2 x 3 map under a 4 x 4 window (timm's rule): the window is 2 x 3 and its bias is read at the same
    # relative offsets as the full window's.
    torch.manual_seed(0)
    block = SwinBlock(dim=4, num_heads=1, window=4, shift=2)
    bias = block.attn.position_bias(2, 3)  # (1, heads, 6, 6)
    full = block.attn.position_bias(4, 4)[0, 0].view(4, 4, 4, 4)
    torch.testing.assert_close(bias[0, 0], full[:2, :3, :2, :3].reshape(6, 6))


def test_drop_path_is_random_in_training_only() -> None:
    torch.manual_seed(0)
    net = get_backbone("swin_narrow", drop_path_rate=0.5)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        a, b = net.train().embed(x), net.embed(x)
        assert not torch.allclose(a, b)
        c, d = net.eval().embed(x), net.embed(x)
    assert torch.equal(c, d)
    rates = [blk.drop_path1.p for stage in net.layers for blk in stage.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5) and rates == sorted(rates)


def test_bad_input_and_settings() -> None:
    net = get_backbone("swin_narrow")
    with pytest.raises(ValueError, match=r"images must be \[B, 3, H, W\], got \(2, 1, 32, 32\)"):
        net.forward_features(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"got \(3, 32, 32\)"):
        net.embed(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="swin_narrow: output_stride must be 32 .* got 16"):
        get_backbone("swin_narrow", output_stride=16)
    with pytest.raises(ValueError, match="window_rule must be one of .* got 'x'"):
        SwinTransformer(SwinConfig(window_rule="x"))
    with pytest.raises(ValueError, match="depths .* and num_heads .* must be as many"):
        SwinTransformer(SwinConfig(depths=(2, 2), num_heads=(3, 6, 12)))
    with pytest.raises(
        ValueError, match=r"window_size must be >= 1, one or one per stage \(4\), got \(7, 7\)"
    ):
        SwinTransformer(SwinConfig(window_size=(7, 7)))
    with pytest.raises(ValueError, match="drop_path_rate must be in"):
        get_backbone("swin_tiny", drop_path_rate=1.5)

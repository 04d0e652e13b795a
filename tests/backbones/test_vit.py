"""The ViT backbone: the registered ``vit_*`` simple feature pyramids keep the backbone protocol at
any input size, the position table is resampled as timm resamples it, padding is zero padding,
and bad input is refused clearly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

from structpred.backbones import get_backbone, list_backbones
from structpred.backbones.vit import SimpleFeaturePyramid, VisionTransformer, resample_pos_embed


def narrow(**kwargs: object) -> SimpleFeaturePyramid:
    torch.manual_seed(0)
    model = get_backbone("vit_narrow", **kwargs)
    assert isinstance(model, SimpleFeaturePyramid)
    return model.eval()


def test_registered() -> None:
    assert {"vit_tiny", "vit_small", "vit_base", "vit_narrow"} <= set(list_backbones())


@pytest.mark.parametrize(("height", "width"), [(128, 128), (64, 96), (70, 90), (33, 47), (16, 16)])
def test_protocol_maps_channels_and_strides(height: int, width: int) -> None:
    model = narrow()
    assert model.strides == {"c2": 4, "c3": 8, "c4": 16, "c5": 32}
    assert model.out_channels == {"c2": 16, "c3": 32, "c4": 64, "c5": 64}
    with torch.no_grad():
        feats = model.forward_features(torch.rand(2, 3, height, width))
    assert list(feats) == list(model.strides)
    for name, f in feats.items():
        s = model.strides[name]
        assert f.shape == (2, model.out_channels[name], math.ceil(height / s), math.ceil(width / s)), name
        assert torch.isfinite(f).all()


@pytest.mark.parametrize(("size", "channels"), [("tiny", (48, 96, 192, 192)), ("small", (96, 192, 384, 384)),
                                                ("base", (192, 384, 768, 768))])
def test_sizes_channels(size: str, channels: tuple[int, ...]) -> None:
    with torch.device("meta"):
        model = get_backbone(f"vit_{size}", depth=1)
    assert tuple(model.out_channels.values()) == channels  # type: ignore[union-attr]


@pytest.mark.parametrize("patch_size", [4, 8, 32])
def test_other_patch_sizes_give_the_same_strides(patch_size: int) -> None:
    model = narrow(patch_size=patch_size, depth=1)
    with torch.no_grad():
        feats = model.forward_features(torch.rand(1, 3, 64, 80))
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(16, 20), (8, 10), (4, 5), (2, 3)]


def test_the_stride_16_map_is_the_vits_and_stride_32_its_max_pool() -> None:
    model = narrow()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        feats, grid = model.forward_features(x), model.vit.feature_map(x)
        tokens, (h, w) = model.vit.tokens(x)
    assert torch.equal(feats["c4"], grid) and (h, w) == (4, 4)
    assert torch.equal(grid[0, :, 1, 2], tokens[0, 1 + 1 * w + 2])  # token (1, 2), after the class token
    assert torch.equal(feats["c5"], F.max_pool2d(grid, 2))


def test_a_side_that_is_no_multiple_of_the_patch_is_zero_padded() -> None:
    model = narrow()
    x = torch.randn(1, 3, 40, 50)
    with torch.no_grad():
        padded = model.vit.feature_map(F.pad(x, (0, 14, 0, 8)))  # to 48 x 64
        got = model.vit.feature_map(x)
    torch.testing.assert_close(got, padded)


def test_pos_embed_resampling_is_timms_and_the_identity_at_the_native_grid() -> None:
    torch.manual_seed(0)
    table = torch.randn(1, 1 + 14 * 14, 8)
    assert resample_pos_embed(table, (14, 14), (14, 14)) is table
    for grid in ((10, 10), (18, 12), (7, 9)):
        got = resample_pos_embed(table, (14, 14), grid)
        assert got.shape == (1, 1 + grid[0] * grid[1], 8)
        assert torch.equal(got[:, :1], table[:, :1])  # the class position is kept
        expected = resample_abs_pos_embed(table, list(grid), (14, 14), num_prefix_tokens=1)
        torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match=r"pos_embed has 197 positions, not 1 \+ 10 x 10"):
        resample_pos_embed(table, (10, 10), (5, 5))


def test_gradients_reach_the_vit_and_every_level() -> None:
    model = narrow(depth=1).train()
    feats = model.forward_features(torch.rand(2, 3, 48, 48))
    sum(f.square().mean() for f in feats.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.vit.patch_embed.proj.weight.grad.abs().sum() > 0  # type: ignore[union-attr]


def test_the_vit_state_holds_timms_names_and_the_pyramid_its_own() -> None:
    model = narrow(depth=1)
    names = list(model.state_dict())
    assert all(n.startswith(("vit.", "levels.")) for n in names)
    vit_names = [n.removeprefix("vit.") for n in names if n.startswith("vit.")]
    assert vit_names[:3] == ["cls_token", "pos_embed", "patch_embed.proj.weight"]
    assert "norm.weight" in vit_names and "blocks.0.attn.qkv.weight" in vit_names


def test_drop_path_rates_grow_linearly() -> None:
    vit = VisionTransformer(img_size=32, embed_dim=16, depth=5, num_heads=2, drop_path_rate=0.4)
    assert [b.drop_path.p for b in vit.blocks] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])  # type: ignore[union-attr]


def test_bad_input_and_settings() -> None:
    model = narrow()
    with pytest.raises(ValueError, match=r"expected a Tensor \[B, 3, H, W\], got \(1, 1, 32, 32\)"):
        model.forward_features(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"expected a Tensor \[B, 3, H, W\], got \(3, 32, 32\)"):
        model.vit.embed(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="expected a floating point tensor"):
        model.forward_features(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="vit_narrow: output_stride must be 32 .* got 8"):
        get_backbone("vit_narrow", output_stride=8)
    with pytest.raises(ValueError, match="img_size 100 must be a positive multiple of patch_size 16"):
        VisionTransformer(img_size=100)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        VisionTransformer(depth=0)
    with pytest.raises(ValueError, match=r"drop_path_rate must be in \[0, 1\)"):
        VisionTransformer(depth=1, drop_path_rate=1.0)
    with pytest.raises(ValueError, match="patch_size must be 4, 8, 16 or 32, got 2"):
        get_backbone("vit_narrow", patch_size=2)

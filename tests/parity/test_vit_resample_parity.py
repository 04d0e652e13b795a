"""ViT weights saved at one input size, loaded into a model built for another: the file's position
table is resampled at load time as the peer resamples it (timm: ``checkpoint_filter_fn`` /
``resample_abs_pos_embed``; torchvision: ``interpolate_embeddings``), so our logits equal the peer's
model built at the new size from the same file, within 1e-5 (float32, eval). Random weights only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pytest
import timm
import torch
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import Tensor, nn
from torchvision.models.vision_transformer import VisionTransformer as TvViT
from torchvision.models.vision_transformer import interpolate_embeddings

from structpred.backbones import get_backbone
from structpred.models import from_torchvision, get_model
from structpred.models.image_classifier import ImageClassifier
from structpred.models.weights import copy_renamed, load_weights, timm_vit, torchvision_vit

ATOL = 1e-5


def images(batch: int, side: int, seed: int = 1) -> Tensor:
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


def timm_at(img_size: int, seed: int = 0, **kwargs: object) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=img_size, depth=2,
                             num_classes=10, **kwargs).eval()  # fmt: skip


def load_like_load_weights(family: object, ours: nn.Module, state: Mapping[str, Tensor]) -> None:
    """What ``load_weights`` does with a family's state file: adapt, then the family's rules."""
    adapted = family.adapt_state(ours, state)  # type: ignore[attr-defined]
    rules, skip = family.state_rules(ours, adapted)  # type: ignore[attr-defined]
    copy_renamed(ours, adapted, rules, skip=skip)


def same_logits(ours: ImageClassifier, theirs: nn.Module, x: Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(ours.logits(x), theirs(x), atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------- timm


@pytest.mark.parametrize(("saved", "built"), [(224, 384), (224, 160), (384, 224), (224, 512)])
def test_a_timm_file_at_another_size_matches_timms_own_resampling(
    saved: int, built: int, caplog: pytest.LogCaptureFixture
) -> None:
    state = timm_at(saved).state_dict()
    theirs = timm_at(built, seed=5)
    theirs.load_state_dict(checkpoint_filter_fn(state, theirs))  # timm's own load-time resampling
    ours = get_model("vit_tiny_patch16_224", num_classes=10, depth=2, input_size=built).eval()
    with caplog.at_level(logging.INFO, logger="structpred.models.weights.timm_vit"):
        load_like_load_weights(timm_vit, ours, state)
    n0, n1 = saved // 16, built // 16
    assert f"timm ViT: pos_embed resampled from a {n0} x {n0} to a {n1} x {n1} patch grid" in caplog.text
    torch.testing.assert_close(ours.backbone.pos_embed, theirs.pos_embed, atol=ATOL, rtol=0)
    same_logits(ours, theirs, images(2, built))


def test_the_same_size_is_loaded_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    state = timm_at(224).state_dict()
    ours = get_model("vit_tiny_patch16_224", num_classes=10, depth=2)
    with caplog.at_level(logging.INFO, logger="structpred.models.weights.timm_vit"):
        adapted = timm_vit.adapt_state(ours, state)
    assert adapted["pos_embed"] is state["pos_embed"] and "resampled" not in caplog.text


def test_a_table_that_is_not_a_square_grid_is_a_clear_error() -> None:
    state = dict(timm_at(224).state_dict())
    state["pos_embed"] = state["pos_embed"][:, :151]  # 150 patch positions
    ours = get_model("vit_tiny_patch16_224", num_classes=10, depth=2)
    with pytest.raises(ValueError, match=r"pos_embed \(1, 151, 192\): 150 patch positions are not a square "
                                         r"grid; cannot resample it to our 14 x 14 grid"):  # fmt: skip
        timm_vit.adapt_state(ours, state)


def test_another_patch_size_is_still_the_renamers_shape_error() -> None:
    torch.manual_seed(0)
    theirs = timm.create_model("vit_tiny_patch16_224", pretrained=False, patch_size=32, depth=2)
    ours = get_model("vit_tiny_patch16_224", depth=2)
    message = r"'patch_embed\.proj\.weight' \(192, 3, 32, 32\) -> 'backbone\.patch_embed\.proj\.weight'"
    with pytest.raises(ValueError, match=message):
        load_like_load_weights(timm_vit, ours, theirs.state_dict())


@pytest.mark.slow
def test_a_vitdet_backbone_at_1024_filled_from_a_224_classifier_file_matches_timm() -> None:
    torch.manual_seed(0)
    state = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1).state_dict()
    torch.manual_seed(5)
    theirs = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=1024).eval()
    theirs.load_state_dict(checkpoint_filter_fn(state, theirs))
    backbone = get_backbone("vit_tiny", img_size=1024, depth=1).eval()  # ViTDet's input size
    assert timm_vit.load_into_vit(backbone.vit, state) == len(state) - 2  # all but the head
    x = images(1, 1024)
    with torch.no_grad():
        torch.testing.assert_close(backbone.vit.tokens(x)[0], theirs.forward_features(x), atol=ATOL, rtol=0)
        assert backbone(x)["c2"].shape == (1, 48, 256, 256)
    with pytest.raises(ValueError, match="not a timm ViT state dict"):
        timm_vit.load_into_vit(backbone.vit, {"weight": torch.zeros(1)})


# ----------------------------------------------------------------------------- torchvision


def tv_at(image_size: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TvViT(image_size=image_size, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
                 num_classes=5).eval()  # fmt: skip


@pytest.mark.parametrize(("saved", "built"), [(64, 96), (96, 64)])
def test_a_torchvision_file_at_another_size_matches_interpolate_embeddings(saved: int, built: int) -> None:
    state = tv_at(saved).state_dict()
    theirs = tv_at(built, seed=5)
    theirs.load_state_dict(interpolate_embeddings(built, 8, state))  # torchvision's own resampling
    ours = from_torchvision(tv_at(built, seed=9))  # our model at the new size, other values
    load_like_load_weights(torchvision_vit, ours, state)
    same_logits(ours.eval(), theirs, images(2, built))


# ----------------------------------------------------------------------------- through load_weights


def test_load_weights_resamples_a_timm_file_saved_at_224_into_a_384_model(tmp_path: Path) -> None:
    torch.save(timm_at(224).state_dict(), tmp_path / "vit224.pth")
    theirs = timm_at(384, seed=5)
    theirs.load_state_dict(checkpoint_filter_fn(torch.load(tmp_path / "vit224.pth"), theirs))
    ours = get_model("vit_tiny_patch16_224", num_classes=10, depth=2, input_size=384).eval()
    report = load_weights(ours, tmp_path / "vit224.pth")
    assert (report.family, report.reinitialised) == ("timm ViT", [])
    same_logits(ours, theirs, images(2, 384))

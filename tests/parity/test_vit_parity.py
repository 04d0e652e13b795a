"""ViT: timm's ``vit_{tiny,small,base}_patch16_224`` and torchvision's ``vit_b_16``, converted by
``from_timm`` / ``from_torchvision`` or loaded from their saved ``state_dict`` files, compute the
same logits (float32, eval mode, within 1e-4), at the native size and at other sizes (timm's
``dynamic_img_size`` / ``dynamic_img_pad``), and the same training-mode outputs with drop path
under the same seed. Random weights (``pretrained=False`` / ``weights=None``): nothing downloads.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import Tensor, nn

from structpred.models import from_timm, from_torchvision, get_model
from structpred.models.image_classifier import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from structpred.models.weights import load_weights

ATOL = 1e-4


def timm_vit(name: str, seed: int = 0, **kwargs: object) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, **kwargs).eval()


def images(batch: int, height: int, width: int, seed: int = 1) -> Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def assert_same_logits(ours: ImageClassifier, theirs: nn.Module, x: Tensor) -> None:
    with torch.no_grad():
        expected, got = theirs(x), ours.logits(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------- timm


@pytest.mark.parametrize(
    ("name", "num_classes", "batch"),
    [
        ("vit_tiny_patch16_224", 1000, 4),
        ("vit_tiny_patch16_224", 10, 4),
        ("vit_tiny_patch16_224", 1, 4),
        pytest.param("vit_small_patch16_224", 10, 2, marks=pytest.mark.slow),
        pytest.param("vit_base_patch16_224", 1000, 2, marks=pytest.mark.slow),
    ],
)
def test_from_timm_same_logits(name: str, num_classes: int, batch: int) -> None:
    theirs = timm_vit(name, num_classes=num_classes)
    ours = from_timm(theirs)
    assert isinstance(ours, ImageClassifier) and not ours.training
    assert ours.num_classes == num_classes and ours.config.input_size == 224
    cfg = theirs.pretrained_cfg
    assert ours.config.mean == cfg["mean"] and ours.config.std == cfg["std"]
    assert len(ours.state_dict()) == len(theirs.state_dict())
    assert_same_logits(ours, theirs, images(batch, 224, 224))


def test_the_registered_builders_have_timms_tensors() -> None:
    for size in ("tiny", "small", "base"):
        name = f"vit_{size}_patch16_224"
        with torch.device("meta"):
            ours, theirs = get_model(name, depth=2), timm.create_model(name, pretrained=False, depth=2)
        mine = {k.removeprefix("backbone."): tuple(v.shape) for k, v in ours.state_dict().items()}
        assert mine == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}, name


@pytest.mark.parametrize(("height", "width"), [(160, 160), (288, 224), (200, 230)])
def test_other_input_sizes_as_timms_dynamic_img_size(height: int, width: int) -> None:
    # 200 x 230 is no multiple of 16: timm pads with dynamic_img_pad, as ours always does.
    theirs = timm_vit(
        "vit_tiny_patch16_224", num_classes=10, depth=3, dynamic_img_size=True, dynamic_img_pad=True
    )
    ours = from_timm(theirs)
    assert_same_logits(ours, theirs, images(2, height, width))


def test_training_mode_with_drop_path_matches_under_the_same_seed() -> None:
    theirs = timm_vit("vit_tiny_patch16_224", num_classes=5, depth=4, drop_path_rate=0.5).train()
    ours = from_timm(theirs)
    assert ours.training
    assert [b.drop_path.p for b in ours.backbone.blocks] == pytest.approx([0, 1 / 6, 1 / 3, 0.5])
    x = images(8, 224, 224)
    torch.manual_seed(3)
    expected = theirs(x)
    torch.manual_seed(3)
    got = ours.logits(x)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    ours.eval()
    with torch.no_grad():
        first, second = ours.logits(x), ours.logits(x)
    assert torch.equal(first, second)  # eval: deterministic
    assert ((got.detach() - first).abs().amax(dim=1) > 1e-3).any()  # training: drop path acts
    same = x[:1].expand(8, -1, -1, -1)  # one image eight times: rows differ only by their draws
    with torch.no_grad():
        rows = ours.train().logits(same)
    assert len({tuple(r.tolist()) for r in rows.round(decimals=4)}) > 1  # row-wise, not one coin per batch


def test_forward_normalises_with_the_weights_mean_and_std() -> None:
    theirs = timm_vit("vit_tiny_patch16_224", num_classes=3, depth=1)
    ours = from_timm(theirs)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))  # [0, 1] images
    predictions, losses = ours(x)
    assert predictions is not None and losses == {}
    with torch.no_grad():
        expected = theirs((x - 0.5) / 0.5)  # vit_tiny's timm weights: mean = std = 0.5
    got = torch.stack([p["class_logits"] for p in predictions])
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_frozen_parameters_and_train_mode_carry_over() -> None:
    theirs = timm_vit("vit_tiny_patch16_224", num_classes=3, depth=2).train()
    theirs.patch_embed.requires_grad_(False)
    ours = from_timm(theirs)
    assert ours.training
    frozen = {n for n, p in ours.named_parameters() if not p.requires_grad}
    assert frozen == {"backbone.patch_embed.proj.weight", "backbone.patch_embed.proj.bias"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reg_tokens": 4}, "register tokens"),
        ({"init_values": 1e-5}, r"layer scale \(blocks\.0\.ls1\)"),
        ({"qk_norm": True}, r"blocks\.0\.attn\.q_norm"),
        ({"global_pool": "avg"}, "global_pool='avg'"),
        ({"class_token": False, "global_pool": "avg"}, "class_token=False"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"pre_norm": True}, "pre_norm"),
        ({"no_embed_class": True}, "no_embed_class"),
        ({"fc_norm": True}, "fc_norm"),
        ({"pos_drop_rate": 0.1}, "pos_drop dropout 0.1"),
    ],
)
def test_variants_we_do_not_build_are_refused_by_name(kwargs: dict, message: str) -> None:
    theirs = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, **kwargs)
    with pytest.raises(ValueError, match=message):
        from_timm(theirs)


def test_timm_swin_is_not_taken_for_a_vit() -> None:
    from structpred.models.weights import timm_vit as family

    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, depths=(1, 1, 1, 1))
    assert not family.recognises(swin)
    assert not family.recognises_state(swin.state_dict().keys())


# ----------------------------------------------------------------------------- torchvision


def small_tv_vit(num_classes: int = 5, seed: int = 0) -> nn.Module:
    """torchvision's ViT class at a test size (patch 8, 64 px, 2 layers of width 64)."""
    torch.manual_seed(seed)
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        image_size=64, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
        num_classes=num_classes,
    ).eval()


def test_from_torchvision_small_vit_same_logits() -> None:
    theirs = small_tv_vit()
    ours = from_torchvision(theirs)
    assert isinstance(ours, ImageClassifier) and ours.config.input_size == 64
    assert ours.config.mean == IMAGENET_MEAN and ours.config.std == IMAGENET_STD
    assert_same_logits(ours, theirs, images(4, 64, 64))


@pytest.mark.slow
def test_from_torchvision_vit_b_16_same_logits() -> None:
    torch.manual_seed(0)
    theirs = torchvision.models.vit_b_16(weights=None, num_classes=10).eval()
    ours = from_torchvision(theirs)
    assert ours.num_classes == 10 and len(ours.state_dict()) == len(theirs.state_dict())
    assert_same_logits(ours, theirs, images(2, 224, 224))


def test_torchvision_variants_are_refused_by_name() -> None:
    from torchvision.models.vision_transformer import VisionTransformer

    small = dict(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)
    with pytest.raises(ValueError, match=r"representation_size \(heads\.pre_logits\)"):
        from_torchvision(VisionTransformer(**small, representation_size=8))
    with pytest.raises(ValueError, match="dropout=0.1"):
        from_torchvision(VisionTransformer(**small, dropout=0.1))


# ----------------------------------------------------------------------------- state dict files


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_timm_state_file_loads_with_the_same_logits(tmp_path: Path, suffix: str) -> None:
    theirs = timm_vit("vit_tiny_patch16_224", num_classes=10, depth=2)
    path = tmp_path / f"vit{suffix}"
    state = {k: v.contiguous() for k, v in theirs.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    ours = get_model("vit_tiny_patch16_224", num_classes=10, depth=2).eval()
    report = load_weights(ours, path)
    assert (report.kind, report.family, report.loaded) == ("timm", "timm ViT", len(state))
    assert report.reinitialised == []
    assert_same_logits(ours, theirs, images(2, 224, 224))


def test_a_torchvision_state_file_loads_with_the_same_logits(tmp_path: Path) -> None:
    theirs = small_tv_vit(num_classes=5)
    torch.save(theirs.state_dict(), tmp_path / "tv_vit.pth")
    ours = from_torchvision(small_tv_vit(num_classes=5, seed=9))  # same shapes, other values
    report = load_weights(ours, tmp_path / "tv_vit.pth")
    assert (report.kind, report.family) == ("torchvision", "torchvision ViT")
    assert_same_logits(ours.eval(), theirs, images(2, 64, 64))


def test_another_class_count_reinitialises_only_the_head(tmp_path: Path) -> None:
    theirs = timm_vit("vit_tiny_patch16_224", num_classes=1000, depth=2)
    torch.save(theirs.state_dict(), tmp_path / "vit.pth")
    ours = get_model("vit_tiny_patch16_224", num_classes=4, depth=2).eval()
    head_before = ours.head.weight.detach().clone()
    report = load_weights(ours, tmp_path / "vit.pth")
    assert report.reinitialised == [("head.weight", (4, 192), (1000, 192)), ("head.bias", (4,), (1000,))]
    assert "re-initialised for 4 classes: head.weight [4, 192] (file: [1000, 192])" in str(report)
    assert torch.equal(ours.head.weight, head_before)
    x = images(2, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours.backbone.embed(x), theirs.forward_head(theirs.forward_features(x),
                                   pre_logits=True), atol=ATOL, rtol=0)


def test_a_file_with_a_wrong_shape_names_the_tensor_and_both_shapes(tmp_path: Path) -> None:
    # (a file saved at another input size is resampled: tests/parity/test_vit_resample_parity.py)
    theirs = timm_vit("vit_tiny_patch16_224", num_classes=10, depth=2, mlp_ratio=2.0)  # MLP 384 wide
    torch.save(theirs.state_dict(), tmp_path / "vit_mlp2.pth")
    ours = get_model("vit_tiny_patch16_224", num_classes=10, depth=2)  # MLP 768
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    message = r"'blocks\.0\.mlp\.fc1\.weight' \(384, 192\) -> 'backbone\.blocks\.0\.mlp\.fc1\.weight' \(768,"
    with pytest.raises(ValueError, match=message):
        load_weights(ours, tmp_path / "vit_mlp2.pth")
    assert all(torch.equal(before[k], v) for k, v in ours.state_dict().items())  # nothing copied


def test_a_variant_file_is_refused_by_name(tmp_path: Path) -> None:
    theirs = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, init_values=1e-5)
    torch.save(theirs.state_dict(), tmp_path / "ls.pth")
    message = r"ls\.pth: timm ViT weights do not fit .*layer scale .*blocks\.0\.ls1"
    with pytest.raises(ValueError, match=message):
        load_weights(get_model("vit_tiny_patch16_224", depth=1), tmp_path / "ls.pth")


def test_state_files_are_recognised_by_their_own_family_only() -> None:
    from structpred.models.weights.families import TIMM_FAMILIES, TORCHVISION_FAMILIES

    with torch.device("meta"):
        files = {
            "timm_vit": timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1).state_dict(),
            "torchvision_vit": small_tv_vit().state_dict(),
            "torchvision_detection": torchvision.models.detection.fasterrcnn_resnet50_fpn(
                weights=None, weights_backbone=None
            ).state_dict(),
            "torchvision_segmentation": torchvision.models.segmentation.deeplabv3_resnet50(
                weights=None, weights_backbone=None
            ).state_dict(),
            "timm_swin": timm.create_model(
                "swin_tiny_patch4_window7_224", pretrained=False, depths=(1, 1, 1, 1)
            ).state_dict(),
            "torchvision_swin": torchvision.models.swin_t(weights=None).state_dict(),
        }
    for module in (*TORCHVISION_FAMILIES, *TIMM_FAMILIES):
        family = module.__name__.rsplit(".", 1)[-1]
        if family not in ("timm_vit", "torchvision_vit"):
            continue
        for source, state in files.items():
            assert module.recognises_state(state.keys()) == (source == family), (family, source)
    for source, state in files.items():
        if source.endswith("_vit"):
            continue
        for module in (*TORCHVISION_FAMILIES, *TIMM_FAMILIES):
            if module.recognises_state(state.keys()):
                assert not module.__name__.endswith("_vit"), (module.__name__, source)
                break

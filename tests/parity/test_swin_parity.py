"""Swin parity: timm's ``swin_*_patch4_window7_224`` and torchvision's ``swin_t`` (random weights, float32,
eval) converted by ``from_timm`` / ``from_torchvision`` give their logits within 1e-4, at 224 and at other
sizes (timm built for that size with ``strict_img_size=False``; torchvision at any size through its
window rule); their state files load through ``load_weights``; variants are refused by name; each family
recognises only its own models and files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from structpred.backbones.swin import SwinTransformer
from structpred.models import from_timm, from_torchvision, get_model
from structpred.models.image_classifier import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from structpred.models.weights import load_weights

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

TOL = dict(rtol=0.0, atol=1e-4)


def timm_swin(name: str = "swin_tiny_patch4_window7_224", seed: int = 0, **kwargs: object) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, **kwargs).eval()


def same_logits(ours: ImageClassifier, theirs: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(ours.eval().logits(x), theirs.eval()(x), **TOL)


def test_from_timm_swin_tiny_same_logits(num_classes: int = 7) -> None:  # 1000 classes: Swin-B below
    theirs = timm_swin(num_classes=num_classes)
    ours = from_timm(theirs)
    assert isinstance(ours, ImageClassifier) and isinstance(ours.backbone, SwinTransformer)
    assert ours.num_classes == num_classes and ours.config.input_size == 224
    assert ours.config.mean == IMAGENET_MEAN and ours.config.std == IMAGENET_STD
    assert ours.backbone.config.drop_path_rate == pytest.approx(0.1) and not ours.training
    same_logits(ours, theirs, torch.randn(2, 3, 224, 224))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "num_classes"), [("swin_small_patch4_window7_224", 3),
                                                   ("swin_base_patch4_window7_224", 1000)])  # fmt: skip
def test_from_timm_swin_small_and_base_same_logits(name: str, num_classes: int) -> None:
    theirs = timm_swin(name, num_classes=num_classes)
    ours = from_timm(theirs)
    assert ours.backbone.config.depths == (2, 2, 18, 2)
    same_logits(ours, theirs, torch.randn(1, 3, 224, 224))


def test_the_registered_builders_have_timms_tensors() -> None:
    for size in ("tiny", "small", "base"):
        name = f"swin_{size}_patch4_window7_224"
        with torch.device("meta"):
            theirs = timm.create_model(name, pretrained=False, num_classes=5, depths=(2, 2, 2, 2))
            ours = get_model(name, num_classes=5, depths=(2, 2, 2, 2))
        expected = {k.replace("head.fc.", "head.") if k.startswith("head.") else f"backbone.{k}": v.shape
                    for k, v in theirs.state_dict().items()}  # fmt: skip
        assert {k: v.shape for k, v in ours.state_dict().items()} == expected


@pytest.mark.parametrize("size", [(256, 256), (200, 232), (64, 64)])
def test_other_input_sizes_as_timm_built_for_them(size: tuple[int, int]) -> None:
    # timm decides windows and shifts from img_size (a map <= the window clips it and drops the shift);
    # ours decides them from the map in hand: the same at the size timm was built for. At 64 px timm clips
    # stages 3-4 to windows 4 and 2 (its tables shrink): ours is built with those windows.
    theirs = timm_swin(num_classes=5, depths=(2, 2, 2, 2), img_size=size, strict_img_size=False)
    ours = from_timm(theirs)
    same_logits(ours, theirs, torch.randn(1, 3, *size))


def test_a_non_square_clipped_window_is_refused() -> None:
    # 36 x 100 px: timm clips the 7 x 7 window of stage 2 (a 5 x 13 map) to 5 x 7, with its own table shape.
    with torch.device("meta"):
        theirs = timm.create_model(
            "swin_tiny_patch4_window7_224", pretrained=False, depths=(1, 1, 1, 1), img_size=(36, 100)
        )
    with pytest.raises(ValueError, match=r"layers\.1\.blocks\.0\.attn\.window_size is \(5, 7\): only square"):
        from_timm(theirs)


def test_training_mode_with_drop_path_matches_under_the_same_seed() -> None:
    theirs = timm_swin(num_classes=4, depths=(2, 2, 2, 2), img_size=64, drop_path_rate=0.3).train()
    ours = from_timm(theirs)
    assert ours.training and ours.backbone.config.drop_path_rate == pytest.approx(0.3)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.manual_seed(1)
        expected = theirs(x)
        torch.manual_seed(1)
        got = ours.logits(x)
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("swinv2_tiny_window8_256", {}, r"layers\.0\.blocks\.0\.attn\.logit_scale: Swin v2 is not supported"),
        ("swin_tiny_patch4_window7_224", {"num_classes": 0}, r"head\.fc is not a Linear \(num_classes=0"),
        ("swin_tiny_patch4_window7_224", {"global_pool": "max"}, r"global_pool 'max' \(only 'avg'\)"),
        ("swin_tiny_patch4_window7_224", {"always_partition": True}, r"always_partition=True"),
    ],
)
def test_timm_variants_are_refused_by_name(name: str, kwargs: dict, message: str) -> None:
    with torch.device("meta"):
        theirs = timm.create_model(name, pretrained=False, depths=(1, 1, 1, 1), **kwargs)
    with pytest.raises(ValueError, match=message):
        from_timm(theirs)


# ----------------------------------------------------------------------------- torchvision


def small_tv_swin(num_classes: int = 5, seed: int = 0) -> nn.Module:
    """torchvision's Swin v1 class with swin_t's widths and window at a test depth."""
    torch.manual_seed(seed)
    from torchvision.models.swin_transformer import SwinTransformer as TvSwin

    return TvSwin(patch_size=[4, 4], embed_dim=96, depths=[2, 2, 2, 2], num_heads=[3, 6, 12, 24],
                  window_size=[7, 7], stochastic_depth_prob=0.2, num_classes=num_classes).eval()  # fmt: skip


def test_from_torchvision_swin_t_same_logits() -> None:
    torch.manual_seed(0)
    theirs = torchvision.models.swin_t(weights=None).eval()
    ours = from_torchvision(theirs)
    assert ours.backbone.config.window_rule == "torchvision" and ours.num_classes == 1000
    assert ours.backbone.config.depths == (
        2,
        2,
        6,
        2,
    ) and ours.backbone.config.drop_path_rate == pytest.approx(0.2)
    same_logits(ours, theirs, torch.randn(2, 3, 224, 224))


@pytest.mark.parametrize("size", [(200, 232), (64, 96), (44, 60)])
def test_torchvision_at_other_sizes_through_its_window_rule(size: tuple[int, int]) -> None:
    # torchvision pads to window multiples before the roll and never clips the window (a 44 x 60 image:
    # maps 11 x 15, 6 x 8, 3 x 4, 2 x 2): our "torchvision" window rule follows it. (Sides that are not
    # multiples of the patch differ: torchvision's stem drops the remainder, ours pads the image.)
    theirs = small_tv_swin()
    ours = from_torchvision(theirs)
    same_logits(ours, theirs, torch.randn(1, 3, *size))


def test_the_two_window_rules_differ_off_the_224_grid() -> None:
    # The same tensors under timm's rule give other numbers where a map is not a window multiple.
    theirs = small_tv_swin()
    ours = from_torchvision(theirs)
    timm_rule = get_model("swin_tiny_patch4_window7_224", num_classes=5, depths=(2, 2, 2, 2))
    timm_rule.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 232, 232)  # maps 58, 29, 15, 8: no window multiples
    with torch.no_grad():
        assert (timm_rule.eval().logits(x) - theirs(x)).abs().max() > 1e-3
        torch.testing.assert_close(timm_rule.logits(x[..., :224, :224]), theirs(x[..., :224, :224]), **TOL)


def test_torchvision_merging_order_is_timms() -> None:
    # Both concatenate the 2x2 neighbours as (0,0), (1,0), (0,1), (1,1): a column permutation of the merging
    # weights would change the logits (random weights), so the parity above pins the order; here directly.
    from torchvision.models.swin_transformer import PatchMerging as TvMerging

    from structpred.backbones.swin import PatchMerging

    torch.manual_seed(0)
    theirs = TvMerging(4)
    ours = PatchMerging(4, 8)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 6, 5, 4)
    torch.testing.assert_close(ours(x), theirs(x))


def test_torchvision_v2_is_refused_by_name() -> None:
    with torch.device("meta"):
        theirs = torchvision.models.swin_v2_t(weights=None)
    with pytest.raises(ValueError, match=r"features\.1\.0\.attn\.logit_scale: swin_v2_\* is not supported"):
        from_torchvision(theirs)


# ----------------------------------------------------------------------------- state files


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_timm_state_file_loads_with_the_same_logits(tmp_path: Path, suffix: str) -> None:
    theirs = timm_swin(num_classes=6, depths=(2, 2, 2, 2))
    state = theirs.state_dict()
    path = tmp_path / f"swin{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    ours = get_model("swin_tiny_patch4_window7_224", num_classes=6, depths=(2, 2, 2, 2))
    report = load_weights(ours, path)
    assert report.family == "timm Swin" and report.reinitialised == [] and report.loaded == len(state)
    same_logits(ours, theirs, torch.randn(1, 3, 224, 224))


def test_a_torchvision_state_file_loads_with_the_same_logits(tmp_path: Path) -> None:
    theirs = small_tv_swin(num_classes=6)
    torch.save(theirs.state_dict(), tmp_path / "tv_swin.pth")
    ours = get_model("swin_tiny_patch4_window7_224", num_classes=6, depths=(2, 2, 2, 2))
    report = load_weights(ours, tmp_path / "tv_swin.pth")
    assert report.family == "torchvision Swin" and report.reinitialised == []
    same_logits(ours, theirs, torch.randn(1, 3, 224, 224))  # at 224 the two window rules agree


def test_another_class_count_reinitialises_only_the_head(tmp_path: Path) -> None:
    theirs = timm_swin(depths=(1, 1, 1, 1))  # 1000 classes
    torch.save(theirs.state_dict(), tmp_path / "swin.pth")
    ours = get_model("swin_tiny_patch4_window7_224", num_classes=4, depths=(1, 1, 1, 1))
    head = ours.head.weight.clone()
    report = load_weights(ours, tmp_path / "swin.pth")
    assert report.reinitialised == [("head.weight", (4, 768), (1000, 768)), ("head.bias", (4,), (1000,))]
    assert torch.equal(ours.head.weight, head)
    with torch.no_grad():
        x = torch.randn(1, 3, 224, 224)
        pooled = theirs.forward_head(theirs.forward_features(x), pre_logits=True)
        torch.testing.assert_close(ours.eval().backbone.embed(x), pooled, **TOL)


def test_a_file_with_a_wrong_shape_names_the_tensor_and_both_shapes(tmp_path: Path) -> None:
    theirs = timm_swin(num_classes=10, depths=(1, 1, 1, 1), window_size=8, img_size=256)  # 15^2-row tables
    torch.save(theirs.state_dict(), tmp_path / "swin_w8.pth")
    ours = get_model("swin_tiny_patch4_window7_224", num_classes=10, depths=(1, 1, 1, 1))  # 13^2 rows
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    table = r"layers\.0\.blocks\.0\.attn\.relative_position_bias_table"
    message = (
        rf"{table} \(225, 3\) is the table of a 8 x 8 window, ours \(backbone\.{table}\) of a 7 x 7 "
        r"window \(169, 3\).*window_size=8"
    )
    with pytest.raises(ValueError, match=message):
        load_weights(ours, tmp_path / "swin_w8.pth")
    assert all(torch.equal(before[k], v) for k, v in ours.state_dict().items())  # nothing copied


def test_variant_files_are_refused_by_name(tmp_path: Path) -> None:
    v2 = timm.create_model("swinv2_tiny_window8_256", pretrained=False, depths=(1, 1, 1, 1))
    torch.save(v2.state_dict(), tmp_path / "v2.pth")
    with pytest.raises(ValueError, match=r"v2\.pth: timm Swin v2 weights do not fit .*Swin v2 weights "
                       r"\(layers\.0\.blocks\.0\.attn\.cpb_mlp\.0\.weight\) are not supported"):  # fmt: skip
        load_weights(get_model("swin_tiny_patch4_window7_224", depths=(1, 1, 1, 1)), tmp_path / "v2.pth")
    tv2 = torchvision.models.swin_v2_t(weights=None)
    torch.save(tv2.state_dict(), tmp_path / "tv2.pth")
    with pytest.raises(ValueError, match=r"torchvision Swin v2 weights do not fit .*swin_v2_\* weights"):
        load_weights(get_model("swin_tiny_patch4_window7_224", depths=(1, 1, 1, 1)), tmp_path / "tv2.pth")
    with pytest.raises(ValueError, match="timm Swin weights need a Swin classifier"):
        torch.save(timm_swin(depths=(1, 1, 1, 1)).state_dict(), tmp_path / "swin.pth")
        load_weights(get_model("digits_cnn"), tmp_path / "swin.pth")


def test_models_and_files_are_recognised_by_their_own_family_only() -> None:
    from structpred.models.weights import timm_swin as timm_family
    from structpred.models.weights import torchvision_swin as tv_family
    from structpred.models.weights.families import TIMM_FAMILIES, TORCHVISION_FAMILIES

    with torch.device("meta"):
        models = {
            "timm_swin": timm.create_model(
                "swin_tiny_patch4_window7_224", pretrained=False, depths=(1, 1, 1, 1)
            ),
            "torchvision_swin": torchvision.models.swin_t(weights=None),
            "timm_vit": timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1),
            "torchvision_vit": torchvision.models.vit_b_16(weights=None),
            "torchvision_detection": torchvision.models.detection.fasterrcnn_resnet50_fpn(
                weights=None, weights_backbone=None
            ),
            "torchvision_segmentation": torchvision.models.segmentation.deeplabv3_resnet50(
                weights=None, weights_backbone=None
            ),
            "timm_convnext": timm.create_model("convnext_atto", pretrained=False),
            "torchvision_convnext": torchvision.models.convnext_tiny(weights=None),
        }
    for source, model in models.items():
        names = model.state_dict().keys()
        for family in (timm_family, tv_family):
            mine = family.__name__.rsplit(".", 1)[-1]
            assert family.recognises(model) == (source == mine), (mine, source)
            assert family.recognises_state(names) == (source == mine), (mine, source)
        if source.endswith("_swin"):  # and no other family takes a Swin file or a Swin model first
            others = [m for m in (*TORCHVISION_FAMILIES, *TIMM_FAMILIES) if not m.__name__.endswith("_swin")]
            assert not any(m.recognises_state(names) for m in others), source
            assert not any(m.recognises(model) for m in others), source

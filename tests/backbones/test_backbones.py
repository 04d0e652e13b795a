"""Backbones: torchvision state dicts load 1:1, features match torchvision's, freezing, bad input.

Parity recipe: build torchvision's model with random weights, give its norms random
statistics, load its state dict into ours, compare the intermediate maps in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch
import torchvision.models as tvm  # torchvision: a dependency
import torchvision.models.detection.backbone_utils as tv_backbone_utils
import torchvision.models.feature_extraction as fe
import torchvision.ops.misc as tv_misc
from torch import Tensor, nn

from structpred.backbones import (
    VGG16Head,
    mobilenet_v3_large,
    narrow,
    resnet18,
    resnet50,
    vgg16,
)
from structpred.backbones.resnet import ResNet
from structpred.layers.frozen_bn import FrozenBatchNorm2d
from tests.backbones import assert_features_close, build_uninitialised, randomize_norms_

RESNET_NODES = {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"}
MOBILENET_STAGE_NODES = {f"features.{i}": f"stage{k}" for k, i in enumerate((0, 2, 4, 7, 13, 16))}
VGG_NODES = {"features.16": "pool3", "features.23": "pool4", "features.29": "c5", "features.30": "pool5"}


def _images(B: int = 1, H: int = 64, W: int = 64, seed: int = 0) -> Tensor:
    return torch.randn(B, 3, H, W, generator=torch.Generator().manual_seed(seed))


def _tv_features(tv_model: nn.Module, nodes: dict[str, str], x: Tensor) -> dict[str, Tensor]:
    extractor = fe.create_feature_extractor(tv_model, return_nodes=nodes).eval()
    with torch.no_grad():
        return dict(extractor(x))


# --- ResNet ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "norm"), [("resnet18", "batchnorm"), ("resnet18", "frozen"), ("resnet50", "frozen")]
)
def test_resnet_matches_torchvision(name: str, norm: str) -> None:
    torch.manual_seed(0)
    tv = randomize_norms_(getattr(tvm, name)(weights=None)).eval()
    build: Callable[..., ResNet] = {"resnet18": resnet18, "resnet50": resnet50}[name]
    norm_layer = nn.BatchNorm2d if norm == "batchnorm" else None
    ours = build_uninitialised(lambda: build(norm_layer=norm_layer)).eval()
    # The torchvision BN state dict (with num_batches_tracked) loads into FrozenBN too.
    result = ours.load_state_dict(tv.state_dict(), strict=False)
    assert result.missing_keys == []
    assert sorted(result.unexpected_keys) == ["fc.bias", "fc.weight"]
    x = _images(2, 64, 96)
    with torch.no_grad():
        got = ours.forward_features(x)
    assert_features_close(got, _tv_features(tv, RESNET_NODES, x))
    widths = {"resnet18": 64, "resnet50": 256}[name]
    assert ours.out_channels == {"c2": widths, "c3": 2 * widths, "c4": 4 * widths, "c5": 8 * widths}
    assert {k: 96 // v.shape[-1] for k, v in got.items()} == ours.strides
    assert ours.strides == {"c2": 4, "c3": 8, "c4": 16, "c5": 32}


def test_resnet_frozen_bn_is_default_and_has_no_norm_parameters() -> None:
    model = resnet18()
    assert isinstance(model.bn1, FrozenBatchNorm2d)
    assert isinstance(model.layer2[0].downsample[1], FrozenBatchNorm2d)
    assert not any("bn" in n or "downsample.1" in n for n, _ in model.named_parameters())


def test_resnet_trainable_layers_match_torchvision() -> None:
    # Trainable BN, so that bn1's special case (trained only with 5) is visible.
    tv = tvm.resnet18(weights=None, norm_layer=nn.BatchNorm2d)
    ours = resnet18(norm_layer=nn.BatchNorm2d)
    for trainable in range(6):
        tv.requires_grad_(True)  # torchvision's extractor only ever switches gradients off
        tv_body = tv_backbone_utils._resnet_fpn_extractor(tv, trainable).body
        ours.set_trainable_layers(trainable)
        expected = {n: p.requires_grad for n, p in tv_body.named_parameters()}
        assert {n: p.requires_grad for n, p in ours.named_parameters()} == expected, trainable
    frozen = resnet18(norm_layer=nn.BatchNorm2d, trainable_layers=2)
    assert {n for n, p in frozen.named_parameters() if p.requires_grad} == {
        n for n, _ in frozen.named_parameters() if n.startswith(("layer3", "layer4"))
    }


# --- MobileNetV3-Large -------------------------------------------------------------------------


@pytest.mark.parametrize("dilated", [False, True])
def test_mobilenet_v3_large_matches_torchvision(dilated: bool) -> None:
    torch.manual_seed(0)
    tv = randomize_norms_(tvm.mobilenet_v3_large(weights=None, dilated=dilated)).eval()
    # torchvision's classifier uses BN eps 1e-3 (its detection builders pass FrozenBN, eps 1e-5).
    tv_norm = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)
    ours = build_uninitialised(
        lambda: mobilenet_v3_large(norm_layer=tv_norm, dilated=dilated, return_stages=range(6))
    ).eval()
    result = ours.load_state_dict(tv.state_dict(), strict=False)
    assert result.missing_keys == []
    assert all(k.startswith("classifier.") for k in result.unexpected_keys)
    x = _images(1, 64, 64)
    with torch.no_grad():
        got = ours.forward_features(x)
    assert_features_close(got, _tv_features(tv, MOBILENET_STAGE_NODES, x))
    assert ours.out_channels == {f"stage{k}": c for k, c in enumerate((16, 24, 40, 80, 160, 960))}
    strides = (2, 4, 8, 16, 16, 16) if dilated else (2, 4, 8, 16, 32, 32)
    assert ours.strides == {f"stage{k}": s for k, s in enumerate(strides)}
    assert {k: 64 // v.shape[-1] for k, v in got.items()} == ours.strides


def test_mobilenet_default_is_frozen_bn_and_fpn_stages() -> None:
    tv = tvm.mobilenet_v3_large(weights=None, norm_layer=tv_misc.FrozenBatchNorm2d)
    randomize_norms_(tv).eval()
    ours = build_uninitialised(mobilenet_v3_large).eval()
    assert ours.features[0][1].eps == 1e-5 and isinstance(ours.features[0][1], FrozenBatchNorm2d)
    assert list(ours.out_channels) == ["stage4", "stage5"]
    ours.load_state_dict(tv.state_dict(), strict=False)
    x = _images(1, 64, 64)
    with torch.no_grad():
        got = ours.forward_features(x)
    expected = _tv_features(tv, {"features.13": "stage4", "features.16": "stage5"}, x)
    assert_features_close(got, expected)
    assert got["stage4"].shape == (1, 160, 2, 2) and got["stage5"].shape == (1, 960, 2, 2)


def test_mobilenet_trainable_layers_match_torchvision() -> None:
    tv = tvm.mobilenet_v3_large(weights=None, norm_layer=nn.BatchNorm2d)
    ours = mobilenet_v3_large(norm_layer=nn.BatchNorm2d).features
    assert ours.stage_indices == [0, 2, 4, 7, 13, 16]
    for trainable in range(7):
        tv.requires_grad_(True)  # torchvision's extractor only ever switches gradients off
        tv_body = tv_backbone_utils._mobilenet_extractor(tv, True, trainable).body
        ours.set_trainable_layers(trainable)
        expected = {n: p.requires_grad for n, p in tv_body.named_parameters()}
        assert {n: p.requires_grad for n, p in ours.named_parameters()} == expected, trainable
    # The constructor argument does the same (torchvision's detection default is 3: children 7..16).
    built = mobilenet_v3_large(norm_layer=nn.BatchNorm2d, trainable_layers=3).features
    assert {n.split(".")[0] for n, p in built.named_parameters() if p.requires_grad} == {
        str(i) for i in range(7, 17)
    }


# --- VGG-16 --------------------------------------------------------------------------------------


def _tv_vgg16_features_only() -> nn.Module:
    """torchvision's vgg16 with random conv weights; the 120M classifier weights are never allocated."""
    with torch.device("meta"):
        tv = tvm.vgg16(weights=None)
    tv.features.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in tv.features:
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * 9
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_out) ** 0.5)
                m.bias.copy_(0.01 * torch.randn(m.bias.shape, generator=g))
    return tv.eval()


def test_vgg16_matches_torchvision() -> None:
    tv = _tv_vgg16_features_only()
    ours = build_uninitialised(vgg16).eval()
    ours.features.load_state_dict(tv.features.state_dict())
    assert set(ours.state_dict()) == {k for k in tv.state_dict() if k.startswith("features.")}
    x = _images(1, 64, 96)
    with torch.no_grad():
        got = ours.forward_features(x)
        expected, y = {}, x
        for i, layer in enumerate(tv.features):
            y = layer(y)
            if f"features.{i}" in VGG_NODES:
                expected[VGG_NODES[f"features.{i}"]] = y.clone()  # clone: the next ReLU is in place
    assert_features_close(got, expected)
    assert got["c5"].shape == (1, 512, 4, 6)  # conv5_3: stride 16, no pool5
    assert {k: 96 // v.shape[-1] for k, v in got.items()} == ours.strides


def test_vgg16_head_key_map_matches_torchvision_classifier() -> None:
    with torch.device("meta"):
        tv_state = tvm.vgg16(weights=None).state_dict()
        head_state = VGG16Head().state_dict()
    key_map = VGG16Head.torchvision_key_map()
    assert set(key_map.values()) == set(head_state)
    for src, dst in key_map.items():
        assert tv_state[src].shape == head_state[dst].shape, src
    # The unmapped torchvision layers are the ReLUs/dropouts and the 1000-way classifier.6.
    assert {k for k in tv_state if k.startswith("classifier.")} - set(key_map) == {
        "classifier.6.weight",
        "classifier.6.bias",
    }


def test_vgg16_head_matches_torchvision_layout() -> None:
    # torchvision's classifier layout at a small size: Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear.
    torch.manual_seed(0)
    classifier = nn.Sequential(
        nn.Linear(512 * 2 * 2, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 16), nn.ReLU(), nn.Dropout(),
        nn.Linear(16, 10),
    ).eval()  # fmt: skip
    state = {f"classifier.{k}": v for k, v in classifier.state_dict().items()}
    head = VGG16Head(in_features=512 * 2 * 2, hidden=16).eval()
    head.load_torchvision_state_dict(state)
    rois = torch.randn(3, 512, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(head(rois), classifier[:6](rois.flatten(1)))
    head.train()
    assert head(rois).shape == (3, 16)


def test_vgg16_trainable_from_freezes_conv1_conv2() -> None:
    model = build_uninitialised(lambda: vgg16(trainable_from=10))
    frozen = {n.split(".")[1] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"0", "2", "5", "7"}


def test_vgg16_head_bad_input() -> None:
    head = VGG16Head(in_features=512 * 2 * 2, hidden=8)
    with pytest.raises(ValueError, match="features per RoI"):
        head(torch.randn(2, 512, 7, 7))
    with pytest.raises(ValueError, match="lacks"):
        head.load_torchvision_state_dict({})
    with pytest.raises(ValueError, match="shape"):
        head.load_torchvision_state_dict(
            {k: torch.zeros(1) for k in VGG16Head.torchvision_key_map()}  # wrong shapes
        )


# --- narrow ----------------------------------------------------------------------------------------


def test_narrow_forward_backward_and_strides() -> None:
    torch.manual_seed(0)
    model = narrow()
    x = _images(2, 128, 128)
    feats = model.forward_features(x)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "c2": (2, 16, 32, 32),
        "c3": (2, 32, 16, 16),
        "c4": (2, 64, 8, 8),
        "c5": (2, 128, 4, 4),
    }
    assert model.out_channels == {"c2": 16, "c3": 32, "c4": 64, "c5": 128}
    sum(v.square().mean() for v in feats.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # Odd sizes round up at each stride.
    odd = model.forward_features(_images(1, 100, 130))
    assert odd["c5"].shape[-2:] == (4, 5) and odd["c2"].shape[-2:] == (25, 33)


def test_narrow_group_norm_and_bad_config() -> None:
    model = narrow((8, 8, 16, 16), norm_layer=lambda c: nn.GroupNorm(4, c))
    assert model.forward_features(_images(1, 32, 32))["c5"].shape == (1, 16, 1, 1)
    with pytest.raises(ValueError, match="widths"):
        narrow((16, 32, 64))
    with pytest.raises(ValueError, match="depth"):
        narrow(depth=0)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_large"])
def test_train_mode_backward_with_batch_norm(name: str) -> None:
    torch.manual_seed(0)
    model = {"resnet18": resnet18, "mobilenet_v3_large": mobilenet_v3_large}[name](norm_layer=nn.BatchNorm2d)
    feats = model.train().forward_features(_images(2, 64, 64))
    sum(v.square().mean() for v in feats.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


# --- bad input ---------------------------------------------------------------------------------------

BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "resnet18": resnet18,
    "mobilenet_v3_large": mobilenet_v3_large,
    "vgg16": vgg16,
    "narrow": narrow,
}


BAD_IMAGES = [
    (torch.randn(3, 32, 32), r"\[B, 3, H, W\]"),  # no batch dimension
    (torch.randn(1, 4, 32, 32), r"\[B, 3, H, W\]"),  # four channels
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "floating point"),
    ([torch.randn(3, 32, 32)], "got list"),
]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_bad_images(name: str) -> None:
    model = build_uninitialised(BUILDERS[name])
    for x, match in BAD_IMAGES:
        with pytest.raises(ValueError, match=match):
            model.forward_features(x)


def test_bad_trainable_layers_and_stages() -> None:
    for bad in (-1, 6):
        with pytest.raises(ValueError, match=r"trainable_layers must be in \[0, 5\]"):
            resnet50(trainable_layers=bad)
    with pytest.raises(ValueError, match=r"trainable_layers must be in \[0, 6\]"):
        mobilenet_v3_large(trainable_layers=7)
    with pytest.raises(ValueError, match="return_stages"):
        mobilenet_v3_large(return_stages=(6,))
    with pytest.raises(ValueError, match="trainable_from"):
        vgg16(trainable_from=99)
    with pytest.raises(ValueError, match="layers"):
        ResNet(resnet18().layer1[0].__class__, (2, 2, 2))


# --- dilation (DeepLab) and narrow VGG (FCN) ---------------------------------------------------------


@pytest.mark.parametrize("dilation", [(False, True, True), (True, True, True), (False, False, True)])
def test_dilated_resnet50_matches_torchvision(dilation: tuple[bool, bool, bool]) -> None:
    torch.manual_seed(0)
    tv = randomize_norms_(tvm.resnet50(weights=None, replace_stride_with_dilation=list(dilation))).eval()
    ours = build_uninitialised(
        lambda: resnet50(norm_layer=nn.BatchNorm2d, replace_stride_with_dilation=dilation)
    ).eval()
    result = ours.load_state_dict(tv.state_dict(), strict=False)
    assert result.missing_keys == [] and sorted(result.unexpected_keys) == ["fc.bias", "fc.weight"]
    x = _images(1, 65, 97)  # odd sizes: the padding of every dilated conv matters
    with torch.no_grad():
        got = ours.forward_features(x)
    assert_features_close(got, _tv_features(tv, RESNET_NODES, x))
    expected_strides, s = {"c2": 4}, 4
    for k, d in zip(("c3", "c4", "c5"), dilation, strict=True):
        s *= 1 if d else 2
        expected_strides[k] = s
    assert ours.strides == expected_strides
    for name, block in ours.layer4.named_children():  # first block: previous dilation, then doubled
        d4 = {(False, True, True): (2, 4), (True, True, True): (4, 8), (False, False, True): (1, 2)}[dilation]
        assert block.conv2.dilation == ((d4[0],) * 2 if name == "0" else (d4[1],) * 2)


def test_dilated_basic_block_resnet18_and_narrow() -> None:
    x = _images(1, 64, 64)
    r18 = resnet18(replace_stride_with_dilation=(False, True, True)).eval()
    assert {k: tuple(v.shape[-2:]) for k, v in r18.forward_features(x).items()} == {
        "c2": (16, 16), "c3": (8, 8), "c4": (8, 8), "c5": (8, 8),
    }  # fmt: skip
    assert r18.layer4[1].conv1.dilation == (4, 4) and r18.layer4[0].conv1.dilation == (2, 2)
    net = narrow(replace_stride_with_dilation=(False, True, True))
    feats = net.forward_features(_images(2, 128, 128))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "c2": (2, 16, 32, 32), "c3": (2, 32, 16, 16), "c4": (2, 64, 16, 16), "c5": (2, 128, 16, 16),
    }  # fmt: skip
    assert net.strides == {"c2": 4, "c3": 8, "c4": 8, "c5": 8}
    assert net.layer4[0][0].dilation == (2, 2) and net.layer4[1][0].dilation == (4, 4)
    # Same parameters as the undilated net: a dilated stage only changes strides and dilations.
    assert [p.shape for p in net.parameters()] == [p.shape for p in narrow().parameters()]
    for bad in ((True, True), (False,) * 4):
        with pytest.raises(ValueError, match="replace_stride_with_dilation"):
            resnet50(replace_stride_with_dilation=bad)
        with pytest.raises(ValueError, match="replace_stride_with_dilation"):
            narrow(replace_stride_with_dilation=bad)


def test_vgg16_batch_norm_layout_is_torchvision_vgg16_bn() -> None:
    with torch.device("meta"):
        tv_keys = {k for k in tvm.vgg16_bn(weights=None).state_dict() if k.startswith("features.")}
        ours = vgg16(batch_norm=True)
    assert set(ours.state_dict()) == tv_keys
    assert ours.tap_indices == {"pool3": 23, "pool4": 33, "c5": 42, "pool5": 43}
    assert build_uninitialised(vgg16).tap_indices == {"pool3": 16, "pool4": 23, "c5": 29, "pool5": 30}


def test_vgg16_width_div_padding_and_ceil_mode() -> None:
    model = vgg16(width_div=16, conv1_padding=100, ceil_mode=True)
    assert model.out_channels == {"pool3": 16, "pool4": 32, "c5": 32, "pool5": 32}
    assert model.features[0].padding == (100, 100) and model.features[2].padding == (1, 1)
    feats = model.forward_features(_images(1, 33, 35))
    # conv1_1 pads by 100: 33 -> 231; the pools round up (Caffe): 116, 58, 29 (pool3), 15, 8.
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == {
        "pool3": (16, 29, 30), "pool4": (32, 15, 15), "c5": (32, 15, 15), "pool5": (32, 8, 8),
    }  # fmt: skip
    for bad in (0, 3, 128):
        with pytest.raises(ValueError, match="width_div"):
            vgg16(width_div=bad)
    with pytest.raises(ValueError, match="conv1_padding"):
        vgg16(conv1_padding=-1)

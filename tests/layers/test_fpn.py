"""FPN and BackboneWithFPN: parity with torchvision (keys 1:1, outputs), layout, bad input."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision.models.detection as tv_detection
import torchvision.models.detection.backbone_utils as tv_backbone_utils
import torchvision.ops.feature_pyramid_network as tv_fpn
from torch import Tensor, nn

from structpred.backbones.fpn import (
    BackboneWithFPN,
    mobilenet_v3_large_fpn,
    narrow_fpn,
    resnet18_fpn,
    resnet50_fpn,
)
from structpred.layers.fpn import FeaturePyramidNetwork, LastLevelMaxPool
from tests.backbones import assert_features_close, build_uninitialised, randomize_norms_

IN_CHANNELS = [8, 16, 32, 64]
# Odd sizes, not all exact halves: the top-down path must interpolate to the lateral's size.
SIZES = [(37, 53), (19, 27), (9, 13), (4, 7)]


def _levels(seed: int = 0) -> OrderedDict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (f"feat{i}", torch.randn(2, c, h, w, generator=g))
        for i, (c, (h, w)) in enumerate(zip(IN_CHANNELS, SIZES, strict=True))
    )


@pytest.mark.parametrize("extra", ["maxpool", None])
@pytest.mark.parametrize("norm", [None, nn.BatchNorm2d])
def test_fpn_matches_torchvision(extra: str | None, norm: type[nn.Module] | None) -> None:
    torch.manual_seed(0)
    tv = tv_fpn.FeaturePyramidNetwork(
        IN_CHANNELS, 16, extra_blocks=tv_fpn.LastLevelMaxPool() if extra else None, norm_layer=norm
    )
    tv = randomize_norms_(tv).eval()
    ours = FeaturePyramidNetwork(IN_CHANNELS, 16, extra_block=extra, norm_layer=norm).eval()
    assert set(ours.state_dict()) == set(tv.state_dict())
    ours.load_state_dict(tv.state_dict())
    x = _levels()
    with torch.no_grad():
        got, expected = ours(x), tv(x)
    assert_features_close(got, expected, atol=1e-5)
    assert list(got) == ["feat0", "feat1", "feat2", "feat3"] + (["pool"] if extra else [])
    if extra:
        assert got["pool"].shape[-2:] == (2, 4)  # ceil(4 / 2), ceil(7 / 2)
        torch.testing.assert_close(got["pool"], got["feat3"][..., ::2, ::2], rtol=0, atol=0)


def test_fpn_gradients_reach_every_level() -> None:
    fpn = FeaturePyramidNetwork(IN_CHANNELS, 8)
    x = OrderedDict((k, v.requires_grad_()) for k, v in _levels().items())
    sum(v.sum() for v in fpn(x).values()).backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in x.values())


def test_resnet50_fpn_matches_resnet_fpn_backbone() -> None:
    torch.manual_seed(0)
    tv = randomize_norms_(
        tv_backbone_utils.resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=3)
    ).eval()
    ours = build_uninitialised(lambda: resnet50_fpn(trainable_layers=3)).eval()
    assert set(ours.state_dict()) == set(tv.state_dict())
    ours.load_state_dict(tv.state_dict())
    assert {n: p.requires_grad for n, p in ours.named_parameters()} == {
        n: p.requires_grad for n, p in tv.named_parameters()
    }
    x = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, expected = ours(x), tv(x)
    assert_features_close(got, expected)
    assert list(got) == ["0", "1", "2", "3", "pool"] and ours.out_channels == 256
    assert [tuple(v.shape[-2:]) for v in got.values()] == [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]


def test_mobilenet_v3_large_fpn_matches_mobilenet_backbone() -> None:
    torch.manual_seed(0)
    tv = tv_backbone_utils.mobilenet_backbone(
        backbone_name="mobilenet_v3_large", weights=None, fpn=True, trainable_layers=3
    )
    tv = randomize_norms_(tv).eval()
    ours = build_uninitialised(lambda: mobilenet_v3_large_fpn(trainable_layers=3)).eval()
    assert set(ours.state_dict()) == set(tv.state_dict())
    ours.load_state_dict(tv.state_dict())
    assert {n: p.requires_grad for n, p in ours.named_parameters()} == {
        n: p.requires_grad for n, p in tv.named_parameters()
    }
    x = torch.randn(1, 3, 96, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, expected = ours(x), tv(x)
    assert_features_close(got, expected)
    assert list(got) == ["0", "1", "pool"] and ours.out_channels == 256
    assert [tuple(v.shape[-2:]) for v in got.values()] == [(3, 2), (3, 2), (2, 1)]  # stride 32, 32, 64


@pytest.mark.parametrize(
    ("builder", "ours"),
    [
        (tv_detection.fasterrcnn_resnet50_fpn, resnet50_fpn),
        (tv_detection.fasterrcnn_mobilenet_v3_large_fpn, mobilenet_v3_large_fpn),
        (tv_detection.fasterrcnn_mobilenet_v3_large_320_fpn, mobilenet_v3_large_fpn),
    ],
    ids=["resnet50", "mobilenet_v3_large", "mobilenet_v3_large_320"],
)
def test_faster_rcnn_backbone_keys_map_one_to_one(builder, ours) -> None:  # type: ignore[no-untyped-def]
    # Names and shapes only: build on the meta device (no memory, no init).
    with torch.device("meta"):
        tv_state = builder(weights=None, weights_backbone=None).state_dict()
        our_state = ours().state_dict()
    # Untrained torchvision models use nn.BatchNorm2d; its step counters have no FrozenBN place.
    theirs = {
        k.removeprefix("backbone."): v.shape
        for k, v in tv_state.items()
        if k.startswith("backbone.") and not k.endswith("num_batches_tracked")
    }
    assert theirs == {k: v.shape for k, v in our_state.items()}


def test_resnet18_and_narrow_fpn_layout() -> None:
    x = torch.randn(2, 3, 128, 128)
    r18 = resnet18_fpn(out_channels=32)
    assert r18.fpn.in_channels_list == [64, 128, 256, 512]
    assert {k: tuple(v.shape) for k, v in r18(x[:1, :, :64, :64]).items()} == {
        "0": (1, 32, 16, 16),
        "1": (1, 32, 8, 8),
        "2": (1, 32, 4, 4),
        "3": (1, 32, 2, 2),
        "pool": (1, 32, 1, 1),
    }
    model = narrow_fpn()
    out = model(x)
    assert model.out_channels == 64
    assert {k: v.shape[-1] for k, v in out.items()} == {"0": 32, "1": 16, "2": 8, "3": 4, "pool": 2}
    sum(v.mean() for v in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_backbone_with_fpn_subset_of_levels_and_no_extra() -> None:
    model = resnet18_fpn(in_keys=["c3", "c5"], extra_block=None, out_channels=8)
    out = model(torch.randn(1, 3, 64, 64))
    assert list(out) == ["0", "1"] and out["0"].shape == (1, 8, 8, 8) and out["1"].shape == (1, 8, 2, 2)


def test_last_level_max_pool_is_stride_2_subsampling() -> None:
    p = torch.randn(1, 2, 5, 7)
    results, names = LastLevelMaxPool()([p], [p], ["3"])
    assert names == ["3", "pool"]
    torch.testing.assert_close(results[1], p[..., ::2, ::2], rtol=0, atol=0)


def test_fpn_bad_input() -> None:
    fpn = FeaturePyramidNetwork(IN_CHANNELS, 8)
    x = _levels()
    with pytest.raises(ValueError, match="built for 4 levels, got 3"):
        fpn(OrderedDict(list(x.items())[:3]))
    bad = OrderedDict(x)
    bad["feat2"] = torch.randn(2, 5, 9, 13)
    with pytest.raises(ValueError, match=r"'feat2' must be \[B, 32, H, W\]"):
        fpn(bad)
    bad["feat2"] = torch.randn(32, 9, 13)
    with pytest.raises(ValueError, match="feat2"):
        fpn(bad)
    with pytest.raises(ValueError, match="extra_block"):
        FeaturePyramidNetwork(IN_CHANNELS, 8, extra_block="p8")
    with pytest.raises(ValueError, match="in_channels_list"):
        FeaturePyramidNetwork([8, 0], 8)
    with pytest.raises(ValueError, match="out_channels"):
        FeaturePyramidNetwork([8], 0)


def test_backbone_with_fpn_bad_arguments() -> None:
    body = resnet18_fpn().body
    with pytest.raises(ValueError, match=r"in_keys \['c6'\]"):
        BackboneWithFPN(body, ["c5", "c6"], 8)
    with pytest.raises(ValueError, match="at least one"):
        BackboneWithFPN(body, [], 8)
    with pytest.raises(ValueError, match="forward_features"):
        BackboneWithFPN(nn.Conv2d(3, 8, 3), ["0"], 8)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        resnet18_fpn()(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="trainable_layers"):
        mobilenet_v3_large_fpn(trainable_layers=7)

"""The backbone registry and protocol: every registered backbone, output strides, a new backbone
plugged into the detection and segmentation models without new model code."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from structpred.backbones import check_backbone, fpn_backbone, get_backbone, list_backbones
from structpred.backbones import registry as backbone_registry
from structpred.backbones.registry import register_backbone
from structpred.models import get_model
from structpred.tasks import get_task

SMALL = {"vgg16": {"width_div": 8}, "narrow": {"widths": (8, 16, 32, 64)}}


def test_registered_backbones() -> None:
    assert {"resnet18", "resnet50", "mobilenet_v3_large", "vgg16", "narrow"} <= set(list_backbones())


@pytest.mark.parametrize("name", sorted({"resnet18", "mobilenet_v3_large", "vgg16", "narrow"}))
def test_protocol_maps_channels_and_strides(name: str) -> None:
    model = get_backbone(name, **SMALL.get(name, {})).eval()
    x = torch.rand(1, 3, 70, 90)
    with torch.no_grad():
        feats = model.forward_features(x)  # type: ignore[operator]
    assert list(feats) == list(model.out_channels) == list(model.strides)  # type: ignore[arg-type]
    for key, f in feats.items():
        s = model.strides[key]  # type: ignore[index]
        assert f.shape[1] == model.out_channels[key]  # type: ignore[index]
        # Sides round up at each stride-2 step; VGG's floor-mode pools round down.
        assert f.shape[-2] in (70 // s, math.ceil(70 / s)) and f.shape[-1] in (90 // s, math.ceil(90 / s))


@pytest.mark.parametrize(("name", "output_stride"), [("resnet18", 8), ("resnet18", 16), ("narrow", 8),
                                                     ("mobilenet_v3_large", 16)])
def test_output_stride_dilates(name: str, output_stride: int) -> None:
    model = get_backbone(name, output_stride=output_stride, **SMALL.get(name, {})).eval()
    assert max(model.strides.values()) == output_stride  # type: ignore[union-attr]
    with torch.no_grad():
        last = list(model.forward_features(torch.rand(1, 3, 64, 64)).values())[-1]  # type: ignore[operator]
    assert last.shape[-1] == 64 // output_stride


@pytest.mark.parametrize(
    ("name", "output_stride"), [("resnet18", 4), ("vgg16", 16), ("mobilenet_v3_large", 8)]
)
def test_unsupported_output_stride(name: str, output_stride: int) -> None:
    with pytest.raises(ValueError, match="output_stride"):
        get_backbone(name, output_stride=output_stride)


def test_unknown_backbone_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet7'; registered: .*narrow"):
        get_backbone("resnet7")
    with pytest.raises(ValueError, match="unknown backbone"):
        get_model("fasterrcnn_fpn", backbone="resnet7")


class _NoStrides(nn.Module):
    out_channels = {"a": 4}

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        return {"a": x}


class _Unordered(_NoStrides):
    out_channels = {"a": 4, "b": 4}
    strides = {"a": 8, "b": 4}


def test_check_backbone_rejects_broken_protocols() -> None:
    with pytest.raises(ValueError, match="same map names"):
        check_backbone(_NoStrides(), "here")
    with pytest.raises(ValueError, match="finest first"):
        check_backbone(_Unordered(), "here")
    with pytest.raises(ValueError, match="no forward_features"):
        check_backbone(nn.Conv2d(3, 3, 1), "here")


class TinyNet(nn.Module):
    """A backbone written for this test only: two stride-2 stages and a third."""

    def __init__(self, width: int = 8, output_stride: int = 32) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"tiny: output_stride must be 32, got {output_stride}")
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=4, padding=1), nn.ReLU())
        self.s8 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.s16 = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.ReLU())
        self.out_channels = {"p2": width, "p3": 2 * width, "p4": 4 * width}
        self.strides = {"p2": 4, "p3": 8, "p4": 16}

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        p2 = self.stem(x)  # (B, w, H/4, W/4)
        p3 = self.s8(p2)  # (B, 2w, H/8, W/8)
        return {"p2": p2, "p3": p3, "p4": self.s16(p3)}  # (B, 4w, H/16, W/16)


@pytest.fixture
def tiny_backbone() -> Iterator[str]:
    register_backbone("_test_tiny")(TinyNet)
    yield "_test_tiny"
    backbone_registry._BACKBONES.pop("_test_tiny")


@pytest.mark.parametrize(
    ("model", "kwargs"),
    [
        ("fasterrcnn_fpn", {"min_size": 64, "max_size": 64, "fpn_channels": 16}),
        ("maskrcnn_fpn", {"min_size": 64, "max_size": 64, "fpn_channels": 16, "box_detections_per_img": 5}),
        ("deeplabv3", {"num_classes": 4, "aspp_channels": 16, "output_stride": 32, "aux": True}),
    ],
)
def test_a_new_backbone_runs_the_models_that_take_one(tiny_backbone: str, model: str, kwargs: dict) -> None:
    net = get_model(model, backbone=tiny_backbone, **kwargs)
    assert isinstance(net.backbone.body if hasattr(net, "backbone") else net.net.backbone, TinyNet)
    task = get_task({"fasterrcnn_fpn": "detection", "maskrcnn_fpn": "instance_segmentation"}.get(
        model, "semantic_segmentation"))
    inputs, targets = task.sample_batch(net)
    preds, losses = net.train()(inputs, targets)
    task.check_predictions(preds, len(inputs))
    sum(losses.values()).backward()
    assert net.eval()(inputs)[1] == {}


def test_fpn_backbone_reads_every_map_by_default() -> None:
    neck = fpn_backbone("narrow", out_channels=16, widths=(8, 16, 32, 64))
    with torch.no_grad():
        out = neck(torch.rand(1, 3, 64, 64))
    assert list(out) == ["0", "1", "2", "3", "pool"] and all(f.shape[1] == 16 for f in out.values())

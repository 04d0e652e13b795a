"""Weights in for fine-tuning: ``load_weights`` from each source kind (a checkpoint of ours written
by the engine, torchvision state dicts made here from torchvision's builders with random weights,
no downloads), the class-count change that re-initialises exactly the class-dependent tensors,
the errors, and ``freeze``."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision.models.detection as tv_detection  # torchvision: a dependency
import torchvision.models.segmentation as tv_segmentation
from safetensors.torch import save_file
from torch import Tensor, nn

from structpred.engine.checkpoint import save_checkpoint
from structpred.models import from_torchvision, get_model, list_models, model_info
from structpred.models.weights import (
    WeightsReport,
    backbone_stages,
    class_dependent_names,
    freeze,
    load_weights,
)

BOX_PREDICTOR = [
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
]


def _random_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every floating tensor random, so that a copied tensor is told apart from a fresh one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return module


def _snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _narrow(num_classes: int, seed: int | None = None, **kwargs: Any) -> nn.Module:
    model = get_model("fasterrcnn_narrow_fpn", num_classes=num_classes, **kwargs)
    return _random_(model, seed) if seed is not None else model


def _ours_checkpoint(tmp_path: Path, model: nn.Module, name: str = "fasterrcnn_narrow_fpn") -> Path:
    """A run directory with one checkpoint written by the engine."""
    run = tmp_path / "run"
    save_checkpoint(run, 7, model, None, {"epoch": 1, "config": {"model_name": name}})
    return run


# ------------------------------------------------------------------ class-dependent tensors


def _builds(name: str) -> dict[str, Any]:
    return {"vocab": "abc"} if name == "lstm_charlm" else {}


@pytest.mark.parametrize("name", list_models())
def test_every_model_declares_exactly_its_class_dependent_tensors(name: str) -> None:
    with torch.device("meta"):
        if "num_classes" not in inspect.signature(model_info(name).builder).parameters:
            assert class_dependent_names(get_model(name, **_builds(name))) == []
            return
        three, five = get_model(name, num_classes=3), get_model(name, num_classes=5)
    a, b = three.state_dict(), five.state_dict()
    assert a.keys() == b.keys()
    changing = sorted(k for k in a if a[k].shape != b[k].shape)
    assert changing, f"{name}: no tensor depends on num_classes"
    assert sorted(class_dependent_names(three)) == changing


def test_undeclared_model_family_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Linear: no class-dependent tensors declared"):
        class_dependent_names(nn.Linear(2, 3))


# ------------------------------------------------------------------------- ours


def test_ours_round_trip_from_run_dir_json_and_safetensors(tmp_path: Path) -> None:
    source = _narrow(3, seed=1)
    run = _ours_checkpoint(tmp_path, source)
    json_file = next(run.glob("ckpt-*.json"))
    for path in (run, json_file, json_file.with_suffix(".safetensors"), str(run)):
        target = _narrow(3)
        report = load_weights(target, path)
        assert isinstance(report, WeightsReport)
        assert report.kind == "ours" and report.family == "ours: fasterrcnn_narrow_fpn"
        assert report.file == json_file.with_suffix(".safetensors")
        assert report.loaded == len(target.state_dict()) and report.reinitialised == []
        for k, v in source.state_dict().items():
            torch.testing.assert_close(target.state_dict()[k], v, rtol=0, atol=0, msg=k)
        assert str(report).splitlines() == [
            f"loaded {report.loaded} tensors from {report.file} ({report.family})"
        ]


def test_class_count_change_reinitialises_exactly_the_class_dependent_tensors(tmp_path: Path) -> None:
    source = _narrow(5, seed=1)
    run = _ours_checkpoint(tmp_path, source)
    target = _narrow(1)
    fresh = _snapshot(target)
    report = load_weights(target, run)
    assert sorted(report.reinitialised_names) == sorted(BOX_PREDICTOR)
    assert report.loaded == len(fresh) - len(BOX_PREDICTOR)
    for k, v in target.state_dict().items():
        expected = fresh[k] if k in BOX_PREDICTOR else source.state_dict()[k]
        torch.testing.assert_close(v, expected, rtol=0, atol=0, msg=k)
    text = str(report)
    assert "re-initialised for 1 class: roi_heads.box_predictor.cls_score.weight [2, " in text
    assert "(file: [6, " in text and "bbox_pred.weight [8, " in text


def test_mask_rcnn_class_change_reinitialises_box_and_mask_predictors(tmp_path: Path) -> None:
    source = _random_(get_model("maskrcnn_narrow_fpn", num_classes=4), 2)
    run = _ours_checkpoint(tmp_path, source, "maskrcnn_narrow_fpn")
    target = get_model("maskrcnn_narrow_fpn", num_classes=2)
    report = load_weights(target, run)
    masks = [
        "roi_heads.mask_predictor.mask_fcn_logits.weight",
        "roi_heads.mask_predictor.mask_fcn_logits.bias",
    ]
    assert sorted(report.reinitialised_names) == sorted(BOX_PREDICTOR + masks)
    torch.testing.assert_close(
        target.state_dict()["roi_heads.mask_predictor.conv5_mask.weight"],
        source.state_dict()["roi_heads.mask_predictor.conv5_mask.weight"],
    )


def test_other_shape_mismatch_names_the_tensor_and_both_shapes_and_copies_nothing(tmp_path: Path) -> None:
    run = _ours_checkpoint(tmp_path, _narrow(3, seed=1, fpn_channels=16))
    target = _narrow(3)
    before = _snapshot(target)
    with pytest.raises(ValueError, match=r"shape mismatch.*'backbone\.fpn\.\S+' \(16, .*\) -> .*\(32, "):
        load_weights(target, run)
    for k, v in target.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_missing_and_unexpected_tensors_are_named(tmp_path: Path) -> None:
    faster = _ours_checkpoint(tmp_path / "a", _narrow(3, seed=1))
    with pytest.raises(ValueError, match=r"filled by no source tensor: 'roi_heads\.mask_head"):
        load_weights(get_model("maskrcnn_narrow_fpn", num_classes=3), faster)
    mask = _ours_checkpoint(tmp_path / "b", get_model("maskrcnn_narrow_fpn", num_classes=3))
    with pytest.raises(ValueError, match=r"renamed to no tensor of ours: 'roi_heads\.mask_head"):
        load_weights(_narrow(3), mask)


# ------------------------------------------------------------------------- torchvision


@pytest.mark.slow
def test_torchvision_detection_state_dict_equals_from_torchvision(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tv = tv_detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=5
    ).eval()
    file = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), file)
    expected = from_torchvision(tv).state_dict()

    same = get_model("fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=4)
    report = load_weights(same, file)
    assert (report.kind, report.family, report.reinitialised) == (
        "torchvision",
        "torchvision Faster R-CNN",
        [],
    )
    for k, v in same.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0, msg=k)

    fewer = get_model("fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=2)
    fresh = _snapshot(fewer)
    report = load_weights(fewer, file)
    assert sorted(report.reinitialised_names) == sorted(BOX_PREDICTOR)
    assert "cls_score.weight [3, 1024] (file: [5, 1024])" in str(report)
    for k, v in fewer.state_dict().items():
        torch.testing.assert_close(v, fresh[k] if k in BOX_PREDICTOR else expected[k], rtol=0, atol=0)

    # torchvision's reference scripts save {"model": state_dict, "optimizer": ...}
    torch.save({"model": tv.state_dict(), "epoch": 3}, tmp_path / "ref.pt")
    assert load_weights(
        get_model("fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=4), tmp_path / "ref.pt"
    ).loaded
    # the same names in a .safetensors file (no model/ prefix: not a checkpoint of ours)
    save_file(
        {k: v.contiguous().clone() for k, v in tv.state_dict().items()}, str(tmp_path / "tv.safetensors")
    )
    again = get_model("fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=4)
    assert load_weights(again, tmp_path / "tv.safetensors").family == "torchvision Faster R-CNN"
    for k, v in again.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["deeplabv3", "fcn"])
def test_torchvision_segmentation_state_dict(tmp_path: Path, head: str) -> None:
    torch.manual_seed(0)
    build = tv_segmentation.deeplabv3_resnet50 if head == "deeplabv3" else tv_segmentation.fcn_resnet50
    tv = build(weights=None, weights_backbone=None, num_classes=6, aux_loss=True)
    file = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), file)
    expected = from_torchvision(tv).state_dict()
    ours = get_model(f"{head}_resnet50", num_classes=3, aux=True)
    fresh = _snapshot(ours)
    report = load_weights(ours, file)
    dependent = class_dependent_names(ours)
    assert sorted(report.reinitialised_names) == sorted(dependent) and len(dependent) == 4  # head + aux
    for k, v in ours.state_dict().items():
        torch.testing.assert_close(v, fresh[k] if k in dependent else expected[k], rtol=0, atol=0)
    other = "fcn" if head == "deeplabv3" else "deeplabv3"
    with pytest.raises(ValueError, match=r"weights do not fit AtrousSegmenter: the file holds torchvision"):
        load_weights(get_model(f"{other}_resnet50", num_classes=3, aux=True), file)


def test_state_dict_of_another_family_is_refused(tmp_path: Path) -> None:
    tv = tv_detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3
    )
    torch.save(tv.state_dict(), tmp_path / "det.pth")
    with pytest.raises(
        ValueError, match=r"det\.pth: torchvision Faster R-CNN weights do not fit AtrousSegmenter"
    ):
        load_weights(get_model("deeplab_narrow", num_classes=3), tmp_path / "det.pth")
    with pytest.raises(ValueError, match=r"shape mismatch|filled by no source|renamed to no tensor"):
        load_weights(_narrow(2), tmp_path / "det.pth")  # another backbone: tensors named
    torch.save({"conv1.weight": torch.zeros(2), "fc.weight": torch.zeros(2)}, tmp_path / "cls.pth")
    with pytest.raises(ValueError, match=r"cls\.pth: a state dict of no supported family \(conv1\.weight"):
        load_weights(_narrow(2), tmp_path / "cls.pth")


def test_a_timm_vit_file_loads_into_our_vit_and_is_refused_by_a_detector(tmp_path: Path) -> None:
    import timm  # a pinned dev dependency
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, depth=1).eval()
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    ours = get_model("vit_tiny_patch16_224", num_classes=3, depth=1).eval()
    report = load_weights(ours, tmp_path / "vit.pth")
    assert report.kind == "timm" and report.family == "timm ViT" and report.loaded == len(vit.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours.logits(x), vit(x), atol=1e-4, rtol=0)
    message = r"vit\.pth: timm ViT weights do not fit FasterRCNN: .*ViT classifier"
    with pytest.raises(ValueError, match=message):
        load_weights(_narrow(2), tmp_path / "vit.pth")


# ------------------------------------------------------------------------- bad files


def test_not_a_weights_file(tmp_path: Path) -> None:
    model = _narrow(2)
    with pytest.raises(ValueError, match=r"nope\.pth: no such file or directory"):
        load_weights(model, tmp_path / "nope.pth")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt: not a weights file; expected a run directory"):
        load_weights(model, tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no checkpoint \(ckpt-\*\.json\)"):
        load_weights(model, tmp_path / "empty")
    (tmp_path / "junk.pth").write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(ValueError, match=r"junk\.pth: not a readable torch\.save state dict"):
        load_weights(model, tmp_path / "junk.pth")
    torch.save(nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled Module: refused by weights_only
    with pytest.raises(ValueError, match=r"module\.pth: not a readable torch\.save state dict"):
        load_weights(model, tmp_path / "module.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list\.pth: expected a state dict"):
        load_weights(model, tmp_path / "list.pth")
    (tmp_path / "ckpt-00000001.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"ckpt-00000001\.json: cannot read checkpoint state"):
        load_weights(model, tmp_path / "ckpt-00000001.json")


def test_truncated_files(tmp_path: Path) -> None:
    source = _narrow(2, seed=1)
    run = _ours_checkpoint(tmp_path, source)
    weights = next(run.glob("ckpt-*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"ckpt-00000007\.safetensors: not a readable safetensors file"):
        load_weights(_narrow(2), run)
    pth = tmp_path / "tv.pth"
    torch.save(source.state_dict(), pth)
    pth.write_bytes(pth.read_bytes()[: pth.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"tv\.pth: not a readable torch\.save state dict"):
        load_weights(_narrow(2), pth)


# ------------------------------------------------------------------------- freeze


def _frozen(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def test_freeze_backbone_and_prefixes() -> None:
    model = _narrow(2)
    assert freeze(model, "backbone") == ["backbone.body"]
    assert _frozen(model) == {n for n, _ in model.named_parameters() if n.startswith("backbone.body.")}
    model = _narrow(2)
    assert freeze(model, "rpn, roi_heads.box_head") == ["rpn", "roi_heads.box_head"]
    assert _frozen(model) == {
        n for n, _ in model.named_parameters() if n.startswith(("rpn.", "roi_heads.box_head."))
    }


def test_freeze_first_stages() -> None:
    model = _narrow(2)
    assert backbone_stages(model) == [["backbone.body.stem"]] + [
        [f"backbone.body.layer{i}"] for i in range(1, 5)
    ]
    assert freeze(model, "backbone:2") == ["backbone.body.stem", "backbone.body.layer1"]
    assert {n.split(".")[2] for n in _frozen(model)} == {"stem", "layer1"}
    assert freeze(_narrow(2), "backbone:0") == [] and not _frozen(_narrow(2))


@pytest.mark.parametrize(
    ("name", "stages"), [("fasterrcnn_resnet50_fpn", 5), ("fasterrcnn_mobilenet_v3_large_fpn", 6)]
)
def test_backbone_n_is_torchvision_trainable_layers_inverted(name: str, stages: int) -> None:
    with torch.device("meta"):
        for trainable in range(stages + 1):
            ours = get_model(name, num_classes=2, trainable_layers=stages)
            assert not _frozen(ours)
            freeze(ours, f"backbone:{stages - trainable}")
            reference = get_model(name, num_classes=2, trainable_layers=trainable)
            assert _frozen(ours) == _frozen(reference), trainable


def test_freeze_vgg_blocks_and_segmenter_backbone() -> None:
    with torch.device("meta"):
        fcn = get_model("fcn32s_narrow", num_classes=3)
        assert len(backbone_stages(fcn)) == 5 and backbone_stages(fcn)[0][0] == "net.backbone.features.0"
        assert freeze(get_model("deeplab_narrow", num_classes=3), "backbone") == ["net.backbone"]


def test_freeze_errors_name_the_part() -> None:
    model = _narrow(2)
    with pytest.raises(
        ValueError, match=r"freeze 'rnp': no parameter .* prefix such as backbone, roi_heads, rpn"
    ):
        freeze(model, "rnp")
    with pytest.raises(ValueError, match=r"freeze 'backbone:9': N must be an integer in 0\.\.5"):
        freeze(model, "backbone:9")
    with pytest.raises(ValueError, match=r"freeze 'backbone:x'"):
        freeze(model, "backbone:x")
    with pytest.raises(ValueError, match=r"freeze spec ''"):
        freeze(model, "")
    with pytest.raises(ValueError, match=r"freeze spec 'rpn,'"):
        freeze(model, "rpn,")
    with pytest.raises(ValueError, match=r"UNetSegmenter has no backbone"):
        freeze(get_model("unet_narrow", num_classes=2), "backbone")
    assert not _frozen(model)


def test_frozen_parameters_get_no_gradient_and_do_not_move() -> None:
    torch.manual_seed(0)
    model = _narrow(2)
    frozen_prefixes = freeze(model, "backbone:3,rpn")
    frozen = _frozen(model)
    assert frozen and frozen_prefixes == [
        "backbone.body.stem",
        "backbone.body.layer1",
        "backbone.body.layer2",
        "rpn",
    ]
    # The engine's Trainer gives the optimizer only requires_grad parameters; so do we here.
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    before = _snapshot(model)
    model.train()
    images = [torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}]
    _, losses = model(images, targets)
    sum(losses.values()).backward()
    optimizer.step()
    params = dict(model.named_parameters())
    for name in frozen:
        assert params[name].grad is None, name
        torch.testing.assert_close(params[name].detach(), before[name], rtol=0, atol=0)
    moved = [n for n, p in params.items() if n not in frozen and not torch.equal(p.detach(), before[n])]
    assert any(n.startswith("backbone.body.layer3") for n in moved)

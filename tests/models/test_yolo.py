"""The modern YOLO: builders, the contract, a seeded overfit, images without objects, bad input."""

from __future__ import annotations

import pytest
import torch

from structpred.data import ShapesWorld
from structpred.models import get_model, model_info
from structpred.models.yolo import YOLO
from structpred.tasks import get_task

LOSSES = {"loss_cls", "loss_box", "loss_dfl"}
TINY = {"min_size": 64, "max_size": 64}


def _shapes(n: int, size: int = 64) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    world = ShapesWorld("train", size=size, num_images=n)
    items = [world[i] for i in range(n)]
    return [im for im, _ in items], [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in items]


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("yolo_narrow", TINY),
        ("yolo_lite", TINY),
        ("yolov8", TINY),
        ("yolo_fpn", {**TINY, "backbone": "narrow", "neck_channels": (16, 16, 16)}),
    ],
)
def test_builder_forward_backward_and_contract(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = get_model(name, num_classes=6, **kwargs)
    assert isinstance(model, YOLO) and model_info(name).task == "detection"
    images, targets = _shapes(2, size=80)
    images[1] = images[1][:, :, :64]  # sizes differ within the batch
    targets[1] = {"boxes": torch.tensor([[2.0, 3.0, 40.0, 50.0]]), "labels": torch.tensor([3])}
    model.train()
    preds, losses = model(images, targets)
    assert set(losses) == LOSSES and len(preds) == 2
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    none, losses_only = model(images, targets, predict=False)
    assert none is None and set(losses_only) == LOSSES
    model.eval()
    with torch.no_grad():
        _, eval_losses = model(images, targets)  # validation loss in eval mode
        preds, no_losses = model(images)
    assert set(eval_losses) == LOSSES and no_losses == {}
    get_task("detection").check_predictions(preds, 2)


def test_predictions_come_back_in_original_pixels() -> None:
    torch.manual_seed(0)
    model = get_model("yolo_narrow", num_classes=3, score_thresh=0.0, **TINY).eval()
    images = [torch.rand(3, 50, 120), torch.rand(3, 90, 40)]  # resized to 64 on the longer side
    with torch.no_grad():
        preds, _ = model(images)
    for pred, image in zip(preds, images, strict=True):
        H, W = image.shape[-2:]
        assert pred["boxes"].shape[0] > 0  # threshold 0: detections exist, the checks below run
        assert float(pred["boxes"][:, 2].max()) <= W + 1e-4 and float(pred["boxes"][:, 3].max()) <= H + 1e-4
        assert int(pred["labels"].min()) >= 1 and int(pred["labels"].max()) <= 3
    # The same image batched as a Tensor or alone gives the same detections (no cross-talk).
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        batched, _ = model(x)
        alone, _ = model([x[1]])
    torch.testing.assert_close(batched[1]["boxes"], alone[0]["boxes"])
    torch.testing.assert_close(batched[1]["scores"], alone[0]["scores"])


@pytest.mark.slow
def test_narrow_model_overfits_a_few_images() -> None:
    from structpred.ops import box_iou

    torch.manual_seed(0)
    model = get_model("yolo_narrow", num_classes=6, widths=(8, 8, 16, 32, 64), **TINY)
    images, targets = _shapes(2, size=64)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-3)
    model.train()
    first = None
    for _ in range(25):
        _, losses = model(images, targets, predict=False)
        loss = sum(losses.values())
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.35 * first, (first, float(loss.detach()))
    # Batch statistics (25 steps of BN momentum 0.03 leave the running ones unsettled): the best
    # detection of each image is one of its objects, with its class.
    with torch.no_grad():
        preds, _ = model(images)
    for pred, target in zip(preds, targets, strict=True):
        same = target["labels"] == pred["labels"][0]
        assert same.any() and float(box_iou(pred["boxes"][:1], target["boxes"][same]).max()) > 0.5


def test_images_without_objects_train() -> None:
    torch.manual_seed(0)
    model = get_model("yolo_narrow", num_classes=3, **TINY).train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 80)]
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    _, losses = model(images, [empty, dict(empty)], predict=False)
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_box"].detach()) == 0.0 and float(losses["loss_dfl"].detach()) == 0.0
    sum(losses.values()).backward()
    # One image with objects, one without, in one batch.
    one = {"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([2])}
    _, losses = model(images, [one, empty], predict=False)
    assert float(losses["loss_box"].detach()) > 0


def test_box_geometry_stays_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    model = get_model("yolo_narrow", num_classes=6, score_thresh=0.0, **TINY)
    images, targets = _shapes(2, size=64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, losses = model(images, targets, predict=False)
        model.eval()
        with torch.no_grad():
            preds, _ = model(images)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    boxes = preds[0]["boxes"]
    assert boxes.dtype == torch.float32 and boxes.numel() > 0
    assert bool((boxes != boxes.to(torch.bfloat16).float()).any())  # off the bf16 grid


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ([{"boxes": torch.tensor([[5.0, 5, 4, 9]]), "labels": torch.tensor([1])}], r"\[0\].*degenerate"),
        ([{"boxes": torch.tensor([[40.0, 5, 50, 9]]), "labels": torch.tensor([1])}], "outside the 32x32"),
        ([{"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([4])}], r"must be in 1..3"),
        ([{"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([0])}], r"must be in 1..3"),
        ([{"boxes": torch.tensor([[1.0, float("nan"), 9, 9]]), "labels": torch.tensor([1])}], "degenerate"),
        ([{"boxes": torch.zeros(1, 4)}], "'boxes' and 'labels'"),
        ([], "0 targets for 1 images"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_value_error(targets, message: str) -> None:
    model = get_model("yolo_narrow", num_classes=3, **TINY).eval()
    with pytest.raises(ValueError, match=message), torch.no_grad():
        model([torch.rand(3, 32, 32)], targets)


def test_partly_outside_boxes_are_clipped_and_builders_check_settings() -> None:
    model = get_model("yolo_narrow", num_classes=3, **TINY).train()
    boxes = torch.tensor([[-10.0, 5.0, 30.0, 90.0]])
    target = {"boxes": boxes.clone(), "labels": torch.tensor([2])}
    _, losses = model([torch.rand(3, 64, 64)], [target], predict=False)
    assert torch.isfinite(sum(losses.values())) and float(losses["loss_box"]) > 0
    assert torch.equal(target["boxes"], boxes)
    with pytest.raises(ValueError, match="unknown YOLO settings"):
        get_model("yolo_narrow", nms=0.5)
    with pytest.raises(ValueError, match="num_classes"):
        get_model("yolo_narrow", num_classes=0)
    with pytest.raises(ValueError, match="strides 8, 16, 32"):
        get_model("yolo_fpn", backbone="mobilenet_v3_large")
    with pytest.raises(ValueError, match="asks for neither"):
        model([torch.rand(3, 32, 32)], predict=False)


def _randomise_norms(model: torch.nn.Module) -> None:
    """Running statistics and affine parameters far from their initial values (a fold of the
    initial ones would be nearly the identity and could hide a wrong formula)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.3, 3)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("yolo_lite", {}),
        ("yolo_narrow", {"head_norm": "batch"}),
        ("yolov8", {}),
        ("yolo_lite", {"head_norm": "batch"}),
    ],
)
def test_fused_model_equals_the_unfused_one(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = get_model(name, num_classes=4, score_thresh=0.0, **TINY, **kwargs)
    _randomise_norms(model)
    model.eval()
    fused = model.fuse()
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert norms > 20 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert fused.backbone.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want = model.head(model.neck(model.backbone(x)))
        got = fused.head(fused.neck(fused.backbone(x)))
        torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)  # class logits
        torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)  # box logits
        preds, _ = model([x[0], x[1, :, :48]])
        fused_preds, _ = fused([x[0], x[1, :, :48]])
    for p, q in zip(preds, fused_preds, strict=True):
        assert p["boxes"].shape[0] > 0
        torch.testing.assert_close(q["scores"], p["scores"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(q["boxes"], p["boxes"], atol=1e-4, rtol=1e-5)
    assert model.training is False and any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    model.train()  # the original is untouched and still trains
    with pytest.raises(ValueError, match="fused for inference"):
        fused.train()


def test_fold_conv_bn_matches_conv_then_norm_with_bias_and_groups() -> None:
    from structpred.layers.csp import fold_conv_bn

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2, bias=True)
    bn = torch.nn.BatchNorm2d(8, eps=1e-3)
    _randomise_norms(bn)
    bn.eval()
    x = torch.randn(2, 6, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(fold_conv_bn(conv, bn)(x), bn(conv(x)), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no running statistics"):
        fold_conv_bn(conv, torch.nn.BatchNorm2d(8, track_running_stats=False))


def test_lite_layout_and_depth_settings() -> None:
    from structpred.backbones.csp import CSPDarknet
    from structpred.layers.csp import C2f
    from structpred.models.weights.class_dependent import class_dependent_names

    lite = get_model("yolo_lite", num_classes=3)
    assert not any(isinstance(m, C2f) for m in lite.backbone.layer1)  # the stride-2 conv alone
    assert all(len(branch) == 2 for branch in [*lite.head.box, *lite.head.cls])  # one 3x3 + predictor
    narrow = get_model("yolo_narrow", num_classes=3)
    assert all(len(branch) == 3 for branch in [*narrow.head.box, *narrow.head.cls])

    def convs(model: torch.nn.Module) -> int:
        return sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())

    assert (convs(lite), convs(narrow)) == (49, 59)  # backbone 19 / 23, neck 18, head 12 / 18
    for model in (lite, narrow):  # the predictors and the biases, whatever the branch depth
        names = class_dependent_names(model)
        assert sorted(names) == sorted(
            [f"head.cls.{i}.{len(model.head.cls[i]) - 1}.weight" for i in range(3)] + ["head.cls_bias"]
        )
    with pytest.raises(ValueError, match=r"depth \(3x3 convs per branch\) must be >= 1, got 0"):
        get_model("yolo_narrow", head_depth=0)
    with pytest.raises(ValueError, match="counts >= 0"):
        CSPDarknet(depths=(1, -1, 1, 1))

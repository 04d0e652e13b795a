"""Faster R-CNN: every registered builder, the contract, both RPN forms, overfitting, bad input."""

from __future__ import annotations

import pytest
import torch

from structpred.data import ShapesWorld
from structpred.models import get_model, list_models, model_info
from structpred.models.faster_rcnn import FasterRCNN
from structpred.tasks import get_task

DETECTORS = [name for name in list_models() if name.startswith("fasterrcnn_")]
LOSSES = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}


def _shapes(n: int, size: int = 96) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    world = ShapesWorld("train", size=size, num_images=n)
    items = [world[i] for i in range(n)]
    return [im for im, _ in items], [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in items]


def test_the_detection_builders_are_registered() -> None:
    assert set(DETECTORS) >= {
        "fasterrcnn_resnet50_fpn",
        "fasterrcnn_mobilenet_v3_large_fpn",
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        "fasterrcnn_narrow_fpn",
    }


@pytest.mark.parametrize("name", DETECTORS)
def test_builder_forward_backward_and_contract(name: str) -> None:
    torch.manual_seed(0)
    # Tiny images and few proposals: the contract, not the accuracy, is under test here.
    small = {"min_size": 64, "max_size": 96, "box_batch_size_per_image": 32}
    model = get_model(name, num_classes=6, **small)
    assert isinstance(model, FasterRCNN) and model_info(name).task == "detection"
    images, targets = _shapes(2, size=80)
    model.train()
    preds, losses = model(images, targets)
    assert set(losses) == LOSSES and len(preds) == 2  # training mode predicts too: detections
    for pred in preds:
        n = pred["boxes"].shape[0]
        assert set(pred) == {"boxes", "scores", "labels"} and pred["boxes"].shape == (n, 4)
        assert pred["scores"].shape == (n,) and pred["labels"].shape == (n,)
        assert pred["labels"].dtype == torch.int64
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        none, losses_only = model(images, targets, predict=False)  # the training step: losses only
    assert none is None and set(losses_only) == LOSSES

    model.eval()
    with torch.no_grad():
        preds, losses = model(images, targets)  # eval with targets: both
        assert set(losses) == LOSSES and len(preds) == 2
        preds_only, no_losses = model(images)
    assert no_losses == {}
    for pred, image in zip(preds_only, images, strict=True):
        n = pred["boxes"].shape[0]
        assert pred["boxes"].shape == (n, 4) and pred["scores"].shape == (n,) and pred["labels"].shape == (n,)
        assert pred["labels"].dtype == torch.int64
        assert n > 0  # seeded: something is detected, so the range checks below run
        assert int(pred["labels"].min()) >= 1 and int(pred["labels"].max()) <= 6
        H, W = image.shape[-2:]
        assert float(pred["boxes"][:, 2].max()) <= W and float(pred["boxes"][:, 3].max()) <= H


@pytest.mark.parametrize("objectness", ["sigmoid", "softmax"])
def test_narrow_model_overfits_a_few_images(objectness: str) -> None:
    torch.manual_seed(0)
    model = get_model(
        "fasterrcnn_narrow_fpn", num_classes=6, width=8, fpn_channels=32, rpn_objectness=objectness,
        min_size=80, max_size=80, representation_size=128, box_batch_size_per_image=64,
    )  # fmt: skip
    images, targets = _shapes(2, size=80)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(40):
        _, losses = model(images, targets)
        loss = sum(losses.values())
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.35 * first, (first, float(loss.detach()))
    # The 2k-softmax head really has two scores per anchor.
    per_anchor = model.rpn.head.cls_logits.out_channels // model.rpn.head.num_anchors
    assert per_anchor == (2 if objectness == "softmax" else 1)


def test_all_background_images_train() -> None:
    torch.manual_seed(0)
    model = get_model("fasterrcnn_narrow_fpn", num_classes=3).train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 80)]
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    _, losses = model(images, [empty, dict(empty)])
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_box_reg"]) == 0.0 and float(losses["loss_rpn_box_reg"]) == 0.0
    sum(losses.values()).backward()


def test_box_geometry_stays_float32_under_bf16_autocast() -> None:
    """bf16 (8-bit mantissa) would put anchors and boxes on a 1-2 px grid at 256 px."""
    from structpred.ops import anchors_for_image

    torch.manual_seed(0)
    model = get_model("fasterrcnn_narrow_fpn", num_classes=6, min_size=128, max_size=128)
    images, targets = _shapes(2, size=128)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, losses = model(images, targets)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    rpn = model.rpn
    assert rpn._anchors is not None and rpn._anchors.dtype == torch.float32
    padded, sizes = rpn._anchor_key[:2]  # type: ignore[index]
    exact = anchors_for_image(padded, sizes, rpn.anchor_sizes, rpn.aspect_ratios)
    assert torch.equal(rpn._anchors, exact)
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        preds, _ = model(images)
    for pred in preds:
        assert pred["boxes"].dtype == torch.float32 and pred["scores"].dtype == torch.float32
        boxes = pred["boxes"]
        assert boxes.numel() > 0  # seeded: detections exist, so the grid check below runs
        # off the bf16 grid: some coordinate is not a bf16 number
        assert bool((boxes != boxes.to(torch.bfloat16).float()).any())


def test_partly_outside_boxes_are_clipped_and_the_callers_targets_untouched() -> None:
    model = get_model("fasterrcnn_narrow_fpn", num_classes=3).eval()
    boxes = torch.tensor([[-10.0, 5.0, 30.0, 90.0]])
    target = {"boxes": boxes.clone(), "labels": torch.tensor([2])}
    with torch.no_grad():
        _, losses = model([torch.rand(3, 64, 64)], [target])
    assert torch.isfinite(sum(losses.values()))
    assert torch.equal(target["boxes"], boxes)


@pytest.mark.parametrize(
    ("images", "targets", "message"),
    [
        ([torch.rand(1, 32, 32)], None, r"images\[0\] must be a Tensor\[3, H, W\]"),
        ([torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)], None, "must be float"),
        (torch.rand(3, 32, 32), None, r"\[B, 3, H, W\]"),
        ([], None, "non-empty"),
        ([torch.rand(3, 32, 32)], [{"boxes": torch.tensor([[5.0, 5, 4, 9]]), "labels": torch.tensor([1])}],
         r"targets\[0\]\['boxes'\]\[0\].*degenerate"),
        ([torch.rand(3, 32, 32)], [{"boxes": torch.tensor([[40.0, 5, 50, 9]]), "labels": torch.tensor([1])}],
         "outside the 32x32 image"),
        ([torch.rand(3, 32, 32)], [{"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([4])}],
         r"labels'\] must be in 1..3"),
        ([torch.rand(3, 32, 32)], [{"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([0])}],
         r"must be in 1..3"),
        ([torch.rand(3, 32, 32)], [{"boxes": torch.tensor([[1, 1, 9, 9]]), "labels": torch.tensor([1])}],
         "must be float"),
        ([torch.rand(3, 32, 32)], [{"boxes": torch.zeros(1, 4)}], "'boxes' and 'labels'"),
        ([torch.rand(3, 32, 32)], [], "0 targets for 1 images"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_value_error(images, targets, message: str) -> None:
    model = get_model("fasterrcnn_narrow_fpn", num_classes=3).eval()
    with pytest.raises(ValueError, match=message), torch.no_grad():
        model(images, targets)


def test_training_mode_without_targets_predicts_and_builders_check_settings() -> None:
    model = get_model("fasterrcnn_narrow_fpn", num_classes=3).train()
    with torch.no_grad():
        preds, losses = model([torch.rand(3, 32, 32)])  # training mode, no targets: detections
    assert losses == {}
    get_task("detection").check_predictions(preds, 1)  # keys, shapes and dtypes of the contract
    with pytest.raises(ValueError, match="asks for neither predictions nor losses"):
        model([torch.rand(3, 32, 32)], predict=False)
    with pytest.raises(ValueError, match="unknown Faster R-CNN settings"):
        get_model("fasterrcnn_narrow_fpn", rpn_nms=0.5)
    with pytest.raises(ValueError, match="num_classes"):
        get_model("fasterrcnn_narrow_fpn", num_classes=0)
    with pytest.raises(ValueError, match="objectness must be"):
        get_model("fasterrcnn_narrow_fpn", rpn_objectness="tanh")

"""Mask R-CNN: the registered builders, the contract, RoIPool vs RoIAlign, overfitting, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from structpred.data import ShapesWorld
from structpred.heads.mask_head import MaskHead, MaskPredictor, MaskRoIHeads
from structpred.layers import MultiScaleRoIAlign, MultiScaleRoIPool
from structpred.models import get_model, list_models, model_info
from structpred.models.mask_rcnn import MaskRCNN

LOSSES = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
# Tiny images and few RoIs: the contract, not the accuracy, is under test.
TINY = {"min_size": 64, "max_size": 96, "box_batch_size_per_image": 32}


def _shapes(n: int, size: int = 80) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    world = ShapesWorld("train", size=size, num_images=n)
    items = [world[i] for i in range(n)]
    keys = ("boxes", "labels", "masks")
    return [im for im, _ in items], [{k: t[k] for k in keys} for _, t in items]


def test_the_builders_are_registered_with_torchvisions_layout() -> None:
    assert {"maskrcnn_resnet50_fpn", "maskrcnn_narrow_fpn"} <= set(list_models())
    model = get_model("maskrcnn_resnet50_fpn", num_classes=3)
    assert isinstance(model, MaskRCNN) and model_info("maskrcnn_resnet50_fpn").task == "instance_segmentation"
    heads = model.roi_heads
    assert isinstance(heads, MaskRoIHeads) and isinstance(heads.mask_roi_pool, MultiScaleRoIAlign)
    assert heads.mask_roi_pool.output_size == (14, 14) and heads.mask_roi_pool.sampling_ratio == 2
    assert [c.out_channels for c in heads.mask_head.convs] == [256] * 4
    assert heads.mask_predictor.mask_fcn_logits.out_channels == 4  # 3 classes + background
    keys = {k for k in model.state_dict() if k.startswith("roi_heads.mask_")}
    assert "roi_heads.mask_head.convs.3.weight" in keys and "roi_heads.mask_predictor.conv5_mask.bias" in keys


def test_narrow_model_shares_the_faster_rcnn_settings_with_a_narrow_mask_head() -> None:
    ours = get_model("maskrcnn_narrow_fpn", num_classes=6, fpn_channels=16)
    faster = get_model("fasterrcnn_narrow_fpn", num_classes=6, fpn_channels=16)
    assert ours.transform.min_size == faster.transform.min_size == (256,)
    assert ours.rpn.anchor_sizes == faster.rpn.anchor_sizes
    assert ours.roi_heads.sampler.batch_size_per_image == faster.roi_heads.sampler.batch_size_per_image == 64
    box_part = {k: v.shape for k, v in ours.state_dict().items() if not k.startswith("roi_heads.mask_")}
    assert box_part == {k: v.shape for k, v in faster.state_dict().items()}
    assert [c.out_channels for c in ours.roi_heads.mask_head.convs] == [16] * 4
    assert ours.roi_heads.mask_predictor.conv5_mask.out_channels == 16


@pytest.mark.parametrize("roi_op", ["align", "pool"])
def test_forward_backward_keys_and_shapes(roi_op: str) -> None:
    torch.manual_seed(0)
    model = get_model("maskrcnn_narrow_fpn", num_classes=6, roi_op=roi_op, **TINY)
    pooler = MultiScaleRoIAlign if roi_op == "align" else MultiScaleRoIPool
    heads = model.roi_heads
    assert isinstance(heads.box_roi_pool, pooler) and isinstance(heads.mask_roi_pool, pooler)
    images, targets = _shapes(2)
    model.train()
    preds, losses = model(images, targets)
    assert set(losses) == LOSSES and len(preds) == 2  # training mode predicts too: detections with masks
    for pred, image in zip(preds, images, strict=True):
        n = pred["boxes"].shape[0]
        assert set(pred) == {"boxes", "labels", "scores", "masks"} and pred["boxes"].shape == (n, 4)
        assert pred["scores"].shape == (n,) and pred["labels"].dtype == torch.int64
        assert pred["masks"].shape == (n, 1, *image.shape[-2:]) and pred["masks"].dtype == torch.float32
    total = sum(losses.values())
    assert torch.isfinite(total) and float(losses["loss_mask"].detach()) > 0
    total.backward()
    mask_grads = [p.grad for n, p in model.named_parameters() if n.startswith("roi_heads.mask_")]
    assert len(mask_grads) == 12 and all(g is not None and torch.isfinite(g).all() for g in mask_grads)
    with torch.no_grad():
        none, losses_only = model(images, targets, predict=False)  # the training step: losses only
    assert none is None and set(losses_only) == LOSSES

    model.eval()
    with torch.no_grad():
        preds, losses = model(images, targets)  # eval with targets: both
        assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
        preds_only, no_losses = model(images)
    assert no_losses == {}
    for pred, image in zip(preds_only, images, strict=True):
        n = pred["boxes"].shape[0]
        assert n > 0 and set(pred) == {"boxes", "labels", "scores", "masks"}
        assert pred["masks"].shape == (n, 1, *image.shape[-2:]) and pred["masks"].dtype == torch.float32
        assert float(pred["masks"].min()) >= 0.0 and float(pred["masks"].max()) <= 1.0


def test_all_background_images_train() -> None:
    torch.manual_seed(0)
    model = get_model("maskrcnn_narrow_fpn", num_classes=6, **TINY).train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 80)]
    empty = [
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
         "masks": torch.zeros(0, *im.shape[-2:], dtype=torch.uint8)}
        for im in images
    ]  # fmt: skip
    _, losses = model(images, empty)
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_mask"].detach()) == 0.0 and float(losses["loss_box_reg"].detach()) == 0.0
    sum(losses.values()).backward()
    # One image with objects, one without, in the same batch.
    real_images, real_targets = _shapes(1, size=64)
    _, losses = model([real_images[0], images[0]], [real_targets[0], empty[0]])
    assert float(losses["loss_mask"].detach()) > 0.0


def test_overfits_two_shapes_images() -> None:
    torch.manual_seed(0)
    model = get_model(
        "maskrcnn_narrow_fpn", num_classes=6, width=8, fpn_channels=32, min_size=128, max_size=128,
        representation_size=128, box_positive_fraction=0.5,  # more positive RoIs: more mask samples
    )  # fmt: skip
    world = ShapesWorld("train", num_images=2)
    images = [world[i][0] for i in range(2)]
    targets = [{k: world[i][1][k] for k in ("boxes", "labels", "masks")} for i in range(2)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    history = []
    for _ in range(80):  # the mask loss is on its plateau by step 80 (0.60 ln 2 at 40, 0.42 at 80 and 100)
        _, losses = model(images, targets)
        history.append(float(losses["loss_mask"].detach()))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    # ln 2 is the loss of p = 0.5 everywhere; the soft (RoIAligned) targets' entropy is a floor > 0.
    last = min(history[-5:])
    assert last < 0.45 * math.log(2) and last < 0.25 * history[0], history


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("masks"), r"targets\[0\] has no 'masks'"),
        (lambda t: t.update(masks=t["masks"][:, :10]), r"targets\[0\]\['masks'\] must be uint8\[N, H, W\]"),
        (lambda t: t.update(masks=t["masks"][:1]), r"one per box"),
        (lambda t: t.update(masks=t["masks"][:, None]), r"\['masks'\] must be uint8\[N, H, W\]"),
        (lambda t: t.update(masks=t["masks"].float()), r"must be uint8 \(binary\), got torch.float32"),
        (lambda t: t.update(masks=[[0]]), r"\['masks'\] must be uint8\[N, H, W\].*got list"),
    ],
)  # fmt: skip
def test_bad_masks_are_a_clear_value_error(change, message: str) -> None:
    model = get_model("maskrcnn_narrow_fpn", num_classes=6, **TINY)
    images, targets = _shapes(1)
    assert targets[0]["masks"].shape[0] >= 2
    change(targets[0])
    for mode in (model.train, model.eval):
        mode()
        with pytest.raises(ValueError, match=message), torch.no_grad():
            model(images, targets)


def test_bool_masks_are_accepted_and_settings_are_checked() -> None:
    model = get_model("maskrcnn_narrow_fpn", num_classes=6, **TINY).train()
    images, targets = _shapes(1)
    targets[0]["masks"] = targets[0]["masks"].bool()
    _, losses = model(images, targets)
    assert torch.isfinite(losses["loss_mask"])
    with pytest.raises(ValueError, match="unknown Mask R-CNN settings"):
        get_model("maskrcnn_narrow_fpn", mask_convs=2)
    with pytest.raises(ValueError, match="roi_op must be one of"):
        get_model("maskrcnn_narrow_fpn", roi_op="warp")
    with pytest.raises(ValueError, match="num_classes"):
        get_model("maskrcnn_narrow_fpn", num_classes=0)
    with pytest.raises(ValueError, match="must be a MaskRoIHeads"):
        faster = get_model("fasterrcnn_narrow_fpn")
        MaskRCNN(faster.backbone, faster.rpn, faster.roi_heads, faster.transform, 6)  # type: ignore[arg-type]


def test_mask_head_and_predictor_shapes() -> None:
    head, predictor = MaskHead(8, (16, 16, 12)), MaskPredictor(12, 10, 5)
    logits = predictor(head(torch.rand(3, 8, 14, 14)))
    assert logits.shape == (3, 5, 28, 28)
    assert predictor(head(torch.rand(0, 8, 14, 14))).shape == (0, 5, 28, 28)
    with pytest.raises(ValueError, match="at least one conv"):
        MaskHead(8, ())

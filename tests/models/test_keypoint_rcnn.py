"""Keypoint R-CNN: the registered builders, the contract, the loss, overfitting, bad input.

The targets here are the shapes world's boxes with four keypoints each, the corners of the box
inset by a fifth of its size (the keypoint task's own shapes keypoints live with that task).
"""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection import roi_heads as tv_roi_heads

from structpred.data import ShapesWorld
from structpred.heads.keypoint_head import (
    KeypointHead,
    KeypointPredictor,
    KeypointRoIHeads,
    keypoint_rcnn_loss,
)
from structpred.layers import MultiScaleRoIAlign
from structpred.models import get_model, list_models, model_info
from structpred.models.keypoint_rcnn import KeypointRCNN, KeypointTransform
from structpred.models.weights.class_dependent import class_dependent_names
from structpred.ops.keypoints import keypoints_to_heatmap

LOSSES = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_keypoint"}
# Tiny images and few RoIs: the contract, not the accuracy, is under test.
TINY = {"min_size": 64, "max_size": 96, "box_batch_size_per_image": 32, "box_detections_per_img": 20}


def corners(boxes: torch.Tensor) -> torch.Tensor:
    """``[N, 4, 3]``: each box's corners inset by a fifth of its size, all visible."""
    x1, y1, x2, y2 = boxes.unbind(1)
    dx, dy = (x2 - x1) / 5, (y2 - y1) / 5
    xs = torch.stack([x1 + dx, x2 - dx, x2 - dx, x1 + dx], 1)  # tl, tr, br, bl
    ys = torch.stack([y1 + dy, y1 + dy, y2 - dy, y2 - dy], 1)
    return torch.stack([xs, ys, torch.full_like(xs, 2.0)], 2)


def _shapes(n: int, size: int = 80) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    world = ShapesWorld("train", size=size, num_images=n)
    items = [world[i] for i in range(n)]
    targets = [
        {"boxes": t["boxes"], "labels": t["labels"], "keypoints": corners(t["boxes"])} for _, t in items
    ]
    return [im for im, _ in items], targets


def test_the_builders_are_registered_with_torchvisions_layout() -> None:
    assert {"keypointrcnn_resnet50_fpn", "keypointrcnn_narrow_fpn", "keypointrcnn_fpn"} <= set(list_models())
    info = model_info("keypointrcnn_resnet50_fpn")
    assert info.task == "keypoints" and info.peer_weights == ("torchvision",)
    with torch.device("meta"):
        model = get_model("keypointrcnn_resnet50_fpn")
    assert isinstance(model, KeypointRCNN) and (model.num_classes, model.num_keypoints) == (1, 17)
    assert isinstance(model.transform, KeypointTransform)
    assert model.transform.min_size == (640, 672, 704, 736, 768, 800)
    heads = model.roi_heads
    assert isinstance(heads, KeypointRoIHeads) and isinstance(heads.keypoint_roi_pool, MultiScaleRoIAlign)
    assert heads.keypoint_roi_pool.output_size == (14, 14) and heads.keypoint_roi_pool.sampling_ratio == 2
    assert [c.out_channels for c in heads.keypoint_head.convs] == [512] * 8
    assert heads.keypoint_predictor.kps_score_lowres.out_channels == 17
    # Fine-tuning to other classes re-initialises the box predictor only (K keypoints stay).
    assert class_dependent_names(model) == [
        f"roi_heads.box_predictor.{layer}.{p}"
        for layer in ("cls_score", "bbox_pred")
        for p in ("weight", "bias")
    ]
    with torch.device("meta"):
        other = get_model("keypointrcnn_fpn", backbone="resnet18", num_keypoints=3, fpn_channels=32)
    assert other.num_keypoints == 3 and other.roi_heads.keypoint_head.convs[0].in_channels == 32


def test_forward_backward_keys_and_shapes() -> None:
    torch.manual_seed(0)
    model = get_model("keypointrcnn_narrow_fpn", num_classes=6, num_keypoints=4, **TINY)
    images, targets = _shapes(2)
    model.train()
    preds, losses = model(images, targets)
    assert set(losses) == LOSSES and len(preds) == 2  # training mode predicts too
    total = sum(losses.values())
    assert torch.isfinite(total) and float(losses["loss_keypoint"].detach()) > 0
    total.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("roi_heads.keypoint_")]
    assert len(grads) == 10 and all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        none, losses_only = model(images, targets, predict=False)
    assert none is None and set(losses_only) == LOSSES

    model.eval()
    with torch.no_grad():
        preds, losses = model(images, targets)  # eval with targets: both
        assert set(losses) == LOSSES
        batched, no_losses = model(torch.stack([images[0], images[0]]))  # a [B, 3, H, W] batch
    assert no_losses == {}
    for pred, image in zip(preds, images, strict=True):
        n = pred["boxes"].shape[0]
        assert set(pred) == {"boxes", "labels", "scores", "keypoints", "keypoints_scores"} and n > 0
        assert pred["keypoints"].shape == (n, 4, 3) and pred["keypoints"].dtype == torch.float32
        assert pred["keypoints_scores"].shape == (n, 4)
        assert torch.equal(pred["keypoints"][..., 2], torch.ones(n, 4))
        # A keypoint lies in its detection's box, in the original image's pixels.
        H, W = image.shape[-2:]
        x, y, b = pred["keypoints"][..., 0], pred["keypoints"][..., 1], pred["boxes"][:, None]
        assert bool(((x >= b[..., 0] - 1e-3) & (x <= b[..., 2] + 1e-3)).all()) and float(x.max()) <= W
        assert bool(((y >= b[..., 1] - 1e-3) & (y <= b[..., 3] + 1e-3)).all()) and float(y.max()) <= H
    torch.testing.assert_close(batched[0]["keypoints"], batched[1]["keypoints"])


def test_all_background_images_and_unlabelled_keypoints_train() -> None:
    torch.manual_seed(0)
    model = get_model("keypointrcnn_narrow_fpn", num_classes=6, num_keypoints=4, **TINY).train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 80)]
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "keypoints": torch.zeros(0, 4, 3)}  # fmt: skip
    _, losses = model(images, [empty, empty])
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_keypoint"].detach()) == 0.0
    sum(losses.values()).backward()
    real_images, real_targets = _shapes(1, size=64)
    _, losses = model([real_images[0], images[0]], [real_targets[0], empty])
    assert float(losses["loss_keypoint"].detach()) > 0.0
    real_targets[0]["keypoints"][..., 2] = 0  # none labelled: nothing to score
    _, losses = model([real_images[0]], real_targets)
    assert float(losses["loss_keypoint"].detach()) == 0.0


@pytest.mark.slow
def test_overfits_two_shapes_images() -> None:
    torch.manual_seed(0)
    model = get_model(
        "keypointrcnn_narrow_fpn", num_classes=6, num_keypoints=4, width=8, fpn_channels=32, min_size=96,
        max_size=96, representation_size=128, keypoint_layers=(32, 32), box_batch_size_per_image=32,
        box_positive_fraction=0.5, rpn_post_nms_top_n={"training": 50, "testing": 50},
    )  # fmt: skip
    images, targets = _shapes(2, size=96)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    history = []
    for _ in range(40):
        _, losses = model(images, targets, predict=False)
        history.append(float(losses["loss_keypoint"].detach()))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    # ln(56^2) ~ 8.05 is the loss of a uniform heatmap.
    assert history[0] > 0.8 * math.log(56**2)
    assert min(history[-5:]) < 0.5 * history[0], history


def test_loss_matches_torchvision_and_gradcheck() -> None:
    g = torch.Generator().manual_seed(0)
    for Q, K, M in [(0, 3, 8), (1, 1, 8), (5, 4, 8)]:
        logits = torch.randn(Q, K, M, M, generator=g, dtype=torch.float64, requires_grad=True)
        rois = torch.rand(Q, 2, generator=g, dtype=torch.float64) * 30
        rois = torch.cat([rois, rois + 5 + torch.rand(Q, 2, generator=g, dtype=torch.float64) * 20], 1)
        kps = torch.cat([rois[:, None, :2] + torch.rand(Q, K, 2, generator=g, dtype=torch.float64) * 30,
                         torch.randint(0, 3, (Q, K, 1), generator=g).double()], 2)  # fmt: skip
        cells, valid = keypoints_to_heatmap(kps, rois, M)
        ours = keypoint_rcnn_loss(logits, cells, valid)
        theirs = tv_roi_heads.keypointrcnn_loss(logits, [rois], [kps], [torch.arange(Q)])
        torch.testing.assert_close(ours, theirs)
        if int(valid.sum()):
            # A naive reference: the mean over valid keypoints of -log softmax at the target cell.
            flat = logits.reshape(Q * K, M * M)
            terms = [-torch.log_softmax(flat[i], 0)[int(c)] for i, (c, v) in
                     enumerate(zip(cells.reshape(-1), valid.reshape(-1), strict=True)) if v]  # fmt: skip
            torch.testing.assert_close(ours, torch.stack(terms).mean())
            torch.autograd.gradcheck(keypoint_rcnn_loss, (logits, cells, valid))
    with pytest.raises(ValueError, match="must be square"):
        keypoint_rcnn_loss(torch.zeros(1, 1, 4, 5), torch.zeros(1, 1, dtype=torch.int64), torch.ones(1, 1))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("keypoints"), r"targets\[0\] has no 'keypoints'"),
        (lambda t: t.update(keypoints=t["keypoints"][:1]), r"one row per box"),
        (lambda t: t.update(keypoints=t["keypoints"][:, :3]), r"= \[\d+, 4, 3\].*the model's 4 keypoints"),
        (lambda t: t.update(keypoints=t["keypoints"][..., :2]), r"must be float \[N, K, 3\]"),
        (lambda t: t.update(keypoints=t["keypoints"].long()), r"must be float \(x, y, visibility\)"),
        (lambda t: t["keypoints"].__setitem__((0, 0, 0), math.nan), r"non-finite"),
        (lambda t: t.update(keypoints=[[0.0]]), r"must be float \[N, K, 3\].*got list"),
    ],
)  # fmt: skip
def test_bad_keypoints_are_a_clear_value_error(change, message: str) -> None:
    model = get_model("keypointrcnn_narrow_fpn", num_classes=6, num_keypoints=4, **TINY)
    images, targets = _shapes(1)
    assert targets[0]["keypoints"].shape[0] >= 2
    change(targets[0])
    for mode in (model.train, model.eval):
        mode()
        with pytest.raises(ValueError, match=message), torch.no_grad():
            model(images, targets)


def test_settings_are_checked_and_parts_compose() -> None:
    with pytest.raises(ValueError, match="unknown Keypoint R-CNN settings"):
        get_model("keypointrcnn_narrow_fpn", keypoint_convs=2)
    with pytest.raises(ValueError, match="num_keypoints must be an int >= 1"):
        get_model("keypointrcnn_narrow_fpn", num_keypoints=0)
    with pytest.raises(ValueError, match="num_classes"):
        get_model("keypointrcnn_narrow_fpn", num_classes=0)
    with pytest.raises(ValueError, match="keypoint_layers"):
        get_model("keypointrcnn_narrow_fpn", keypoint_layers=())
    faster = get_model("fasterrcnn_narrow_fpn")
    with pytest.raises(ValueError, match="must be a KeypointRoIHeads"):
        KeypointRCNN(faster.backbone, faster.rpn, faster.roi_heads, KeypointTransform(), 6, 4)  # type: ignore[arg-type]
    head, predictor = KeypointHead(8, (16, 12)), KeypointPredictor(12, 5)
    assert predictor(head(torch.rand(3, 8, 14, 14))).shape == (3, 5, 56, 56)

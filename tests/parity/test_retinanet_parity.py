"""RetinaNet: torchvision's ``retinanet_resnet50_fpn`` and ``_v2``, converted by ``from_torchvision``
(or loaded from a saved ``state_dict``), predict what they predict and train with the same losses
and gradients.

Built with ``weights=None, weights_backbone=None`` (plain batch norm) at 96-128 px so ResNet-50
stays cheap. torchvision counts a background logit channel (label 0) in ``num_classes`` and would
report it as a detection if it fired; trained weights never make it fire (it is never a target)
and ours never predicts it, so its bias is set to -1e4 on both sides, as training leaves it.
At random weights every score is ~0.01 (the prior), under torchvision's 0.05: the other class
biases are drawn from N(0, 1) so that the threshold, top-k, NMS and ``detections_per_img``
limits all bind.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.models.detection as detection
from torch import nn

from structpred.models import from_torchvision, get_model
from structpred.models.retinanet import RetinaNet
from structpred.models.weights import load_weights

from .test_faster_rcnn_parity import (
    assert_same_detections,
    assert_same_gradients,
    predictions_with_settings,
    same_predictions,
    seeded_losses,
    small_batches,
)

SMALL = {"min_size": 96, "max_size": 128}
BUILDERS = {"v1": detection.retinanet_resnet50_fpn, "v2": detection.retinanet_resnet50_fpn_v2}


def tv_retinanet(version: str, seed: int, **overrides: object) -> nn.Module:
    torch.manual_seed(seed)
    model = BUILDERS[version](weights=None, weights_backbone=None, **{**SMALL, **overrides})
    head = model.head.classification_head
    with torch.no_grad():
        head.cls_logits.bias.normal_(-1.0, 1.0)  # some anchors and classes over the threshold
        head.cls_logits.bias[:: head.num_classes] = -1e4  # label 0 of every anchor: never fires
    return model.eval()


# Non-default class count and settings: torchvision's 5 logit channels = 4 classes + background.
SETTINGS = {"num_classes": 5, "min_size": (64, 96), "fg_iou_thresh": 0.6, "bg_iou_thresh": 0.3}


@pytest.fixture(scope="module", params=["v1", "v2"])
def pair(request: pytest.FixtureRequest) -> tuple[nn.Module, RetinaNet]:
    """torchvision's RetinaNet (:data:`SETTINGS`, only layer4 of the body trainable) and ours
    converted from it. Tests that train restore eval mode (both sides moved the same way)."""
    tv = tv_retinanet(request.param, 1, **SETTINGS)
    for name, p in tv.backbone.body.named_parameters():  # as trainable_backbone_layers=1 (and cheaper)
        p.requires_grad_(name.startswith("layer4."))
    ours = from_torchvision(tv)
    assert isinstance(ours, RetinaNet) and not ours.training and ours.num_classes == 4
    assert ours.background_channel and ours.box_loss == ("l1" if request.param == "v1" else "giou")
    assert ours.transform.min_size == (64, 96)
    assert (ours.matcher.high_threshold, ours.matcher.low_threshold) == (0.6, 0.3)
    assert not any(p.requires_grad for p in ours.backbone.body.layer3.parameters())  # frozen stay frozen
    return tv, ours


@pytest.mark.slow
def test_same_predictions_on_several_sizes_and_a_mixed_batch(pair: tuple[nn.Module, RetinaNet]) -> None:
    tv, ours = pair
    preds = same_predictions(tv, ours, small_batches())
    assert [len(p["boxes"]) for p in preds] == [300] * 3  # the limit binds
    assert all(int(p["labels"].min()) >= 1 for p in preds)  # labels 1..K


LIMITS = {"score_thresh": 0.3, "nms_thresh": 0.3, "topk_candidates": 40, "detections_per_img": 12}


@pytest.mark.slow
@pytest.mark.parametrize("settings", [LIMITS, {"score_thresh": 0.9999}])  # every limit binds; nothing
def test_same_predictions_with_other_settings(pair: tuple[nn.Module, RetinaNet], settings: dict) -> None:
    tv, ours = pair
    preds = predictions_with_settings(tv, ours, settings)
    counts = [len(p["boxes"]) for p in preds]
    if settings is LIMITS:
        assert counts == [12, 12], counts
    else:
        assert counts == [0, 0]


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        # overlapping boxes, one across the whole image (P7's anchors), one small (low-quality match)
        {
            "boxes": torch.tensor(
                [[10.0, 10.0, 60.0, 70.0], [20.0, 25.0, 34.0, 38.0], [0.0, 0.0, 100.0, 80.0]]
            ),
            "labels": torch.tensor([1, 3, 2]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # all background
    ]


@pytest.mark.slow
def test_same_training_losses_gradients_and_statistics(pair: tuple[nn.Module, RetinaNet]) -> None:
    tv, ours = pair
    images = [torch.rand(3, 80, 100), torch.rand(3, 72, 60)]
    try:
        tv.train(), ours.train()
        theirs, losses = seeded_losses(tv, ours, images, _targets(), prefix="loss_")
        assert float(theirs["bbox_regression"].detach()) > 0  # some anchors were matched
        sum(theirs.values()).backward()
        sum(losses.values()).backward()
        assert_same_gradients(ours, tv)
        # batch-norm statistics moved the same way in training mode
        tv_buffers = dict(tv.backbone.body.named_buffers())
        for name, b in ours.backbone.body.named_buffers():
            torch.testing.assert_close(b, tv_buffers[name], rtol=1e-5, atol=1e-6, msg=name)
    finally:
        for model in (tv, ours):
            model.eval()
            model.zero_grad(set_to_none=True)


@pytest.mark.slow
def test_state_dict_file_loads_into_the_registry_model(
    pair: tuple[nn.Module, RetinaNet], tmp_path: Path
) -> None:
    tv, converted = pair
    path = tmp_path / "retinanet.pth"
    torch.save(tv.state_dict(), path)
    settings = {**SETTINGS, "num_classes": 4}  # ours counts object classes
    # v1: torchvision's batch norm into our frozen one (no counters); v2: batch norm on both sides
    name = "retinanet_resnet50_fpn" if converted.box_loss == "l1" else "retinanet_resnet50_fpn_v2"
    ours = get_model(name, **settings).eval()
    report = load_weights(ours, path)
    assert report.family == "torchvision RetinaNet" and not report.reinitialised
    images = [torch.rand(3, 100, 120), torch.rand(3, 80, 100)]
    with torch.no_grad():
        assert_same_detections(tv(images), ours(images)[0])
    # another class count: only the class logits are re-initialised (fine-tuning)
    report = load_weights(get_model(name, num_classes=2, **SMALL), path)
    assert report.reinitialised_names == [
        "head.classification_head.cls_logits.weight",
        "head.classification_head.cls_logits.bias",
    ]
    with pytest.raises(ValueError, match="background_channel"):
        load_weights(get_model("retinanet_narrow_fpn", num_classes=4), path)


def test_refused_variants(pair: tuple[nn.Module, RetinaNet]) -> None:
    tv = pair[0]
    edits = [  # (object, attribute, refused value, message)
        (tv.transform, "fixed_size", (96, 96), "fixed_size"),
        (tv.head.classification_head, "num_classes", 1, "background channel"),
        (tv.head.regression_head, "_loss_type", "ciou", "regression loss 'ciou'"),
        (tv.proposal_matcher, "allow_low_quality_matches", False, "allow_low_quality_matches"),
        (tv.backbone.body, "return_layers", {"layer3": "0", "layer4": "1"}, "only layer2-4"),
    ]
    for obj, attr, value, message in edits:
        before = getattr(obj, attr)
        setattr(obj, attr, value)
        try:
            with pytest.raises(ValueError, match=message):
                from_torchvision(tv)
        finally:
            setattr(obj, attr, before)

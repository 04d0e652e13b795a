"""Keypoint R-CNN: torchvision's ``keypointrcnn_resnet50_fpn``, converted by ``from_torchvision``
(or loaded from its saved ``state_dict`` by ``load_weights``), predicts what it predicts (boxes,
labels, scores, keypoints and keypoint scores) and has its losses and keypoint-head gradients.

The torchvision models are randomly initialised and their frozen batch norms calibrated on one
random batch (as in the Faster R-CNN parity tests). To stay cheap on CPU the images are small
(96-160 px) and most cases swap torchvision's 8 x 512 keypoint convs for a narrower stack of its
own ``KeypointRCNNHeads`` (the conversion reads the layer widths); one case keeps the default
head with 17 keypoints.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import torchvision.models.detection as detection
from torch import nn
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor

from structpred.models import from_torchvision, get_model
from structpred.models.keypoint_rcnn import KeypointRCNN
from structpred.models.weights import load_weights

from .test_faster_rcnn_parity import (
    assert_same_detections,
    calibrate,
    same_predictions,
    seeded_losses,
    train_with_frozen_batch_norm,
)

SMALL = {"min_size": 96, "max_size": 160, "rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 200}


def tv_keypoint_rcnn(
    seed: int, num_classes: int, num_keypoints: int, head: tuple[int, ...] | None, **overrides: object
) -> nn.Module:
    """torchvision's model (``num_classes`` with background), its keypoint convs ``head`` wide
    (None: the default 8 x 512), batch norms calibrated, in eval mode."""
    torch.manual_seed(seed)
    model = detection.keypointrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=num_classes,
        num_keypoints=num_keypoints,
        **{**SMALL, **overrides},
    )
    if head is not None:
        model.roi_heads.keypoint_head = KeypointRCNNHeads(256, head)
        model.roi_heads.keypoint_predictor = KeypointRCNNPredictor(head[-1], num_keypoints)
    calibrate(model, [torch.rand(3, 120, 160)])
    return model.eval()


def _their_conv(m: re.Match[str]) -> str:
    return f"keypoint_head.{2 * int(m[1])}."


def assert_same_keypoints(theirs: list[dict], ours: list[dict]) -> None:
    assert_same_detections(theirs, ours)
    for t, o in zip(theirs, ours, strict=True):
        assert o["keypoints"].shape == t["keypoints"].shape and o["keypoints"].dtype == torch.float32
        torch.testing.assert_close(o["keypoints"], t["keypoints"], atol=1e-3, rtol=0)
        torch.testing.assert_close(o["keypoints_scores"], t["keypoints_scores"], atol=1e-4, rtol=1e-5)


@pytest.fixture(scope="module")
def narrow() -> tuple[nn.Module, KeypointRCNN]:
    """torchvision's model (3 object classes, 5 keypoints, three 64-wide keypoint convs) and ours."""
    tv = tv_keypoint_rcnn(1, num_classes=4, num_keypoints=5, head=(64, 64, 64), box_score_thresh=0.01,
                          box_detections_per_img=12)  # fmt: skip
    ours = from_torchvision(tv)
    assert isinstance(ours, KeypointRCNN) and not ours.training
    assert (ours.num_classes, ours.num_keypoints) == (3, 5)
    return tv, ours


@pytest.mark.slow
def test_same_predictions_on_several_sizes_and_a_mixed_batch(narrow: tuple[nn.Module, KeypointRCNN]) -> None:
    tv, ours = narrow
    g = torch.Generator().manual_seed(0)
    batches = [
        [torch.rand(3, 100, 150, generator=g)],
        [torch.rand(3, 90, 120, generator=g), torch.rand(3, 170, 95, generator=g)],  # mixed sizes
    ]
    preds = same_predictions(tv, ours, batches, assert_same_keypoints)
    assert sum(len(p["boxes"]) for p in preds) == 36  # the comparison saw real detections (12 per image)


@pytest.mark.slow
def test_zero_detections_batched_input_and_a_saved_state_dict(
    narrow: tuple[nn.Module, KeypointRCNN], tmp_path: Path
) -> None:
    tv, ours = narrow
    images = torch.rand(2, 3, 110, 140)
    tv.roi_heads.score_thresh = ours.roi_heads.score_thresh = 1.0  # no detection at all
    try:
        with torch.no_grad():
            theirs = tv(list(images))
            preds, _ = ours(images)
    finally:
        tv.roi_heads.score_thresh = ours.roi_heads.score_thresh = 0.01
    assert [len(t["boxes"]) for t in theirs] == [0, 0]
    assert_same_keypoints(theirs, preds)
    assert preds[0]["keypoints"].shape == (0, 5, 3) and preds[0]["keypoints_scores"].shape == (0, 5)
    # The same weights from a torch.save'd state dict into our builder.
    path = tmp_path / "keypointrcnn.pth"
    torch.save(tv.state_dict(), path)
    settings = {"min_size": 96, "max_size": 160, "keypoint_layers": (64, 64, 64)}
    model = get_model("keypointrcnn_resnet50_fpn", num_classes=3, num_keypoints=5, **settings)
    report = load_weights(model, path)
    assert "Keypoint R-CNN" in str(report)
    ours_sd = ours.state_dict()
    for name, t in model.state_dict().items():
        assert torch.equal(t, ours_sd[name]), name


@pytest.mark.slow
def test_default_head_with_17_keypoints(narrow: tuple[nn.Module, KeypointRCNN]) -> None:
    # torchvision's own 8 x 512 convs and 17-keypoint predictor on the same backbone and box head.
    tv = copy.deepcopy(narrow[0])
    torch.manual_seed(2)
    tv.roi_heads.keypoint_head = KeypointRCNNHeads(256, (512,) * 8)
    tv.roi_heads.keypoint_predictor = KeypointRCNNPredictor(512, 17)
    tv.roi_heads.detections_per_img = 2  # each detection costs ~7 GFLOP in this head
    ours = from_torchvision(tv)
    assert [c.out_channels for c in ours.roi_heads.keypoint_head.convs] == [512] * 8  # type: ignore[union-attr]
    images = [torch.rand(3, 110, 140)]
    with torch.no_grad():
        theirs = tv(images)
        preds, _ = ours(images)
    assert len(preds[0]["boxes"]) == 2
    assert_same_keypoints(theirs, preds)


@pytest.mark.slow
def test_same_training_losses_and_keypoint_gradients_with_the_same_seed(
    narrow: tuple[nn.Module, KeypointRCNN],
) -> None:
    # Several training sizes: the transform draws one per image as torchvision's does.
    tv = copy.deepcopy(narrow[0])
    tv.transform.min_size = (96, 112)
    tv.backbone.requires_grad_(False)  # frozen, as ours after conversion: no backbone backward (cost)
    # 100 proposals per image, not 2000 (cost): every one is drawn as a RoI then, ties or not.
    tv.rpn._pre_nms_top_n["training"] = tv.rpn._post_nms_top_n["training"] = 100
    # Wider RPN logits so proposals do not tie (see the Faster R-CNN parity test), not so wide
    # that object probabilities round to exactly 1 and tie again (then torchvision's order among
    # them changes the background RoIs drawn, and loss_classifier, from one setting to the next).
    with torch.no_grad():
        tv.rpn.head.cls_logits.weight.mul_(4.0)
    ours = from_torchvision(tv)
    images = [torch.rand(3, 120, 150), torch.rand(3, 140, 110), torch.rand(3, 100, 100)]
    kps = torch.tensor(
        [[[30.0, 40.0, 2.0], [50.0, 80.0, 1.0], [0.0, 0.0, 0.0], [60.0, 60.0, 2.0], [70.0, 100.0, 2.0]],
         [[100.0, 50.0, 2.0], [120.0, 70.0, 2.0], [140.0, 90.0, 2.0], [99.0, 30.0, 1.0], [91.0, 21.0, 2.0]]]
    )  # fmt: skip
    targets = [
        {"boxes": torch.tensor([[20.0, 30.0, 70.0, 100.0], [90.0, 20.0, 145.0, 110.0]]),
         "labels": torch.tensor([1, 3]), "keypoints": kps},
        {"boxes": torch.tensor([[10.0, 10.0, 100.0, 130.0]]), "labels": torch.tensor([2]),
         "keypoints": torch.tensor([[[50.0, 20.0, 2.0], [100.0, 130.0, 2.0], [5.0, 5.0, 2.0], [60, 60, 0],
                                     [10.0, 10.0, 1.0]]])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
         "keypoints": torch.zeros(0, 5, 3)},  # all background
    ]  # fmt: skip
    train_with_frozen_batch_norm(tv, ours)
    theirs, losses = seeded_losses(tv, ours, images, targets)
    assert "loss_keypoint" in losses
    assert float(losses["loss_keypoint"].detach()) > 1.0  # real keypoints were scored
    losses["loss_keypoint"].backward()
    theirs["loss_keypoint"].backward()
    tv_grads = dict(tv.roi_heads.named_parameters())
    checked = 0
    for name, p in ours.roi_heads.named_parameters():
        if name.startswith("keypoint_"):  # ours keypoint_head.convs.{i}.* is their keypoint_head.{2i}.*
            tv_name = re.sub(r"^keypoint_head\.convs\.(\d+)\.", _their_conv, name)
            ref = tv_grads[tv_name].grad
            assert ref is not None and p.grad is not None, name
            err, scale = float((p.grad - ref).abs().max()), float(ref.abs().max())
            assert scale > 0, name
            assert err <= 1e-6 + 3e-3 * scale, f"{name}: max |diff| {err:.2e}, gradient scale {scale:.2e}"
            checked += 1
    assert checked == 8  # 3 convs + the deconv, weights and biases

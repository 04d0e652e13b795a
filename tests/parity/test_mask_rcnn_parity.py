"""Mask R-CNN: torchvision's ``maskrcnn_resnet50_fpn``, converted by ``from_torchvision``, predicts
what it predicts (boxes, labels, scores and pasted mask probabilities) and has its losses.

The torchvision model is randomly initialised, its frozen batch norms calibrated on one random
batch (as in the Faster R-CNN parity tests), and its mask logits scaled to standard deviation 2
on that batch: with the raw init they are in the hundreds, every mask probability is 0 or 1 and
a comparison of probabilities would see almost nothing.
"""

from __future__ import annotations

import re

import pytest
import torch
import torchvision.models.detection as detection
import torchvision.models.detection.roi_heads as tv_roi_heads
import torchvision.ops as tv_ops
import torchvision.ops.poolers as tv_poolers
from torch import nn

from structpred.layers import MultiScaleRoIPool
from structpred.models import from_torchvision
from structpred.models.mask_rcnn import MaskRCNN
from structpred.ops import paste_masks_in_image

from .test_faster_rcnn_parity import (
    assert_same_detections,
    calibrate,
    same_predictions,
    seeded_losses,
    train_with_frozen_batch_norm,
)
from .test_roi_parity import IMAGE_SIZES, _fpn_boxes, _fpn_features, _gen

SMALL = {"min_size": 256, "max_size": 400}


def tv_mask_rcnn(seed: int, num_classes: int, scale_logits: bool = True, **overrides: object) -> nn.Module:
    torch.manual_seed(seed)
    model = detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes, **{**SMALL, **overrides}
    )
    images = [torch.rand(3, 240, 320)]
    calibrate(model, images)
    if not scale_logits:  # a test that sees no mask probabilities: skip the pass with 100 detections
        return model.eval()
    logits = model.roi_heads.mask_predictor.mask_fcn_logits
    seen: list[torch.Tensor] = []
    hook = logits.register_forward_hook(lambda m, args, out: seen.append(out))
    score_thresh, model.roi_heads.score_thresh = model.roi_heads.score_thresh, 0.0  # detections to see
    with torch.no_grad():
        model.eval()(images)
        hook.remove()
        scale = 2.0 / float(torch.cat(seen).std())
        logits.weight.mul_(scale)
        logits.bias.mul_(scale)
    model.roi_heads.score_thresh = score_thresh
    return model.eval()


def assert_same_masks(theirs: list[dict], ours: list[dict]) -> None:
    assert_same_detections(theirs, ours)
    for t, o in zip(theirs, ours, strict=True):
        assert o["masks"].shape == t["masks"].shape and o["masks"].dtype == torch.float32
        torch.testing.assert_close(o["masks"], t["masks"], atol=1e-3, rtol=0)


@pytest.mark.slow
def test_same_predictions_on_several_sizes_and_a_mixed_batch() -> None:
    tv = tv_mask_rcnn(seed=1, num_classes=91, box_score_thresh=0.01)
    ours = from_torchvision(tv)
    assert isinstance(ours, MaskRCNN) and not ours.training
    g = torch.Generator().manual_seed(0)
    # An odd size (333 x 250: resized off the 32 px grid, then padded) and a mixed batch (two sizes
    # padded to one) cover the resize and padding paths; a third single image (200 x 300) added none.
    batches = [
        [torch.rand(3, 333, 250, generator=g)],
        [torch.rand(3, 180, 240, generator=g), torch.rand(3, 256, 190, generator=g)],  # mixed sizes
    ]
    preds = same_predictions(tv, ours, batches, assert_same_masks)
    found, soft = 0, 0
    for p, image in zip(preds, [im for images in batches for im in images], strict=True):
        assert p["masks"].shape[-2:] == image.shape[-2:]
        found += len(p["boxes"])
        soft += int(((p["masks"] > 0.05) & (p["masks"] < 0.95)).sum())
    assert found > 100  # the comparison saw real detections ...
    assert soft > 10_000  # ... and mask probabilities well inside (0, 1)


@pytest.mark.slow
def test_zero_detections_other_classes_and_batched_tensor_input() -> None:
    tv = tv_mask_rcnn(seed=2, num_classes=3, scale_logits=False, box_score_thresh=0.9999)
    ours = from_torchvision(tv)
    images = torch.rand(2, 3, 160, 200)
    with torch.no_grad():
        theirs = tv(list(images))
        preds, _ = ours(images)
    assert [len(p["boxes"]) for p in theirs] == [0, 0]
    assert_same_masks(theirs, preds)
    assert preds[0]["masks"].shape == (0, 1, 160, 200)


@pytest.mark.slow
def test_same_training_losses_and_mask_gradients_with_the_same_seed() -> None:
    tv = tv_mask_rcnn(seed=3, num_classes=4, min_size=160, max_size=240)
    # Widen the RPN's logits so proposals do not tie (see the Faster R-CNN parity test); not so
    # much that many object probabilities round to exactly 1 (ResNet-50's logits are wider).
    with torch.no_grad():
        tv.rpn.head.cls_logits.weight.mul_(8.0)
    ours = from_torchvision(tv)
    masks = torch.zeros(2, 200, 260, dtype=torch.uint8)
    masks[0, 30:110, 20:80] = 1
    masks[1, 40:170, 110:240] = 1
    images = [torch.rand(3, 200, 260), torch.rand(3, 240, 200)]
    targets = [
        {"boxes": torch.tensor([[20.0, 30.0, 80.0, 110.0], [110.0, 40.0, 240.0, 170.0]]),
         "labels": torch.tensor([1, 3]), "masks": masks},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
         "masks": torch.zeros(0, 240, 200, dtype=torch.uint8)},  # all background
    ]  # fmt: skip
    train_with_frozen_batch_norm(tv, ours)
    theirs, losses = seeded_losses(tv, ours, images, targets)
    assert "loss_mask" in losses
    losses["loss_mask"].backward()
    theirs["loss_mask"].backward()
    tv_grads = dict(tv.roi_heads.named_parameters())
    checked = 0
    for name, p in ours.roi_heads.named_parameters():
        if name.startswith("mask_"):  # ours mask_head.convs.{i}.* is torchvision's mask_head.{i}.0.*
            ref = tv_grads[re.sub(r"^mask_head\.convs\.(\d+)\.", r"mask_head.\1.0.", name)].grad
            assert ref is not None, name
            # Measured against each tensor's own scale: float32 sums in another order (the two
            # RoIAlign backwards) leave elementwise differences that a plain rtol flags.
            err, scale = float((p.grad - ref).abs().max()), float(ref.abs().max())
            assert err <= 1e-6 + 3e-3 * scale, f"{name}: max |diff| {err:.2e}, gradient scale {scale:.2e}"
            checked += 1
    assert checked == 12  # 4 convs + deconv + logits, weights and biases


@pytest.mark.parametrize(
    ("n", "image_size", "M", "padding"), [(40, (60, 80), 28, 1), (17, (45, 33), 14, 2), (6, (20, 20), 7, 0)]
)
def test_paste_masks_matches_torchvision_on_random_inputs(
    n: int, image_size: tuple[int, int], M: int, padding: int
) -> None:
    H, W = image_size
    g = torch.Generator().manual_seed(M)
    masks = torch.rand(n, 1, M, M, generator=g)
    centre = torch.rand(n, 2, generator=g) * torch.tensor([W, H])
    size = torch.exp(torch.rand(n, 2, generator=g) * 5) * 0.2  # 0.2 .. 30 px
    boxes = torch.cat([centre - size / 2, centre + size / 2], 1)  # many partly outside
    boxes[0] = torch.tensor([2.0, 3.0, 2.3, 3.2])  # sub-pixel
    boxes[1] = torch.tensor([0.0, 0.0, float(W), float(H)])  # the whole image
    boxes[2] = torch.tensor([-5.0, -7.0, W + 3.0, H + 9.0])  # larger than the image
    ours = paste_masks_in_image(masks, boxes, (H, W), padding=padding)
    theirs = tv_roi_heads.paste_masks_in_image(masks, boxes, (H, W), padding=padding)
    assert ours.shape == theirs.shape == (n, 1, H, W)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_paste_no_masks_matches_torchvision() -> None:
    masks, boxes = torch.zeros(0, 1, 28, 28), torch.zeros(0, 4)
    ours = paste_masks_in_image(masks, boxes, (30, 40))
    assert ours.shape == tv_roi_heads.paste_masks_in_image(masks, boxes, (30, 40)).shape == (0, 1, 30, 40)


@pytest.mark.parametrize("output_size", [7, (14, 14), (3, 5)])
def test_multiscale_roi_pool_is_roi_pool_on_each_boxs_fpn_level(output_size: int | tuple[int, int]) -> None:
    gen = _gen(50)
    feats = _fpn_features(gen, torch.float32)
    boxes = _fpn_boxes(gen, torch.float32)
    names = ["0", "1", "2", "3"]
    got = MultiScaleRoIPool(names, output_size)(feats, boxes, IMAGE_SIZES)
    # The peer: torchvision's level of each box, then its roi_pool on that level's map.
    levels = tv_poolers.LevelMapper(2, 5)(boxes)
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)])
    want = torch.zeros_like(got)
    for k, name in enumerate(names):
        ids = torch.where(levels == k)[0]
        want[ids] = tv_ops.roi_pool(feats[name], rois[ids], output_size, 2.0 ** -(k + 2))
    assert set(levels.tolist()) == {0, 1, 2, 3}
    torch.testing.assert_close(got, want, rtol=0, atol=0)

"""Why ``from_torchvision`` on *random* weights can give other boxes than torchvision: tied scores.

A randomly initialised ``fasterrcnn_mobilenet_v3_large_fpn`` squashes its activations to ~1e-8
by the last stage, so every RoI gets the same class score. Among 100 detections of equal score
the order (and, at the top-n cuts of the RPN and of ``detections_per_img``, the *choice*) is
arbitrary, and the two libraries' sorts break the ties differently: the kept boxes differ by
hundreds of pixels while the network computes the same numbers. With weights whose scores are
distinct — trained, published, or here the same random weights with calibrated batch-norm
statistics — the detections are the same. The README's ``from_torchvision`` paragraph says so.
"""

from __future__ import annotations

import pytest
import torch
import torchvision.models.detection as detection
from torch import nn

from structpred.models import from_torchvision

from .test_faster_rcnn_parity import assert_same_detections, calibrate


def _pair(calibrated: bool) -> tuple[nn.Module, nn.Module, list[torch.Tensor]]:
    torch.manual_seed(1)
    tv = detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=5, box_score_thresh=0.01, min_size=320, max_size=480
    ).eval()
    if calibrated:
        calibrate(tv, [torch.rand(3, 240, 320)])
        tv.eval()
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 200, 300, generator=g), torch.rand(3, 333, 250, generator=g)]
    return tv, from_torchvision(tv), images


@pytest.mark.slow
def test_random_weights_tie_every_score_so_only_the_order_of_ties_can_differ() -> None:
    tv, ours, images = _pair(calibrated=False)
    with torch.no_grad():
        theirs = tv(images)
        preds, _ = ours(images)
        # the network computes the same numbers: features and RPN outputs agree
        batch = tv.transform(images)[0].tensors
        tv_features, our_features = tv.backbone(batch), ours.backbone(batch)
        for key in tv_features:
            torch.testing.assert_close(our_features[key], tv_features[key], atol=1e-6, rtol=1e-4)
        tv_obj, tv_deltas = tv.rpn.head(list(tv_features.values()))
        our_obj, our_deltas = ours.rpn.head(list(our_features.values()))
        for a, b in zip(our_obj + our_deltas, tv_obj + tv_deltas, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for t, o in zip(theirs, preds, strict=True):
        assert len(t["scores"]) == len(o["scores"]) == 100
        # 100 detections share at most two distinct scores: their order is arbitrary ...
        assert t["scores"].unique().numel() <= 2
        # ... and the scores themselves are the same on both sides, as multisets
        torch.testing.assert_close(o["scores"].sort().values, t["scores"].sort().values, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_distinct_scores_give_the_same_detections() -> None:
    tv, ours, images = _pair(calibrated=True)
    with torch.no_grad():
        theirs = tv(images)
        preds, _ = ours(images)
    for t in theirs:  # calibrated statistics spread the scores: no more ties
        assert t["scores"].unique().numel() == t["scores"].numel() > 10
    assert_same_detections(theirs, preds)

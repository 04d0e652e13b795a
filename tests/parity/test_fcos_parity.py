"""FCOS: torchvision's ``fcos_resnet50_fpn``, converted by ``from_torchvision`` (or loaded from its
saved ``state_dict``), predicts what it predicts and trains with the same losses and gradients.

Built with ``weights=None, weights_backbone=None`` (plain batch norm, every layer trainable) at
96-128 px so ResNet-50 stays cheap. torchvision counts a background logit channel (label 0)
in ``num_classes`` and would report it as a detection if it fired; trained weights never make
it fire (it is never a target) and ours never predicts it, so its bias is set to -1e4 here on
both sides, as training leaves it. At random weights every score is ~sqrt(0.01 * 0.5) = 0.07,
under torchvision's 0.2: the inference tests lower ``score_thresh`` so that the top-k, NMS and
``detections_per_img`` limits all bind.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision.models.detection as detection
from torch import nn

from structpred.models import from_torchvision, get_model
from structpred.models.fcos import FCOS
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


def tv_fcos(seed: int, **overrides: object) -> nn.Module:
    torch.manual_seed(seed)
    model = detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, **{**SMALL, **overrides})
    with torch.no_grad():
        model.head.classification_head.cls_logits.bias[0] = -1e4  # label 0: never fires (see above)
    return model.eval()


@pytest.fixture(scope="module")
def pair() -> tuple[nn.Module, FCOS]:
    """torchvision's FCOS (COCO's 91 channels, threshold 0.05) and ours converted from it."""
    tv = tv_fcos(1, score_thresh=0.05)
    ours = from_torchvision(tv)
    assert isinstance(ours, FCOS) and not ours.training and ours.num_classes == 90
    assert ours.background_channel and ours.score_thresh == 0.05
    return tv, ours


@pytest.mark.slow
def test_same_predictions_on_several_sizes_and_a_mixed_batch(pair: tuple[nn.Module, FCOS]) -> None:
    tv, ours = pair
    preds = same_predictions(tv, ours, small_batches())
    assert all(int(p["labels"].min()) >= 1 for p in preds)  # labels 1..K
    assert sum(len(p["boxes"]) for p in preds) > 40  # the comparison saw real detections


LIMITS = {"nms_thresh": 0.3, "topk_candidates": 40, "detections_per_img": 17}


@pytest.mark.slow
@pytest.mark.parametrize("settings", [LIMITS, {"score_thresh": 0.99}])  # every limit binds; nothing
def test_same_predictions_with_other_settings(pair: tuple[nn.Module, FCOS], settings: dict) -> None:
    tv, ours = pair
    preds = predictions_with_settings(tv, ours, settings)
    counts = [len(p["boxes"]) for p in preds]
    assert counts == ([17, 17] if settings is LIMITS else [0, 0])
    assert preds[0]["boxes"].shape[1] == 4 and preds[0]["labels"].dtype == torch.int64


def _targets() -> list[dict[str, torch.Tensor]]:
    nested = [[8.0, 8.0, 50.0, 64.0], [16.0, 20.0, 32.0, 36.0], [0.0, 0.0, 96.0, 80.0]]
    return [
        # nested boxes (the smaller wins), one across the whole image (the last level's range)
        {"boxes": torch.tensor(nested), "labels": torch.tensor([1, 3, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # all background
    ]


@pytest.mark.slow
def test_same_training_losses_and_gradients_and_settings() -> None:
    settings = {"center_sampling_radius": 2.5, "min_size": (64, 72), "max_size": 96, "nms_thresh": 0.4,
                "topk_candidates": 50, "detections_per_img": 20, "score_thresh": 0.1}  # fmt: skip
    tv = tv_fcos(3, num_classes=4, **settings).train()
    for name, p in tv.backbone.body.named_parameters():  # as trainable_backbone_layers=2 (and cheaper)
        p.requires_grad_(name.startswith(("layer3.", "layer4.")))
    ours = from_torchvision(tv)
    assert ours.training and (ours.transform.min_size, ours.transform.max_size) == ((64, 72), 96)
    assert all(getattr(ours, k) == v for k, v in settings.items() if not k.endswith("_size"))
    assert not any(p.requires_grad for p in ours.backbone.body.layer2.parameters())  # frozen stay frozen
    images = [torch.rand(3, 80, 96), torch.rand(3, 72, 56)]
    theirs, losses = seeded_losses(tv, ours, images, _targets(), prefix="loss_")
    assert float(theirs["bbox_regression"].detach()) > 0  # some locations were matched
    sum(theirs.values()).backward()
    sum(losses.values()).backward()
    assert_same_gradients(ours, tv)


@pytest.mark.slow
def test_state_dict_file_loads_into_the_registry_model(pair: tuple[nn.Module, FCOS], tmp_path: Path) -> None:
    tv, _ = pair
    path = tmp_path / "fcos.pth"
    torch.save(tv.state_dict(), path)
    # frozen batch norm (no counters), torchvision's layout: 90 classes + the background channel
    ours = get_model("fcos_resnet50_fpn", score_thresh=0.05, **SMALL).eval()
    report = load_weights(ours, path)
    assert report.family == "torchvision FCOS" and not report.reinitialised
    images = [torch.rand(3, 100, 120), torch.rand(3, 80, 100)]
    with torch.no_grad():
        assert_same_detections(tv(images), ours(images)[0])
    # another class count in the file: only the class logits keep ours' values (fine-tuning)
    state = tv.state_dict()
    for key in ("head.classification_head.cls_logits.weight", "head.classification_head.cls_logits.bias"):
        state[key] = state[key][:3]  # a 2-class torchvision FCOS
    torch.save(state, tmp_path / "fcos3.pth")
    report = load_weights(ours, tmp_path / "fcos3.pth")
    assert report.reinitialised_names == [
        "head.classification_head.cls_logits.weight",
        "head.classification_head.cls_logits.bias",
    ]
    with pytest.raises(ValueError, match="background_channel"):
        load_weights(get_model("fcos_narrow_fpn", num_classes=90), path)


def test_refused_variants(pair: tuple[nn.Module, FCOS]) -> None:
    tv = copy.deepcopy(pair[0])
    tv.transform.fixed_size = (96, 96)
    with pytest.raises(ValueError, match="fixed_size"):
        from_torchvision(tv)
    tv = copy.deepcopy(pair[0])
    tv.head.classification_head.cls_logits = nn.Conv2d(256, 1, 3, padding=1)  # num_classes=1
    with pytest.raises(ValueError, match="background channel"):
        from_torchvision(tv)
    tv = copy.deepcopy(pair[0])
    tv.backbone.fpn.extra_blocks.use_P5 = False  # P6 from C5 (RetinaNet v2's pyramid)
    with pytest.raises(ValueError, match="LastLevelP6P7 from P5"):
        from_torchvision(tv)

"""FCOS: the builders, the contract, target assignment and loss against naive loops, overfitting,
bad input. (torchvision parity: tests/parity/test_fcos_parity.py.)"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import generalized_box_iou_loss as tv_giou_loss
from torchvision.ops import sigmoid_focal_loss as tv_focal_loss

from structpred.heads.fcos_head import centreness, fcos_loss, match_locations
from structpred.models import get_model, list_models, model_info
from structpred.models.fcos import FCOS
from structpred.ops import anchors_for_image
from tests.models.one_stage_cases import BAD_INPUTS, background_losses, check_contract, overfit

LOSSES = {"loss_classification", "loss_bbox_regression", "loss_bbox_ctrness"}
# Cheap settings per builder: the contract, not the accuracy, is under test.
SMALL = {
    "fcos_narrow_fpn": {"width": 8},
    "fcos_fpn": {"fpn_channels": 32, "norm_groups": 8, "min_size": 64, "max_size": 96},
    "fcos_resnet50_fpn": {"min_size": 64, "max_size": 96},
}


def test_the_builders_are_registered() -> None:
    names = {n for n in list_models() if n.startswith("fcos")}
    assert names == set(SMALL)
    assert model_info("fcos_resnet50_fpn").peer_weights == ("torchvision",)


@pytest.mark.parametrize("name", ["fcos_narrow_fpn"])  # every builder: tests/test_registry.py
def test_builder_forward_backward_and_contract(name: str) -> None:
    torch.manual_seed(0)
    model = get_model(name, num_classes=6, score_thresh=0.01, **SMALL[name])
    assert isinstance(model, FCOS) and model_info(name).task == "detection"
    assert model.head.classification_head.cls_logits.out_channels == 6  # K logits, no background
    check_contract(model, LOSSES, num_classes=6)


# ------------------------------------------------------------------ assignment and loss, naive


def naive_match(refs: torch.Tensor, per_level: list[int], gt: torch.Tensor, radius: float) -> torch.Tensor:
    """The FCOS rules location by location (float64): smallest area wins, first on a tie."""
    out = []
    bounds = []
    for level, n in enumerate(per_level):
        bounds += [(level == 0, level == len(per_level) - 1)] * n
    for r, (first, last) in zip(refs.tolist(), bounds, strict=True):
        cx, cy, s = (r[0] + r[2]) / 2, (r[1] + r[3]) / 2, r[2] - r[0]
        lo, hi = (0.0 if first else 4 * s), (math.inf if last else 8 * s)
        best, best_area = -1, math.inf
        for j, (x1, y1, x2, y2) in enumerate(gt.tolist()):
            near = max(abs(cx - (x1 + x2) / 2), abs(cy - (y1 + y2) / 2)) < radius * s
            d = [cx - x1, cy - y1, x2 - cx, y2 - cy]
            area = (x2 - x1) * (y2 - y1)
            if near and min(d) > 0 and lo < max(d) < hi and area < best_area:
                best, best_area = j, area
        out.append(best)
    return torch.tensor(out)


def _level_refs(size: int = 256) -> tuple[torch.Tensor, list[int]]:
    feats = [(math.ceil(size / s),) * 2 for s in (8, 16, 32, 64, 128)]
    refs = anchors_for_image((size, size), feats, [(s,) for s in (8, 16, 32, 64, 128)], [(1.0,)] * 5)
    return refs, [h * w for h, w in feats]


@pytest.mark.parametrize("radius", [1.5, 3.0])
def test_match_locations_against_a_naive_loop(radius: float) -> None:
    g = torch.Generator().manual_seed(0)
    refs, per_level = _level_refs()
    xy = torch.rand(12, 2, generator=g) * 180
    wh = torch.cat([4 + torch.rand(6, 2, generator=g) * 40, 60 + torch.rand(6, 2, generator=g) * 190])
    gt = torch.cat([xy, xy + wh], 1).round()  # small and large boxes, some nested, some equal areas
    gt = torch.cat([gt, gt[:1]])  # a duplicate: the first one wins
    got = match_locations(refs, per_level, gt, radius)
    want = naive_match(refs, per_level, gt, radius)
    assert got.dtype == torch.int64 and got.shape == (refs.shape[0],)
    assert torch.equal(got, want)
    assert int((got >= 0).sum()) > 20 and len(set(got[got >= 0].tolist())) > 5  # real matches
    assert not bool((got == 12).any())  # the duplicate never wins
    empty = match_locations(refs, per_level, torch.zeros(0, 4), radius)
    assert torch.equal(empty, torch.full((refs.shape[0],), -1))


def test_fcos_loss_against_the_formulas() -> None:
    g = torch.Generator().manual_seed(1)
    refs, per_level = _level_refs(128)
    R, C = refs.shape[0], 3
    gt = [torch.tensor([[10.0, 12.0, 50.0, 60.0], [60.0, 20.0, 120.0, 110.0]]), torch.zeros(0, 4)]
    channels = [torch.tensor([0, 2]), torch.zeros(0, dtype=torch.int64)]
    matched = [match_locations(refs, per_level, b) for b in gt]
    logits = torch.randn(2, R, C, generator=g, dtype=torch.float64, requires_grad=True)
    reg = torch.rand(2, R, 4, generator=g, dtype=torch.float64, requires_grad=True)
    ctr = torch.randn(2, R, generator=g, dtype=torch.float64, requires_grad=True)
    losses = fcos_loss(logits, reg, ctr, refs.double(), [b.double() for b in gt], channels, matched)
    # the reference, with torchvision's ops, one location at a time for the box terms
    fg = matched[0] >= 0
    n = int(fg.sum())
    assert n > 5
    onehot = torch.zeros(2, R, C, dtype=torch.float64)
    onehot[0, fg, channels[0][matched[0][fg]]] = 1
    want_cls = tv_focal_loss(logits, onehot, reduction="sum") / n
    box_terms, ctr_terms = [], []
    for r in fg.nonzero()[:, 0].tolist():
        ref, box = refs[r].double(), gt[0][matched[0][r]].double()
        cx, cy, s = (ref[0] + ref[2]) / 2, (ref[1] + ref[3]) / 2, ref[2] - ref[0]
        d = reg[0, r] * s
        pred = torch.stack([cx - d[0], cy - d[1], cx + d[2], cy + d[3]])
        box_terms.append(tv_giou_loss(pred[None], box[None], reduction="sum"))
        lr = (float(cx - box[0]), float(box[2] - cx))
        tb = (float(cy - box[1]), float(box[3] - cy))
        target = torch.tensor(math.sqrt(min(lr) / max(lr) * min(tb) / max(tb)), dtype=torch.float64)
        ctr_terms.append(F.binary_cross_entropy_with_logits(ctr[0, r], target))
    torch.testing.assert_close(losses["loss_classification"], want_cls)
    torch.testing.assert_close(losses["loss_bbox_regression"], sum(box_terms) / n)
    torch.testing.assert_close(losses["loss_bbox_ctrness"], sum(ctr_terms) / n)
    # gradients too
    ours = torch.autograd.grad(sum(losses.values()), (logits, reg, ctr))
    want = torch.autograd.grad(want_cls + (sum(box_terms) + sum(ctr_terms)) / n, (logits, reg, ctr))
    for a, b in zip(ours, want, strict=True):
        torch.testing.assert_close(a, b)


def test_centreness_and_all_background_loss() -> None:
    ltrb = torch.tensor([[1.0, 2.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
    torch.testing.assert_close(centreness(ltrb), torch.tensor([math.sqrt(1 / 3), 1.0]))
    refs, _ = _level_refs(64)
    logits = torch.zeros(1, refs.shape[0], 2, requires_grad=True)
    losses = fcos_loss(
        logits, torch.zeros(1, refs.shape[0], 4), torch.zeros(1, refs.shape[0]), refs,
        [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.int64)], [torch.full((refs.shape[0],), -1)],
    )  # fmt: skip
    assert float(losses["loss_bbox_regression"]) == 0.0 and float(losses["loss_bbox_ctrness"]) == 0.0
    # divided by max(1, 0 matches): the plain focal-loss sum
    want = tv_focal_loss(logits, torch.zeros_like(logits)).sum()
    torch.testing.assert_close(losses["loss_classification"], want)


# ------------------------------------------------------------------------------ training


@pytest.mark.slow
def test_narrow_model_overfits_a_few_images() -> None:
    torch.manual_seed(0)
    model = get_model("fcos_narrow_fpn", num_classes=6, width=8, min_size=80, max_size=80)
    first, last = overfit(model, size=80, steps=15, lr=5e-3)
    # 2.80 -> 1.54 here; the centre-ness BCE alone stays ~0.6 (its targets are soft)
    assert last < 0.65 * first, (first, last)


def test_all_background_images_train() -> None:
    torch.manual_seed(0)
    model = get_model("fcos_narrow_fpn", num_classes=3, width=8)
    background_losses(model, LOSSES)


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(("images", "targets", "message"), BAD_INPUTS)
def test_bad_input_is_a_clear_value_error(images, targets, message: str) -> None:
    model = get_model("fcos_narrow_fpn", num_classes=3, width=8).eval()
    with pytest.raises(ValueError, match=message), torch.no_grad():
        model(images, targets)


def test_bad_settings_are_clear_value_errors() -> None:
    with pytest.raises(ValueError, match="unknown FCOS settings"):
        get_model("fcos_narrow_fpn", nms=0.5)
    with pytest.raises(ValueError, match="num_classes"):
        get_model("fcos_narrow_fpn", num_classes=0)
    with pytest.raises(ValueError, match="norm_groups 32 must divide"):
        get_model("fcos_narrow_fpn", fpn_channels=48, norm_groups=32)
    with pytest.raises(ValueError, match="norm_groups must be >= 1"):
        get_model("fcos_narrow_fpn", norm_groups=0)


def test_one_channel_per_group_is_refused_at_build() -> None:
    # GroupNorm(32) on 32 channels fails at forward time on a 1x1 P7 (a 64 px image), far from the cause
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.GroupNorm(32, 32)(torch.randn(1, 32, 1, 1))
    with pytest.raises(ValueError, match="FCOS: norm_groups 32 on 32 channels leaves one channel per group"):
        get_model("fcos_fpn", fpn_channels=32, norm_groups=32)
    with pytest.raises(ValueError, match="norm_groups 8 on 8 channels"):
        get_model("fcos_narrow_fpn", fpn_channels=8, norm_groups=8)
    assert get_model("fcos_narrow_fpn", fpn_channels=16, norm_groups=8).num_classes == 6  # 2 per group: fine
    model = get_model("fcos_narrow_fpn", num_classes=2, width=8, anchor_sizes=(8, 16, 32, 64))
    with pytest.raises(ValueError, match="gives 5 maps but anchors are set for 4 levels"):
        model([torch.rand(3, 32, 32)])
    with pytest.raises(ValueError, match="asks for neither"):
        model([torch.rand(3, 32, 32)], predict=False)

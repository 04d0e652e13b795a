"""RetinaNet: the builders, the contract, the loss and the one-stage post-processing against naive
loops, the P6/P7 block, overfitting, bad input. (torchvision parity:
tests/parity/test_retinanet_parity.py.)"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms as tv_batched_nms
from torchvision.ops import generalized_box_iou_loss as tv_giou_loss
from torchvision.ops import sigmoid_focal_loss as tv_focal_loss
from torchvision.ops.feature_pyramid_network import LastLevelP6P7 as TvP6P7

from structpred.heads.one_stage import dense_detections, match_anchors, sigmoid_prefilter
from structpred.heads.retinanet_head import retinanet_loss
from structpred.layers.fpn import FeaturePyramidNetwork, LastLevelP6P7
from structpred.models import get_model, list_models, model_info
from structpred.models.retinanet import RetinaNet
from structpred.ops import BoxCoder, Matcher, anchors_for_image
from tests.models.one_stage_cases import BAD_INPUTS, background_losses, check_contract, overfit

LOSSES = {"loss_classification", "loss_bbox_regression"}
# Cheap settings per builder: the contract, not the accuracy, is under test.
SMALL = {
    "retinanet_narrow_fpn": {"width": 8, "min_size": 96, "max_size": 96},
    "retinanet_fpn": {"fpn_channels": 32, "min_size": 64, "max_size": 96},
    "retinanet_resnet50_fpn": {"min_size": 64, "max_size": 96},
    "retinanet_resnet50_fpn_v2": {"min_size": 64, "max_size": 96},
}


def test_the_builders_are_registered() -> None:
    names = {n for n in list_models() if n.startswith("retinanet")}
    assert names == set(SMALL)
    assert model_info("retinanet_resnet50_fpn").peer_weights == ("torchvision",)
    assert model_info("retinanet_resnet50_fpn_v2").peer_weights == ("torchvision",)


@pytest.mark.parametrize("name", ["retinanet_narrow_fpn", "retinanet_fpn"])
def test_builder_forward_backward_and_contract(name: str) -> None:
    torch.manual_seed(0)
    model = get_model(name, num_classes=6, score_thresh=0.005, **SMALL[name])
    assert isinstance(model, RetinaNet) and model_info(name).task == "detection"
    assert model.head.classification_head.cls_logits.out_channels == 9 * 6  # A*K logits, no background
    check_contract(model, LOSSES, num_classes=6)


def test_v2_builder_layout() -> None:
    model = get_model("retinanet_resnet50_fpn_v2", num_classes=3, **SMALL["retinanet_resnet50_fpn_v2"])
    tower = model.head.regression_head.conv
    assert [type(m).__name__ for m in tower[0]] == ["Conv2d", "GroupNorm", "ReLU"] and tower[0][
        0
    ].bias is None
    assert model.box_loss == "giou" and model.background_channel
    assert model.head.classification_head.cls_logits.out_channels == 9 * 4  # K + 1 channels
    assert not model.backbone.fpn.extra_block.use_p5  # P6 from C5 (2048 channels)
    assert model.backbone.fpn.extra_block.p6.in_channels == 2048
    assert model.anchors.sizes[0] == (32, 40, 50) and model.anchors.sizes[-1] == (512, 645, 812)


# ------------------------------------------------------------------ P6 / P7, loss, post-processing


@pytest.mark.parametrize(("c_in", "use_p5"), [(8, True), (12, False)])
def test_p6p7_block_against_torchvision(c_in: int, use_p5: bool) -> None:
    torch.manual_seed(0)
    theirs = TvP6P7(c_in, 8)
    ours = LastLevelP6P7(c_in, 8)
    assert ours.use_p5 == theirs.use_P5 == use_p5
    ours.load_state_dict(theirs.state_dict())
    p = [torch.randn(2, 8, 9, 11)]
    c = [torch.randn(2, c_in, 9, 11)]
    out, names = ours(list(p), list(c), ["0"])
    ref, ref_names = theirs(list(p), list(c), ["0"])
    assert names == ref_names == ["0", "p6", "p7"]
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b)
    assert out[1].shape[-2:] == (5, 6) and out[2].shape[-2:] == (3, 3)
    fpn = FeaturePyramidNetwork([4, c_in], 8, extra_block="p6p7_c5")
    assert list(fpn(OrderedDict(a=torch.rand(1, 4, 16, 16), b=torch.rand(1, c_in, 8, 8)))) == [
        "a",
        "b",
        "p6",
        "p7",
    ]


def naive_loss(logits, deltas, anchors, matched, targets, box_loss: str, offset: int):
    """torchvision's per-image formulas, written out image by image with its own ops."""
    coder = BoxCoder()
    cls, box = [], []
    for logit, delta, m, t in zip(logits, deltas, matched, targets, strict=True):
        fg = torch.where(m >= 0)[0]
        target = torch.zeros_like(logit)
        for a in fg.tolist():
            target[a, int(t["labels"][m[a]]) - offset] = 1.0
        valid = m != -2
        cls.append(tv_focal_loss(logit[valid], target[valid], reduction="sum") / max(1, fg.numel()))
        gt = t["boxes"][m[fg]] if fg.numel() else torch.zeros(0, 4)
        if box_loss == "giou":
            loss = tv_giou_loss(coder.decode_single(delta[fg], anchors[fg]), gt, reduction="sum")
        elif box_loss == "l1":
            loss = F.l1_loss(delta[fg], coder.encode_single(gt, anchors[fg]), reduction="sum")
        else:
            loss = F.smooth_l1_loss(
                delta[fg], coder.encode_single(gt, anchors[fg]), reduction="sum", beta=1.0
            )
        box.append(loss / max(1, fg.numel()))
    return sum(cls) / len(targets), sum(box) / len(targets)


@pytest.mark.parametrize(("box_loss", "offset"), [("l1", 1), ("giou", 0), ("smooth_l1", 1)])
def test_retinanet_loss_against_a_naive_loop(box_loss: str, offset: int) -> None:
    g = torch.Generator().manual_seed(0)
    anchors = anchors_for_image((64, 64), [(8, 8), (4, 4)], [(16, 20), (32, 40)], [(0.5, 1.0, 2.0)] * 2)
    R, K = anchors.shape[0], 3 + (1 - offset)
    targets = [
        {"boxes": torch.tensor([[4.0, 4, 30, 28], [20, 18, 60, 62], [40, 2, 50, 12]]),
         "labels": torch.tensor([1, 3, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": torch.tensor([[10.0, 10, 20, 20]]), "labels": torch.tensor([3])},
    ]  # fmt: skip
    matched = match_anchors(anchors, targets, Matcher(0.5, 0.4, allow_low_quality_matches=True))
    assert (matched == -2).any() and (matched >= 0).sum() >= 4  # ignored and matched anchors present
    logits = torch.randn(3, R, K, generator=g, dtype=torch.float64, requires_grad=True)
    deltas = (0.2 * torch.randn(3, R, 4, generator=g, dtype=torch.float64)).requires_grad_()
    t64 = [{**t, "boxes": t["boxes"].double()} for t in targets]
    ours = retinanet_loss(
        logits, deltas, anchors.double(), matched, t64, BoxCoder(), box_loss, label_offset=offset
    )
    ref_cls, ref_box = naive_loss(logits, deltas, anchors.double(), matched, t64, box_loss, offset)
    torch.testing.assert_close(ours["loss_classification"], ref_cls, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours["loss_bbox_regression"], ref_box, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(sum(ours.values()), (logits, deltas))
    ref_grads = torch.autograd.grad(ref_cls + ref_box, (logits, deltas))
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def naive_detections(scores, deltas, anchors, sizes, thresh, topk, nms, det):
    """torchvision's postprocess_detections: per image, per level threshold then top-k (ties by
    index: torchvision's topk leaves them in any order)."""
    coder, out = BoxCoder(), []
    for i, (H, W) in enumerate(sizes):
        boxes, kept, labels = [], [], []
        for s, d, a in zip(scores, deltas, anchors, strict=True):
            flat = s[i].flatten()
            idx = torch.where(flat > thresh)[0]
            order = torch.sort(flat[idx], descending=True, stable=True).indices[:topk]  # ties by index
            top, idx = flat[idx][order], idx[order]
            b = coder.decode_single(d[i][idx // s.shape[-1]], a[idx // s.shape[-1]])
            b = torch.stack(
                [b[:, 0].clamp(0, W), b[:, 1].clamp(0, H), b[:, 2].clamp(0, W), b[:, 3].clamp(0, H)], 1
            )
            boxes.append(b), kept.append(top), labels.append(idx % s.shape[-1] + 1)
        b, s, lab = torch.cat(boxes), torch.cat(kept), torch.cat(labels)
        keep = tv_batched_nms(b, s, lab, nms)[:det]
        out.append({"boxes": b[keep], "scores": s[keep], "labels": lab[keep]})
    return out


@pytest.mark.parametrize(("thresh", "topk", "det"), [(0.3, 1000, 300), (0.5, 7, 10), (1.0, 50, 5)])
def test_dense_detections_against_torchvisions_loop(thresh: float, topk: int, det: int) -> None:
    g = torch.Generator().manual_seed(1)
    anchors = anchors_for_image((64, 80), [(8, 10), (4, 5)], [(16,), (32,)], [(0.5, 1.0, 2.0)] * 2)
    per_level = [8 * 10 * 3, 4 * 5 * 3]
    scores = torch.rand(2, sum(per_level), 4, generator=g)
    scores[1, :5] = 0.75  # tied scores
    deltas = 0.3 * torch.randn(2, sum(per_level), 4, generator=g)
    sizes = [(64, 80), (50, 61)]
    args = (scores.split(per_level, 1), deltas.split(per_level, 1), anchors.split(per_level))
    ours = dense_detections(*args, BoxCoder().decode_single, sizes, score_thresh=thresh, topk_candidates=topk,
                            nms_thresh=0.5, detections_per_img=det)  # fmt: skip
    ref = naive_detections(*args, sizes, thresh, topk, 0.5, det)
    for o, r in zip(ours, ref, strict=True):
        assert torch.equal(o["labels"], r["labels"])
        torch.testing.assert_close(o["boxes"], r["boxes"])
        torch.testing.assert_close(o["scores"], r["scores"])
    assert [len(o["boxes"]) for o in ours] == [len(r["boxes"]) for r in ref]
    if thresh == 1.0:
        assert all(len(o["boxes"]) == 0 for o in ours)
    # the same from logits: sigmoid on the candidates, with the logit prefilter or top-k of all
    logit_args = (torch.logit(scores.double()).split(per_level, 1), *args[1:])
    for prefilter in (sigmoid_prefilter(thresh), None):
        from_logits = dense_detections(*logit_args, BoxCoder().decode_single, sizes, score_thresh=thresh,
                                       topk_candidates=topk, nms_thresh=0.5, detections_per_img=det,
                                       activation=torch.sigmoid, prefilter=prefilter)  # fmt: skip
        for o, r in zip(from_logits, ref, strict=True):
            assert torch.equal(o["labels"], r["labels"])
            torch.testing.assert_close(o["scores"].float(), r["scores"])


# ------------------------------------------------------------------------------ training


@pytest.mark.slow
def test_narrow_model_overfits_a_few_images() -> None:
    torch.manual_seed(0)
    model = get_model("retinanet_narrow_fpn", num_classes=6, width=8, min_size=96, max_size=96)
    first, last = overfit(model, size=96, steps=30, lr=3e-3)
    assert last < 0.5 * first, (first, last)


def test_all_background_images_train() -> None:
    torch.manual_seed(0)
    model = get_model("retinanet_narrow_fpn", num_classes=3, width=8, min_size=64, max_size=64)
    losses = background_losses(model, LOSSES)
    assert float(losses["loss_classification"].detach()) > 0.0  # every anchor a negative


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(("images", "targets", "message"), BAD_INPUTS)
def test_bad_input_is_a_clear_value_error(images, targets, message: str) -> None:
    model = get_model("retinanet_narrow_fpn", num_classes=3, width=8).eval()
    with pytest.raises(ValueError, match=message), torch.no_grad():
        model(images, targets)


def test_bad_settings_are_clear_value_errors() -> None:
    with pytest.raises(ValueError, match="unknown RetinaNet settings"):
        get_model("retinanet_narrow_fpn", nms=0.5)
    with pytest.raises(ValueError, match="num_classes"):
        get_model("retinanet_narrow_fpn", num_classes=0)
    with pytest.raises(ValueError, match="norm_groups 32 must divide"):
        get_model("retinanet_narrow_fpn", fpn_channels=48, norm_groups=32)
    with pytest.raises(ValueError, match="RetinaNet: norm_groups 32 on 32 channels leaves one channel"):
        get_model("retinanet_fpn", fpn_channels=32, norm_groups=32)
    with pytest.raises(ValueError, match="box_loss must be one of"):
        get_model("retinanet_narrow_fpn", box_loss="ciou")
    with pytest.raises(ValueError, match="prior_probability"):
        get_model("retinanet_narrow_fpn", prior_probability=1.0)
    with pytest.raises(ValueError, match="head predicts 9 anchors per position"):
        get_model("retinanet_narrow_fpn", aspect_ratios=((1.0, 2.0, 3.0),) * 4 + ((1.0,),))
    sizes = ((16,), (32,), (64,), (128,))
    model = get_model(
        "retinanet_narrow_fpn", num_classes=2, width=8, anchor_sizes=sizes, aspect_ratios=((1.0,),) * 4
    )
    with pytest.raises(ValueError, match="gives 5 maps but anchors are set for 4 levels"):
        model([torch.rand(3, 32, 32)])
    with pytest.raises(ValueError, match="asks for neither"):
        model([torch.rand(3, 32, 32)], predict=False)

"""Issue 21's inference-cost options of the multi-task network: the batched one-stage
post-processing (the same detections as the image-by-image loop), the narrow model's detection
settings (score threshold 0.1, a ``detection`` dict adding to them), and ``dense_own`` (dense heads
that keep their own Panoptic FPN branch beside the shared decoder)."""

from __future__ import annotations

from typing import Any, cast

import pytest
import torch
from torch import Tensor

from structpred.data.shapes import ShapesWorld
from structpred.heads.dense_fpn import DensePredictor, FPNDenseHead
from structpred.heads.one_stage import _batched, _per_image, dense_detections, sigmoid_prefilter
from structpred.models import get_model
from structpred.models.multitask import NARROW_DETECTION, MultiTaskNet
from structpred.ops.box_coder import decode_linear

TINY: dict[str, Any] = {"width": 4, "fpn_channels": 8, "dense_channels": 8, "norm_groups": 4}
TINY |= {"input_size": 64, "dense_decoder": "shared"}


def tiny(seed: int = 0, **kwargs: Any) -> MultiTaskNet:
    torch.manual_seed(seed)
    return cast(MultiTaskNet, get_model("multitask_narrow", **{**TINY, **kwargs}))


def _levels(g: torch.Generator, B: int, K: int, sizes: list[int], ties: bool) -> tuple[list[Tensor], ...]:
    scores, regression, anchors = [], [], []
    for N in sizes:
        s = torch.rand(B, N, K, generator=g)
        scores.append((s * 8).round() / 8 if ties else s)  # (B, Nl, K); ties: 9 values only
        regression.append(torch.randn(B, N, 4, generator=g) * 0.5)
        xy = torch.rand(N, 2, generator=g) * 100
        anchors.append(torch.cat([xy, xy + 1 + torch.rand(N, 2, generator=g) * 40], 1))  # (Nl, 4) xyxy
    return scores, regression, anchors


def _fcos(model: MultiTaskNet) -> Any:
    return cast(Any, model.heads["detection"]).fcos


def _same(a: list[dict[str, Tensor]], b: list[dict[str, Tensor]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        assert torch.equal(x["labels"], y["labels"])
        # the activation / decoding of another set of elements may round 1 ulp apart
        torch.testing.assert_close(x["scores"], y["scores"], rtol=1e-6, atol=0)
        torch.testing.assert_close(x["boxes"], y["boxes"], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("logits", [False, True])
def test_batched_post_processing_gives_the_per_image_loops_detections(logits: bool) -> None:
    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        B, K = 1 + trial % 3, 1 + trial % 6
        sizes = [int(n) for n in torch.randint(0, 50, (1 + trial % 5,), generator=g)]
        ties = trial % 2 == 0
        scores, regression, anchors = _levels(g, B, K, sizes, ties)
        thresh = 0.01 + float(torch.rand((), generator=g)) * 0.9
        # with ties, k above every level's count: which of several tied k-th scores torch.topk
        # keeps is its own choice (the loop inherits it); without ties any k
        k = 1000 if ties else 1 + trial % 40
        image_sizes = [(int(h), int(w)) for h, w in torch.randint(20, 120, (B, 2), generator=g)]
        activation: Any = None
        prefilter: float | None = thresh
        if logits:
            scores = [torch.logit(s.clamp(1e-4, 1 - 1e-4)) for s in scores]
            activation, prefilter = torch.sigmoid, sigmoid_prefilter(thresh)
        assert prefilter is not None  # thresholds in [1e-6, 0.999] have one
        levels, detections = (scores, regression, anchors, decode_linear, image_sizes), 1 + trial % 30
        batched = _batched(*levels, prefilter, thresh, k, 0.5, detections, activation)
        _same(batched, _per_image(*levels, prefilter, thresh, k, 0.5, detections, activation))


def test_batched_post_processing_edge_cases() -> None:
    g = torch.Generator().manual_seed(1)
    scores, regression, anchors = _levels(g, 2, 3, [5, 0, 4], ties=False)
    none = dense_detections(
        scores, regression, anchors, decode_linear, [(50, 60)] * 2, score_thresh=1.0,
        topk_candidates=10, nms_thresh=0.5, detections_per_img=100,
    )  # fmt: skip
    assert [len(d["boxes"]) for d in none] == [0, 0]  # nothing passes: empty, well-typed
    assert none[0]["labels"].dtype == torch.int64 and none[0]["boxes"].shape == (0, 4)
    capped = dense_detections(
        scores, regression, anchors, decode_linear, [(50, 60)] * 2, score_thresh=0.0,
        topk_candidates=10, nms_thresh=1.0, detections_per_img=3,
    )  # fmt: skip
    assert [len(d["boxes"]) for d in capped] == [3, 3]
    for d in capped:  # by decreasing score, boxes clipped to the image
        assert torch.all(d["scores"][:-1] >= d["scores"][1:])
        assert d["boxes"].min() >= 0 and d["boxes"][:, 0::2].max() <= 60 and d["boxes"][:, 1::2].max() <= 50
    # a level with more candidates than k keeps its k best
    top2 = _batched(scores, regression, anchors, decode_linear, [(50, 60)] * 2, 0.0, 0.0, 2, 1.0, 100, None)
    assert [len(d["boxes"]) for d in top2] == [4, 4]  # 2 from each non-empty level
    for b, d in enumerate(top2):  # nms_thresh 1.0 suppresses nothing: the 2 best of levels 0 and 2
        best = torch.cat([scores[0][b].flatten().topk(2).values, scores[2][b].flatten().topk(2).values])
        assert torch.equal(d["scores"], best.sort(descending=True).values)


def test_a_batch_gives_each_images_own_detections() -> None:
    model = tiny(heads=("detection",), detection={"score_thresh": 0.0}).eval()
    world = ShapesWorld("train", size=64, num_images=2)
    images = [world[i][0] for i in range(2)]
    with torch.no_grad():
        together = model(images)[0]["detection"]
        alone = [model([im])[0]["detection"][0] for im in images]
    assert all(len(d["boxes"]) > 0 for d in together)
    _same(together, alone)


# ------------------------------------------------------------------ the narrow model's detection settings


def test_narrow_detection_settings_and_a_detection_dict_adds_to_them() -> None:
    assert NARROW_DETECTION == {"score_thresh": 0.1}
    assert _fcos(tiny()).score_thresh == 0.1
    fcos = _fcos(tiny(detection={"num_convs": 2}))
    assert fcos.score_thresh == 0.1  # kept: the dict adds, it does not replace
    assert len(fcos.head.classification_head.conv) == 2 * 3 and len(fcos.head.regression_head.conv) == 2 * 3
    assert _fcos(tiny(detection={"score_thresh": 0.05})).score_thresh == 0.05


# ---------------------------------------------------------------------------------------- dense_own


def test_dense_own_keeps_a_branch_for_the_named_heads() -> None:
    model = tiny(dense_own=("parts",))
    assert model.decoder is not None
    assert isinstance(model.heads["parts"].branch, FPNDenseHead) and not model.heads["parts"].reads_dense
    for name in ("semantic", "depth"):
        assert isinstance(model.heads[name].branch, DensePredictor) and model.heads[name].reads_dense
    assert tiny(dense_own="parts").state_dict().keys() == model.state_dict().keys()  # a comma list too
    every = tiny(dense_own=("semantic", "parts", "depth"))
    assert every.decoder is None  # nobody reads a shared decoder: it is the per_head layout
    assert every.state_dict().keys() == tiny(dense_decoder="per_head").state_dict().keys()
    # its single-task parts model is the per_head one (Panoptic FPN's branch + 1x1)
    single = tiny(dense_own=("parts",), heads=("parts",))
    assert single.state_dict().keys() == tiny(dense_decoder="per_head", heads=("parts",)).state_dict().keys()


def test_dense_own_singles_predict_what_the_unified_model_does() -> None:
    # the bench's build_models gives every single the unified model's weights (and checks them)
    model = tiny(dense_own=("parts",)).eval()
    images = ShapesWorld("train", size=64, num_images=1)[0][0][None]
    with torch.no_grad():
        full = model(images)[0]
        for name in ("semantic", "parts"):
            single = tiny(seed=5, dense_own=("parts",), heads=(name,)).eval()
            single.load_state_dict({k: v for k, v in model.state_dict().items() if k in single.state_dict()})
            mine = single(images)[0][name]
            for key, value in mine.items():
                torch.testing.assert_close(value, full[name][key], rtol=0, atol=1e-5)


def test_bad_dense_own_is_a_clear_value_error() -> None:
    with pytest.raises(
        ValueError, match=r"dense_own names dense heads \(semantic, parts, depth\), got \['detection'\]"
    ):
        tiny(dense_own=("detection",))
    with pytest.raises(ValueError, match=r"dense_own \['parts'\] needs dense_decoder='shared'"):
        tiny(dense_decoder="per_head", dense_own=("parts",))

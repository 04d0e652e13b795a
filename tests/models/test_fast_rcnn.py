"""Fast R-CNN: builders, the contract, proposal sources and caches, pooling variants, bad input."""

from __future__ import annotations

import pytest
import torch

from structpred.data import ShapesWorld
from structpred.layers.poolers import RoIPooler
from structpred.models import get_model, list_models
from structpred.models.fast_rcnn import FastRCNN
from structpred.ops import BackgroundFloorMatcher, Matcher
from structpred.proposals import WithProposals, check_proposals, selective_search
from structpred.tasks import get_task

LOSSES = {"loss_classifier", "loss_box_reg"}
TINY = {"min_size": 80, "max_size": 80, "representation_size": 64, "batch_size_per_image": 32}


@pytest.fixture(scope="module")
def shapes() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two 80x80 shapes images, targets with ids and precomputed Selective Search proposals."""
    world = ShapesWorld("train", size=80, num_images=2)
    items = [world[i] for i in range(2)]
    images = [im for im, _ in items]
    keys = ("boxes", "labels", "image_id")
    targets = [{**{k: t[k] for k in keys}, "proposals": selective_search(im)} for im, t in items]
    return images, targets


def _without(targets: list[dict[str, torch.Tensor]], *keys: str) -> list[dict[str, torch.Tensor]]:
    return [{k: v for k, v in t.items() if k not in keys} for t in targets]


def _counting(fn):
    calls = []

    def wrapped(image: torch.Tensor) -> torch.Tensor:
        calls.append(image)
        return fn(image)

    return wrapped, calls


def test_builders_are_registered() -> None:
    assert {"fast_rcnn_vgg16", "fast_rcnn_narrow"} <= set(list_models())


def test_vgg16_builder_has_the_papers_tree() -> None:
    from structpred.models import model_info

    with torch.device("meta"):  # the shapes, without allocating VGG-16's 130M weights
        model = get_model("fast_rcnn_vgg16")
    assert isinstance(model, FastRCNN) and model_info("fast_rcnn_vgg16").task == "detection"
    assert model.num_classes == 20
    heads = model.roi_heads
    assert isinstance(heads.box_roi_pool, RoIPooler) and heads.box_roi_pool.featmap_name == "c5"
    assert heads.box_roi_pool.stride == 16 and heads.box_roi_pool.output_size == 7
    assert (heads.box_head.fc6.in_features, heads.box_head.fc6.out_features) == (512 * 7 * 7, 4096)
    assert heads.box_head.fc7.out_features == 4096
    assert (
        heads.box_predictor.cls_score.out_features == 21 and heads.box_predictor.bbox_pred.out_features == 84
    )
    assert heads.sampler.batch_size_per_image == 64 and heads.sampler.positive_fraction == 0.25
    assert isinstance(heads.matcher, BackgroundFloorMatcher) and heads.matcher.floor == 0.1
    assert heads.matcher.high_threshold == heads.matcher.low_threshold == 0.5
    assert heads.nms_thresh == 0.3 and model.transform.min_size == (600,) and model.transform.max_size == 1000
    frozen = [not p.requires_grad for p in model.backbone.features[:10].parameters()]
    assert frozen and all(frozen) and all(p.requires_grad for p in model.backbone.features[10:].parameters())
    with torch.device("meta"):
        spp_model = get_model("fast_rcnn_vgg16", pool="spp")
    assert spp_model.roi_heads.box_head.fc6.in_features == 512 * 21


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("fast_rcnn_narrow", TINY),
        ("fast_rcnn_vgg16", {**TINY, "min_size": 64, "max_size": 64, "trainable_from": 24}),
    ],
)
def test_builder_forward_backward_and_contract(name: str, kwargs: dict, shapes) -> None:
    from structpred.models import model_info

    torch.manual_seed(0)
    images, targets = shapes
    model = get_model(name, num_classes=6, **kwargs)
    assert isinstance(model, FastRCNN) and model_info(name).task == "detection"
    model.train()
    preds, losses = model(images, targets)
    assert set(losses) == LOSSES and len(preds) == 2  # training mode predicts too: detections
    for pred in preds:
        n = pred["boxes"].shape[0]
        assert set(pred) == {"boxes", "scores", "labels"} and pred["boxes"].shape == (n, 4)
        assert pred["scores"].shape == (n,) and pred["labels"].shape == (n,)
        assert pred["labels"].dtype == torch.int64
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        none, losses_only = model(images, targets, predict=False)  # the training step: losses only
    assert none is None and set(losses_only) == LOSSES

    model.eval()
    with torch.no_grad():
        preds, losses = model(images, targets)  # eval with targets: both
        assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
        preds_only, no_losses = model(images, proposals=[t["proposals"] for t in targets])
    assert no_losses == {} and len(preds) == len(preds_only) == 2
    for pred, image in zip(preds_only, images, strict=True):
        assert set(pred) == {"boxes", "scores", "labels"}
        n = pred["boxes"].shape[0]
        assert pred["boxes"].shape == (n, 4) and pred["scores"].shape == (n,) and pred["labels"].shape == (n,)
        assert pred["boxes"].dtype == pred["scores"].dtype == torch.float32
        assert pred["labels"].dtype == torch.int64
        assert 0 < n <= 100  # seeded: something is detected, so the range checks below run
        assert int(pred["labels"].min()) >= 1 and int(pred["labels"].max()) <= 6
        H, W = image.shape[-2:]
        assert float(pred["boxes"][:, 2].max()) <= W and float(pred["boxes"][:, 3].max()) <= H


@pytest.mark.parametrize("pool", ["spp", "roi_align"])
def test_pooling_variants_train_and_predict(pool: str, shapes) -> None:
    torch.manual_seed(0)
    images, targets = shapes
    model = get_model("fast_rcnn_narrow", num_classes=6, pool=pool, **TINY).train()
    expected = 32 * (21 if pool == "spp" else 49)  # c3 has 2 * width = 32 channels
    assert model.roi_heads.box_head.fc6.in_features == expected
    _, losses = model(images, targets)
    assert set(losses) == LOSSES
    sum(losses.values()).backward()
    with torch.no_grad():
        preds, _ = model.eval()(images, targets)
    assert len(preds) == 2 and all(p["boxes"].shape[1] == 4 for p in preds)


def test_narrow_model_overfits_two_images(shapes) -> None:
    torch.manual_seed(0)
    images, targets = shapes
    model = get_model("fast_rcnn_narrow", num_classes=6, width=8, min_size=80, max_size=80,
                      representation_size=128).train()  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        _, losses = model(images, targets)
        loss = sum(losses.values())
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = float(loss.detach())
    assert last < 0.3 * first, (first, last)


def test_proposals_from_targets_or_argument_equal_computed_ones(shapes) -> None:
    images, targets = shapes
    torch.manual_seed(0)
    model = get_model("fast_rcnn_narrow", num_classes=6, **TINY).eval()
    given = [t["proposals"] for t in targets]
    with torch.no_grad():
        computed, _ = model(images)  # Selective Search inside the model
        from_arg, _ = model(images, proposals=given)
        from_targets, _ = model(images, targets)
    for a, b, c in zip(computed, from_arg, from_targets, strict=True):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key])
    model.train()
    torch.manual_seed(1)
    _, inside = model(images, _without(targets, "proposals"))
    torch.manual_seed(1)
    _, outside = model(images, targets)
    assert all(torch.equal(inside[k], outside[k]) for k in LOSSES)


def test_the_model_caches_computed_proposals_by_image_id_and_content(shapes) -> None:
    images, targets = shapes
    model = get_model("fast_rcnn_narrow", num_classes=6, **TINY).train()
    model.proposal_fn, calls = _counting(model.proposal_fn)
    plain = _without(targets, "proposals")
    model(images, plain)
    model(images, plain)
    model(images[::-1], plain[::-1])
    assert len(calls) == 2 and len(model.proposal_cache) == 2  # once per image
    reused = dict(plain[1], image_id=plain[0]["image_id"])  # an id seen with another image (val vs train)
    model(images[1:], [reused])
    assert len(calls) == 3 and len(model.proposal_cache) == 3  # is not a hit
    model(images, _without(plain, "image_id"))
    assert len(calls) == 5 and len(model.proposal_cache) == 3  # no id: computed, not cached


def test_with_proposals_adds_and_caches_them() -> None:
    world = ShapesWorld("train", size=64, num_images=3)
    counted, calls = _counting(lambda im: selective_search(im, mode="single"))
    data = WithProposals(world, proposal_fn=counted)
    assert len(data) == 3 and data.categories is world.categories  # attributes pass through
    image, target = data[1]
    assert torch.equal(image, world[1][0]) and torch.equal(target["boxes"], world[1][1]["boxes"])
    assert target["proposals"].dtype == torch.float32 and target["proposals"].shape[1] == 4
    assert torch.equal(target["proposals"], selective_search(image, mode="single"))
    again = data[1]
    assert again[1]["proposals"] is target["proposals"] and len(calls) == 1
    data.precompute()
    assert len(calls) == 3 and set(data.cache) == {0, 1, 2}
    data[-1]
    assert len(calls) == 3
    model = get_model("fast_rcnn_narrow", num_classes=6)
    assert isinstance(model.wrap_dataset(world), WithProposals)


def test_background_floor_matcher_ignores_easy_negatives() -> None:
    iou = torch.tensor([[0.05, 0.1, 0.3, 0.5, 0.9], [0.0, 0.0, 0.0, 0.0, 0.95]])
    matches = BackgroundFloorMatcher(0.5, 0.5, 0.1)(iou)
    assert matches.tolist() == [Matcher.BETWEEN_THRESHOLDS, -1, -1, 0, 1]
    with pytest.raises(ValueError, match="bg_iou_floor"):
        BackgroundFloorMatcher(0.5, 0.5, 0.6)


def test_proposals_outside_are_clipped_or_dropped_and_empty_ones_work() -> None:
    kept = check_proposals(torch.tensor([[-10.0, -10, 20, 20], [70.0, 70, 90, 90]]), (64, 64))
    assert kept.tolist() == [[0.0, 0.0, 20.0, 20.0]]
    model = get_model("fast_rcnn_narrow", num_classes=3, **TINY).eval()
    image = torch.rand(3, 64, 64)
    target = {"boxes": torch.tensor([[4.0, 4, 30, 30]]), "labels": torch.tensor([1])}
    outside = torch.tensor([[-10.0, -10, 20, 20], [70.0, 70, 90, 90]])
    with torch.no_grad():
        preds, losses = model([image], [dict(target, proposals=outside)])
        assert torch.isfinite(sum(losses.values()))
        assert bool((preds[0]["boxes"] >= 0).all()) and bool((preds[0]["boxes"] <= 64).all())
        empty, _ = model([image], proposals=[torch.zeros(0, 4)])
    assert empty[0]["boxes"].shape == (0, 4)
    model.train()
    background = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    _, losses = model([image], [dict(background, proposals=outside[:1])])
    assert float(losses["loss_box_reg"].detach()) == 0.0 and torch.isfinite(losses["loss_classifier"])


GOOD = {"boxes": torch.tensor([[1.0, 1, 20, 20]]), "labels": torch.tensor([1])}


@pytest.mark.parametrize(
    ("targets", "proposals", "message"),
    [
        ([dict(GOOD, proposals=torch.rand(5, 5))], None,
         r"targets\[0\]\['proposals'\] must be a Tensor\[P, 4\]"),
        ([dict(GOOD, proposals=torch.rand(4))], None, r"must be a Tensor\[P, 4\]"),
        ([dict(GOOD, proposals=[[1.0, 1, 5, 5]])], None, r"must be a Tensor\[P, 4\].*got list"),
        ([dict(GOOD, proposals=torch.tensor([[1, 1, 5, 5]]))], None, r"\['proposals'\] must be float.*int64"),
        ([dict(GOOD, proposals=torch.tensor([[1.0, 1, 5, 5], [6.0, 2, 6, 9]]))], None,
         r"\['proposals'\]\[1\] = \[6.0, 2.0, 6.0, 9.0\] is degenerate"),
        ([dict(GOOD, proposals=torch.tensor([[1.0, float("nan"), 5, 5]]))], None, r"\[0\] .* is not finite"),
        (None, [torch.tensor([[3.0, 9, 8, 4]])], r"proposals\[0\]\[0\] .* degenerate"),
        (None, [torch.rand(2, 4), torch.rand(2, 4)], "2 proposals tensors for 1 images"),
        ([{"boxes": torch.tensor([[5.0, 5, 4, 9]]), "labels": torch.tensor([1])}], None, "degenerate"),
        ([dict(GOOD, labels=torch.tensor([4]))], None, r"labels'\] must be in 1..3"),
        ([], None, "0 targets for 1 images"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_value_error(targets, proposals, message: str) -> None:
    model = get_model("fast_rcnn_narrow", num_classes=3, **TINY).eval()
    with pytest.raises(ValueError, match=message), torch.no_grad():
        model([torch.rand(3, 32, 32)], targets, proposals=proposals)


def test_bad_settings_and_modes_are_value_errors() -> None:
    model = get_model("fast_rcnn_narrow", num_classes=3).train()
    with torch.no_grad():
        preds, losses = model([torch.rand(3, 32, 32)])  # training mode, no targets: detections
    assert losses == {}
    get_task("detection").check_predictions(preds, 1)  # keys, shapes and dtypes of the contract
    with pytest.raises(ValueError, match="asks for neither predictions nor losses"):
        model([torch.rand(3, 32, 32)], predict=False)
    with pytest.raises(ValueError, match=r"images\[0\] must be a Tensor\[3, H, W\]"):
        model.eval()([torch.rand(1, 32, 32)])
    with pytest.raises(ValueError, match="unknown Fast R-CNN settings"):
        get_model("fast_rcnn_narrow", rpn_nms_thresh=0.5)
    with pytest.raises(ValueError, match="pool must be one of"):
        get_model("fast_rcnn_narrow", pool="avg")
    with pytest.raises(ValueError, match="featmap must be one of"):
        get_model("fast_rcnn_narrow", featmap="c7")
    with pytest.raises(ValueError, match="num_classes"):
        get_model("fast_rcnn_narrow", num_classes=0)

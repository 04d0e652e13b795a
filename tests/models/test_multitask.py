"""The multi-task network (issue 21): builds, the loss keys and each head's prediction contract,
sizes, partial targets, the loss weighting, overfitting, checkpoints, the depth head's targets,
the dense branch, and bad input. (The task and its metric: tests/tasks/test_multi_task.py.)"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from torch import Tensor, nn

from structpred.backbones.fpn import narrow_fpn
from structpred.data import ShapesWorld
from structpred.engine import checkpoint as ckpt
from structpred.heads.dense_fpn import FPNDenseHead
from structpred.heads.loss_weighting import GradNormWeighting, UncertaintyWeighting, build_weighting
from structpred.layers.transform import DetectionTransform
from structpred.models import get_model, model_info
from structpred.models.fcos import FCOSConfig, build_fcos
from structpred.models.multitask import HEAD_KINDS, HEAD_TASKS, MultiTaskNet
from structpred.models.multitask_heads import (
    DepthHead,
    DetectionHead,
    PyramidSpec,
    SegmentationHead,
    SharedFeatures,
)
from structpred.tasks import get_task

LOSS_KEYS = {
    "detection": {
        "loss_detection/classification",
        "loss_detection/bbox_regression",
        "loss_detection/bbox_ctrness",
    },
    "semantic": {"loss_semantic/ce"},
    "parts": {"loss_parts/ce"},
    "depth": {"loss_depth/log_l1"},
}
NARROW = {"width": 8, "input_size": 64, "detection": {"score_thresh": 0.01}}  # cheap, some boxes at init
FPN = {
    "backbone": "narrow",
    "backbone_args": {"widths": (8, 16, 32, 64)},
    "fpn_channels": 16,
    "dense_channels": 16,
    "norm_groups": 4,
    "input_size": 64,
    "detection": {"score_thresh": 0.01},
}


def narrow(seed: int = 0, **kwargs: Any) -> MultiTaskNet:
    torch.manual_seed(seed)
    return cast(MultiTaskNet, get_model("multitask_narrow", **{**NARROW, **kwargs}))


def shapes(n: int = 2, size: int | tuple[int, int] = 64) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """``n`` shapes-world images with every head's targets (boxes, labels, semantic, parts, depth)."""
    world = ShapesWorld("train", size=size, num_images=n)
    items = [world[i] for i in range(n)]
    return [im for im, _ in items], [dict(t) for _, t in items]


def check_outputs(preds: dict[str, Any], heads: tuple[str, ...], B: int, H: int, W: int) -> None:
    """Every head's predictions keep its task's contract, at the input's resolution."""
    get_task("multi_task").check_predictions(preds, B)
    assert tuple(preds) == heads
    for name, p in preds.items():
        get_task(HEAD_TASKS[name]).check_predictions(p, B)
        if name == "detection":
            for d in p:
                assert bool((d["boxes"] >= 0).all()) and bool((d["boxes"][:, 2::2] <= W).all())
                assert bool((d["boxes"][:, 3] <= H).all())
        else:
            dense = p["disparity"] if name == "depth" else p["logits"]
            assert dense.shape[-2:] == (H, W), (name, dense.shape)


# ------------------------------------------------------------------------------ builds, contract


@pytest.mark.parametrize(("name", "kwargs"), [("multitask_narrow", NARROW), ("multitask_fpn", FPN)])
def test_builders_forward_backward_and_contract(name: str, kwargs: dict[str, Any]) -> None:
    assert model_info(name).task == "multi_task"
    torch.manual_seed(0)
    model = get_model(name, **kwargs).train()
    images, targets = shapes(2)
    preds, losses = model(images, targets)
    assert set(losses) == set().union(*LOSS_KEYS.values())
    assert all(bool(torch.isfinite(v)) and v.dim() == 0 for v in losses.values())
    check_outputs(preds, HEAD_KINDS, 2, 64, 64)
    assert sum(len(d["boxes"]) for d in preds["detection"]) > 0  # the box path is exercised
    sum(losses.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []  # every head and the whole trunk get gradients
    none, only = model(images, targets, predict=False)
    assert none is None and set(only) == set(losses)
    with torch.no_grad():
        eval_preds, eval_losses = model.eval()(images, targets)  # validation loss for free
        batched, no_losses = model(torch.stack(images))  # a Tensor[B, 3, H, W] works as well
    assert set(eval_losses) == set(losses) and no_losses == {}
    check_outputs(batched, HEAD_KINDS, 2, 64, 64)
    torch.testing.assert_close(batched["semantic"]["logits"], eval_preds["semantic"]["logits"])


@pytest.mark.parametrize(("size", "input_size"), [((50, 70), 64), ((64, 64), 128), ((97, 33), 64)])
def test_dense_outputs_and_losses_at_the_input_resolution(size: tuple[int, int], input_size: int) -> None:
    model = narrow(input_size=input_size).eval()
    images, targets = shapes(2, size)
    with torch.no_grad():
        preds, losses = model(images, targets)
    check_outputs(preds, HEAD_KINDS, 2, *size)
    assert set(losses) == set().union(*LOSS_KEYS.values())


def test_detection_boxes_come_back_in_the_input_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    # a 50 x 70 image seen at 64 x ~90: FCOS gets the targets in the resized pixels and its
    # boxes (crafted here) come back scaled by the inverse ratio per axis
    model = narrow(heads=("detection",)).eval()
    seen: dict[str, Any] = {}

    def detect(inputs: Any, predict: bool) -> Any:
        seen.update(sizes=inputs.image_sizes, targets=inputs.targets)
        out = [{"boxes": torch.tensor([[8.0, 16.0, 40.0, 48.0]]), "scores": torch.ones(1),
                "labels": torch.tensor([2])} for _ in inputs.image_sizes]  # fmt: skip
        return (out if predict else None), {"loss_x": torch.zeros(())}

    monkeypatch.setattr(model.heads["detection"].fcos, "detect", detect)
    boxes = torch.tensor([[5.0, 10.0, 35.0, 30.0]])
    preds, losses = model([torch.rand(3, 50, 70)], [{"boxes": boxes, "labels": torch.tensor([1])}])
    Hr, Wr = seen["sizes"][0]
    assert Hr == 64 and Wr in (89, 90)
    sx, sy = Wr / 70, Hr / 50
    torch.testing.assert_close(seen["targets"][0]["boxes"], boxes * torch.tensor([sx, sy, sx, sy]))
    torch.testing.assert_close(
        preds["detection"][0]["boxes"], torch.tensor([[8 / sx, 16 / sy, 40 / sx, 48 / sy]])
    )
    assert set(losses) == {"loss_detection/x"}


@pytest.mark.parametrize(
    "heads", [s for r in range(1, 5) for s in itertools.combinations(HEAD_KINDS, r)], ids="-".join
)
def test_any_subset_of_heads_is_a_model(heads: tuple[str, ...]) -> None:
    model = narrow(heads=heads).train()
    assert tuple(model.heads) == heads and model.weighting.heads == heads
    images, targets = shapes(2)
    preds, losses = model(images, targets)
    assert set(losses) == set().union(*(LOSS_KEYS[h] for h in heads))
    check_outputs(preds, heads, 2, 64, 64)


def test_train_and_eval_mode_predict_the_same() -> None:
    # GroupNorm everywhere (the heads' own norm; the narrow backbone's given here): no mode switch
    kwargs = {**FPN, "backbone_args": {"widths": (8, 16, 32, 64), "norm_layer": lambda c: nn.GroupNorm(4, c)}}
    torch.manual_seed(0)
    model = get_model("multitask_fpn", **kwargs)
    images, _ = shapes(2)
    with torch.no_grad():
        train_preds, _ = model.train()(images)
        eval_preds, _ = model.eval()(images)
    for name in HEAD_KINDS:
        a, b = train_preds[name], eval_preds[name]
        pairs = zip(a, b, strict=True) if name == "detection" else [(a, b)]
        for x, y in pairs:
            assert set(x) == set(y)
            for key in x:
                assert torch.equal(x[key], y[key]), (name, key)
    assert sum(len(d["boxes"]) for d in eval_preds["detection"]) > 0


# ------------------------------------------------------------------------------- partial targets


def test_an_item_without_a_heads_targets_adds_nothing_to_its_loss() -> None:
    model = narrow().eval()  # eval: BatchNorm does not mix the items
    images, targets = shapes(3)
    del targets[0]["depth"], targets[1]["parts"]
    del targets[2]["boxes"], targets[2]["labels"]
    with torch.no_grad():
        preds, losses = model(images, targets)
        alone, _ = model(images)
        sub = {
            "detection": model([images[0], images[1]], [targets[0], targets[1]])[1],
            "parts": model([images[0], images[2]], [targets[0], targets[2]])[1],
            "depth": model([images[1], images[2]], [targets[1], targets[2]])[1],
            "semantic": losses,
        }
        first_only = model(images[:1], targets[:1])[1]["loss_parts/ce"]
    assert set(losses) == set().union(*LOSS_KEYS.values())
    for head, keys in LOSS_KEYS.items():
        for key in keys:
            torch.testing.assert_close(losses[key], sub[head][key])
    assert not math.isclose(float(losses["loss_parts/ce"]), float(first_only))  # item 2 does count
    for name in ("semantic", "parts", "depth"):  # the predictions do not depend on the targets
        for key, value in preds[name].items():
            assert torch.equal(value, alone[name][key]), (name, key)
    for d, e in zip(preds["detection"], alone["detection"], strict=True):
        assert all(torch.equal(d[k], e[k]) for k in d)


def test_a_head_without_targets_in_the_batch_is_skipped() -> None:
    model = narrow(weighting="uncertainty").train()
    images, targets = shapes(2)
    for t in targets:
        del t["depth"]
    preds, losses = model(images, targets)
    assert set(losses) == set().union(*(LOSS_KEYS[h] for h in ("detection", "semantic", "parts"))) | {
        "loss_uncertainty"
    }
    log_var = cast(UncertaintyWeighting, model.weighting).log_var
    s = log_var.detach()
    torch.testing.assert_close(losses["loss_uncertainty"].detach(), 0.5 * s[:3].sum())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.heads["depth"].parameters())
    assert log_var.grad is not None and log_var.grad[3] == 0  # the absent head's log-variance is not pulled
    assert preds["depth"]["disparity"].shape == (2, 1, 64, 64)  # still predicted


def test_depth_head_reads_disparity_when_asked() -> None:
    model = narrow(heads=("semantic", "depth"), depth_target="disparity").train()
    images, targets = shapes(2)
    _, losses = model(images, targets)  # depth, no disparity: the depth head has no targets
    assert set(losses) == {"loss_semantic/ce"}
    targets[0]["disparity"] = torch.full((1, 64, 64), 3.0)
    _, losses = model(images, targets)
    assert set(losses) == {"loss_semantic/ce", "loss_depth/log_l1"}


# ------------------------------------------------------------------------------------ weighting


def test_fixed_weights_scale_their_head_exactly() -> None:
    images, targets = shapes(2)
    _, plain = narrow(seed=3).train()(images, targets)
    _, weighted = narrow(seed=3, weighting_args={"weights": {"semantic": 2.0, "depth": 0.5}}).train()(
        images, targets
    )
    assert set(plain) == set(weighted)
    for key, value in plain.items():
        factor = 2.0 if key.startswith("loss_semantic/") else 0.5 if key.startswith("loss_depth/") else 1.0
        assert torch.equal(weighted[key], factor * value), key


def test_uncertainty_weighting_against_its_formula() -> None:
    images, targets = shapes(2)
    _, plain = narrow(seed=3).train()(images, targets)
    model = narrow(seed=3, weighting="uncertainty").train()
    s = torch.tensor([0.5, -0.3, 1.0, 0.2])
    with torch.no_grad():
        cast(UncertaintyWeighting, model.weighting).log_var.copy_(s)
    _, losses = model(images, targets)
    assert set(losses) == set(plain) | {"loss_uncertainty"}
    for key, value in plain.items():
        h = HEAD_KINDS.index(key.split("/")[0].removeprefix("loss_"))
        torch.testing.assert_close(losses[key], 0.5 * torch.exp(-s[h]) * value)
    torch.testing.assert_close(losses["loss_uncertainty"], 0.5 * s.sum())
    sum(losses.values()).backward()
    grad = cast(UncertaintyWeighting, model.weighting).log_var.grad
    assert grad is not None and bool((grad != 0).all())
    assert "weighting.log_var" in model.no_weight_decay()


def test_gradnorm_weights_learn_from_their_own_term_only() -> None:
    images, targets = shapes(2)
    _, plain = narrow(seed=3).train()(images, targets)
    model = narrow(seed=3, weighting="gradnorm").train()
    _, losses = model(images, targets)
    assert set(losses) == set(plain) | {"loss_gradnorm"}
    for key, value in plain.items():  # w = 1 at the start: the fixed weighting's terms
        torch.testing.assert_close(losses[key], value)
    sum(v for k, v in losses.items() if k != "loss_gradnorm").backward(retain_graph=True)
    assert model.weighting.weight.grad is None
    model.zero_grad(set_to_none=True)
    losses["loss_gradnorm"].backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}
    assert grads == {"weighting.weight"}
    assert torch.isfinite(
        cast(GradNormWeighting, model.weighting).initial_loss
    ).all()  # L(0) recorded for every head
    with torch.no_grad():
        _, eval_losses = model.eval()(images, targets)
    assert set(eval_losses) == set(plain)  # no GradNorm term outside training


def test_weighting_over_other_heads_is_refused() -> None:
    transform = DetectionTransform(64, 256)
    head = SegmentationHead(FPNDenseHead(16, 7, 4, 16, 4))
    with pytest.raises(ValueError, match=r"the weighting is over \('semantic', 'depth'\)"):
        MultiTaskNet(transform, narrow_fpn(out_channels=16, widths=(8, 16, 32, 64)), {"semantic": head},
                     build_weighting("fixed", ["semantic", "depth"]))  # fmt: skip
    with pytest.raises(ValueError, match="unknown head 'depth'"):
        narrow(heads=("semantic",), weighting_args={"weights": {"depth": 2.0}})
    with pytest.raises(ValueError, match="unknown loss weighting 'softmax'"):
        narrow(weighting="softmax")


# ------------------------------------------------------------------------------------- training


@pytest.mark.slow
def test_overfits_four_images_every_head() -> None:
    torch.manual_seed(0)
    model = narrow().train()
    images, targets = shapes(4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first: dict[str, float] = {}
    for _ in range(60):
        _, losses = model(images, targets, predict=False)
        last = {k: float(v.detach()) for k, v in losses.items()}
        first = first or last
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    # measured with the shared dense decoder (1x1 predictors): semantic 2.85 -> 0.16, parts 2.63 -> 0.24,
    # depth 3.63 -> 0.19, classification 1.16 -> 0.05, box GIoU 1.01 -> 0.27; centre-ness BCE ~0.71 -> 0.61
    # (its targets are soft)
    for key in ("loss_semantic/ce", "loss_parts/ce", "loss_depth/log_l1"):
        assert last[key] < 0.2 * first[key], (key, first[key], last[key])
    for key in ("loss_detection/classification", "loss_detection/bbox_regression"):
        assert last[key] < 0.5 * first[key], (key, first[key], last[key])
    assert last["loss_detection/bbox_ctrness"] < first["loss_detection/bbox_ctrness"]


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty", "dwa", "gradnorm"])
def test_checkpoint_round_trip(weighting: str, tmp_path: Path) -> None:
    args = {"period": 1} if weighting == "dwa" else {}
    model = narrow(seed=0, weighting=weighting, weighting_args=args).train()
    images, targets = shapes(2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):  # the weighting's state moves (DWA's windows, GradNorm's L(0), log-variances)
        opt.zero_grad()
        sum(model(images, targets, predict=False)[1].values()).backward()
        opt.step()
    state = model.state_dict()
    assert not any("_shared" in k for k in state)
    storages = [v.untyped_storage().data_ptr() for v in state.values() if v.numel()]
    assert len(storages) == len(set(storages))  # no tensor twice (safetensors refuses shared ones)
    path = ckpt.save_checkpoint(tmp_path, 1, model, opt, {"config": {"model_name": "multitask_narrow"}})
    other = narrow(seed=1, weighting=weighting, weighting_args=args)
    tensors, meta = ckpt.load_checkpoint(path)
    ckpt.restore(tensors, meta, other, rng=False)
    for key, value in other.state_dict().items():
        assert torch.equal(value, state[key]), key
    with torch.no_grad():
        a, la = model.eval()(images, targets)
        b, lb = other.eval()(images, targets)
    for key in la:
        assert torch.equal(la[key], lb[key]), key
    for name in ("semantic", "parts", "depth"):
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name])
    assert all(
        torch.equal(d["boxes"], e["boxes"]) for d, e in zip(a["detection"], b["detection"], strict=True)
    )


# ------------------------------------------------------------------------------------ depth head


def _features(B: int = 2, D: int = 8, size: tuple[int, int] = (32, 32)) -> SharedFeatures:
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(B, D, math.ceil(size[0] / s), math.ceil(size[1] / s), generator=g) for s in (4, 8)]
    return SharedFeatures(maps, size, size, size)


def _depth_head(target_key: str = "depth", **kwargs: Any) -> DepthHead:
    torch.manual_seed(0)
    return DepthHead(FPNDenseHead(8, 1, 2, 8, 4), target_key, **kwargs)


def _log_l1(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """The loss written out: the mean over valid pixels of |log pred - log target|."""
    return (pred.log() - target.log())[valid].abs().mean()


def test_depth_target_through_the_camera_or_as_inverse_depth() -> None:
    x = _features(B=1)
    depth = 1.0 + 9.0 * torch.rand(1, 1, 32, 32)
    for head, fb in ((_depth_head(focal=64.0, baseline=0.1), 6.4), (_depth_head(), 1.0)):
        pred = head(x, None, True)[0]["disparity"]
        _, losses = head(x, [{"depth": depth[0]}], False)
        torch.testing.assert_close(losses["loss_log_l1"], _log_l1(pred, fb / depth, depth > 0))
    head = _depth_head("disparity")
    pred = head(x, None, True)[0]["disparity"]
    _, losses = head(x, [{"disparity": 6.4 / depth[0], "depth": torch.ones(1, 32, 32)}], False)
    torch.testing.assert_close(losses["loss_log_l1"], _log_l1(pred, 6.4 / depth, depth > 0))


def test_depth_ignores_invalid_and_non_finite_pixels() -> None:
    x, head = _features(B=1), _depth_head(focal=64.0, baseline=0.1)
    pred = head(x, None, True)[0]["disparity"]
    depth = 1.0 + 9.0 * torch.rand(1, 32, 32)
    depth[0, 0, :4] = torch.tensor([0.0, -2.0, math.inf, math.nan])
    valid = torch.ones(32, 32, dtype=torch.bool)
    valid[5:9] = False
    keep = (torch.isfinite(depth) & (depth > 0) & valid)[None]  # (1, 1, H, W)
    _, losses = head(x, [{"depth": depth, "valid": valid}], False)
    want = _log_l1(pred, 6.4 / torch.where(keep, depth[None], 1.0), keep)
    torch.testing.assert_close(losses["loss_log_l1"], want)
    assert torch.isfinite(losses["loss_log_l1"])
    _, none = head(x, [{"depth": torch.zeros(1, 32, 32)}], False)  # nothing valid: 0, not NaN
    assert float(none["loss_log_l1"].detach()) == 0.0


def test_disparity_range_and_metric_targets() -> None:
    x = _features(B=1, size=(32, 40))
    head = _depth_head(max_disparity=0.25)
    for bias, near in ((30.0, 0.25 * 40), (-30.0, 0.0)):
        with torch.no_grad():
            cast(Tensor, head.branch.predictor.bias).fill_(bias)
        d = head(x, None, True)[0]["disparity"]
        assert bool((d > 0).all()) and bool((d <= 0.25 * 40).all())
        torch.testing.assert_close(d, torch.full_like(d, near), atol=1e-3, rtol=0)
    calibrated = _depth_head(focal=64.0, baseline=0.1)
    own = {"depth": torch.ones(1, 4, 4), "focal": torch.tensor(10.0)}
    out = calibrated.metric_targets([{"depth": torch.ones(1, 4, 4)}, own])
    assert float(out[0]["focal"]) == 64.0 and math.isclose(float(out[0]["baseline"]), 0.1, rel_tol=1e-6)
    assert out[1] is own
    plain = [{"depth": torch.ones(1, 4, 4)}]
    assert _depth_head().metric_targets(plain) is plain


def test_a_very_negative_depth_output_keeps_a_finite_loss() -> None:
    x, head = _features(B=1), _depth_head("disparity")
    with torch.no_grad():
        cast(Tensor, head.branch.predictor.bias).fill_(-120.0)
    _, losses = head(x, [{"disparity": torch.full((1, 32, 32), 2.0)}], False)
    assert torch.isfinite(losses["loss_log_l1"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": 2}, "the branch must give 1 channel, got 2"),
        ({"target_key": "inverse"}, "target_key must be 'depth' or 'disparity', got 'inverse'"),
        ({"focal": -64.0, "baseline": 0.1}, "focal and baseline must be positive"),
        ({"focal": 64.0, "baseline": math.inf}, "focal and baseline must be positive"),
        ({"max_disparity": 0.0}, r"max_disparity .* \(0, 1\], got 0.0"),
        ({"max_disparity": 1.5}, r"max_disparity .* \(0, 1\], got 1.5"),
    ],
)
def test_bad_depth_head_settings(kwargs: dict[str, Any], match: str) -> None:
    branch = FPNDenseHead(8, kwargs.pop("channels", 1), 2, 8, 4)
    with pytest.raises(ValueError, match=match):
        DepthHead(branch, **kwargs)


# ------------------------------------------------------------------------------ dense FPN branch


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [(64, 96), (50, 70), (33, 17)])
def test_dense_branch_shapes_for_every_level_count(levels: int, size: tuple[int, int]) -> None:
    H, W = size
    branch = FPNDenseHead(8, 5, levels, 8, 4)
    convs = [sum(isinstance(m, nn.Conv2d) for m in b.modules()) for b in branch.branches]
    assert convs == [max(1, level) for level in range(levels)]  # level l: l stages (level 0: one)
    maps = [
        torch.randn(2, 8, math.ceil(H / s), math.ceil(W / s), requires_grad=True) for s in (4, 8, 16, 32, 64)
    ]
    out = branch(maps)  # at the finest map's stride, 4
    assert out.shape == (2, 5, math.ceil(H / 4), math.ceil(W / 4))
    out.sum().backward()
    assert all(m.grad is not None for m in maps[:levels]) and all(m.grad is None for m in maps[levels:])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((8, 5, 0, 8, 4), "num_levels and channels must be >= 1, got 0, 8"),
        ((8, 0, 2, 8, 4), "out_channels must be >= 1, got 0"),
        ((8, 5, 2, 0, 1), "must be >= 1, got 2, 0"),
        ((8, 5, 2, 8, 3), "norm_groups 3 must divide channels 8"),
        ((8, 5, 2, 8, 0), "norm_groups 0 must divide channels 8"),
    ],
)
def test_dense_branch_bad_settings(args: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FPNDenseHead(*args)


def test_dense_branch_refuses_too_few_maps() -> None:
    with pytest.raises(ValueError, match="FPNDenseHead: 2 maps for 3 levels"):
        FPNDenseHead(8, 5, 3, 8, 4)([torch.zeros(1, 8, 8, 8), torch.zeros(1, 8, 4, 4)])


# ------------------------------------------------------------------------------------ bad input


def _bad(key: str, value: Any) -> Any:
    return lambda t: t.update({key: value})


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            _bad("semantic", torch.zeros(64, 64)),
            r"head 'semantic': targets\[0\]\['semantic'\] must be an integer",
        ),
        (
            _bad("semantic", torch.zeros(32, 32, dtype=torch.long)),
            r"head 'semantic': .* is \(32, 32\) but the image is \(64, 64\)",
        ),  # noqa: E501
        (_bad("semantic", torch.full((64, 64), 7)), r"head 'semantic': .* label 7, outside 0..6"),
        (
            _bad("parts", torch.full((64, 64), -1)),
            r"head 'parts': targets\[0\]\['parts'\] holds label -1, outside 0..12",
        ),  # noqa: E501
        (
            _bad("depth", torch.ones(64, 64)),
            r"head 'depth': targets\[0\]\['depth'\] must be a float Tensor\[1, 64, 64\]",
        ),  # noqa: E501
        (_bad("depth", torch.ones(1, 64, 64, dtype=torch.long)), r"head 'depth': .*got torch.int64"),
        (_bad("labels", torch.tensor([7])), r"head 'detection': targets\[0\]\['labels'\] must be in 1..6"),
        (
            _bad("boxes", torch.tensor([[1, 2, 30, 40]])),
            r"head 'detection': targets\[0\]\['boxes'\] must be float",
        ),
        (_bad("boxes", torch.tensor([[30.0, 2.0, 10.0, 40.0]])), r"head 'detection': .*degenerate"),
    ],
)
def test_a_bad_target_names_its_head_and_key(edit: Any, match: str) -> None:
    model = narrow()
    images, targets = shapes(2)
    targets[0]["boxes"], targets[0]["labels"] = targets[0]["boxes"][:1], targets[0]["labels"][:1]
    edit(targets[0])
    with pytest.raises(ValueError, match=match) as err:
        model(images, targets)
    assert "\n" not in str(err.value)


def test_a_bad_target_names_its_item_in_the_batch() -> None:
    images, targets = shapes(2)
    del targets[0]["parts"]
    targets[1]["parts"] = torch.full((64, 64), 20)
    with pytest.raises(ValueError, match=r"head 'parts': targets\[1\]\['parts'\] holds label 20"):
        narrow()(images, targets)


def test_half_of_a_heads_keys_is_a_data_error() -> None:
    images, targets = shapes(2)
    del targets[1]["labels"]  # boxes without labels: not "no detection target"
    with pytest.raises(ValueError, match=r"head 'detection': targets\[1\] has \['boxes'\], not \['labels'\]"):
        narrow()(images, targets)


def test_bad_heads_are_clear_value_errors() -> None:
    transform, backbone = DetectionTransform(64, 256), narrow_fpn(out_channels=16, widths=(8, 16, 32, 64))
    head = SegmentationHead(FPNDenseHead(16, 7, 4, 16, 4))
    with pytest.raises(ValueError, match="MultiTaskNet: the head dict is empty"):
        MultiTaskNet(transform, backbone, {})
    for name in ("Semantic", "sem_1", "sem/x", "1sem", ""):
        with pytest.raises(ValueError, match="must be lower-case letters and digits"):
            MultiTaskNet(transform, backbone, {name: head})
    with pytest.raises(ValueError, match="head 'semantic' is a Identity, not a TaskHead"):
        MultiTaskNet(transform, backbone, {"semantic": nn.Identity()})  # type: ignore[dict-item]
    heads: Any
    for heads in ((), []):
        with pytest.raises(ValueError, match="needs at least one head, got none"):
            narrow(heads=heads)
    with pytest.raises(ValueError, match="unknown head ''"):
        narrow(heads="")
    with pytest.raises(ValueError, match=r"heads \['semantic'\] are given twice"):
        narrow(heads=("semantic", "depth", "semantic"))
    with pytest.raises(
        ValueError, match="unknown head 'flow'; the heads are detection, semantic, parts, depth"
    ):
        narrow(heads=("semantic", "flow"))
    assert tuple(narrow(heads="semantic, depth").heads) == ("semantic", "depth")
    # FCOS reads pyramid levels 1..5: a 5-map pyramid (no P7) is one short
    fcos = build_fcos(PyramidSpec(16), 3, FCOSConfig(norm_groups=4))
    model = MultiTaskNet(transform, backbone, {"detection": DetectionHead(fcos)})
    with pytest.raises(ValueError, match="the pyramid has 5 maps, it reads levels 1..5"):
        model([torch.rand(3, 64, 64)])


def test_bad_calls_and_settings_are_clear_value_errors() -> None:
    model = narrow()
    images, targets = shapes(3)
    with pytest.raises(ValueError, match=r"images of sizes \[\(64, 64\), \(64, 80\)\] in one batch"):
        model([images[0], torch.rand(3, 64, 80)])
    with pytest.raises(ValueError, match="MultiTaskNet: 2 targets for 3 images"):
        model(images, targets[:2])
    with pytest.raises(ValueError, match=r"targets\[1\] must be a dict, got list"):
        model(images, [targets[0], [], targets[2]])
    with pytest.raises(ValueError, match="MultiTaskNet: predict=False without targets asks for neither"):
        model(images, predict=False)
    with pytest.raises(ValueError, match="input_size must be >= 32"):
        narrow(input_size=16)
    with pytest.raises(ValueError, match=r"unknown MultiTaskConfig settings \['head'\]"):
        narrow(head=("semantic",))
    with pytest.raises(ValueError, match="target_key must be 'depth' or 'disparity'"):
        narrow(depth_target="inverse")

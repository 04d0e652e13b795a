"""Faster R-CNN: torchvision's models, converted by ``from_torchvision``, predict what they predict.

The torchvision models are randomly initialised, then their frozen batch-norm statistics are
calibrated on one random batch (each layer's input standardised): with the raw random init
the activations of MobileNetV3 shrink to ~1e-8 by the last stage, every RoI gets the same
score, and the order among tied detections is arbitrary on both sides.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision.models.detection as detection
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d as FrozenBN

from structpred.models import from_torchvision

BUILDERS = {
    "resnet50_fpn": (detection.fasterrcnn_resnet50_fpn, {"min_size": 256, "max_size": 400}),
    "mobilenet_v3_large_fpn": (
        detection.fasterrcnn_mobilenet_v3_large_fpn,
        {"min_size": 320, "max_size": 480},
    ),
    "mobilenet_v3_large_320_fpn": (detection.fasterrcnn_mobilenet_v3_large_320_fpn, {}),
}


def calibrate(model: nn.Module, images: list[torch.Tensor]) -> None:
    """Set every (frozen) batch norm's statistics to its input's on ``images`` (one pass)."""

    def standardise(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)) + 1e-3)

    hooks = [
        m.register_forward_pre_hook(standardise)
        for m in model.modules()
        if isinstance(m, FrozenBN | nn.BatchNorm2d)
    ]
    with torch.no_grad():
        model.eval()(images)
    for h in hooks:
        h.remove()


def tv_model(name: str, seed: int, **overrides: object) -> nn.Module:
    torch.manual_seed(seed)
    build, kwargs = BUILDERS[name]
    model = build(weights=None, weights_backbone=None, **{**kwargs, **overrides})
    calibrate(model, [torch.rand(3, 240, 320)])
    return model.eval()


def assert_same_detections(theirs: list[dict], ours: list[dict]) -> None:
    assert len(theirs) == len(ours)
    for i, (t, o) in enumerate(zip(theirs, ours, strict=True)):
        assert set(o) >= {"boxes", "scores", "labels"}
        assert o["boxes"].shape == t["boxes"].shape, (i, t["boxes"].shape, o["boxes"].shape)
        assert torch.equal(o["labels"], t["labels"]), i
        torch.testing.assert_close(o["boxes"], t["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(o["scores"], t["scores"], atol=1e-4, rtol=0)


def small_batches() -> list[list[torch.Tensor]]:
    """One image, then a batch of two of mixed sizes (70-131 px, seed 0): the one-stage inputs."""
    g = torch.Generator().manual_seed(0)
    return [
        [torch.rand(3, 100, 120, generator=g)],
        [torch.rand(3, 131, 90, generator=g), torch.rand(3, 70, 97, generator=g)],  # mixed sizes
    ]


def same_predictions(
    tv: nn.Module,
    ours: nn.Module,
    batches: list[list[torch.Tensor]],
    check: Callable[[list[dict], list[dict]], None] = assert_same_detections,
) -> list[dict]:
    """Our predictions on every batch (eval, no targets: no losses), each ``check``-ed against
    torchvision's; the images' predictions in order, batches concatenated."""
    out = []
    with torch.no_grad():
        for images in batches:
            theirs = tv(images)
            preds, losses = ours(images)
            assert losses == {}
            check(theirs, preds)
            out.extend(preds)
    return out


def predictions_with_settings(tv: nn.Module, ours: nn.Module, settings: dict) -> list[dict]:
    """Both models' predictions on a batched tensor of two images with ``settings`` (attributes,
    restored after), checked equal; ours are returned."""
    before = {k: getattr(tv, k) for k in settings}
    for model in (tv, ours):
        for k, v in settings.items():
            setattr(model, k, v)
    images = torch.rand(2, 3, 90, 110, generator=torch.Generator().manual_seed(1))  # a batched tensor
    try:
        with torch.no_grad():
            theirs = tv(list(images))
            preds, _ = ours(images)
    finally:
        for model in (tv, ours):
            for k, v in before.items():
                setattr(model, k, v)
    assert_same_detections(theirs, preds)
    return preds


def train_with_frozen_batch_norm(*models: nn.Module) -> None:
    """Training mode, batch norm frozen (as with pretrained backbones)."""
    for model in models:
        model.train()
    for model in models:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()


def seeded_losses(
    tv: nn.Module, ours: nn.Module, images: list[torch.Tensor], targets: list[dict], prefix: str = ""
) -> tuple[dict, dict]:
    """torchvision's training losses and ours (``predict=False``: losses only, as torchvision in
    training) from the same seed (the same min_size draws and sampled RoIs), checked equal: ours
    are torchvision's names with ``prefix``."""
    torch.manual_seed(7)
    theirs = tv(images, targets)
    torch.manual_seed(7)
    preds, losses = ours(images, targets, predict=False)
    assert preds is None and set(losses) == {prefix + k for k in theirs}
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if prefix else {"rtol": 1e-4, "atol": 1e-5}
    for k, v in theirs.items():
        torch.testing.assert_close(losses[prefix + k], v, msg=k, **tolerance)
    return theirs, losses


def assert_same_gradients(ours: nn.Module, tv: nn.Module) -> None:
    """One-stage detectors (RetinaNet, FCOS): every trainable parameter's gradient equal on both
    sides, relative to its scale."""
    tv_params = dict(tv.named_parameters())
    compared = 0
    for name, p in ours.named_parameters():
        q = tv_params[name.replace("fpn.extra_block.", "fpn.extra_blocks.")]
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            scale = float(q.grad.abs().max()) + 1e-12
            torch.testing.assert_close(p.grad / scale, q.grad / scale, rtol=0, atol=1e-4, msg=name)
            compared += 1
    assert compared == sum(p.requires_grad for p in tv.parameters()) > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUILDERS))
def test_same_predictions_on_several_sizes_and_a_mixed_batch(name: str) -> None:
    num_classes = {"resnet50_fpn": 91, "mobilenet_v3_large_fpn": 5, "mobilenet_v3_large_320_fpn": 3}[name]
    tv = tv_model(name, seed=1, num_classes=num_classes, box_score_thresh=0.01)
    ours = from_torchvision(tv)
    assert not ours.training
    g = torch.Generator().manual_seed(0)
    # An odd size (333 x 250: resized off the 32 px grid, then padded) and a mixed batch (two sizes
    # padded to one) cover the resize and padding paths; a third single image (200 x 300) added none.
    batches = [
        [torch.rand(3, 333, 250, generator=g)],
        [torch.rand(3, 180, 240, generator=g), torch.rand(3, 256, 190, generator=g)],  # mixed sizes
    ]
    preds = same_predictions(tv, ours, batches)
    assert sum(len(p["boxes"]) for p in preds) > 50  # the comparison saw real detections


@pytest.mark.slow
def test_zero_detections_and_batched_tensor_input() -> None:
    tv = tv_model("mobilenet_v3_large_320_fpn", seed=2, num_classes=4, box_score_thresh=0.999)
    ours = from_torchvision(tv)
    images = torch.rand(2, 3, 160, 200)
    with torch.no_grad():
        theirs = tv(list(images))
        preds, _ = ours(images)
    assert [len(p["boxes"]) for p in theirs] == [0, 0]
    assert_same_detections(theirs, preds)
    assert preds[0]["boxes"].shape == (0, 4)


@pytest.mark.slow
def test_same_training_losses_with_the_same_seed() -> None:
    tv = tv_model("mobilenet_v3_large_320_fpn", seed=3, num_classes=4)
    # The random RPN's object probabilities all lie in ~0.49..0.57, where float32 has room for
    # few distinct values: thousands of proposals then tie exactly, and the order of tied ones
    # (which the RoI sampler draws from) follows torchvision's unstable sort, so it changes
    # with the thread count. Wider logits make exact ties improbable. A few ties remain at 1
    # thread (a different RoI is sampled now and then), so the comparison runs at 2 threads,
    # where torchvision's order and ours have agreed on every run here.
    with torch.no_grad():
        tv.rpn.head.cls_logits.weight.mul_(30.0)
    ours = from_torchvision(tv)
    torch.set_num_threads(2)  # restored after the test by tests/conftest.py
    images = [torch.rand(3, 200, 260), torch.rand(3, 240, 200)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 90.0, 120.0], [100.0, 30.0, 250.0, 180.0]]),
         "labels": torch.tensor([1, 3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # all background
    ]  # fmt: skip
    train_with_frozen_batch_norm(tv, ours)
    theirs, losses = seeded_losses(tv, ours, images, targets)
    sum(losses.values()).backward()
    sum(theirs.values()).backward()
    tv_grads = dict(tv.named_parameters())
    for name, p in ours.named_parameters():
        if p.grad is None:
            continue
        ref = tv_grads[name.replace("rpn.head.conv.", "rpn.head.conv.0.0.")].grad
        assert ref is not None, name
        # Float32 sums in a different order (the two RoIAlign backwards, conv algorithms
        # chosen per thread count) leave differences of ~1e-4 at gradient magnitude ~1 deep in
        # the backbone, so the error is measured against each tensor's own scale.
        err = float((p.grad - ref).abs().max())
        scale = float(ref.abs().max())
        assert err <= 1e-5 + 3e-3 * scale, f"{name}: max |diff| {err:.2e}, gradient scale {scale:.2e}"


def test_unsupported_models_are_refused() -> None:
    with pytest.raises(ValueError, match="not a torchvision detection model"):
        from_torchvision(nn.Linear(2, 2))

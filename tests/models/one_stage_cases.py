"""Inputs and checks shared by the one-stage detector tests (RetinaNet, FCOS)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from structpred.data import ShapesWorld
from structpred.tasks import get_task


def shapes(n: int, size: int = 96) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """``n`` shapes-world images ``[3, size, size]`` and their detection targets (boxes, labels)."""
    world = ShapesWorld("train", size=size, num_images=n)
    items = [world[i] for i in range(n)]
    return [im for im, _ in items], [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in items]


def check_contract(model: nn.Module, loss_names: set[str], num_classes: int) -> None:
    """Train-mode forward + backward (finite losses and gradients), ``predict=False``, eval mode with
    and without targets, and the predictions of two shapes images: labels ``1..num_classes``, boxes
    inside their image, at most ``model.detections_per_img`` by decreasing score."""
    images, targets = shapes(2, size=80)
    model.train()
    preds, losses = model(images, targets)
    assert set(losses) == loss_names
    get_task("detection").check_predictions(preds, 2)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    none, losses_only = model(images, targets, predict=False)
    assert none is None and set(losses_only) == loss_names
    model.eval()
    with torch.no_grad():
        preds, losses = model(images, targets)  # eval with targets: both
        assert set(losses) == loss_names
        preds_only, no_losses = model(images)
    assert no_losses == {}
    for pred, image in zip(preds_only, images, strict=True):
        n = pred["boxes"].shape[0]
        assert 0 < n <= model.detections_per_img and pred["labels"].dtype == torch.int64
        assert int(pred["labels"].min()) >= 1 and int(pred["labels"].max()) <= num_classes
        H, W = image.shape[-2:]
        assert float(pred["boxes"][:, 2].max()) <= W and float(pred["boxes"][:, 3].max()) <= H
        assert bool((pred["scores"][:-1] >= pred["scores"][1:]).all())  # by decreasing score


def overfit(model: nn.Module, size: int, steps: int, lr: float) -> tuple[float, float]:
    """The summed loss before the first and after the last of ``steps`` AdamW steps on two shapes
    images of ``size``."""
    images, targets = shapes(2, size=size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    first = None
    for _ in range(steps):
        _, losses = model(images, targets, predict=False)
        loss = sum(losses.values())
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first is not None
    return first, float(loss.detach())


def background_losses(model: nn.Module, loss_names: set[str]) -> dict[str, Tensor]:
    """The training losses of two images without boxes: the expected keys, finite, no box loss,
    backward runs."""
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 80)]
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    _, losses = model.train()(images, [empty, dict(empty)], predict=False)
    assert set(losses) == loss_names and all(torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_bbox_regression"].detach()) == 0.0
    sum(losses.values()).backward()
    return losses


def _target(box: list[float], label: int) -> list[dict[str, Tensor]]:
    return [{"boxes": torch.tensor([box]), "labels": torch.tensor([label])}]


# (images, targets, message) for a model of 3 classes: each a clear ValueError.
BAD_INPUTS = [
    ([torch.rand(1, 32, 32)], None, r"images\[0\] must be a Tensor\[3, H, W\]"),
    ([torch.rand(3, 32, 32)], _target([5.0, 5, 4, 9], 1), r"targets\[0\]\['boxes'\]\[0\].*degenerate"),
    ([torch.rand(3, 32, 32)], _target([40.0, 5, 50, 9], 1), "outside the 32x32 image"),
    ([torch.rand(3, 32, 32)], _target([1.0, 1, 9, 9], 4), r"labels'\] must be in 1..3"),
    ([torch.rand(3, 32, 32)], _target([1.0, 1, 9, 9], 0), r"must be in 1..3"),
    ([torch.rand(3, 32, 32)], [], "0 targets for 1 images"),
]

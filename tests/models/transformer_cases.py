"""What the ViT and Swin model tests share: the dense models run over a transformer backbone
through the registry, the few-digits overfit, and a CLI run that captures its output."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import torch
from sklearn.datasets import load_digits
from torch import nn

from structpred.cli import main
from structpred.tasks import get_task

# (model, task, small settings): every dense model that takes backbone= by name.
DENSE: list[tuple[str, str, dict[str, Any]]] = [
    ("fasterrcnn_fpn", "detection", {"min_size": 64, "max_size": 96, "fpn_channels": 16}),
    ("maskrcnn_fpn", "instance_segmentation",
     {"min_size": 64, "max_size": 96, "fpn_channels": 16, "box_detections_per_img": 5}),
    ("deeplabv3", "semantic_segmentation", {"num_classes": 4, "aspp_channels": 16, "output_stride": 32}),
]  # fmt: skip


def dense_model_trains_and_predicts(model: nn.Module, task_name: str, params: Sequence[nn.Parameter]) -> None:
    """One train step (finite losses, non-zero gradients into ``params`` of the backbone), then
    predictions in eval at sizes off every grid (patch, window, 32)."""
    task = get_task(task_name)
    inputs, targets = task.sample_batch(model)
    predictions, losses = model.train()(inputs, targets)
    task.check_predictions(predictions, len(inputs))
    assert losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for param in params:
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0
    model.eval()
    for height, width in ((70, 90), (45, 61)):  # no multiple of the patch, the window or 32
        with torch.no_grad():
            predictions, losses = model(torch.rand(2, 3, height, width))
        task.check_predictions(predictions, 2)
        assert losses == {}
        if task_name == "semantic_segmentation":
            assert predictions["logits"].shape == (2, 4, height, width)


def overfits_ten_digits(model: nn.Module, lr: float, steps: int = 40) -> None:
    """The classifier drives its loss on ten real 8 x 8 digits below a tenth of the first."""
    digits = load_digits()
    x = torch.tensor(digits.images[:10], dtype=torch.float32).div(16).unsqueeze(1).expand(-1, 3, -1, -1)
    targets = [{"labels": torch.tensor(int(y))} for y in digits.target[:10]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = model.train()(x, targets, predict=False)[1]["loss_cls"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


def run_cli(argv: list[str]) -> str:
    """``structpred argv`` (must exit 0); its standard output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()

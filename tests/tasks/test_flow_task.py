"""A pair task through the unchanged engine: shapes-flow, the optical-flow task, its metric.

The model here is a test double that keeps the contract (a constant flow field); it shows that a
new task plugs into the Trainer's evaluation with no engine change, and the EPE metric is checked
against a direct computation.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from structpred.data.registry import build_dataset
from structpred.engine.trainer import TrainConfig, Trainer
from structpred.layers.views import batch_views
from structpred.metrics.flow import FlowMetric
from structpred.tasks import get_task


class ConstantFlow(nn.Module):
    """Predicts the same (dx, dy) everywhere; ``loss_epe`` is the mean EPE over valid pixels."""

    def __init__(self, dx: float, dy: float) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.tensor([dx, dy]))

    def forward(self, pairs, targets=None, *, predict=True):  # type: ignore[no-untyped-def]
        x = batch_views(pairs, 2, "ConstantFlow")  # (B, 2, 3, H, W)
        B, _, _, H, W = x.shape
        flow = self.shift.view(1, 2, 1, 1).expand(B, 2, H, W)  # (B, 2, H, W)
        losses = {}
        if targets is not None:
            gt = torch.stack([t["flow"] for t in targets])  # (B, 2, H, W)
            valid = torch.stack([t["valid"] for t in targets])  # (B, H, W)
            losses["loss_epe"] = (flow - gt).norm(dim=1)[valid].mean()
        return ({"flow": flow} if predict else None), losses


def _direct_epe(dataset, dx: float, dy: float) -> float:
    errors = []
    for i in range(len(dataset)):
        _, t = dataset[i]
        pred = torch.tensor([dx, dy]).view(2, 1, 1)
        errors.append((pred - t["flow"]).norm(dim=0)[t["valid"]])
    return float(torch.cat(errors).double().mean())


def test_flow_task_through_the_engine() -> None:
    task = get_task("optical_flow")
    data = build_dataset("shapes-flow", "val", num_images=6, size=(48, 64))
    task.check_dataset(data, {}, "shapes-flow")  # pairs with flow + valid: accepted
    model = ConstantFlow(0.5, -0.25)
    trainer = Trainer(model, data, data, TrainConfig(batch_size=4, progress=False, device="cpu"),
                      metric=task.metric(model, data), task=task)
    metrics = trainer.evaluate()
    assert metrics["epe"] == pytest.approx(_direct_epe(data, 0.5, -0.25), rel=1e-6)
    assert metrics["loss_epe"] > 0 and 0 <= metrics["px1"] <= metrics["px3"] <= metrics["px5"] <= 1
    preds, _ = model(*task.sample_batch(model))
    task.check_predictions(preds, 2)


def test_flow_task_rejects_single_images() -> None:
    task = get_task("optical_flow")
    with pytest.raises(ValueError, match="no \\['flow', 'valid'\\]"):
        task.check_dataset(build_dataset("shapes", "val", num_images=2, size=32), {}, "shapes")


def test_flow_metric_counts_and_outliers() -> None:
    metric = FlowMetric()
    gt = torch.zeros(2, 2, 2)
    gt[0] = 10.0  # every true vector (10, 0): length 10
    pred = gt.clone()
    pred[0, 0, 0] = 14.0  # EPE 4: > 3 px and > 5 % of 10 -> an outlier
    pred[1, 0, 1] = 2.0  # EPE 2
    valid = torch.tensor([[True, True], [True, False]])
    metric.update({"flow": pred[None]}, [{"flow": gt, "valid": valid}])
    out = metric.compute()
    assert out["valid_pixels"] == 3 and out["epe"] == pytest.approx(6.0 / 3)
    assert (out["px1"], out["px3"], out["px5"], out["fl_all"]) == pytest.approx((1 / 3, 2 / 3, 1.0, 1 / 3))


@pytest.mark.parametrize(
    ("preds", "targets", "match"),
    [
        ({"flow": torch.zeros(1, 3, 2, 2)}, [{"flow": torch.zeros(2, 2, 2)}], "need \\[B, 2, H, W\\]"),
        ({"flow": torch.zeros(1, 2, 2, 2)}, [{"flow": torch.zeros(2, 3, 2)}], "targets\\[0\\]"),
        ([torch.zeros(1, 2, 2, 2)], [{"flow": torch.zeros(2, 2, 2)}], "dict with 'flow'"),
    ],
)
def test_flow_metric_bad_input(preds: object, targets: list[dict[str, Tensor]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FlowMetric().update(preds, targets)  # type: ignore[arg-type]

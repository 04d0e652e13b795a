"""Registry-wide guard: every registered model keeps its task's contract.

For each name in ``list_models()``: build it (small settings for the big ones), run its task's
sample batch in train and eval mode, check the task's prediction contract both times and that
``predict=False`` gives losses only, round-trip the weights through a checkpoint (a model built
from another seed and restored predicts the same), and feed one bad input (a clear ValueError).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from structpred.engine import checkpoint as ckpt
from structpred.models import get_model, list_models, model_info
from structpred.tasks import get_task, list_tasks

# Smaller inputs / widths for the models whose defaults are sized for a GPU (same code paths).
_FEW = {"training": 50, "testing": 50}
# Fewer proposals / detections: a random detector keeps its maximum, and each one costs mask work.
_DETECTION = {"min_size": 64, "max_size": 96, "rpn_pre_nms_top_n": _FEW, "rpn_post_nms_top_n": _FEW,
              "box_detections_per_img": 10, "box_batch_size_per_image": 32}
SMALL: dict[str, dict[str, Any]] = {
    "fasterrcnn_resnet50_fpn": _DETECTION,
    "fasterrcnn_mobilenet_v3_large_fpn": _DETECTION,
    "fasterrcnn_mobilenet_v3_large_320_fpn": _DETECTION,
    "fasterrcnn_fpn": {**_DETECTION, "fpn_channels": 32},
    "maskrcnn_resnet50_fpn": _DETECTION,
    "maskrcnn_fpn": {**_DETECTION, "fpn_channels": 32},
    "fast_rcnn_vgg16": {"min_size": 64, "max_size": 96, "representation_size": 64},
    "fcn32s_vgg16": {"fc_channels": 64, "width_div": 4},
    "fcn16s_vgg16": {"fc_channels": 64, "width_div": 4},
    "fcn8s_vgg16": {"fc_channels": 64, "width_div": 4},
    "deeplabv3": {"backbone": "resnet18"},
    "lstm_charlm": {"vocab": "abcdefgh \n", "hidden_size": 16, "embed_dim": 8},
}


def _tensors(x: Any) -> list[Tensor]:
    """Every tensor in a nested prediction structure, in a fixed order."""
    if isinstance(x, Tensor):
        return [x]
    if isinstance(x, dict):
        return [t for k in sorted(x) for t in _tensors(x[k])]
    if isinstance(x, list | tuple):
        return [t for v in x for t in _tensors(v)]
    return []


def _build(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return get_model(name, **SMALL.get(name, {}))


def test_every_model_names_a_registered_task() -> None:
    names = list_models()
    assert len(names) >= 25
    for name in names:
        info = model_info(name)
        assert info.task in list_tasks(), f"{name}: task {info.task!r} is not registered"
        assert info.summary, f"{name}: the builder has no docstring"
        assert set(info.peer_weights) <= {"torchvision", "timm"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_model_keeps_its_task_contract(name: str, tmp_path: Any) -> None:
    task = get_task(model_info(name).task)
    model = _build(name, seed=0)
    inputs, targets = task.sample_batch(model, batch_size=2, seed=0)

    model.train()
    preds, losses = model(inputs, targets)
    task.check_predictions(preds, 2)
    assert losses and all(k.startswith("loss_") for k in losses), sorted(losses)
    assert all(bool(torch.isfinite(v)) for v in losses.values()), {k: float(v) for k, v in losses.items()}
    sum(losses.values()).backward()  # type: ignore[union-attr]
    assert any(p.grad is not None for p in model.parameters())

    none, losses_only = model(inputs, targets, predict=False)
    assert none is None and set(losses_only) == set(losses)
    with pytest.raises(ValueError, match="asks for neither"):
        model(inputs, predict=False)

    model.eval()
    with torch.no_grad():
        preds, losses = model(inputs, targets)  # validation loss comes with the predictions
        task.check_predictions(preds, 2)
        assert set(losses) == set(losses_only)
        preds_only, no_losses = model(inputs)
    assert no_losses == {}
    task.check_predictions(preds_only, 2)

    # Weights through a checkpoint: another seed's model, restored, predicts the same.
    path = ckpt.save_checkpoint(tmp_path, 1, model, None, {"config": {"model_name": name}})
    other = _build(name, seed=1).eval()
    tensors, meta = ckpt.load_checkpoint(path)
    ckpt.restore(tensors, meta, other, rng=False)
    with torch.no_grad():
        again, _ = other(inputs)
    ours, theirs = _tensors(preds_only), _tensors(again)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)

    # One bad input: one target too few is a clear ValueError, not an IndexError or a crash.
    with pytest.raises(ValueError):
        model(inputs, targets[:1])

"""The multi_task task (issue 21): model kwargs from the data, the dataset check, the metric (every
head's own metric on the items that carry its targets, and the score), the prediction contract,
sample batches for every head subset, and the engine's evaluation in one pass."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from structpred.data import ShapesWorld
from structpred.engine.recipe import TrainConfig
from structpred.engine.trainer import Trainer
from structpred.metrics import MeanAveragePrecision
from structpred.metrics.depth import DepthMetric
from structpred.metrics.segmentation import SegmentationMetric
from structpred.models import get_model
from structpred.models.multitask import HEAD_KINDS, MultiTaskNet
from structpred.models.multitask_heads import DepthHead, SegmentationHead
from structpred.tasks import get_task
from structpred.tasks.multi_task import MultiTaskMetric

TASK = get_task("multi_task")
SMALL = {"width": 8, "input_size": 64, "detection": {"score_thresh": 0.01}}
LOSSES = {
    "loss_detection/classification",
    "loss_detection/bbox_regression",
    "loss_detection/bbox_ctrness",
    "loss_semantic/ce",
    "loss_parts/ce",
    "loss_depth/log_l1",
}
HEADLINES = ("detection/map", "semantic/miou", "parts/miou", "depth/abs_rel")


def narrow(**kwargs: Any) -> MultiTaskNet:
    torch.manual_seed(0)
    return cast(MultiTaskNet, get_model("multitask_narrow", **{**SMALL, **kwargs}))


class Items(Dataset):
    """In-test data: ``(image, target)`` items; attributes (``categories``...) as given."""

    def __init__(self, items: list[tuple[Any, Any]], **attributes: Any) -> None:
        self.items = items
        for name, value in attributes.items():
            setattr(self, name, value)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        return self.items[i]


def all_of(world: ShapesWorld) -> list[tuple[Tensor, dict[str, Tensor]]]:
    return [world[i] for i in range(len(world))]


def new_metric(model: nn.Module, data: Dataset | None) -> MultiTaskMetric:
    factory = TASK.metric(model, data)
    assert factory is not None
    metric = factory()
    assert isinstance(metric, MultiTaskMetric)
    return metric


def semantic_only(n: int = 3) -> Items:
    return Items(
        [(torch.rand(3, 16, 16), {"semantic": torch.zeros(16, 16, dtype=torch.long)}) for _ in range(n)]
    )


# ------------------------------------------------------------------------------- model kwargs


def test_model_kwargs_from_the_shapes_world() -> None:
    world = ShapesWorld("val", size=128, num_images=2)
    got = TASK.model_kwargs(world, {"width": 8})
    assert got == {"width": 8, "num_classes": 6, "semantic_classes": 7, "part_classes": 13,
                   "focal": 128.0, "baseline": 0.1}  # fmt: skip
    assert TASK.model_kwargs(world, {"heads": ("parts",)}) == {"heads": ("parts",), "part_classes": 13}
    kept = TASK.model_kwargs(world, {"num_classes": 3, "focal": 10.0})  # the user's values win
    assert kept["num_classes"] == 3 and kept["focal"] == 10.0 and kept["baseline"] == 0.1
    disparity = TASK.model_kwargs(world, {"heads": "depth", "depth_target": "disparity"})
    assert disparity == {"heads": "depth", "depth_target": "disparity"}  # no camera needed
    model = narrow(**got)  # and the model builds from them
    assert cast(SegmentationHead, model.heads["parts"]).config.num_classes == 13
    head = cast(DepthHead, model.heads["depth"])
    assert (head.focal, head.baseline) == (128.0, 0.1)


def test_model_kwargs_from_data_without_label_maps() -> None:
    data = Items([], categories=["a", "b", "c"])
    assert TASK.model_kwargs(data, {}) == {"num_classes": 3}
    assert TASK.model_kwargs(semantic_only(), {"heads": ("semantic",)}) == {"heads": ("semantic",)}
    assert TASK.model_kwargs(None, {"width": 8}) == {"width": 8}
    with pytest.raises(ValueError, match="unknown head 'flow'"):
        TASK.model_kwargs(data, {"heads": ("flow",)})


def test_required_target_keys() -> None:
    assert TASK.required_target_keys({}) == ["boxes", "depth", "labels", "parts", "semantic"]
    got = TASK.required_target_keys({"heads": ("semantic", "depth"), "depth_target": "disparity"})
    assert got == ["disparity", "semantic"]


# ------------------------------------------------------------------------------ check_dataset


def test_a_head_whose_target_the_data_lacks_is_named_with_its_key() -> None:
    data = semantic_only()
    TASK.check_dataset(data, {"heads": ("semantic",)}, "train data")
    with pytest.raises(ValueError, match="train data: head 'detection' needs the target 'boxes'") as err:
        TASK.check_dataset(data, {}, "train data")
    assert "item 0 has ['semantic']" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="head 'depth' needs the target 'depth'"):
        TASK.check_dataset(data, {"heads": ("semantic", "depth")}, "train data")
    world = ShapesWorld("val", size=32, num_images=3)
    TASK.check_dataset(world, {}, "val data")
    with pytest.raises(ValueError, match="head 'depth' needs the target 'disparity'"):
        TASK.check_dataset(world, {"depth_target": "disparity"}, "val data")


def test_data_where_only_some_items_carry_a_target_passes() -> None:
    world = ShapesWorld("val", size=32, num_images=5)
    items = [
        (im, {k: v for k, v in t.items() if k != "parts" or i == 3})
        for i, (im, t) in enumerate(all_of(world))
    ]
    TASK.check_dataset(Items(items), {}, "train data")
    without = Items([(im, {k: v for k, v in t.items() if k != "parts"}) for im, t in items])
    with pytest.raises(ValueError, match="head 'parts' needs the target 'parts'"):
        TASK.check_dataset(without, {}, "train data")


def test_check_dataset_refuses_broken_data() -> None:
    with pytest.raises(ValueError, match="train data: the dataset is empty"):
        TASK.check_dataset(Items([]), {}, "train data")
    with pytest.raises(ValueError, match=r"train data: item 1 is not an \(image, target dict\) pair"):
        TASK.check_dataset(
            Items([semantic_only()[0], (torch.rand(3, 8, 8), [])]), {"heads": "semantic"}, "train data"
        )
    gray = Items([(torch.rand(1, 16, 16), {"semantic": torch.zeros(16, 16, dtype=torch.long)})])
    with pytest.raises(ValueError, match=r"item 0: a image input must be float \[3, H, W\]"):
        TASK.check_dataset(gray, {"heads": "semantic"}, "train data")


# ------------------------------------------------------------------------------------- metric


def _crafted(world: ShapesWorld, K: dict[str, int]) -> tuple[dict[str, Any], list[dict[str, Tensor]]]:
    """Predictions near the truth (jittered boxes, a false positive, 10% wrong pixels, disparity
    off by ~10%) for every item of ``world``; targets with some heads' keys removed."""
    g = torch.Generator().manual_seed(0)
    targets = [dict(t) for _, t in all_of(world)]
    detections = []
    for t in targets:
        wh = (t["boxes"][:, 2:] - t["boxes"][:, :2]).repeat(1, 2)  # (N, 4)
        boxes = t["boxes"] + 0.1 * wh * torch.randn(t["boxes"].shape, generator=g)  # x1 < x2 still
        boxes = torch.cat([boxes, torch.tensor([[1.0, 1.0, 20.0, 20.0]])])
        labels = torch.cat([t["labels"], torch.tensor([1])])
        detections.append({"boxes": boxes, "scores": torch.rand(len(boxes), generator=g), "labels": labels})
    preds: dict[str, Any] = {"detection": detections}
    for name in ("semantic", "parts"):
        truth = torch.stack([t[name] for t in targets])
        labels = torch.where(truth == 255, 0, truth)
        wrong = torch.rand(labels.shape, generator=g) < 0.1
        labels = torch.where(wrong, torch.randint(0, K[name], labels.shape, generator=g), labels)
        preds[name] = {"logits": F.one_hot(labels, K[name]).permute(0, 3, 1, 2).float(), "label_map": labels}
    disparity = torch.stack([world.focal * world.baseline / t["depth"] for t in targets])
    preds["depth"] = {"disparity": disparity * (1 + 0.1 * torch.randn(disparity.shape, generator=g)).abs()}
    del targets[1]["parts"], targets[2]["depth"]
    del targets[3]["boxes"], targets[3]["labels"]
    return preds, targets


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.shape == b.shape and bool(torch.allclose(a, b, equal_nan=True))
    if isinstance(a, float):
        return isinstance(b, float) and (a == b or (math.isnan(a) and math.isnan(b)))
    return bool(a == b)


def _subset(preds: Any, index: list[int]) -> Any:
    if isinstance(preds, list):
        return [preds[i] for i in index]
    return {k: v[index] for k, v in preds.items()}


def test_metric_is_every_heads_own_metric_on_the_items_with_its_targets() -> None:
    world = ShapesWorld("val", size=64, num_images=4)
    model = narrow(**TASK.model_kwargs(world, {}))
    preds, targets = _crafted(world, {"semantic": 7, "parts": 13})
    metric = new_metric(model, world)
    for batch in ([0, 1], [2, 3]):  # two batches
        metric.update({k: _subset(v, batch) for k, v in preds.items()}, [targets[i] for i in batch])
    got = metric.compute()
    camera = {"focal": torch.tensor(world.focal), "baseline": torch.tensor(world.baseline)}
    alone: dict[str, tuple[Any, list[int]]] = {
        "detection": (MeanAveragePrecision(), [0, 1, 2]),
        "semantic": (SegmentationMetric(7, "semantic", 255), [0, 1, 2, 3]),
        "parts": (SegmentationMetric(13, "parts", 255), [0, 2, 3]),
        "depth": (DepthMetric(), [0, 1, 3]),
    }
    want: dict[str, Any] = {}
    for name, (reference, have) in alone.items():
        sub = [targets[i] | camera if name == "depth" else targets[i] for i in have]
        reference.update(_subset(preds[name], have), sub)
        want.update({f"{name}/{k}": v for k, v in reference.compute().items()})
    assert set(got) == set(want) | {"score"}
    different = [k for k in want if not _same(want[k], got[k])]
    assert different == []
    assert got["depth/protocol"] == "metric" and got["depth/images"] == 3
    assert 0.2 < float(want["detection/map"]) < 1 and 0.3 < float(want["semantic/miou"]) < 1  # not trivial
    figures = [float(want[k]) for k in HEADLINES[:3]] + [1 - float(want["depth/abs_rel"])]
    assert math.isclose(got["score"], sum(figures) / 4, rel_tol=1e-12)


def test_a_head_with_no_items_gives_no_figures() -> None:
    world = ShapesWorld("val", size=64, num_images=4)
    model = narrow(**TASK.model_kwargs(world, {}))
    preds, targets = _crafted(world, {"semantic": 7, "parts": 13})
    for t in targets:
        t.pop("parts", None)
    metric = new_metric(model, world)
    metric.update(preds, targets)
    got = metric.compute()
    assert not any(k.startswith("parts/") for k in got) and "semantic/miou" in got
    figures = [float(got[k]) for k in ("detection/map", "semantic/miou")] + [1 - float(got["depth/abs_rel"])]
    assert math.isclose(got["score"], sum(figures) / 3, rel_tol=1e-12)
    nothing = new_metric(model, world)
    nothing.update(preds, [{"image_id": torch.tensor(i)} for i in range(4)])
    result = nothing.compute()
    assert list(result) == ["score"] and math.isnan(result["score"])


def test_metric_of_a_model_without_heads_is_refused() -> None:
    with pytest.raises(ValueError, match="Linear has no heads: not a multi-task model"):
        TASK.metric(nn.Linear(2, 2), None)


# ------------------------------------------------------------------------- prediction contract


def test_check_predictions_refuses_unknown_heads_and_broken_ones() -> None:
    model = narrow().eval()
    images, _ = TASK.sample_batch(model, batch_size=2)
    with torch.no_grad():
        preds, _ = model(images)
    TASK.check_predictions(preds, 2)
    with pytest.raises(AssertionError, match="unknown head 'flow'"):
        TASK.check_predictions({**preds, "flow": {"flow": torch.zeros(2, 2, 64, 64)}}, 2)
    empty: Any
    for empty in ({}, [], None):
        with pytest.raises(AssertionError, match="non-empty dict of heads"):
            TASK.check_predictions(empty, 2)
    broken = [
        ("semantic", {"logits": preds["semantic"]["logits"]}),  # no label_map
        ("parts", {**preds["parts"], "label_map": preds["parts"]["label_map"].float()}),
        ("depth", {"disparity": preds["depth"]["disparity"][:, 0]}),  # [B, H, W]
        ("detection", preds["detection"][:1]),  # one image's detections for two
        ("detection", [{**d, "labels": d["labels"].float()} for d in preds["detection"]]),
    ]
    for name, bad in broken:
        with pytest.raises(AssertionError):
            TASK.check_predictions({**preds, name: bad}, 2)
    with pytest.raises(AssertionError):
        TASK.check_predictions(preds, 3)  # the batch size


@pytest.mark.parametrize(
    "heads", [s for r in range(1, 5) for s in itertools.combinations(HEAD_KINDS, r)], ids="-".join
)
def test_sample_batch_runs_through_the_model(heads: tuple[str, ...]) -> None:
    model = narrow(heads=heads, depth_target="disparity" if "parts" in heads else "depth").train()
    images, targets = TASK.sample_batch(model, batch_size=2, seed=1)
    again, _ = TASK.sample_batch(model, batch_size=2, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(images, again, strict=True))
    preds, losses = model(images, targets)
    TASK.check_predictions(preds, 2)
    assert {k.split("/")[0].removeprefix("loss_") for k in losses} == set(heads)
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    with torch.no_grad():
        preds, _ = model.eval()(images)
    TASK.check_predictions(preds, 2)


# --------------------------------------------------------------------------- engine evaluation


def test_engine_evaluates_every_head_in_one_pass(tmp_path: Path) -> None:
    world = ShapesWorld("val", size=64, num_images=4)
    model = narrow(**TASK.model_kwargs(world, {}))
    calls: list[int] = []
    model.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    config = TrainConfig(batch_size=4, progress=False, device="cpu")
    trainer = Trainer(model, world, world, config, tmp_path, metric=TASK.metric(model, world), task=TASK)
    got = trainer.evaluate()
    assert calls == [4]  # one forward for the four images: losses and every head's predictions
    assert all(k in got for k in (*HEADLINES, "score"))
    assert all(math.isfinite(float(got[k])) for k in (*HEADLINES, "score"))
    assert LOSSES <= set(got) and math.isclose(got["loss"], sum(got[k] for k in LOSSES), rel_tol=1e-6)
    assert got["depth/protocol"] == "metric"  # the camera reached the depth metric

"""The semantic-segmentation contract (SemanticSegmenter) and its engine glue, with a tiny net."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Subset

from structpred.data.shapes import ShapesWorld
from structpred.engine import TrainConfig, Trainer
from structpred.metrics import SegmentationMetric
from structpred.models import ModelInfo, registry
from structpred.models.segmenter import SegmenterConfig, SemanticSegmenter, config_from
from structpred.tasks import get_task, task_of


class TinyNet(nn.Module):
    """Two convs at full resolution, and an aux output."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()
        )
        self.out = nn.Conv2d(16, k, 1)
        self.aux = nn.Conv2d(16, k, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.body(x)
        return {"out": self.out(h), "aux": self.aux(h)}


def tiny(num_classes: int = 7, target_key: str = "semantic", **config: object) -> SemanticSegmenter:
    cfg = config_from(SegmenterConfig, {"num_classes": num_classes, "target_key": target_key, **config})
    return SemanticSegmenter(TinyNet(num_classes), cfg)


def _targets(n: int, size: int = 12, k: int = 7) -> list[dict[str, Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"semantic": torch.randint(0, k, (size, size), generator=g)} for _ in range(n)]


def test_logits_cover_every_pixel_and_losses_come_with_targets() -> None:
    model = tiny(aux_weight=0.4)
    images = torch.rand(2, 3, 12, 12)
    preds, losses = model(images, _targets(2))
    assert set(preds) == {"logits", "label_map", "aux_logits"}
    assert preds["logits"].shape == (2, 7, 12, 12) and preds["aux_logits"].shape == (2, 7, 12, 12)
    assert preds["label_map"].shape == (2, 12, 12) and preds["label_map"].dtype == torch.int64
    assert set(losses) == {"loss_seg", "loss_aux"}
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())
    none, losses_only = model(images, _targets(2), predict=False)  # the training step's call
    assert none is None and set(losses_only) == {"loss_seg", "loss_aux"}
    with pytest.raises(ValueError, match="asks for neither predictions nor losses"):
        model(images, predict=False)
    model.eval()
    preds, losses = model(list(images), _targets(2))  # eval with targets: both
    assert preds["logits"].shape == (2, 7, 12, 12) and "loss_seg" in losses
    assert preds["label_map"].shape == (2, 12, 12)
    assert model(images)[1] == {}


def test_loss_is_cross_entropy_over_non_ignored_pixels() -> None:
    model = tiny()
    images = torch.rand(1, 3, 12, 12)
    t = _targets(1)
    t[0]["semantic"][:6] = 255
    preds, losses = model(images, t)
    logits = preds["logits"]
    keep = t[0]["semantic"] != 255
    manual = nn.functional.cross_entropy(logits[0].permute(1, 2, 0)[keep], t[0]["semantic"][keep])
    assert torch.allclose(losses["loss_seg"], manual)


def test_all_ignored_image_gives_zero_loss_with_a_graph() -> None:
    model = tiny()
    t = [{"semantic": torch.full((12, 12), 255, dtype=torch.int64)}]
    _, losses = model(torch.rand(1, 3, 12, 12), t)
    assert float(losses["loss_seg"].detach()) == 0.0
    losses["loss_seg"].backward()


def test_label_map_is_read_from_the_refined_scores_in_both_modes() -> None:
    class Negating(SemanticSegmenter):
        def refine(self, logits: Tensor, images: Tensor) -> Tensor:
            assert images.min() >= 0 and images.max() <= 1  # the [0, 1] images, not normalised
            return -logits  # flips the arg-max: the label map shows whether refine ran

    model = Negating(TinyNet(3), SegmenterConfig(num_classes=3))
    x = torch.rand(1, 3, 8, 8)
    for training in (True, False):
        model.train(training)
        preds, _ = model(x)
        raw = model.net(model.normalize(x))["out"]
        assert torch.allclose(preds["logits"], raw)  # the network's own scores, never refined
        assert preds["label_map"].dtype == torch.int64
        assert torch.equal(preds["label_map"], model.refine(raw, x).argmax(1))  # refined, in either mode
        assert not torch.equal(preds["label_map"], raw.argmax(1))


@pytest.mark.parametrize(
    ("images", "targets", "message"),
    [
        ([torch.rand(3, 8, 8), torch.rand(3, 8, 10)], None, "different sizes"),
        (torch.rand(1, 3, 8, 8).to(torch.uint8), None, "float"),
        (torch.rand(1, 1, 8, 8), None, r"Tensor\[3, H, W\]"),
        (torch.rand(1, 3, 8, 8), [{"labels": torch.zeros(2)}], "no 'semantic' label map"),
        (torch.rand(1, 3, 8, 8), [{"semantic": torch.zeros(8, 8)}], "integer Tensor"),
        (
            torch.rand(1, 3, 8, 8),
            [{"semantic": torch.zeros(8, 9, dtype=torch.int64)}],
            "is \\(8, 9\\) but the image",
        ),
        (
            torch.rand(1, 3, 8, 8),
            [{"semantic": torch.full((8, 8), 9, dtype=torch.int64)}],
            "label 9, outside 0..6",
        ),
        (torch.rand(2, 3, 8, 8), _targets(1, 8), "1 targets for 2 images"),
    ],
)
def test_bad_inputs_raise_a_clear_error(images: object, targets: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny()(images, targets)  # type: ignore[arg-type]


def test_unknown_setting_is_named() -> None:
    with pytest.raises(ValueError, match="unknown SegmenterConfig settings \\['colour'\\]"):
        config_from(SegmenterConfig, {"colour": 1})


def test_engine_picks_class_count_from_the_label_map(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        registry._MODELS, "tiny_segmenter", ModelInfo("tiny_segmenter", "semantic_segmentation", tiny)
    )
    world = ShapesWorld("train", num_images=2)
    assert task_of("tiny_segmenter").model_kwargs(world, {}) == {"num_classes": 7, "target_key": "semantic"}
    assert task_of("tiny_segmenter").model_kwargs(world, {"target_key": "parts"})["num_classes"] == 13
    with pytest.raises(ValueError, match="no 'depth' label map"):
        task_of("tiny_segmenter").model_kwargs(world, {"target_key": "depth"})


def test_trainer_fits_and_reports_miou_and_boundary_miou(tmp_path: Path) -> None:
    torch.manual_seed(0)
    world = ShapesWorld("train", num_images=8, size=32, cache=True)
    model = tiny()
    make_metric = get_task("semantic_segmentation").metric(model, world)
    assert make_metric is not None and isinstance(make_metric(), SegmentationMetric)
    cfg = TrainConfig(epochs=3, batch_size=4, lr=0.01, optimizer="adamw", progress=False)
    trainer = Trainer(model, world, Subset(world, range(4)), cfg, tmp_path, metric=make_metric)
    before = trainer.evaluate()
    after = trainer.fit()
    assert after["loss_seg"] < before["loss_seg"]
    assert {"miou", "boundary_miou", "pixel_accuracy"} <= set(after)

"""Per-unit freezing of the ViT and Swin backbones (``trainable_layers``, the CNN backbones' rule: the
last T units train): which parameters freeze, that frozen ones get no gradient and are untouched by
the engine's optimizer steps, and the CLI's ``backbone_args={"trainable_layers": T}``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from structpred.backbones import get_backbone
from structpred.backbones.swin import SwinTransformer
from structpred.backbones.vit import SimpleFeaturePyramid, VisionTransformer
from structpred.data.registry import build_dataset
from structpred.engine.recipe import TrainConfig
from structpred.engine.trainer import Trainer
from structpred.models import get_model
from structpred.tasks import get_task
from tests.models.transformer_cases import run_cli

# ----------------------------------------------------------------------------- which parameters


SWIN_UNITS = ("patch_embed", "layers.0", "layers.1", "layers.2", "layers.3", "norm")


def requires_grad_by_part(module: nn.Module, parts: tuple[str, ...]) -> dict[str, bool]:
    """``{part: requires_grad}`` over the parameters at or below each named part (all must agree)."""
    found: dict[str, set[bool]] = {}
    for name, p in module.named_parameters():
        part = next(q for q in parts if name == q or name.startswith(q + "."))
        found.setdefault(part, set()).add(p.requires_grad)
    assert set(found) == set(parts) and all(len(v) == 1 for v in found.values()), found
    return {k: v.pop() for k, v in found.items()}


VIT_UNITS = ("patch_embed", "cls_token", "pos_embed", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "norm")


def test_vit_trainable_layers_freeze_the_embedding_then_blocks_in_order() -> None:
    vit = get_backbone("vit_narrow").vit  # depth 4: 5 units
    assert isinstance(vit, VisionTransformer)
    assert all(requires_grad_by_part(vit, VIT_UNITS).values())
    for trainable, frozen in [
        (5, []), (4, VIT_UNITS[:3]), (2, VIT_UNITS[:5]), (1, VIT_UNITS[:6]), (0, VIT_UNITS),
    ]:  # fmt: skip
        vit.set_trainable_layers(trainable)
        parts = requires_grad_by_part(vit, VIT_UNITS)
        assert [k for k in VIT_UNITS if not parts[k]] == list(frozen), trainable


def test_vit_pyramid_levels_always_train() -> None:
    model = get_backbone("vit_narrow", trainable_layers=0)
    assert isinstance(model, SimpleFeaturePyramid)
    assert not any(p.requires_grad for p in model.vit.parameters())
    assert all(p.requires_grad for p in model.levels.parameters())
    assert model.layer_units()[0] == ["vit.patch_embed", "vit.cls_token", "vit.pos_embed"]
    assert model.layer_units()[-1] == ["vit.blocks.3", "vit.norm"]


@pytest.mark.parametrize(("trainable", "frozen"), [
    (5, set()), (4, {"patch_embed"}), (2, {"patch_embed", "layers.0", "layers.1"}), (0, set(SWIN_UNITS)),
])  # fmt: skip
def test_swin_trainable_layers_freeze_the_patch_embedding_then_stages(
    trainable: int, frozen: set[str]
) -> None:
    swin = get_backbone("swin_narrow", trainable_layers=trainable)
    assert isinstance(swin, SwinTransformer)
    parts = requires_grad_by_part(swin, SWIN_UNITS)
    assert {k for k, v in parts.items() if not v} == frozen


@pytest.mark.parametrize("name", ["swin_tiny", "swin_small", "swin_base"])
def test_every_swin_builder_takes_trainable_layers(name: str) -> None:
    with torch.device("meta"):
        swin = get_backbone(name, trainable_layers=1)
    parts = requires_grad_by_part(swin, SWIN_UNITS)
    assert {k for k, v in parts.items() if v} == {"layers.3", "norm"}


@pytest.mark.parametrize(("name", "bad", "units"), [("vit_narrow", 6, 5), ("vit_narrow", -1, 5),
                                                    ("swin_narrow", 6, 5)])  # fmt: skip
def test_out_of_range_is_a_clear_error(name: str, bad: int, units: int) -> None:
    with pytest.raises(ValueError, match=rf"trainable_layers must be in \[0, {units}\], got {bad}"):
        get_backbone(name, trainable_layers=bad)


def test_vit_depth_sets_the_range() -> None:
    get_backbone("vit_narrow", depth=2, trainable_layers=3)
    with pytest.raises(ValueError, match=r"VisionTransformer: trainable_layers must be in \[0, 3\], got 4"):
        get_backbone("vit_narrow", depth=2, trainable_layers=4)


# ----------------------------------------------------------------------------- under the engine


def _detector(backbone: str) -> nn.Module:
    torch.manual_seed(0)
    small = {"depth": 2} if backbone.startswith("vit") else {"depths": (1, 1, 1, 1)}
    return get_model("fasterrcnn_fpn", backbone=backbone, num_classes=6, fpn_channels=16, min_size=64,
                     max_size=64, backbone_args={**small, "trainable_layers": 2})  # fmt: skip


@pytest.mark.parametrize("backbone", ["vit_narrow", "swin_narrow"])
def test_frozen_units_get_no_gradient_and_are_untouched_by_training_steps(
    backbone: str, tmp_path: Path
) -> None:
    model = _detector(backbone)
    body = model.backbone.body  # type: ignore[union-attr]
    frozen = {n for n, p in body.named_parameters() if not p.requires_grad}
    trained = {n for n, p in body.named_parameters() if p.requires_grad}
    assert frozen and trained
    before = {n: p.detach().clone() for n, p in body.named_parameters()}
    data = build_dataset("shapes", "train", num_images=4, size=64)
    task = get_task("detection")
    config = TrainConfig(epochs=1, batch_size=2, lr=1e-2, optimizer="adamw", weight_decay=0.05,
                         progress=False, device="cpu", keep_last=1)  # fmt: skip
    Trainer(model, data, None, config, tmp_path / "run", task=task).fit()
    after = dict(body.named_parameters())
    for name in frozen:
        assert after[name].grad is None, name
        assert torch.equal(after[name], before[name]), name
    moved = [n for n in trained if not torch.equal(after[n], before[n])]
    assert len(moved) > len(trained) // 2, sorted(set(trained) - set(moved))


def test_cli_backbone_args_trainable_layers(tmp_path: Path) -> None:
    from structpred.engine.run import load_model

    out = run_cli([
        "train", "--model", "fasterrcnn_fpn", "--model-arg", 'backbone="swin_narrow"',
        "--model-arg", 'backbone_args={"depths": [1, 1, 1, 1], "trainable_layers": 2}',
        "--model-arg", "fpn_channels=16", "--model-arg", "min_size=64", "--model-arg", "max_size=64",
        "--data", "shapes", "--data-arg", "num_images=4", "--data-arg", "size=64", "--epochs", "1",
        "--batch-size", "2", "--optimizer", "adamw", "--lr", "0.001", "--no-progress",
        "--out", str(tmp_path / "run"),
    ])  # fmt: skip
    assert "epoch 1/1" in out
    model, config = load_model(tmp_path / "run")
    assert config.model_args["backbone_args"]["trainable_layers"] == 2
    parts = requires_grad_by_part(model.backbone.body, SWIN_UNITS)  # type: ignore[union-attr]
    assert {k for k, v in parts.items() if not v} == {"patch_embed", "layers.0", "layers.1"}


# ----------------------------------------------------------------------------- --freeze backbone:N


@pytest.mark.parametrize(("name", "kwargs"), [
    ("vit_narrow", {}), ("swin_narrow", {}),
    ("fasterrcnn_fpn", {"backbone": "vit_narrow", "num_classes": 3}),
    ("fasterrcnn_fpn", {"backbone": "swin_narrow", "num_classes": 3}),
])  # fmt: skip
def test_freeze_backbone_n_is_trainable_layers_units_minus_n(name: str, kwargs: dict) -> None:
    from structpred.models.weights import freeze

    for n in range(6):
        frozen, built = get_model(name, **kwargs), get_model(name, **kwargs)
        freeze(frozen, f"backbone:{n}")
        body = next(m for m in built.modules() if isinstance(m, (VisionTransformer, SwinTransformer)))
        body.set_trainable_layers(5 - n)
        expected = {k: p.requires_grad for k, p in built.named_parameters()}
        assert {k: p.requires_grad for k, p in frozen.named_parameters()} == expected, n

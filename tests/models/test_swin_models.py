"""Swin models: the registered classifiers keep the classification contract and learn; Faster R-CNN,
Mask R-CNN and DeepLab-v3 run over the ``swin_narrow`` backbone through the registry (no Swin model
code); the CLI trains ``swin_narrow`` on the real digits and fine-tunes from a timm state file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from structpred.backbones.swin import SwinTransformer
from structpred.models import get_model
from structpred.models.image_classifier import ImageClassifier
from structpred.tasks import get_task
from tests.models.transformer_cases import (
    DENSE,
    dense_model_trains_and_predicts,
    overfits_ten_digits,
    run_cli,
)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("swin_narrow", {}),
        ("swin_tiny_patch4_window7_224", {"depths": (1, 1, 1, 1), "input_size": 64}),
        ("swin_base_patch4_window7_224", {"depths": (1, 1, 1, 1), "input_size": 32}),
    ],
)
def test_classifier_contract(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = get_model(name, num_classes=7, dropout=0.1, drop_path_rate=0.1, **kwargs)
    assert isinstance(model, ImageClassifier) and model.num_classes == 7
    assert model.backbone.config.drop_path_rate == 0.1
    task = get_task("classification")
    images, targets = task.sample_batch(model, batch_size=3)
    predictions, losses = model.train()(images, targets)
    task.check_predictions(predictions, 3)
    assert set(losses) == {"loss_cls"} and torch.isfinite(losses["loss_cls"])
    losses["loss_cls"].backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        first, second = model(images)[0], model(images)[0]
    assert first is not None and second is not None
    assert all(torch.equal(a["class_logits"], b["class_logits"]) for a, b in zip(first, second, strict=True))
    odd = [torch.rand(3, 21, 45), torch.rand(3, 50, 30)]  # resized to input_size
    with torch.no_grad():
        out = model(odd)[0]
    assert out is not None and all(p["class_logits"].shape == (7,) for p in out)


def test_paper_sizes_build_with_their_widths() -> None:
    for name, dim, heads in (
        ("swin_tiny_patch4_window7_224", 96, (3, 6, 12, 24)),
        ("swin_small_patch4_window7_224", 96, (3, 6, 12, 24)),
        ("swin_base_patch4_window7_224", 128, (4, 8, 16, 32)),
    ):
        model = get_model(name, depths=(1, 1, 1, 1), num_classes=5)
        swin = model.backbone
        assert isinstance(swin, SwinTransformer)
        assert swin.config.embed_dim == dim and swin.config.num_heads == heads and swin.embed_dim == 8 * dim
        assert model.config.input_size == 224 and swin.config.window_size == 7
        assert model.head.weight.shape == (5, 8 * dim)


def test_swin_narrow_defaults() -> None:
    model = get_model("swin_narrow")
    swin = model.backbone
    n = sum(p.numel() for p in model.parameters())
    assert 100_000 <= n <= 300_000, n
    assert model.config.input_size == 32 and model.num_classes == 10
    c = swin.config
    assert (c.patch_size, c.embed_dim, c.depths, c.window_size, c.mlp_ratio) == (4, 16, (2, 2, 2, 1), 4, 2.0)
    with torch.no_grad():
        maps = swin.forward_features(torch.rand(1, 3, 32, 32))
    assert [m.shape[-1] for m in maps.values()] == [8, 4, 2, 1]


def test_swin_narrow_overfits_a_few_real_digits() -> None:
    torch.manual_seed(0)
    overfits_ten_digits(get_model("swin_narrow", dropout=0.0, depths=(1, 1, 1, 1)), lr=3e-3)


@pytest.mark.parametrize(("name", "task_name", "kwargs"), DENSE)
def test_dense_models_over_swin_narrow_train_and_predict(name: str, task_name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = get_model(name, backbone="swin_narrow", backbone_args={"depths": (1, 1, 1, 1)}, **kwargs)
    swin = [m for m in model.modules() if isinstance(m, SwinTransformer)]
    assert len(swin) == 1
    table = swin[0].layers[0].blocks[0].attn.relative_position_bias_table
    dense_model_trains_and_predicts(model, task_name, [swin[0].patch_embed.proj.weight, table])


def test_deeplab_needs_output_stride_32_over_a_swin() -> None:
    with pytest.raises(ValueError, match="swin_narrow: output_stride must be 32 .* got 8"):
        get_model("deeplabv3", backbone="swin_narrow", num_classes=3)


# ----------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_trains_swin_narrow_on_the_digits(tmp_path: Path) -> None:
    out = run_cli([
        "train", "--model", "swin_narrow", "--data", "digits", "--model-arg", "depths=[1,1,1,1]",
        "--epochs", "1", "--batch-size", "128", "--lr", "0.003", "--optimizer", "adamw",
        "--no-progress", "--out", str(tmp_path / "run"),
    ])  # fmt: skip
    assert "epoch 1/1" in out and "val accuracy" in out
    assert list((tmp_path / "run").glob("ckpt-*.safetensors"))


@pytest.mark.slow
def test_cli_fine_tunes_from_a_timm_state_file(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(0)
    theirs = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, depths=(1, 1, 1, 1))
    torch.save(theirs.state_dict(), tmp_path / "swin_tiny.pth")
    out = run_cli([
        "train", "--model", "swin_tiny_patch4_window7_224", "--model-arg", "depths=[1,1,1,1]",
        "--model-arg", "input_size=32", "--data", "digits", "--epochs", "1", "--batch-size", "256",
        "--lr", "0.001", "--optimizer", "adamw", "--weights", str(tmp_path / "swin_tiny.pth"),
        "--freeze", "backbone", "--no-progress", "--out", str(tmp_path / "run"),
    ])  # fmt: skip
    assert f"from {tmp_path / 'swin_tiny.pth'} (timm Swin)" in out
    assert "re-initialised for 10 classes: head.weight [10, 768] (file: [1000, 768])" in out

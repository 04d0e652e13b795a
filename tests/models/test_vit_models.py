"""ViT models: the registered classifiers keep the classification contract and learn; Faster R-CNN,
Mask R-CNN and DeepLab-v3 run over the ``vit_narrow`` backbone through the registry (no ViT model
code); the CLI trains ``vit_narrow`` on the real digits and fine-tunes from a timm state file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
        ("vit_narrow", {}),
        ("vit_tiny_patch16_224", {"depth": 1, "input_size": 64}),
        ("vit_small_patch16_224", {"depth": 1, "input_size": 32}),
    ],
)
def test_classifier_contract(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = get_model(name, num_classes=7, dropout=0.1, drop_path_rate=0.1, **kwargs)
    assert isinstance(model, ImageClassifier) and model.num_classes == 7
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
    # Images of any size are resized to input_size; the logits have K entries.
    odd = [torch.rand(3, 21, 45), torch.rand(3, 50, 30)]
    with torch.no_grad():
        out = model(odd)[0]
    assert out is not None and all(p["class_logits"].shape == (7,) for p in out)


def test_vit_narrow_defaults() -> None:
    model = get_model("vit_narrow")
    vit = model.backbone
    n = sum(p.numel() for p in model.parameters())
    assert 100_000 <= n <= 300_000, n
    assert model.config.input_size == 32 and vit.patch_size == 4 and vit.grid_size == (8, 8)
    assert vit.embed_dim == 64 and len(vit.blocks) == 4


def test_vit_narrow_overfits_a_few_real_digits() -> None:
    torch.manual_seed(0)
    # 16 px (a 4 x 4 grid of patches) and 2 blocks keep it fast; ten 8 x 8 digits, upsampled.
    model = get_model("vit_narrow", input_size=16, depth=2, dropout=0.0, drop_path_rate=0.0)
    overfits_ten_digits(model, lr=2e-3)


@pytest.mark.parametrize(("name", "task_name", "kwargs"), DENSE)
def test_dense_models_over_vit_narrow_train_and_predict(name: str, task_name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = get_model(name, backbone="vit_narrow", backbone_args={"depth": 2}, **kwargs)
    vit = [m for m in model.modules() if type(m).__name__ == "VisionTransformer"]
    assert len(vit) == 1
    dense_model_trains_and_predicts(model, task_name, [vit[0].patch_embed.proj.weight])


def test_deeplab_needs_output_stride_32_over_a_vit() -> None:
    with pytest.raises(ValueError, match="vit_narrow: output_stride must be 32 .* got 8"):
        get_model("deeplabv3", backbone="vit_narrow", num_classes=3)


# ----------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_trains_vit_narrow_on_the_digits(tmp_path: Path) -> None:
    out = run_cli([
        "train", "--model", "vit_narrow", "--data", "digits", "--model-arg", "depth=1",
        "--epochs", "1", "--batch-size", "128", "--lr", "0.003", "--optimizer", "adamw",
        "--no-progress", "--out", str(tmp_path / "run"),
    ])  # fmt: skip
    assert "epoch 1/1" in out and "val accuracy" in out
    assert list((tmp_path / "run").glob("ckpt-*.safetensors"))


@pytest.mark.slow
def test_cli_fine_tunes_from_a_timm_state_file(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(0)
    theirs = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1)  # 1000 classes
    torch.save(theirs.state_dict(), tmp_path / "vit_tiny.pth")
    out = run_cli([
        "train", "--model", "vit_tiny_patch16_224", "--model-arg", "depth=1", "--model-arg", "input_size=32",
        "--data", "digits", "--epochs", "1", "--batch-size", "256", "--lr", "0.001", "--optimizer", "adamw",
        "--weights", str(tmp_path / "vit_tiny.pth"), "--freeze", "backbone",
        "--no-progress", "--out", str(tmp_path / "run"),
    ])  # fmt: skip
    assert f"from {tmp_path / 'vit_tiny.pth'} (timm ViT)" in out
    assert "re-initialised for 10 classes: head.weight [10, 192] (file: [1000, 192])" in out

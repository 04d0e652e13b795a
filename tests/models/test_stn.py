"""``stn_digits`` / ``cnn_digits``: registry, the classifier contract, identity at init, a seeded
overfit, training through the engine, bad input; and the ``DistortedDigits`` data they train on."""

from __future__ import annotations

import math

import pytest
import torch

import structpred.models.stn  # noqa: F401  (registers stn_digits and cnn_digits)
from structpred.data.distorted import DistortedDigits, distortion_theta  # scikit-learn: pinned
from structpred.layers.stn import SpatialTransformer
from structpred.models import get_model, list_models, model_info
from structpred.models.stn import STNClassifier, STNClassifierConfig

TINY = {"width": 4}
NAMES = ["stn_digits", "cnn_digits"]


@pytest.fixture(scope="module")
def batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    data = DistortedDigits("train")
    items = [data[i] for i in range(8)]
    return [im for im, _ in items], [{"labels": t["labels"]} for _, t in items]


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", NAMES)
def test_builds_from_registry_forward_backward(name: str, batch: tuple) -> None:
    images, targets = batch
    assert name in list_models()
    torch.manual_seed(0)
    model = get_model(name, **TINY)
    assert isinstance(model, STNClassifier) and model_info(name).task == "classification"
    preds, losses = model(images, targets)
    assert set(losses) == {"loss_cls"} and torch.isfinite(losses["loss_cls"])
    assert len(preds) == len(images)
    for p in preds:
        assert set(p) == {"class_logits", "scores", "labels"}
        assert p["class_logits"].shape == (10,) and p["scores"].shape == ()
        assert p["labels"].dtype == torch.int64
    losses["loss_cls"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

    model.eval()
    preds_only, no_losses = model(torch.stack(images))  # batched input, no targets
    assert no_losses == {} and len(preds_only) == len(images)
    _, val_losses = model(images, targets)  # eval mode with targets: both
    assert set(val_losses) == {"loss_cls"}


def test_stn_is_the_identity_at_initialisation(batch: tuple) -> None:
    images, _ = batch
    torch.manual_seed(0)
    stn, cnn = get_model("stn_digits", **TINY), get_model("cnn_digits", **TINY)
    assert isinstance(stn, STNClassifier) and isinstance(cnn, STNClassifier)
    assert stn.rectifier is not None and cnn.rectifier is None
    rectified, theta = stn.rectify(images)
    torch.testing.assert_close(theta, torch.eye(2, 3).expand(len(images), 2, 3))
    torch.testing.assert_close(rectified, torch.stack(images), atol=1e-5, rtol=0)  # black padding kept
    plain, identity = cnn.rectify(images)
    torch.testing.assert_close(plain, torch.stack(images), atol=1e-5, rtol=0)
    torch.testing.assert_close(identity, theta)


def test_budgets_match_and_transform_choice() -> None:
    stn, cnn = get_model("stn_digits"), get_model("cnn_digits")
    assert abs(_n_params(stn) - _n_params(cnn)) / _n_params(cnn) < 0.01
    for transform, n in (("similarity", 4), ("translation_scale", 3)):
        model = get_model("stn_digits", transform=transform)
        assert isinstance(model, STNClassifier) and model.rectifier is not None
        assert model.rectifier.stn.fc_theta.out_features == n


def test_injected_spatial_transformer_is_used(batch: tuple) -> None:
    images, _ = batch
    stn = SpatialTransformer(None, in_channels=3, transform="translation_scale", out_size=32)
    torch.nn.init.normal_(stn.fc_theta.weight, std=0.1)
    model = STNClassifier(STNClassifierConfig(width=4), stn=stn)
    assert model.rectifier is not None and model.rectifier.stn is stn
    _, theta = model.rectify(images)
    assert not torch.allclose(theta, torch.eye(2, 3).expand(len(images), 2, 3))


def test_seeded_overfit(batch: tuple) -> None:
    images, targets = batch
    torch.manual_seed(0)
    model = get_model("stn_digits", width=8, dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = last = 0.0
    for step in range(60):
        _, losses = model(images, targets)
        opt.zero_grad()
        losses["loss_cls"].backward()
        opt.step()
        first = float(losses["loss_cls"].detach()) if step == 0 else first
        last = float(losses["loss_cls"].detach())
    assert last < 0.2 * first, (first, last)


def test_trains_through_the_engine_on_digits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What ``structpred train --model stn_digits --data digits --epochs 1`` runs, tiny."""
    from structpred.engine import TrainConfig
    from structpred.engine.run import load_model, train

    config = TrainConfig(epochs=1, batch_size=64, lr=0.01, progress=False, log_every=1000)
    _, metrics = train("stn_digits", "digits", config, tmp_path, model_kwargs=TINY)
    assert {"loss_cls", "accuracy"} <= set(metrics) and math.isfinite(float(metrics["loss_cls"]))
    model, cfg = load_model(tmp_path)
    assert isinstance(model, STNClassifier) and cfg.model_name == "stn_digits" and model.rectifier is not None


# ----------------------------------------------------------------------------- bad input


def test_bad_input(batch: tuple) -> None:
    images, targets = batch
    model = get_model("stn_digits", **TINY)
    with pytest.raises(ValueError, match=r"images\[0\] must be \[3, H, W\]"):
        model([images[0][:1]], targets[:1])
    with pytest.raises(ValueError, match="1 targets for 2 images"):
        model(images[:2], targets[:1])
    with pytest.raises(ValueError, match=r"target labels must be in \[0, 10\)"):
        model(images[:1], [{"labels": torch.tensor(10)}])
    with pytest.raises(ValueError, match="transform must be None or one of"):
        get_model("stn_digits", transform="projective")
    with pytest.raises(TypeError):
        get_model("cnn_digits", transform="affine")  # the plain CNN has no transformer


# ----------------------------------------------------------------------------- data


def test_distorted_digits_are_fixed_per_split_seed_and_index() -> None:
    a, b = DistortedDigits("val"), DistortedDigits("val")
    assert len(a) == 300
    for i in (0, 17, 299):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1]["theta"], b[i][1]["theta"])
    assert not torch.equal(DistortedDigits("val", seed=1)[0][0], a[0][0])
    assert DistortedDigits("train").distortion(0) != DistortedDigits("test").distortion(0)
    image, target = a[-1]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert int(target["digit_id"]) == 1499 and int(target["image_id"]) == 299
    repeated = DistortedDigits("val", repeats=2)
    assert len(repeated) == 600 and int(repeated[300][1]["digit_id"]) == 1200
    assert not torch.equal(repeated[300][0], repeated[0][0])  # another distortion of the same digit


def test_distortions_are_in_range_and_theta_undoes_them() -> None:
    data = DistortedDigits("test", rotation=45.0, scale=(0.7, 1.2), translation=0.15)
    params = torch.tensor([data.distortion(i) for i in range(len(data))])  # (M, 4)
    assert params[:, 0].abs().max() <= 45 and params[:, 0].abs().max() > 40
    assert 0.7 <= params[:, 1].min() and params[:, 1].max() <= 1.2
    assert params[:, 2:].abs().max() <= 0.15
    # theta maps output to input: the output centre reads the input at -(s R)^-1 (2 dx, 2 dy).
    theta = distortion_theta(90.0, 2.0, 0.25, 0.0)
    torch.testing.assert_close(theta, torch.tensor([[0.0, 0.5, 0.0], [-0.5, 0.0, 0.25]]), atol=1e-7, rtol=0)
    plain = DistortedDigits("test", rotation=0.0, scale=(1.0, 1.0), translation=0.0)
    torch.testing.assert_close(plain[3][1]["theta"], torch.eye(2, 3), atol=1e-7, rtol=0)
    assert float(plain[3][0][:, :6].abs().max()) == 0.0  # the centred 20-px digit leaves a black margin


def test_distorted_digits_bad_input() -> None:
    with pytest.raises(ValueError, match="split="):
        DistortedDigits("holdout")
    with pytest.raises(ValueError, match="digit_size must be"):
        DistortedDigits("val", size=32, digit_size=40)
    with pytest.raises(ValueError, match="scale must be"):
        DistortedDigits("val", scale=(1.2, 0.7))
    with pytest.raises(ValueError, match="rotation must be"):
        DistortedDigits("val", rotation=-1.0)
    with pytest.raises(IndexError):
        DistortedDigits("val")[300]

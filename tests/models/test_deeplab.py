"""DeepLab-v3 / fcn_resnet50 / deeplab_narrow: registry and torchvision's tree, dilation, ASPP,
bilinear resizing against a direct computation, aux head, losses and ignore labels, CRF refine
(plumbing with a stand-in, and the real ``dense_crf`` once it is there), a seeded overfit, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import structpred.ops
from structpred.heads.deeplab_head import ASPP, DeepLabHead
from structpred.heads.fcn_head import FCNHead
from structpred.models import get_model, list_models, model_info
from structpred.models.deeplab import AtrousNet, AtrousSegmenter
from tests.models.segmentation_cases import random_labels, shapes_batch

NAMES = ["deeplabv3_resnet50", "fcn_resnet50", "deeplab_narrow"]
TINY = {"widths": (8, 8, 16, 16), "aspp_channels": 8}


_labels = random_labels


@pytest.fixture(scope="module")
def shapes() -> tuple[Tensor, list[dict[str, Tensor]]]:
    return shapes_batch()


# ----------------------------------------------------------------------------- registry and tree


def test_builders_registered_and_torchvision_tree() -> None:
    assert set(NAMES) <= set(list_models())
    with torch.device("meta"):
        deeplab = get_model("deeplabv3_resnet50", aux=True)
        fcn = get_model("fcn_resnet50")
    for name, model in (("deeplabv3_resnet50", deeplab), ("fcn_resnet50", fcn)):
        assert isinstance(model, AtrousSegmenter) and model_info(name).task == "semantic_segmentation"
        assert model.config.num_classes == 21 and model.net.backbone.strides["c5"] == 8
        layer4 = model.net.backbone.layer4
        assert layer4[0].conv2.dilation == (2, 2) and layer4[1].conv2.dilation == (4, 4)
        assert isinstance(model.net.backbone.bn1, nn.BatchNorm2d)  # trainable BN, as torchvision
    head = deeplab.net.head
    assert isinstance(head, DeepLabHead) and head.aspp.atrous_rates == (12, 24, 36)
    assert [b[0].dilation for b in head.aspp.branches[1:]] == [(12, 12), (24, 24), (36, 36)]
    assert head.aspp.project[0].in_channels == 5 * 256 and head.aspp.dropout.p == 0.5
    assert head.classifier.weight.shape == (21, 256, 1, 1)
    aux = deeplab.net.aux_head
    assert isinstance(aux, FCNHead) and aux.conv[0].weight.shape == (256, 1024, 3, 3) and aux.dropout.p == 0.1
    assert deeplab.config.aux_weight == 0.5
    assert isinstance(fcn.net.head, FCNHead) and fcn.net.head.conv[0].weight.shape == (512, 2048, 3, 3)
    assert fcn.net.aux_head is None
    # torchvision's published parameter count of deeplabv3_resnet50 (with aux): 42,004,074.
    assert sum(p.numel() for p in deeplab.parameters()) == 42_004_074


@pytest.mark.parametrize("aux", [False, True])
def test_narrow_forward_backward_odd_sizes_and_bilinear_resize(aux: bool) -> None:
    torch.manual_seed(0)
    model = get_model("deeplab_narrow", num_classes=5, aux=aux, **TINY)
    assert model.net.backbone.strides == {"c2": 4, "c3": 8, "c4": 8, "c5": 8}
    H, W = 37, 53
    x = torch.rand(2, 3, H, W)
    preds, losses = model(x, _labels(2, H, W, K=5))
    assert set(preds) == ({"logits", "label_map", "aux_logits"} if aux else {"logits", "label_map"})
    assert all(v.shape == (2, 5, H, W) for k, v in preds.items() if k != "label_map")
    assert preds["label_map"].shape == (2, H, W) and preds["label_map"].dtype == torch.int64
    assert set(losses) == ({"loss_seg", "loss_aux"} if aux else {"loss_seg"})
    sum(losses.values()).backward()
    for n, p in model.named_parameters():
        if n.startswith("net.aux_head") and not aux:
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    # The logits are the head's stride-8 map resized bilinearly (align_corners=False).
    model.eval()
    with torch.no_grad():
        preds, _ = model(x)
        feats = model.net.backbone.forward_features(model.normalize(x))
        coarse = model.net.head(feats["c5"])
    assert coarse.shape[-2:] == (5, 7)  # ceil(37 / 8), ceil(53 / 8)
    torch.testing.assert_close(preds["logits"], F.interpolate(coarse, (H, W), mode="bilinear"))
    torch.testing.assert_close(preds["logits"][..., 0, 0], coarse[..., 0, 0])  # the corner pixel: no blend
    assert torch.equal(preds["label_map"], preds["logits"].argmax(1))  # no CRF: the logits' arg-max


def test_aspp_image_pooling_and_head_shapes() -> None:
    torch.manual_seed(0)
    aspp = ASPP(6, (1, 2), 4, dropout=0.0).eval()
    x = torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        pooled = aspp.pooling(x)
        ref = aspp.pooling[2](aspp.pooling[1](aspp.pooling[0](x.mean(dim=(2, 3), keepdim=True))))
    assert pooled.shape == (2, 4, 5, 7)
    torch.testing.assert_close(pooled, ref.expand(-1, -1, 5, 7))
    assert aspp(x).shape == (2, 4, 5, 7) and len(aspp.branches) == 3
    assert DeepLabHead(6, 3, (1, 2), channels=4)(x).shape == (2, 3, 5, 7)
    with pytest.raises(ValueError, match="atrous rates"):
        ASPP(6, (0, 2))


def test_eval_with_targets_and_ignore_labels() -> None:
    torch.manual_seed(0)
    model = get_model("deeplab_narrow", aux=True, aux_weight=0.25, **TINY).eval()
    x = torch.rand(2, 3, 32, 32)
    targets = _labels(2, 32, 32)
    targets[1]["semantic"][:, :20] = 255
    with torch.no_grad():
        preds, losses = model(x, targets)
    labels = torch.stack([t["semantic"] for t in targets])
    keep = labels != 255
    for key, loss, w in (("logits", "loss_seg", 1.0), ("aux_logits", "loss_aux", 0.25)):
        expected = w * F.cross_entropy(preds[key].permute(0, 2, 3, 1)[keep], labels[keep])
        torch.testing.assert_close(losses[loss], expected)
    _, losses = model.train()(x, [{"semantic": torch.full((32, 32), 255)} for _ in range(2)])
    assert float(losses["loss_seg"].detach()) == 0.0 and losses["loss_seg"].requires_grad


def test_seeded_overfit_on_two_shapes_images(shapes) -> None:
    images, targets = shapes
    torch.manual_seed(0)
    model = get_model("deeplab_narrow", dropout=0.0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    history = []
    for _ in range(30):
        _, losses = model(images, targets)
        opt.zero_grad()
        losses["loss_seg"].backward()
        opt.step()
        history.append(float(losses["loss_seg"].detach()))
    assert min(history[-5:]) < 0.3 * history[0], history


def test_trains_through_the_engine_on_shapes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What ``structpred train --model deeplab_narrow --data shapes --epochs 1`` runs, tiny."""
    from structpred.engine import TrainConfig
    from structpred.engine.run import load_model, train

    config = TrainConfig(epochs=1, batch_size=2, lr=1e-3, optimizer="adamw", progress=False, log_every=1000)
    data = {"num_images": 4, "size": 48}
    _, metrics = train("deeplab_narrow", "shapes", config, tmp_path, model_kwargs=TINY, data_kwargs=data)
    assert {"loss_seg", "miou"} <= set(metrics) and 0.0 <= float(metrics["miou"]) <= 1.0
    model, cfg = load_model(tmp_path)
    assert cfg.model_name == "deeplab_narrow" and model.config.num_classes == 7


# ----------------------------------------------------------------------------- CRF refine


def test_crf_refine_plumbing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []

    def fake_dense_crf(probs: Tensor, image: Tensor, **params: float) -> Tensor:
        calls.append({"probs": probs, "image": image, **params})
        return probs.flip(1)  # class k's marginal goes to K-1-k: the label map shows the CRF ran

    monkeypatch.setattr(structpred.ops, "dense_crf", fake_dense_crf, raising=False)
    torch.manual_seed(0)
    model = get_model("deeplab_narrow", crf=True, crf_num_iters=3, crf_srgb_bilateral=5.0, **TINY)
    x = torch.rand(2, 3, 24, 40)
    none, losses = model.train()(x, _labels(2, 24, 40), predict=False)
    assert none is None and set(losses) == {"loss_seg"}
    assert calls == []  # a losses-only training step skips the CRF (inference-only work)
    with torch.no_grad():
        train_preds, _ = model(x)  # training mode, predictions asked for: the same meaning as eval
    assert len(calls) == 1
    torch.testing.assert_close(calls[0]["probs"], train_preds["logits"].softmax(1))
    assert torch.equal(train_preds["label_map"], 6 - train_preds["logits"].argmax(1))
    with torch.no_grad():
        preds, _ = model.eval()(x)
        raw = model.net(model.normalize(x))["out"]
    call = calls[1]
    assert len(calls) == 2
    assert call["num_iters"] == 3 and call["srgb_bilateral"] == 5.0 and call["sxy_bilateral"] == 80.0
    torch.testing.assert_close(call["probs"], raw.softmax(1))
    assert call["image"].dtype == torch.uint8 and torch.equal(
        call["image"], (x * 255).round().to(torch.uint8)
    )
    torch.testing.assert_close(preds["logits"], raw)  # the network's own scores, not the CRF's
    assert preds["label_map"].dtype == torch.int64
    assert torch.equal(preds["label_map"], 6 - raw.argmax(1))  # the arg-max of the refined scores


def test_crf_refine_with_dense_crf() -> None:
    from structpred.ops import dense_crf

    torch.manual_seed(0)
    model = get_model("deeplab_narrow", crf=True, **TINY).eval()
    plain = get_model("deeplab_narrow", **TINY).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        refined, _ = model(x, _labels(1, 24, 32))
        raw, _ = plain(x)
        scores = model.refine(refined["logits"], x)  # what the label map is read from
    torch.testing.assert_close(refined["logits"], raw["logits"])  # the network's own scores
    assert torch.equal(raw["label_map"], raw["logits"].argmax(1))  # no CRF: the logits' arg-max
    probs = scores.softmax(1)
    expected = dense_crf(raw["logits"].softmax(1), (x * 255).round().to(torch.uint8))
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)
    # The CRF really moved the marginals (a refine that returned its input would pass the rest).
    assert (probs - raw["logits"].softmax(1)).abs().max() > 1e-2
    assert torch.equal(refined["label_map"], expected.argmax(1))  # read from the CRF's marginals


# ----------------------------------------------------------------------------- bad input


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="head must be one of"):
        get_model("deeplab_narrow", head="pspnet")
    with pytest.raises(ValueError, match="crf_num_iters"):
        get_model("deeplab_narrow", crf_num_iters=-1)
    with pytest.raises(ValueError, match="unknown DeepLabConfig settings"):
        get_model("deeplabv3_resnet50", atrous_rate=(6, 12, 18))
    model = get_model("deeplab_narrow", **TINY)
    with pytest.raises(ValueError, match="different sizes"):
        model([torch.rand(3, 32, 32), torch.rand(3, 40, 32)])
    with pytest.raises(ValueError, match="float"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="integer Tensor"):  # labels are checked before the forward
        model(torch.rand(1, 3, 32, 32), [{"semantic": torch.zeros(32, 32)}])
    with pytest.raises(ValueError, match=r"2\+ images per training batch"):
        model.train()(torch.rand(1, 3, 32, 32))
    model.eval()(torch.rand(1, 3, 32, 32))  # one image is fine in eval
    assert AtrousNet(model.net.backbone, model.net.head).aux_head is None

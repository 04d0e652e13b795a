"""torchvision's ``fcn_resnet50`` / ``deeplabv3_resnet50``, converted by
``from_torchvision_segmentation``, give the same logits (ours ``logits``, theirs ``out``) and
auxiliary logits (ours ``aux_logits``, theirs ``aux``).

torchvision takes the normalised batch, ours ``[0, 1]`` images (normalised inside with ImageNet
mean / std): torchvision gets ``(x - mean) / std``, ours ``x``. The models are randomly
initialised, their batch norms given random affine terms and then calibrated statistics (each
norm's input standardised on one batch), so every tensor matters and activations stay O(1).
"""

from __future__ import annotations

import pytest
import torch
import torchvision.models.segmentation as segmentation
from torch import nn

from structpred.layers.transform import IMAGENET_MEAN, IMAGENET_STD
from structpred.models import from_torchvision
from structpred.models.deeplab import AtrousSegmenter
from structpred.models.weights.torchvision_segmentation import from_torchvision_segmentation
from tests.backbones import randomize_norms_
from tests.parity.test_faster_rcnn_parity import calibrate  # noqa: E402

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
CASES = [
    ("fcn_resnet50", False, 21),
    ("fcn_resnet50", True, 5),
    ("deeplabv3_resnet50", False, 3),
    ("deeplabv3_resnet50", True, 21),
]


def tv_model(name: str, aux: bool, num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    model = getattr(segmentation, name)(
        weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux
    )
    randomize_norms_(model)
    g = torch.Generator().manual_seed(1)
    calibrate(model, (torch.rand(2, 3, 72, 88, generator=g) - MEAN) / STD)  # 2 images: image pooling's BN
    return model.eval()


@pytest.mark.parametrize(("name", "aux", "num_classes"), CASES)
def test_same_logits_on_two_sizes(name: str, aux: bool, num_classes: int) -> None:
    tv = tv_model(name, aux, num_classes)
    # The one entry point (structpred.models.from_torchvision) dispatches here.
    ours = from_torchvision(tv) if aux else from_torchvision_segmentation(tv)
    assert isinstance(ours, AtrousSegmenter) and not ours.training
    assert ours.config.head == name.split("_")[0] and ours.config.aux == aux
    assert ours.config.num_classes == num_classes
    g = torch.Generator().manual_seed(2)
    for H, W in ((65, 97), (80, 80)):  # odd and non-square; square
        x = torch.rand(1, 3, H, W, generator=g)
        with torch.no_grad():
            theirs = tv((x - MEAN) / STD)
            preds, losses = ours(x)
        keys = {"logits", "label_map", "aux_logits"} if aux else {"logits", "label_map"}
        assert losses == {} and set(preds) == keys
        assert torch.equal(preds["label_map"], preds["logits"].argmax(1))  # no CRF: the raw logits' arg-max
        for ours_key, tv_key in (("logits", "out"), ("aux_logits", "aux")) if aux else (("logits", "out"),):
            ref = theirs[tv_key]
            assert preds[ours_key].shape == ref.shape == (1, num_classes, H, W)
            assert ref.abs().max() > 1e-2, "the comparison would be vacuous"
            torch.testing.assert_close(preds[ours_key], ref, atol=1e-4, rtol=1e-4)


def test_train_mode_frozen_parameters_and_rates_carry_over() -> None:
    tv = segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=4)
    tv.backbone.conv1.requires_grad_(False)
    ours = from_torchvision_segmentation(tv.train())
    assert ours.training and not ours.net.backbone.conv1.weight.requires_grad
    assert ours.net.head.aspp.atrous_rates == (12, 24, 36)
    assert ours.net.backbone.strides == {"c2": 4, "c3": 8, "c4": 8, "c5": 8}
    torch.testing.assert_close(ours.net.head.classifier.weight, tv.classifier[4].weight)


def test_rejects_other_models() -> None:
    import torchvision.models as tvm
    with torch.device("meta"):
        lraspp = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)
        resnet = tvm.resnet50(weights=None)
    with pytest.raises(ValueError, match="not a torchvision segmentation model|unsupported"):
        from_torchvision_segmentation(lraspp)
    with pytest.raises(ValueError, match="not a torchvision segmentation model"):
        from_torchvision_segmentation(resnet)

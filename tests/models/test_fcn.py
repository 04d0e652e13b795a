"""FCN-32s/16s/8s: registry, the paper's tree and crop offsets, bilinear upconvolution against a
direct computation, alignment (flip equivariance with symmetric weights, shifts), losses and
ignore labels, a seeded overfit, net surgery, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structpred.heads.fcn_head import (
    BilinearUpsample,
    Grid,
    align,
    bilinear_kernel,
    crop_to_input,
    grid_after,
)
from structpred.models import get_model, list_models, model_info
from structpred.models.fcn import FCN
from structpred.models.segmenter import SemanticSegmenter
from tests.models.segmentation_cases import random_labels, shapes_batch

NAMES = [f"fcn{s}s_{kind}" for kind in ("vgg16", "narrow") for s in (32, 16, 8)]
TINY = {"width_div": 16, "fc_channels": 16}  # 4 .. 32 channels
PAPER_OFFSETS = {32: {"final": 19}, 16: {"pool4": 5, "final": 27}, 8: {"pool4": 5, "pool3": 9, "final": 31}}


_labels = random_labels


@pytest.fixture(scope="module")
def shapes() -> tuple[Tensor, list[dict[str, Tensor]]]:
    return shapes_batch()


# ----------------------------------------------------------------------------- registry and tree


def test_builders_registered_and_paper_tree() -> None:
    assert set(NAMES) <= set(list_models())
    for stride in (32, 16, 8):
        with torch.device("meta"):  # VGG-16's 134M weights, never allocated
            model = get_model(f"fcn{stride}s_vgg16")
        assert isinstance(model, SemanticSegmenter)
        assert model_info(f"fcn{stride}s_vgg16").task == "semantic_segmentation"
        net = model.net
        assert isinstance(net, FCN) and model.config.num_classes == 21
        assert net.fc6.weight.shape == (4096, 512, 7, 7) and net.fc6.padding == (0, 0)
        assert net.fc7.weight.shape == (4096, 4096, 1, 1) and net.dropout.p == 0.5
        assert net.backbone.features[0].padding == (100, 100)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        assert (
            net.upscore.weight.shape == (21, 21, 2 * stride, 2 * stride)
            and net.upscore.stride == (stride,) * 2
        )
        assert not net.upscore.weight.requires_grad  # the final upsampler stays bilinear
        assert (net.score_pool4 is not None) == (stride <= 16) and (net.score_pool3 is not None) == (
            stride == 8
        )
        if stride <= 16:
            assert net.upscore2.weight.requires_grad and net.upscore2.weight.shape == (21, 21, 4, 4)
        # The crop offsets of the paper's Caffe nets follow from the layer geometry.
        assert net.crop_offsets() == PAPER_OFFSETS[stride]


def test_init_is_zero_scores_and_bilinear_upsamplers() -> None:
    torch.manual_seed(0)
    net = get_model("fcn8s_narrow", **TINY).net
    for score in (net.score_fr, net.score_pool4, net.score_pool3):
        assert not score.weight.any() and not score.bias.any()
    for up, f in ((net.upscore2, 2), (net.upscore_pool4, 2), (net.upscore, 8)):
        torch.testing.assert_close(up.weight.detach(), bilinear_kernel(7, f))


# ----------------------------------------------------------------------------- bilinear upconvolution


def _naive_bilinear(x: Tensor, factor: int, grid: Grid, out_size: int) -> Tensor:
    """Bilinear interpolation between cell centres (zero beyond the map), by loops: output pixel
    ``j`` sits at ``j``; cell ``i`` at ``grid.stride * i + grid.offset``."""
    C, n, _ = x.shape
    out = torch.zeros(C, out_size, out_size, dtype=torch.float64)

    def weights(j: int) -> list[tuple[int, float]]:
        return [
            (i, 1 - abs(j - (grid.stride * i + grid.offset)) / factor)
            for i in range(n)
            if abs(j - (grid.stride * i + grid.offset)) < factor
        ]

    for y in range(out_size):
        for xx in range(out_size):
            for iy, wy in weights(y):
                for ix, wx in weights(xx):
                    out[:, y, xx] += wy * wx * x[:, iy, ix].double()
    return out


@pytest.mark.parametrize("factor", [2, 3, 8])
def test_bilinear_upsample_is_bilinear_interpolation(factor: int) -> None:
    k = 2 * factor - factor % 2
    assert bilinear_kernel(2, factor).shape == (2, 2, k, k)
    assert not bilinear_kernel(2, factor)[0, 1].any()  # channels do not mix at init
    x = torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(factor))
    up = BilinearUpsample(2, factor, learnable=False)
    g_in = Grid(factor, (factor - 1) / 2)  # cells as F.interpolate places them (align_corners=False)
    g_out = grid_after([up], g_in)
    assert g_out.stride == 1
    with torch.no_grad():
        y = crop_to_input(up(x), g_out, (5 * factor, 5 * factor))  # (1, 2, 5f, 5f)
    ref = _naive_bilinear(x[0], factor, g_in, 5 * factor)
    torch.testing.assert_close(y[0].double(), ref, atol=1e-5, rtol=0)
    # ... which is F.interpolate away from the borders (interpolate clamps, the conv sees zeros).
    lo, hi = factor, 4 * factor + 1
    interp = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    torch.testing.assert_close(y[..., lo:hi, lo:hi], interp[..., lo:hi, lo:hi], atol=1e-5, rtol=0)


def test_grid_after_and_align_follow_caffe_coord_maps() -> None:
    # conv 3x3 pad 100 then a 2x2 pool: cell i of the pool is centred at input pixel 2i - 98.5.
    g = grid_after([nn.Conv2d(3, 3, 3, padding=100), nn.ReLU(), nn.MaxPool2d(2, 2)])
    assert g == Grid(2.0, -98.5)
    a, b = torch.arange(36.0).view(1, 1, 6, 6), torch.arange(16.0).view(1, 1, 4, 4)
    ca, cb, g2 = align(a, Grid(4, 0), b, Grid(4, 8))  # b's cell 0 is a's cell 2
    assert ca.shape == cb.shape == (1, 1, 4, 4) and g2 == Grid(4, 8)
    torch.testing.assert_close(ca, a[..., 2:, 2:])
    with pytest.raises(ValueError, match="fraction"):
        align(a, Grid(4, 0), b, Grid(4, 1))
    with pytest.raises(ValueError, match="strides"):
        align(a, Grid(4, 0), b, Grid(2, 0))
    with pytest.raises(ValueError, match="does not cover"):
        crop_to_input(a, Grid(1, -2), (6, 6))
    with pytest.raises(ValueError, match="unknown geometry"):
        grid_after([nn.Upsample(scale_factor=2)])


# ----------------------------------------------------------------------------- alignment


def _symmetrise_(net: nn.Module, seed: int = 0) -> None:
    """Flip-symmetric conv kernels, random (1x1) score layers: the net then commutes with flips
    exactly when every map is placed symmetrically on the input, i.e. when the crops are right."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in net.named_modules():
            if isinstance(m, nn.Conv2d) and not isinstance(m, nn.ConvTranspose2d):
                if name.startswith("score"):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g))
                w = m.weight
                w.copy_((w + w.flip(-1) + w.flip(-2) + w.flip(-2, -1)) / 4)


@pytest.mark.parametrize("stride", [32, 16, 8])
@pytest.mark.parametrize(("kind", "size"), [("paper", 58), ("narrow", 64)])
def test_output_is_aligned_with_the_input(stride: int, kind: str, size: int) -> None:
    # Sizes whose pools tile exactly (paper: 58 + 2 * 99 = 256; narrow: 64), so a flip maps the
    # layout onto itself; a crop off by one pixel would break flip equivariance.
    torch.manual_seed(0)
    name = f"fcn{stride}s_{'vgg16' if kind == 'paper' else 'narrow'}"
    net = get_model(name, **TINY).net.eval()
    _symmetrise_(net)
    x = torch.randn(1, 3, size, size + 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net(x)["out"]
        for dim in (-1, -2):
            flipped = net(x.flip(dim))["out"].flip(dim)
            scale = out.abs().max()
            assert scale > 1e-3
            torch.testing.assert_close(flipped, out, atol=1e-4 * scale, rtol=1e-4)
            # The test has the power to see a one-pixel misalignment.
            assert (flipped.roll(1, dim) - out).abs().max() > 1e-2 * scale


@pytest.mark.parametrize("stride", [32, 8])
def test_shifted_input_gives_shifted_output(stride: int) -> None:
    # Zero biases, no BN: zeros in -> zeros out, so zero rows / columns in front of the image act as
    # extra padding, and (in whole stride-32 cells) must shift the output exactly, except within
    # one upsampling reach of the new edge: fc6 windows that now overlap the image add score cells.
    torch.manual_seed(0)
    net = get_model(f"fcn{stride}s_vgg16", **TINY).net.eval()
    _symmetrise_(net)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.zero_()
        x = torch.rand(1, 3, 101, 83, generator=torch.Generator().manual_seed(2))
        out = net(x)["out"]
        shifted = net(F.pad(x, (32, 0, 64, 0)))["out"]  # 64 rows on top, 32 columns on the left
    assert out.shape[-2:] == (101, 83) and shifted.shape[-2:] == (165, 115)
    m = 48  # > the reach of the extra cells: 32 (32s); 32 + 16 + 8 (8s)... measured from -19.5
    torch.testing.assert_close(
        shifted[..., 64 + m :, 32 + m :], out[..., m:, m:], atol=1e-4 * float(out.abs().max()), rtol=1e-4
    )


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_and_odd_sizes(name: str) -> None:
    torch.manual_seed(0)
    model = get_model(name, num_classes=5, **TINY)
    for H, W in ((37, 53), (64, 33)):
        x = torch.rand(2, 3, H, W)
        model.train()
        preds, losses = model(x, _labels(2, H, W, K=5))
        assert set(preds) == {"logits", "label_map"} and preds["logits"].shape == (2, 5, H, W)
        assert torch.equal(preds["label_map"], preds["logits"].argmax(1))  # (2, H, W), no refinement
        assert set(losses) == {"loss_seg"} and torch.isfinite(losses["loss_seg"])
    losses["loss_seg"].backward()
    net = model.net
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert net.upscore.weight.grad is None  # fixed bilinear
    model.eval()
    with torch.no_grad():
        preds, losses = model([torch.rand(3, 1, 1)])  # a single pixel survives the paper's padding
    assert losses == {} and preds["logits"].shape == (1, 5, 1, 1)
    assert preds["label_map"].shape == (1, 1, 1) and preds["label_map"].dtype == torch.int64


# ----------------------------------------------------------------------------- losses, ignore, training


def test_eval_with_targets_and_ignore_labels() -> None:
    torch.manual_seed(0)
    model = get_model("fcn16s_narrow", **TINY).eval()
    with torch.no_grad():
        for m in model.net.modules():  # non-zero scores, so the loss depends on the labels
            if isinstance(m, nn.Conv2d) and m.out_channels == 7 and not isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight)
    x = torch.rand(2, 3, 32, 32)
    targets = _labels(2, 32, 32)
    targets[0]["semantic"][:16] = 255
    with torch.no_grad():
        preds, losses = model(x, targets)
    labels = torch.stack([t["semantic"] for t in targets])
    keep = labels != 255
    expected = F.cross_entropy(preds["logits"].permute(0, 2, 3, 1)[keep], labels[keep])
    torch.testing.assert_close(losses["loss_seg"], expected)
    all_ignored = [{"semantic": torch.full((32, 32), 255)} for _ in range(2)]
    _, losses = model.train()(x, all_ignored)
    assert float(losses["loss_seg"].detach()) == 0.0 and losses["loss_seg"].requires_grad


def test_seeded_overfit_on_two_shapes_images(shapes) -> None:
    images, targets = shapes
    torch.manual_seed(0)
    model = get_model("fcn8s_narrow", width_div=8, fc_channels=64, dropout=0.0).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    history = []
    for _ in range(40):
        _, losses = model(images, targets)
        opt.zero_grad()
        losses["loss_seg"].backward()
        opt.step()
        history.append(float(losses["loss_seg"].detach()))
    assert min(history[-5:]) < 0.3 * history[0], history


# ----------------------------------------------------------------------------- surgery, bad input


def test_load_torchvision_vgg16_net_surgery() -> None:
    torch.manual_seed(0)
    net = get_model("fcn32s_vgg16", width_div=16, fc_channels=8, dropout=0.0).net.eval()
    state = {f"features.{k}": torch.randn_like(v) for k, v in net.backbone.features.state_dict().items()}
    state |= {
        "classifier.0.weight": torch.randn(8, 32 * 7 * 7), "classifier.0.bias": torch.randn(8),
        "classifier.3.weight": torch.randn(8, 8), "classifier.3.bias": torch.randn(8),
        "classifier.6.weight": torch.randn(1000, 8), "classifier.6.bias": torch.randn(1000),
    }  # fmt: skip
    net.load_torchvision_vgg16(state)
    pool5 = torch.randn(1, 32, 7, 7)
    with torch.no_grad():  # the conv fc6 on a 7x7 map is the Linear fc6 on the flattened map
        conv = net.fc6(pool5).flatten()
        linear = pool5.flatten() @ state["classifier.0.weight"].T + state["classifier.0.bias"]
    torch.testing.assert_close(conv, linear, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(net.backbone.features[0].weight, state["features.0.weight"])
    with pytest.raises(ValueError, match="classifier.0"):
        net.load_torchvision_vgg16({k: v for k, v in state.items() if k != "classifier.0.weight"})
    with pytest.raises(ValueError, match="features"):
        net.load_torchvision_vgg16({k: v for k, v in state.items() if k != "features.0.bias"})


def test_bad_input() -> None:
    model = get_model("fcn32s_narrow", **TINY)
    with pytest.raises(ValueError, match="fix stride=32"):
        get_model("fcn32s_narrow", stride=8)
    with pytest.raises(ValueError, match="stride must be one of"):
        FCN(7, stride=4, backbone=model.net.backbone)
    with pytest.raises(ValueError, match="unknown FCNConfig settings"):
        get_model("fcn8s_narrow", widht_div=2)
    with pytest.raises(ValueError, match="width_div"):
        get_model("fcn8s_narrow", width_div=3)
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="different sizes"):
        model([torch.rand(3, 32, 32), torch.rand(3, 32, 40)])
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        model([torch.rand(1, 32, 32)])
    with pytest.raises(ValueError, match="no 'semantic'"):
        model(x, [{"labels": torch.zeros(1)}] * 2)
    with pytest.raises(ValueError, match="outside 0..6"):
        model(x, [{"semantic": torch.full((32, 32), 7)}] * 2)
    with pytest.raises(ValueError, match="but the image is"):
        model(x, [{"semantic": torch.zeros(16, 16, dtype=torch.int64)}] * 2)
    with pytest.raises(ValueError, match="2 targets for 1"):
        model(x[:1], _labels(2, 32, 32))
    unpadded = get_model("fcn32s_narrow", fc6_padding=0, **TINY)
    with pytest.raises(ValueError, match="valid window"):
        unpadded(torch.rand(1, 3, 64, 64))


def test_trains_through_the_engine_on_shapes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What ``structpred train --model fcn8s_narrow --data shapes --epochs 1`` runs, tiny; the
    engine picks the class count (7 with background) and the segmentation metric."""
    from structpred.engine import TrainConfig
    from structpred.engine.run import load_model, train

    config = TrainConfig(epochs=1, batch_size=2, lr=1e-3, optimizer="adamw", progress=False, log_every=1000)
    data = {"num_images": 4, "size": 48}
    _, metrics = train("fcn8s_narrow", "shapes", config, tmp_path, model_kwargs=TINY, data_kwargs=data)
    assert {"loss_seg", "miou"} <= set(metrics) and 0.0 <= float(metrics["miou"]) <= 1.0
    model, cfg = load_model(tmp_path)
    assert cfg.model_name == "fcn8s_narrow" and model.config.num_classes == 7

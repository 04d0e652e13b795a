"""``structpred.models.monodepth``: builders in the registry, forward / backward on pairs and single
views, the prediction contract (left disparity in px at the input size), the post-processing
on a mirror-symmetric image, the LR switch, a seeded overfit on two shapes-stereo pairs, bad input.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from structpred.data.shapes_views import ShapesStereo
from structpred.heads.monodepth_loss import monodepth_loss
from structpred.models.monodepth import DisparityDecoder, MonoDepth, MonoDepthConfig, monodepth_narrow
from structpred.models.registry import get_model, list_models, model_info

H, W = 32, 64


@pytest.fixture(scope="module")
def model() -> MonoDepth:
    torch.manual_seed(0)
    return monodepth_narrow()


def _pairs(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 2, 3, H, W, generator=torch.Generator().manual_seed(seed))


def test_registered_for_monocular_depth() -> None:
    assert {"monodepth", "monodepth_narrow"} <= set(list_models("monocular_depth"))
    assert model_info("monodepth").task == "monocular_depth"
    narrow = get_model("monodepth_narrow", lr_consistency=False)
    assert isinstance(narrow, MonoDepth) and not narrow.config.lr_consistency
    assert sum(p.numel() for p in narrow.parameters()) < 1_000_000


def test_pairs_forward_backward(model: MonoDepth) -> None:
    model.train()
    preds, losses = model(_pairs(), [{}, {}])  # no label needed: the right view supervises
    assert preds is not None and set(preds) == {"disparity"}
    assert preds["disparity"].shape == (2, 1, H, W)
    assert set(losses) == {"loss_appearance", "loss_smoothness", "loss_lr"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    model.zero_grad()
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # px of the input width, within the sigmoid's range 0..0.3 W
    disp = preds["disparity"].detach()
    assert 0 <= float(disp.min()) and float(disp.max()) <= 0.3 * W


def test_prediction_is_the_finest_left_disparity_in_pixels(model: MonoDepth) -> None:
    model.eval()
    x = _pairs(1, seed=1)
    with torch.no_grad():
        preds, losses = model(x, [{}])
        disps = model.disparities(x[:, 0])
    assert [tuple(d.shape) for d in disps] == [(1, 2, H >> s, W >> s) for s in range(4)]
    torch.testing.assert_close(preds["disparity"], disps[0][:, :1] * W)
    # the validation loss in eval mode is the loss function's, on the same disparities
    expected = monodepth_loss(disps, x[:, 0], x[:, 1])
    for key, value in expected.items():
        torch.testing.assert_close(losses[key], value)


def test_single_views_predict_without_losses(model: MonoDepth) -> None:
    model.eval()
    x = _pairs(2, seed=2)
    with torch.no_grad():
        from_pairs, _ = model(x)
        batched, losses = model(x[:, :1])  # (B, 1, 3, H, W)
        listed, listed_losses = model([x[0, :1], x[1, :1]])
    assert losses == {} and listed_losses == {}
    torch.testing.assert_close(batched["disparity"], from_pairs["disparity"])
    torch.testing.assert_close(listed["disparity"], from_pairs["disparity"])
    # targets (e.g. evaluation labels) are accepted with single views; still no loss
    assert model(x[:, :1], [{}, {}])[1] == {}


def test_pairs_without_targets_give_no_losses(model: MonoDepth) -> None:
    model.eval()
    with torch.no_grad():
        preds, losses = model(_pairs())
    assert losses == {} and preds is not None and preds["disparity"].shape == (2, 1, H, W)


def test_predict_false_returns_losses_only(model: MonoDepth) -> None:
    preds, losses = model(_pairs(), [{}, {}], predict=False)
    assert preds is None and "loss_appearance" in losses


def test_lr_switch_drops_the_term() -> None:
    torch.manual_seed(0)
    _, losses = monodepth_narrow(lr_consistency=False)(_pairs(), [{}, {}])
    assert set(losses) == {"loss_appearance", "loss_smoothness"}


def test_post_process_symmetric_image_gives_symmetric_disparity() -> None:
    torch.manual_seed(0)
    m = monodepth_narrow(post_process=True).eval()
    half = torch.rand(1, 1, 3, H, W // 2)
    image = torch.cat([half, half.flip(-1)], dim=-1)  # mirror-symmetric (1, 1, 3, H, W)
    with torch.no_grad():
        out = m(image)[0]["disparity"]
        m.post_process = False
        plain = m(image)[0]["disparity"]
    torch.testing.assert_close(out, out.flip(-1), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain, plain.flip(-1), atol=1e-3)  # the network alone is not symmetric


def test_post_process_pairs_keep_losses_of_the_direct_view() -> None:
    torch.manual_seed(0)
    m = monodepth_narrow().eval()
    x = _pairs(2, seed=3)
    with torch.no_grad():
        _, plain = m(x, [{}, {}])
        m.post_process = True
        preds, blended = m(x, [{}, {}])
    assert preds["disparity"].shape == (2, 1, H, W)
    for key in plain:  # GroupNorm: the mirrored copies in the batch change nothing for the others
        torch.testing.assert_close(blended[key], plain[key])


def test_injected_encoder_and_decoder() -> None:
    from structpred.backbones.registry import get_backbone

    encoder = get_backbone("narrow", widths=(8, 8, 16, 16), norm_layer=lambda c: nn.GroupNorm(4, c))
    decoder = DisparityDecoder(encoder.out_channels, encoder.strides, (16, 8, 8, 8, 4))  # type: ignore[arg-type]
    m = MonoDepth(MonoDepthConfig(), encoder=encoder, decoder=decoder)
    assert m.encoder is encoder and m.decoder is decoder
    assert m(_pairs(1))[0]["disparity"].shape == (1, 1, H, W)


def test_odd_sizes_keep_the_input_resolution(model: MonoDepth) -> None:
    x = torch.rand(1, 2, 3, 37, 51)
    preds, losses = model(x, [{}])
    assert preds["disparity"].shape == (1, 1, 37, 51)
    assert torch.isfinite(sum(losses.values()))


def test_paper_width_builds_and_runs() -> None:
    torch.manual_seed(0)
    m = get_model("monodepth").eval()
    assert sum(p.numel() for p in m.parameters()) > 20_000_000  # ResNet-50 encoder at the paper's width
    with torch.no_grad():
        preds, _ = m(torch.rand(1, 1, 3, 64, 64))
    assert preds["disparity"].shape == (1, 1, 64, 64)


@pytest.mark.slow
def test_overfits_two_shapes_stereo_pairs() -> None:
    """Self-supervised, seeded: the photometric loss on two pairs falls by half or more in 40 Adam steps."""
    torch.manual_seed(0)
    ds = ShapesStereo("train", size=(32, 64), num_images=2)
    x = torch.stack([ds[i][0] for i in range(2)])  # (2, 2, 3, 32, 64)
    m = monodepth_narrow()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    history = []
    for _ in range(40):
        _, losses = m(x, [{}, {}], predict=False)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert history[-1] < 0.5 * history[0], history[::10]


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.rand(2, 3, 3, H, W), "1 view .left. or 2"),
        ([torch.rand(2, 3, H, W), torch.rand(2, 3, H, W + 8)], r"images\[1\] is"),
        (torch.rand(1, 2, 3, 0, W), "empty"),
        (torch.rand(1, 2, 3, 16, W), "at least 32 px"),
        (torch.full((1, 2, 3, H, W), float("nan")), "NaN"),
        (torch.rand(1, 2, 1, H, W), "3 channels"),
        (torch.rand(2, 3, H, W), r"\[B, V, 3, H, W\]"),
    ],
)
def test_bad_input(model: MonoDepth, images: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        model(images)


def test_bad_targets_and_requests(model: MonoDepth) -> None:
    with pytest.raises(ValueError, match="1 targets for 2 items"):
        model(_pairs(), [{}])
    with pytest.raises(ValueError, match="predict=False without targets"):
        model(_pairs(), predict=False)


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="unknown MonoDepthConfig settings"):
        monodepth_narrow(depth=3)
    with pytest.raises(ValueError, match="smoothness_directions"):
        monodepth_narrow(smoothness_directions="y")
    with pytest.raises(ValueError, match="min_size"):
        monodepth_narrow(min_size=8)
    with pytest.raises(ValueError, match="widths needs 5"):
        monodepth_narrow(decoder_widths=(8, 8))

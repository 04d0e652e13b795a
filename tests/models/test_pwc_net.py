"""PWC-Net (models/pwc_net.py) and the multi-scale EPE loss (heads/flow_loss.py)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from structpred.data.registry import build_dataset
from structpred.heads.flow_loss import PWC_WEIGHTS, downsample_flow, multiscale_epe
from structpred.metrics.flow import FlowMetric
from structpred.models import get_model, model_info
from structpred.models.pwc_net import PWCNet, PWCNetConfig, cost_volume
from structpred.models.registry import parameter_count

# A 3-level PWC-Net a few channels wide: the same code paths (pyramid, warping, cost volume,
# dense estimators, context network, padding) in milliseconds.
TINY: dict[str, Any] = {
    "pyramid_channels": (8, 12, 16),
    "estimator_channels": (16, 12, 8),
    "context_channels": (12, 8),
    "context_dilations": (1, 2),
    "max_displacement": 2,
    "cost": "dot",  # the paper's (pwcnet_narrow's default is "cosine": tested on its own below)
}


def _tiny(seed: int = 0, **over: Any) -> PWCNet:
    torch.manual_seed(seed)
    return get_model("pwcnet_narrow", **{**TINY, **over})  # type: ignore[return-value]


def _pairs(B: int, H: int, W: int, seed: int = 0) -> Tensor:
    return torch.rand(B, 2, 3, H, W, generator=torch.Generator().manual_seed(seed))


def _targets(B: int, H: int, W: int, seed: int = 0) -> list[dict[str, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"flow": 3 * torch.randn(2, H, W, generator=g), "valid": torch.rand(H, W, generator=g) > 0.2}
        for _ in range(B)
    ]


def test_registered_for_the_flow_task_with_the_papers_size() -> None:
    assert model_info("pwcnet").task == model_info("pwcnet_narrow").task == "optical_flow"
    # The paper's dense PWC-Net (PWC-DC in its code) has 9.37 M parameters.
    assert parameter_count("pwcnet") == pytest.approx(9.37e6, rel=0.01)
    assert parameter_count("pwcnet_narrow") < parameter_count("pwcnet") / 4
    assert get_model("pwcnet_narrow", max_displacement=1).config.cost == "cosine"  # type: ignore[union-attr]
    model = get_model("pwcnet")
    assert model.config.cost == "dot"  # type: ignore[union-attr]
    assert model.multiple == 64 and model.strides == [64, 32, 16, 8, 4]  # type: ignore[union-attr]


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (37, 53), (32, 48), (33, 95)])
def test_any_size_in_flow_of_that_size_out(size: tuple[int, int]) -> None:
    H, W = size
    model = _tiny().eval()
    with torch.no_grad():
        preds, losses = model(_pairs(2, H, W))
    assert losses == {}
    assert preds is not None and preds["flow"].shape == (2, 2, H, W)
    assert bool(torch.isfinite(preds["flow"]).all())


def test_list_and_batch_agree_and_pairs_do_not_mix() -> None:
    model = _tiny().eval()
    x = _pairs(3, 24, 40)
    with torch.no_grad():
        batched = model(x)[0]
        listed = model(list(x))[0]
        alone = model(x[1:2])[0]
        swapped = model(x.flip(1)[1:2])[0]  # frame1 -> frame0: another answer
    assert batched is not None and listed is not None and alone is not None and swapped is not None
    torch.testing.assert_close(listed["flow"], batched["flow"])
    torch.testing.assert_close(alone["flow"][0], batched["flow"][1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(swapped["flow"], alone["flow"], atol=1e-4)


def test_train_and_eval_predict_the_same_and_the_loss_comes_in_both() -> None:
    model = _tiny()
    x, t = _pairs(2, 30, 44), _targets(2, 30, 44)
    with torch.no_grad():
        train_preds, train_losses = model.train()(x, t)
        eval_preds, eval_losses = model.eval()(x, t)
    assert train_preds is not None and eval_preds is not None
    torch.testing.assert_close(train_preds["flow"], eval_preds["flow"])
    assert set(train_losses) == {"loss_epe"}
    torch.testing.assert_close(train_losses["loss_epe"], eval_losses["loss_epe"])


def test_gradient_reaches_every_parameter() -> None:
    model = get_model("pwcnet_narrow", max_displacement=2)  # the narrow widths, all five levels
    _, losses = model(_pairs(2, 64, 64), _targets(2, 64, 64), predict=False)
    losses["loss_epe"].backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not silent, silent


def test_the_loss_reads_only_valid_pixels() -> None:
    model = _tiny()
    x, t = _pairs(2, 40, 56), _targets(2, 40, 56)
    base = model(x, t, predict=False)[1]["loss_epe"]
    junk = [
        {
            "flow": torch.where(u["valid"], u["flow"], torch.full_like(u["flow"], float("nan"))),
            "valid": u["valid"],
        }
        for u in t
    ]
    junk[0]["flow"][:, ~t[0]["valid"]] = float("inf")
    torch.testing.assert_close(model(x, junk, predict=False)[1]["loss_epe"], base)
    moved = [{"flow": u["flow"] + 50.0 * u["valid"], "valid": u["valid"]} for u in t]  # valid pixels move
    assert float(model(x, moved, predict=False)[1]["loss_epe"].detach()) > float(base.detach()) + 1.0
    none_valid = [{"flow": u["flow"], "valid": torch.zeros_like(u["valid"])} for u in t]
    loss = model(x, none_valid, predict=False)[1]["loss_epe"]
    assert float(loss.detach()) == 0.0
    loss.backward()  # no NaN, and still a graph


def test_multiscale_epe_weights_are_the_papers_sum_per_cell() -> None:
    B, H, W = 1, 32, 32
    flow = torch.randn(B, 2, H, W, generator=torch.Generator().manual_seed(0))
    valid = torch.ones(B, H, W, dtype=torch.bool)
    strides = [32, 16, 8, 4]  # levels 5 .. 2: the last four of the paper's weights
    exact = [0.05 * downsample_flow(flow, valid, s)[0] for s in strides]
    assert float(multiscale_epe(exact, flow, valid, strides)) == pytest.approx(0.0, abs=1e-6)
    off = [p + torch.tensor([0.05 * 1.0, 0.0]).view(1, 2, 1, 1) for p in exact]  # every level 1 px off
    # alpha_l / alpha_2 * (4 / s_l)^2 = 16/64 + 4/16 + 2/4 + 1 = 2.0 (the paper: 1 : 1 : 2 : 4 per cell)
    assert float(multiscale_epe(off, flow, valid, strides)) == pytest.approx(2.0, rel=1e-5)
    assert PWC_WEIGHTS == (0.32, 0.08, 0.02, 0.01, 0.005)
    with pytest.raises(ValueError, match="2 predictions for 4 strides"):
        multiscale_epe(off[:2], flow, valid, strides)


def test_downsample_flow_averages_valid_vectors_and_drops_half_empty_cells() -> None:
    flow = torch.zeros(1, 2, 2, 4)
    flow[0, 0] = torch.tensor([[1.0, 3.0, 5.0, float("inf")], [1.0, 3.0, 7.0, float("nan")]])
    valid = torch.tensor([[[True, True, True, False], [True, True, False, False]]])
    mean, ok = downsample_flow(flow, valid, 2)
    assert ok.tolist() == [[[True, False]]]  # 4 / 4 valid; 1 / 4 valid
    assert float(mean[0, 0, 0, 0]) == pytest.approx(2.0) and bool(torch.isfinite(mean).all())
    with pytest.raises(ValueError, match="multiple of the stride 4"):
        downsample_flow(flow, valid, 4)


def test_overfits_a_few_shapes_flow_pairs() -> None:
    data = build_dataset("shapes-flow", "train", num_images=2, size=(64, 64))
    x = torch.stack([data[i][0] for i in range(2)])
    targets = [{"flow": data[i][1]["flow"], "valid": data[i][1]["valid"]} for i in range(2)]
    model = _tiny(seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(60):
        _, losses = model(x, targets, predict=False)
        opt.zero_grad()
        losses["loss_epe"].backward()
        opt.step()

    def epe(flow: Tensor) -> float:
        m = FlowMetric()
        m.update({"flow": flow}, targets)
        return float(m.compute()["epe"])

    with torch.no_grad():
        preds = model.eval()(x)[0]
    assert preds is not None
    zero = epe(torch.zeros(2, 2, 64, 64))
    assert zero > 0.5
    assert epe(preds["flow"]) < 0.5 * zero, (epe(preds["flow"]), zero)


@pytest.mark.parametrize(
    ("pairs", "targets", "match"),
    [
        (torch.rand(2, 1, 3, 16, 16), None, "must have 2 views"),  # one frame only
        (torch.rand(2, 2, 1, 16, 16), None, "3 channels"),
        ([torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 20)], None, "share one size"),
        (torch.full((1, 2, 3, 8, 8), float("nan")), None, "NaN or inf"),
        (torch.rand(2, 2, 3, 16, 16), [{"flow": torch.zeros(2, 16, 16)}], "1 targets for 2 pairs"),
        (torch.rand(1, 2, 3, 16, 16), [{"flow": torch.zeros(2, 16, 15)}], r"targets\[0\]\['flow'\]"),
        (torch.rand(1, 2, 3, 16, 16), [{"flow": torch.zeros(2, 16, 16), "valid": torch.ones(3)}], "'valid'"),
    ],
)
def test_bad_input_is_a_clear_error(pairs: Any, targets: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _tiny()(pairs, targets)


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"pyramid_channels": (8,)}, "pyramid_channels"),
        ({"output_level": 4}, "output_level"),
        ({"context_dilations": (1,)}, "one length"),
        ({"max_displacement": 0}, "max_displacement"),
        ({"cost": "l2"}, "cost must be one of"),
        ({"loss_weights": (1.0,)}, "loss_weights"),
        ({"widths": 3}, "unknown PWCNetConfig settings"),
    ],
)
def test_bad_config_is_a_clear_error(over: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_model("pwcnet_narrow", **{**TINY, **over})


def test_predict_false_without_targets_is_refused() -> None:
    with pytest.raises(ValueError, match="asks for neither"):
        _tiny()(_pairs(1, 8, 8), predict=False)


def test_padding_is_replicated_and_flow_is_cropped() -> None:
    """A pair already at a multiple of 2^L gives the same flow as its edge-replicated pad, cropped."""
    model = _tiny().eval()
    x = _pairs(1, 20, 28)
    padded = F.pad(x.reshape(2, 3, 20, 28), (0, 4, 0, 4), mode="replicate").reshape(1, 2, 3, 24, 32)
    with torch.no_grad():
        small = model(x)[0]
        big = model(padded)[0]
    assert small is not None and big is not None
    # Same network input; the bilinear upsampling of the stride-4 flow is then cropped.
    torch.testing.assert_close(small["flow"], big["flow"][:, :, :20, :28])


def test_torch_export_matches_eager() -> None:
    model = _tiny().eval()

    class Wrapper(torch.nn.Module):
        def __init__(self, inner: PWCNet) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pairs: Tensor) -> Tensor:
            preds, _ = self.inner(pairs)
            assert preds is not None
            return preds["flow"]

    x = _pairs(1, 24, 40)
    program = torch.export.export(Wrapper(model), (x,), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), Wrapper(model)(x), atol=1e-5, rtol=1e-4)


def test_config_defaults_are_the_papers() -> None:
    c = PWCNetConfig()
    assert c.pyramid_channels == (16, 32, 64, 96, 128, 196) and c.max_displacement == 4
    assert c.estimator_channels == (128, 128, 96, 64, 32) and c.context_dilations == (1, 2, 4, 8, 16, 1)
    assert c.flow_scale == 0.05 and c.output_level == 2


def test_cosine_cost_volume_is_the_cosine_of_the_features() -> None:
    g = torch.Generator().manual_seed(0)
    f1, f2 = 1e-2 * torch.randn(1, 8, 5, 6, generator=g), 1e-2 * torch.randn(1, 8, 5, 6, generator=g)
    cos = cost_volume(f1, f2, 1, "cosine")  # (1, 9, 5, 6)
    centre = F.cosine_similarity(f1, f2, dim=1)  # displacement (0, 0): channel 4
    torch.testing.assert_close(cos[:, 4], F.leaky_relu(centre, 0.1))
    assert float(cos.abs().max()) <= 1.0 + 1e-6
    assert float(cost_volume(f1, f2, 1, "dot").abs().max()) < 1e-3  # the paper's: tiny at this scale
    model = _tiny(cost="cosine").eval()
    with torch.no_grad():
        preds = model(_pairs(1, 21, 30))[0]
    assert preds is not None and preds["flow"].shape == (1, 2, 21, 30)

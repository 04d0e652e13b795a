"""The GC-Net/PSMNet-lite stereo network (models/stereo_net.py)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from structpred.data.shapes_views import ShapesStereo
from structpred.models.registry import get_model, model_info
from structpred.models.stereo_net import (
    Aggregation,
    StereoNet,
    StereoNetConfig,
    disparity_targets,
    masked_smooth_l1,
)

# The same code paths (features, both volumes, hourglass, soft argmin, refinement, padding) a few
# channels wide.
TINY: dict[str, Any] = {
    "max_disp": 16,
    "feature_channels": 4,
    "stem_channels": 4,
    "aggregation_channels": 4,
    "refine_channels": 4,
    "refine_dilations": (1, 2),
    "groups": 2,
}


def _tiny(seed: int = 0, **over: Any) -> StereoNet:
    import structpred.models.stereo_net  # noqa: F401  (registers the builders)

    torch.manual_seed(seed)
    return get_model("stereo_net_narrow", **{**TINY, **over})  # type: ignore[return-value]


def _pairs(B: int, H: int, W: int, seed: int = 0) -> Tensor:
    return torch.rand(B, 2, 3, H, W, generator=torch.Generator().manual_seed(seed))


def _targets(B: int, H: int, W: int, seed: int = 0) -> list[dict[str, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"disparity": 10 * torch.rand(1, H, W, generator=g), "valid": torch.rand(H, W, generator=g) > 0.2}
        for _ in range(B)
    ]


def test_registered_for_the_stereo_task() -> None:
    _tiny()
    assert model_info("stereo_net_narrow").task == model_info("stereo_net").task == "stereo_disparity"
    narrow = get_model("stereo_net_narrow")
    assert isinstance(narrow, StereoNet) and narrow.planes == 16  # 64 px at 1/4
    wide = get_model("stereo_net")
    assert isinstance(wide, StereoNet) and wide.planes == 48
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in wide.parameters()) / 3


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (33, 70), (32, 64)])
@pytest.mark.parametrize("volume", ["concat", "correlation"])
def test_any_size_in_disparity_of_that_size_out(size: tuple[int, int], volume: str) -> None:
    H, W = size
    model = _tiny(volume=volume).eval()
    with torch.no_grad():
        preds, losses = model(_pairs(2, H, W))
    assert losses == {}
    assert preds is not None and set(preds) == {"disparity"}
    d = preds["disparity"]
    assert d.shape == (2, 1, H, W) and bool(torch.isfinite(d).all()) and bool((d >= 0).all())
    assert float(d.max()) <= model.config.max_disp


def test_forward_backward_train_and_eval_give_losses() -> None:
    model = _tiny().train()
    x, t = _pairs(2, 32, 64), _targets(2, 32, 64)
    preds, losses = model(x, t)
    assert set(losses) == {"loss_disparity", "loss_disparity_coarse"}
    total = sum(losses.values())
    assert isinstance(total, Tensor) and bool(torch.isfinite(total))
    total.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        preds_eval, val = model(x, t)  # validation loss in eval mode
        none, only = model(x, t, predict=False)
    assert set(val) == set(losses) and none is None and set(only) == set(losses)
    assert preds is not None and preds_eval is not None
    torch.testing.assert_close(preds["disparity"], preds_eval["disparity"])  # GroupNorm: same in both modes
    no_refine = _tiny(refine_channels=0)
    assert no_refine.refinement is None and set(no_refine(x, t)[1]) == {"loss_disparity"}


def test_list_and_batch_agree_and_pairs_do_not_mix() -> None:
    model = _tiny().eval()
    x = _pairs(3, 20, 36)
    with torch.no_grad():
        batched = model(x)[0]
        listed = model(list(x))[0]
        alone = model(x[1:2])[0]
    assert batched is not None and listed is not None and alone is not None
    torch.testing.assert_close(listed["disparity"], batched["disparity"])
    torch.testing.assert_close(alone["disparity"][0], batched["disparity"][1], atol=1e-5, rtol=1e-4)


def test_loss_is_smooth_l1_over_valid_pixels_below_max_disp() -> None:
    pred = torch.tensor([[[[0.0, 1.0, 5.0, 2.0]]]])  # (1, 1, 1, 4)
    gt = torch.tensor([[[[0.5, 4.0, 5.0, 9.0]]]])
    valid = torch.tensor([[[True, True, False, True]]])
    # 0.5 * 0.5^2 = 0.125, |3| - 0.5 = 2.5, |7| - 0.5 = 6.5 -> mean over 3 valid pixels
    assert float(masked_smooth_l1(pred, gt, valid)) == pytest.approx((0.125 + 2.5 + 6.5) / 3)
    assert float(masked_smooth_l1(pred, gt, torch.zeros_like(valid))) == 0.0
    model = _tiny(refine_channels=0)
    x = _pairs(1, 8, 16)
    far = {"disparity": torch.full((1, 8, 16), 40.0)}  # beyond max_disp = 16: not learnable
    assert float(model(x, [far])[1]["loss_disparity"].detach()) == 0.0


def test_nan_disparity_is_not_valid() -> None:
    d = torch.ones(1, 4, 6)
    d[0, 1, 2] = float("nan")
    d[0, 2, 3] = float("inf")
    d[0, 3, 0] = -1.0
    disparity, valid = disparity_targets([{"disparity": d}], 1, 4, 6, "t")
    assert int(valid.sum()) == 24 - 3 and bool(torch.isfinite(disparity).all())
    model = _tiny()
    losses = model(_pairs(1, 4, 6), [{"disparity": d}])[1]
    assert all(bool(torch.isfinite(v)) for v in losses.values())


def test_bad_input_is_a_clear_value_error() -> None:
    model = _tiny()
    x = _pairs(1, 8, 12)
    with pytest.raises(ValueError, match=r"images\[1\] is .* but images\[0\] is"):
        model([x[0], _pairs(1, 8, 14)[0]])
    with pytest.raises(ValueError, match="must have 2 views"):
        model(x[:, :1])
    with pytest.raises(ValueError, match="NaN or inf"):
        model(x * float("nan"))
    with pytest.raises(ValueError, match=r"targets\[0\]\['disparity'\] must be a float Tensor\[1, 8, 12\]"):
        model(x, [{"disparity": torch.zeros(8, 12)}])
    with pytest.raises(ValueError, match=r"targets\[0\]\['disparity'\]"):
        model(x, [{"depth": torch.zeros(1, 8, 12)}])
    with pytest.raises(ValueError, match=r"targets\[0\]\['valid'\] must be a bool Tensor\[8, 12\]"):
        model(x, [{"disparity": torch.zeros(1, 8, 12), "valid": torch.ones(8, 11, dtype=torch.bool)}])
    with pytest.raises(ValueError, match="2 targets for 1 pairs"):
        model(x, _targets(2, 8, 12))
    with pytest.raises(ValueError, match="predict=False without targets"):
        model(x, predict=False)
    for bad in ({"max_disp": 30}, {"max_disp": 0}, {"volume": "diff"}, {"feature_channels": 5}):
        with pytest.raises(ValueError):
            StereoNetConfig(**{**TINY, **bad})
    with pytest.raises(ValueError, match="unknown StereoNetConfig settings"):
        _tiny(depth=3)


def test_injected_submodules_are_used() -> None:
    agg = Aggregation(8, 4, 2)
    model = StereoNet(StereoNetConfig(**TINY), aggregation=agg)
    assert model.aggregation is agg


@pytest.mark.slow
def test_overfits_two_shapes_stereo_pairs() -> None:
    ds = ShapesStereo("train", size=(32, 64), num_images=2, seed=0)
    items = [ds[i] for i in range(2)]
    x = torch.stack([v for v, _ in items])  # (2, 2, 3, 32, 64)
    targets = [{"disparity": t["disparity"], "valid": t["valid"]} for _, t in items]
    gt = torch.stack([t["disparity"] for t in targets])  # (2, 1, 32, 64)
    valid = torch.stack([t["valid"] for t in targets])  # (2, 32, 64)
    # the best constant answer (the median) is what a net that ignores the images reaches
    constant = float(masked_smooth_l1(torch.full_like(gt, float(gt[:, 0][valid].median())), gt, valid))
    model = _tiny(seed=0, feature_channels=8, aggregation_channels=8).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        _, losses = model(x, targets, predict=False)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    last = float(losses["loss_disparity"].detach())
    assert last < 0.6 * constant, (last, constant)  # ~0.4 x at 40 steps

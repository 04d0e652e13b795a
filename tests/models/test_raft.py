"""RAFT: registry sizes, the optical-flow contract, any input size (pad / unpad), the sequence loss,
bad input, a seeded overfit, and torchvision weights in (converter refusals, state-dict files).

Output parity with torchvision's forward is in tests/parity/test_raft_parity.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from structpred.heads.raft_update import sequence_loss, upsample_flow
from structpred.models import from_torchvision, get_model
from structpred.models.raft import RAFT
from structpred.models.registry import model_info, parameter_count
from structpred.models.weights import load_weights


def _pairs(B: int, H: int, W: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 2, 3, H, W, generator=g)  # (B, 2, 3, H, W) in [0, 1]


@pytest.fixture(scope="module")
def small() -> RAFT:
    torch.manual_seed(0)
    model = get_model("raft_small", num_flow_updates=2).eval()
    assert isinstance(model, RAFT)
    return model


def test_registry_sizes_match_the_paper() -> None:
    # torchvision's num_params for raft_large / raft_small weights (same architecture).
    assert parameter_count("raft_large") == 5_257_536
    assert parameter_count("raft_small") == 990_162
    for name in ("raft_large", "raft_small"):
        info = model_info(name)
        assert info.task == "optical_flow" and info.peer_weights == ("torchvision",)


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (8, 8), (16, 24), (37, 53), (20, 130), (64, 64)])
def test_any_size_is_finite_and_keeps_its_shape(small: RAFT, size: tuple[int, int]) -> None:
    H, W = size
    with torch.no_grad():
        preds, losses = small(_pairs(2, H, W))
    assert losses == {}
    assert preds is not None and preds["flow"].shape == (2, 2, H, W)
    assert torch.isfinite(preds["flow"]).all()


def test_padding_is_centred_replicate_and_cropped_back(small: RAFT) -> None:
    H, W = 37, 53  # -> 40 x 56: 1 row on top, 2 below, 1 column left, 2 right
    assert small.padding(H, W) == (1, 2, 1, 2)
    assert small.padding(5, 3) == (6, 7, 5, 6)  # up to min_size 16
    assert small.padding(128, 136) == (0, 0, 0, 0)
    x = _pairs(1, H, W)[0] * 2 - 1  # (2, 3, H, W) in [-1, 1]
    padded = F.pad(x, (1, 2, 1, 2), mode="replicate")  # (2, 3, 40, 56), built independently here
    with torch.no_grad():
        out = small.flow(x[:1], x[1:], 2)
        ref = small.flow(padded[:1], padded[1:], 2)  # a multiple of 8: run as is
    for o, r in zip(out, ref, strict=True):
        torch.testing.assert_close(o, r[:, :, 1 : 1 + H, 1 : 1 + W], atol=1e-5, rtol=1e-5)


def test_forward_normalises_and_returns_the_last_update(small: RAFT) -> None:
    x = _pairs(2, 24, 32)
    with torch.no_grad():
        preds, _ = small(x)
        listed = small.flow(2 * x[:, 0] - 1, 2 * x[:, 1] - 1, 2)
        unnormalised = small.flow(x[:, 0], x[:, 1], 2)
    assert preds is not None and len(listed) == 2
    torch.testing.assert_close(preds["flow"], listed[-1])
    assert not torch.allclose(preds["flow"], unnormalised[-1])  # the [0, 1] -> [-1, 1] map matters
    assert not torch.allclose(listed[0], listed[1])  # every update changes the flow


def test_train_mode_sequence_loss_and_gradients() -> None:
    torch.manual_seed(0)
    model = get_model("raft_large", num_flow_updates=3).train()
    x = _pairs(2, 32, 40)
    targets = [{"flow": torch.randn(2, 32, 40), "valid": torch.rand(32, 40) > 0.2} for _ in range(2)]
    preds, losses = model(x, targets)
    assert preds is not None and preds["flow"].shape == (2, 2, 32, 40)
    assert set(losses) == {"loss_flow"} and torch.isfinite(losses["loss_flow"])
    losses["loss_flow"].backward()
    for part in ("feature_encoder", "context_encoder", "update_block", "mask_predictor"):
        grads = [p.grad for p in getattr(model, part).parameters()]
        assert all(g is not None for g in grads) and any(bool(g.abs().sum() > 0) for g in grads), part
    none, only = model(x, targets, predict=False)
    assert none is None and set(only) == {"loss_flow"}


def test_sequence_loss_against_a_direct_sum() -> None:
    g = torch.Generator().manual_seed(3)
    flows = [torch.randn(2, 2, 4, 5, generator=g) for _ in range(3)]
    gt = 3 * torch.randn(2, 2, 4, 5, generator=g)
    gt[0, 0, 0, 0] = 500.0  # |gt| >= 400: dropped
    gt[1, 1, 2, 3] = float("nan")  # not finite: dropped, and no NaN leaks
    valid = torch.rand(2, 4, 5, generator=g) > 0.3
    expected = torch.zeros(())
    keep = valid.clone()
    keep[0, 0, 0] = False
    keep[1, 2, 3] = False
    for i, f in enumerate(flows):
        per = (f - torch.nan_to_num(gt)).abs() * keep[:, None]
        expected = expected + 0.8 ** (2 - i) * per.sum() / per.numel()
    got = sequence_loss(flows, gt, valid, gamma=0.8, max_flow=400.0)
    torch.testing.assert_close(got, expected)


def test_convex_upsampling_of_a_constant_flow_is_constant() -> None:
    flow = torch.full((1, 2, 3, 4), 0.5)
    flow[:, 1] = -1.0
    mask = torch.randn(1, 9 * 64, 3, 4)
    up = upsample_flow(flow, mask)  # (1, 2, 24, 32)
    assert up.shape == (1, 2, 24, 32)
    # Inner cells see only the constant 3 x 3 window: exactly 8 x the flow.
    torch.testing.assert_close(up[:, :, 8:16, 8:24], (8 * flow[:, :, :1, :1]).expand(1, 2, 8, 16))
    torch.testing.assert_close(
        upsample_flow(flow), 8 * flow.mean(dim=(2, 3), keepdim=True).expand(1, 2, 24, 32)
    )


@pytest.mark.parametrize(
    ("pairs", "match"),
    [
        ([torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 24)], "share one size"),
        ([torch.rand(1, 3, 16, 16)], "must have 2 views"),
        ([torch.rand(2, 1, 16, 16)], "3 channels"),
        ([torch.full((2, 3, 16, 16), float("nan"))], "NaN"),
        (torch.rand(2, 3, 16, 16), "B, V, 3, H, W"),
    ],
)
def test_bad_frames(small: RAFT, pairs: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        small(pairs)  # type: ignore[arg-type]


def test_bad_targets_and_settings(small: RAFT) -> None:
    x = _pairs(2, 16, 16)
    good = {"flow": torch.zeros(2, 16, 16), "valid": torch.ones(16, 16, dtype=torch.bool)}
    with pytest.raises(ValueError, match="1 targets for 2 pairs"):
        small(x, [good])
    with pytest.raises(ValueError, match=r"targets\[1\]\['flow'\] must be a float Tensor\[2, 16, 16\]"):
        small(x, [good, {"flow": torch.zeros(2, 16, 8)}])
    with pytest.raises(ValueError, match=r"targets\[0\]\['valid'\]"):
        small(x, [{**good, "valid": torch.ones(8, 8)}, good])
    with pytest.raises(ValueError, match="asks for neither"):
        small(x, predict=False)
    with pytest.raises(ValueError, match="num_flow_updates"):
        small.flow(x[:, 0], x[:, 1], 0)
    with pytest.raises(ValueError, match="must share one"):
        small.flow(x[:, 0], x[:1, 1])
    with pytest.raises(ValueError, match="min_size"):
        get_model("raft_small", min_size=12)
    with pytest.raises(ValueError, match="unknown RaftConfig settings"):
        get_model("raft_small", iters=3)


def test_overfits_a_translated_pair() -> None:
    torch.manual_seed(0)
    model = get_model("raft_small", num_flow_updates=3).train()
    g = torch.Generator().manual_seed(0)
    big = F.avg_pool2d(torch.rand(1, 3, 40, 40, generator=g), 3, 1, 1)[0]  # smooth texture (3, 40, 40)
    pair = torch.stack([big[:, 2:34, 2:34], big[:, 2:34, 4:36]])  # frame1 = frame0 moved 2 px left
    target = {"flow": torch.stack([torch.full((32, 32), -2.0), torch.zeros(32, 32)])}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = last = 0.0
    for step in range(25):
        opt.zero_grad()
        _, losses = model([pair], [target], predict=False)
        losses["loss_flow"].backward()
        opt.step()
        last = float(losses["loss_flow"].detach())
        first = last if step == 0 else first
    assert last < 0.3 * first, (first, last)


# ----------------------------------------------------------------------------------- weights in


def test_converter_refuses_what_it_cannot_copy() -> None:
    tvf = pytest.importorskip("torchvision.models.optical_flow")
    tv = tvf.raft_small(weights=None)
    tv.feature_encoder.convnormrelu[1] = torch.nn.InstanceNorm2d(32, affine=True)
    with pytest.raises(ValueError, match="InstanceNorm2d with affine"):
        from_torchvision(tv)
    tv = tvf.raft_small(weights=None)
    tv.update_block = torch.nn.Identity()
    with pytest.raises(ValueError, match="update_block is Identity"):
        from_torchvision(tv)


def test_converter_keeps_train_mode_and_frozen_parameters() -> None:
    tvf = pytest.importorskip("torchvision.models.optical_flow")
    tv = tvf.raft_small(weights=None).train()
    tv.feature_encoder.requires_grad_(False)
    ours = from_torchvision(tv)
    assert isinstance(ours, RAFT) and ours.training
    assert not any(p.requires_grad for p in ours.feature_encoder.parameters())
    assert all(p.requires_grad for p in ours.update_block.parameters())


def test_load_a_torchvision_state_dict_file(tmp_path: Path) -> None:
    tvf = pytest.importorskip("torchvision.models.optical_flow")
    torch.manual_seed(1)
    tv = tvf.raft_large(weights=None).eval()
    path = tmp_path / "raft_large_C_T_SKHT_V2-ff5fadd5.pth"  # as a user's download is named
    torch.save(tv.state_dict(), path)
    torch.manual_seed(2)
    model = get_model("raft_large").eval()
    report = load_weights(model, path)
    assert report.kind == "torchvision" and report.family == "torchvision RAFT-large"
    assert report.loaded == len(tv.state_dict())
    x = _pairs(1, 128, 128) * 2 - 1
    with torch.no_grad():
        theirs = tv(x[:, 0], x[:, 1], num_flow_updates=2)
        ours = model.flow(x[:, 0], x[:, 1], 2)
    torch.testing.assert_close(ours[-1], theirs[-1], atol=1e-3, rtol=0)
    small_file = tmp_path / "raft_small.pth"
    torch.save(tvf.raft_small(weights=None).state_dict(), small_file)
    with pytest.raises(ValueError, match="torchvision RAFT-small"):
        load_weights(model, small_file)  # a small file does not fit the large model
    with pytest.raises(ValueError, match="need a RAFT model"):
        load_weights(get_model("unet_narrow"), path)

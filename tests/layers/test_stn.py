"""``SpatialTransformer``: identity at initialisation, the restricted transforms' theta, gradient
flow into the localisation net, a seeded overfit (learning to undo shifts), bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structpred.layers.stn import TRANSFORMS, SpatialTransformer, theta_from_params
from structpred.ops import affine_grid, grid_sample

IDENTITY = torch.eye(2, 3)


@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_at_initialisation(transform: str, align_corners: bool) -> None:
    torch.manual_seed(0)
    stn = SpatialTransformer(None, in_channels=3, transform=transform, align_corners=align_corners)
    x = torch.rand(2, 3, 20, 24)
    warped, theta = stn(x)
    assert theta.shape == (2, 2, 3)
    torch.testing.assert_close(theta, IDENTITY.expand(2, 2, 3))
    expected = grid_sample(
        x, affine_grid(IDENTITY.expand(2, 2, 3), x.shape, align_corners), align_corners=align_corners
    )
    torch.testing.assert_close(warped, expected, rtol=0, atol=0)
    torch.testing.assert_close(warped, x)  # the identity resampling is the input


def test_identity_into_another_size_is_bilinear_resizing_with_align_corners() -> None:
    x = torch.rand(2, 1, 5, 6)
    stn = SpatialTransformer(
        nn.Flatten(), in_channels=1, out_size=(7, 9), align_corners=True, loc_features=30
    )
    warped, _ = stn(x)
    torch.testing.assert_close(warped, F.interpolate(x, size=(7, 9), mode="bilinear", align_corners=True))


def test_restricted_transforms_give_theta_of_their_form() -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.rand(5, generator=g) + 0.5
    angle, tx, ty = torch.rand(3, 5, generator=g) * 3 - 1.5  # |angle| < pi / 2
    theta = theta_from_params(torch.stack([s, tx, ty], 1), "translation_scale")  # (5, 2, 3)
    expected = torch.stack([s, 0 * s, tx, 0 * s, s, ty], 1).view(5, 2, 3)
    torch.testing.assert_close(theta, expected)

    theta = theta_from_params(torch.stack([s, angle, tx, ty], 1), "similarity")
    A = theta[:, :, :2]  # (5, 2, 2) = s R(angle)
    torch.testing.assert_close(A @ A.transpose(1, 2), (s**2).view(5, 1, 1) * torch.eye(2).expand(5, 2, 2))
    torch.testing.assert_close(torch.atan2(A[:, 1, 0], A[:, 0, 0]), angle)
    torch.testing.assert_close(theta[:, :, 2], torch.stack([tx, ty], 1))

    params = torch.randn(5, 6, generator=g)
    torch.testing.assert_close(theta_from_params(params, "affine"), params.view(5, 2, 3))


@pytest.mark.parametrize("transform", ["similarity", "translation_scale"])
def test_layer_outputs_restricted_theta_for_any_weights(transform: str) -> None:
    torch.manual_seed(2)
    stn = SpatialTransformer(None, in_channels=1, transform=transform)
    nn.init.normal_(stn.fc_theta.weight, std=0.5)  # away from the identity
    _, theta = stn(torch.rand(3, 1, 16, 16))
    A = theta[:, :, :2]
    scale2 = (A[:, 0, 0] ** 2 + A[:, 1, 0] ** 2).view(3, 1, 1)
    torch.testing.assert_close(A @ A.transpose(1, 2), scale2 * torch.eye(2).expand(3, 2, 2))  # no shear
    assert not torch.allclose(theta, IDENTITY.expand(3, 2, 3))
    if transform == "translation_scale":
        assert torch.equal(A[:, 0, 1], torch.zeros(3)) and torch.equal(A[:, 0, 0], A[:, 1, 1])


def _loss(stn: SpatialTransformer, x: Tensor) -> Tensor:
    warped, _ = stn(x)
    return (warped * torch.linspace(-1, 1, x.shape[-1])).sum()  # rewards moving mass to the right


def test_gradient_flows_into_the_localisation_net() -> None:
    torch.manual_seed(3)
    stn = SpatialTransformer(None, in_channels=1)
    x = torch.rand(2, 1, 20, 20)
    _loss(stn, x).backward()
    # At the identity the last layer's weight is 0, so only it and its bias get gradient...
    assert stn.fc_theta.weight.grad is not None and stn.fc_theta.weight.grad.abs().sum() > 0
    assert stn.fc_theta.bias.grad is not None and stn.fc_theta.bias.grad.abs().sum() > 0
    # ...and once it has moved off 0, the whole localisation net does.
    nn.init.normal_(stn.fc_theta.weight, std=1e-3)
    stn.zero_grad()
    _loss(stn, x).backward()
    for name, p in stn.localization.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loc_grad_scale_scales_only_the_localisation_gradients(seed: int) -> None:
    x = torch.rand(2, 1, 20, 20, generator=torch.Generator().manual_seed(seed))
    thetas, loc_grads, downstream_grads = [], [], []
    for scale in (1.0, 0.1):
        torch.manual_seed(4)
        stn = SpatialTransformer(None, in_channels=1, loc_grad_scale=scale)
        nn.init.normal_(stn.fc_theta.weight, std=0.1)
        gain = nn.Parameter(torch.tensor(2.0))  # a layer after the transformer
        warped, theta = stn(x)
        ((gain * warped) * torch.linspace(-1, 1, 20)).sum().backward()
        thetas.append(theta.detach())
        loc_grads.append([p.grad.clone() for p in stn.parameters() if p.grad is not None])
        downstream_grads.append(gain.grad)
    torch.testing.assert_close(thetas[1], thetas[0])  # the forward pass does not change
    torch.testing.assert_close(downstream_grads[1], downstream_grads[0])
    assert len(loc_grads[0]) == len(list(stn.parameters()))
    for full, scaled in zip(*loc_grads, strict=True):
        # Relative to the tensor's scale: single elements near zero carry float32 rounding.
        torch.testing.assert_close(scaled, 0.1 * full, atol=1e-6 * float(full.abs().max()) + 1e-9, rtol=1e-5)


def test_seeded_overfit_learns_to_undo_shifts() -> None:
    """Four shifted digits, targets the centred digits: a translation_scale STN learns each inverse."""

    from structpred.data.distorted import DistortedDigits

    torch.manual_seed(0)
    shifted = DistortedDigits("train", rotation=0.0, scale=(1.0, 1.0), translation=0.15)
    centred = DistortedDigits("train", rotation=0.0, scale=(1.0, 1.0), translation=0.0)
    x = torch.stack([shifted[i][0][:1] for i in range(4)])  # (4, 1, 32, 32)
    y = torch.stack([centred[i][0][:1] for i in range(4)])
    stn = SpatialTransformer(None, in_channels=1, transform="translation_scale")
    opt = torch.optim.Adam(stn.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        warped, theta = stn(x)
        loss = (warped - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])
    # The learned shift undoes the data's: the sampling map's translation is the inverse one.
    true_shift = torch.stack([shifted[i][1]["theta"][:, 2] for i in range(4)])
    torch.testing.assert_close(theta[:, :, 2].detach(), -true_shift, atol=0.05, rtol=0)


# ----------------------------------------------------------------------------- bad input


def test_bad_input() -> None:
    stn = SpatialTransformer(None, in_channels=3)
    with pytest.raises(ValueError, match=r"Tensor\[B, 3, H, W\]"):
        stn(torch.rand(2, 1, 20, 20))
    with pytest.raises(ValueError, match=r"Tensor\[B, 3, H, W\]"):
        stn(torch.rand(3, 20, 20))
    with pytest.raises(ValueError, match="transform must be one of"):
        SpatialTransformer(None, in_channels=1, transform="projective")
    with pytest.raises(ValueError, match="pass loc_features"):
        SpatialTransformer(nn.Flatten(), in_channels=1)
    with pytest.raises(ValueError, match="out_size must be"):
        SpatialTransformer(None, in_channels=1, out_size=(0, 4))
    with pytest.raises(ValueError, match=r"localization must map \[B, C, H, W\] to \[B, 7\]"):
        SpatialTransformer(nn.Flatten(), in_channels=1, loc_features=7)(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"takes params \[B, 3\]"):
        theta_from_params(torch.zeros(2, 4), "translation_scale")

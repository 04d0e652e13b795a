"""Spatial Transformer (Jaderberg et al., NeurIPS 2015): localisation net -> theta -> grid -> sampling.

A localisation network looks at the input and regresses the parameters of a transform; they
become a ``2 x 3`` affine map ``theta`` (:func:`theta_from_params`), :func:`~structpred.ops.affine_grid`
lays the output's sampling grid through it and :func:`~structpred.ops.grid_sample` reads the
input bilinearly there. Everything is differentiable, so the localisation net learns, from
the downstream loss alone, to undo whatever distortion hurts the task.

Shape shorthand:
    B: images, C: channels, H, W: input size, Ho, Wo: output size,
    F: localisation features per image, P: transform parameters (6, 4 or 3).

Convention: ``theta`` maps *output* to *input* normalised coordinates ([-1, 1], x then y; see
:mod:`structpred.ops.warp`), so ``theta = [[s, 0, tx], [0, s, ty]]`` with ``s < 1`` *zooms in*
on the window centred at ``(tx, ty)``. Transforms:

* ``"affine"``: P = 6, theta's entries row by row.
* ``"similarity"``: P = 4, ``(s, angle, tx, ty)``: ``[[s cos a, -s sin a, tx], [s sin a, s cos a, ty]]``
  (``angle`` in radians; rotation, isotropic scale and translation).
* ``"translation_scale"``: P = 3, ``(s, tx, ty)``: ``[[s, 0, tx], [0, s, ty]]`` (an attention window).

The last linear layer starts at weight 0 and a bias giving the identity ``theta``, so a new
transformer passes its input through unchanged and learns to deviate from it (the paper's
initialisation).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..ops import affine_grid, grid_sample

log = logging.getLogger(__name__)

TRANSFORMS = {"affine": 6, "similarity": 4, "translation_scale": 3}  # name -> parameters P
_IDENTITY = {
    "affine": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "similarity": (1.0, 0.0, 0.0, 0.0),  # s, angle, tx, ty
    "translation_scale": (1.0, 0.0, 0.0),  # s, tx, ty
}


def theta_from_params(params: Tensor, transform: str) -> Tensor:
    """Transform parameters ``[B, P]`` (module doc) -> affine maps ``theta [B, 2, 3]``."""
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {tuple(TRANSFORMS)}, got {transform!r}")
    P = TRANSFORMS[transform]
    if params.dim() != 2 or params.shape[1] != P:
        raise ValueError(f"{transform!r} takes params [B, {P}], got {tuple(params.shape)}")
    if transform == "affine":
        return params.reshape(-1, 2, 3)  # (B, 6) -> (B, 2, 3)
    zero = params.new_zeros(params.shape[0])
    if transform == "translation_scale":
        s, tx, ty = params.unbind(1)  # (B,) each
        rows = [s, zero, tx, zero, s, ty]
    else:
        s, angle, tx, ty = params.unbind(1)
        cos, sin = s * angle.cos(), s * angle.sin()
        rows = [cos, -sin, tx, sin, cos, ty]
    return torch.stack(rows, dim=1).reshape(-1, 2, 3)  # (B, 6) -> (B, 2, 3)


def _scale_grad(x: Tensor, scale: float) -> Tensor:
    """Identity forward; the backward multiplies the gradient by ``scale``."""
    if scale == 1.0:
        return x
    return x * scale + x.detach() * (1.0 - scale)


class AdaptiveMaxPool2d(nn.AdaptiveMaxPool2d):
    """torch's adaptive max-pool, with an export path: ONNX has no adaptive max-pool, so under
    ``torch.export`` each of the ``oh x ow`` bins (torch's: rows ``floor(i H / oh)`` to
    ``ceil((i + 1) H / oh)``, likewise columns) is pooled by its own slice. Same values."""

    def forward(self, x: Tensor) -> Tensor:
        if not torch.compiler.is_exporting():
            return super().forward(x)
        size: Any = self.output_size
        oh, ow = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        H, W = x.shape[-2:]
        rows = []
        for i in range(oh):
            r = slice((i * H) // oh, -((-(i + 1) * H) // oh))
            cols = [x[..., r, (j * W) // ow : -((-(j + 1) * W) // ow)].amax(dim=(-2, -1)) for j in range(ow)]
            rows.append(torch.stack(cols, -1))  # (B, C, ow)
        return torch.stack(rows, -2)  # (B, C, oh, ow)


def default_localization(in_channels: int, features: int = 32) -> nn.Sequential:
    """The paper's small localisation CNN, size-agnostic: ``[B, C, H, W] -> [B, features]``.

    Two conv + max-pool + ReLU stages ("same" padding, so any input of at least 4 x 4 pixels
    works), an adaptive max-pool to 3 x 3 and a linear layer + ReLU.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, kernel_size=7, padding=3),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 10, kernel_size=5, padding=2),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        AdaptiveMaxPool2d(3),
        nn.Flatten(),  # (B, 10, 3, 3) -> (B, 90)
        nn.Linear(10 * 3 * 3, features),
        nn.ReLU(inplace=True),
    )


class SpatialTransformer(nn.Module):
    """Warp the input by a transform its localisation network predicts from it.

    Args:
        localization: ``[B, C, H, W] -> [B, F]`` features (None: :func:`default_localization`).
        in_channels: C.
        out_size: ``(Ho, Wo)`` or an int; None keeps the input's size.
        transform: ``"affine"``, ``"similarity"`` or ``"translation_scale"`` (module doc).
        align_corners: passed to both ``affine_grid`` and ``grid_sample``.
        loc_features: F, when an injected ``localization`` has no ``out_features`` attribute
            (its last ``nn.Linear``'s is used otherwise).
        padding_mode: what the output shows outside the input, ``"zeros"`` or ``"border"``.
        loc_grad_scale: multiplies the gradient reaching the localisation net (with SGD, its
            learning rate relative to the rest of the model; the paper uses a lower one).

    ``forward(x) -> (warped [B, C, Ho, Wo], theta [B, 2, 3])``.
    """

    def __init__(
        self,
        localization: nn.Module | None = None,
        in_channels: int = 1,
        out_size: int | Sequence[int] | None = None,
        transform: str = "affine",
        align_corners: bool = False,
        loc_features: int | None = None,
        padding_mode: str = "zeros",
        loc_grad_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {tuple(TRANSFORMS)}, got {transform!r}")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if padding_mode not in ("zeros", "border"):
            raise ValueError(f"padding_mode must be 'zeros' or 'border', got {padding_mode!r}")
        if loc_grad_scale < 0:
            raise ValueError(f"loc_grad_scale must be >= 0, got {loc_grad_scale}")
        self.in_channels, self.transform, self.align_corners = in_channels, transform, align_corners
        self.padding_mode, self.loc_grad_scale = padding_mode, loc_grad_scale
        self.out_size = _size_pair(out_size)
        self.localization = localization if localization is not None else default_localization(in_channels)
        features = loc_features if loc_features is not None else _out_features(self.localization)
        self.fc_theta = nn.Linear(features, TRANSFORMS[transform])
        self.reset_identity()

    def reset_identity(self) -> None:
        """Weight 0 and the identity's parameters as bias: ``theta`` = identity for every input."""
        nn.init.zeros_(self.fc_theta.weight)
        with torch.no_grad():
            self.fc_theta.bias.copy_(torch.tensor(_IDENTITY[self.transform]))

    def params(self, x: Tensor) -> Tensor:
        """Transform parameters ``[B, P]`` the localisation net predicts for ``x``."""
        feats = self.localization(x)
        if feats.dim() != 2 or feats.shape != (x.shape[0], self.fc_theta.in_features):
            raise ValueError(
                f"localization must map [B, C, H, W] to [B, {self.fc_theta.in_features}], "
                f"got {tuple(feats.shape)} for input {tuple(x.shape)}"
            )
        return _scale_grad(self.fc_theta(feats), self.loc_grad_scale)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, C, H, W] -> (warped [B, C, Ho, Wo], theta [B, 2, 3])``."""
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"input must be a Tensor[B, {self.in_channels}, H, W], got {got}")
        B, C, H, W = x.shape
        Ho, Wo = self.out_size or (H, W)
        theta = theta_from_params(self.params(x), self.transform)  # (B, P) -> (B, 2, 3)
        grid = affine_grid(theta, (B, C, Ho, Wo), self.align_corners)  # (B, Ho, Wo, 2)
        warped = grid_sample(x, grid, "bilinear", self.padding_mode, self.align_corners)
        return warped, theta


def _size_pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"out_size must be an int or (Ho, Wo) of positive ints, got {size!r}")
    return (pair[0], pair[1])


def _out_features(module: nn.Module) -> int:
    """F of a localisation net: its ``out_features`` or its last ``nn.Linear``'s."""
    found = getattr(module, "out_features", None)
    if isinstance(found, int):
        return found
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            "cannot tell how many features the localization net outputs: pass loc_features=F "
            "(it must map [B, C, H, W] to [B, F])"
        )
    log.debug("localization features taken from its last nn.Linear: %d", linears[-1].out_features)
    return linears[-1].out_features

"""Godard et al. (CVPR 2017) self-supervised losses and post-processing for monocular depth.

Shape shorthand:
    B: images, C: image channels, H, W: size at one scale, S: scales (4 in the paper).

Convention: disparities here are **fractions of the image width** (the paper's network output,
``0.3 * sigmoid``), so one value means the same at every scale; in pixels of a ``W``-wide map it
is ``d * W``. Left disparity ``d_l``: left pixel ``x`` shows the scene point of right pixel
``x - d_l W``; right disparity ``d_r``: right pixel ``x`` is left pixel ``x + d_r W``. Views are
reconstructed by 1-D horizontal bilinear sampling with the library's
:func:`~structpred.ops.warp.flow_warp`, **border** padding (the reference sampler pads the
edge pixel: a point past the border reads the border).

Losses per scale ``s`` (finest ``s = 0``), summed over scales, each view's term added:

* appearance: ``alpha * mean(clip((1 - SSIM(I, I~)) / 2, 0, 1)) + (1 - alpha) * mean|I - I~|``,
  ``alpha = 0.85``, SSIM of 3 x 3 valid windows (:func:`~structpred.ops.ssim.ssim`), ``I~``
  the view reconstructed from the other one;
* edge-aware smoothness: ``mean(|dx d| e^{-mean_c |dx I|}) + mean(|dy d| e^{-mean_c |dy I|})``
  (forward differences), weighted ``0.1 / 2^s`` (the paper's ``alpha_ds = 0.1 / r``). The
  paper's formula has both directions; the reference code's loss reads only the first 4 of its
  8-entry ``smoothness_x + smoothness_y`` list, i.e. x only. We follow the paper
  (``smoothness_directions="xy"``); ``"x"`` reproduces the code;
* left-right consistency: ``mean|d_l - d_r(x - d_l)| + mean|d_r - d_l(x + d_r)|``, weight 1.

Post-processing (the paper's Sec. 4.4, ``post_process_disparity`` of the reference): predict on
the image and on its mirror, mirror the second back, and blend: the leftmost 5 % of columns
take the mirrored prediction, the rightmost 5 % the direct one, a linear ramp over the next 5 %
each side, and the mean in the middle.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.ssim import ssim
from ..ops.warp import flow_warp

ALPHA = 0.85
SMOOTHNESS_WEIGHT = 0.1
LR_WEIGHT = 1.0
DIRECTIONS = ("xy", "x")


def _check_map(t: object, name: str, where: str, channels: int | None = None) -> Tensor:
    if not isinstance(t, Tensor) or t.dim() != 4 or not t.is_floating_point() or 0 in t.shape:
        got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{where}: {name} must be a non-empty float Tensor[B, C, H, W], got {got}")
    if channels is not None and t.shape[1] != channels:
        raise ValueError(f"{where}: {name} must have {channels} channel(s), got {tuple(t.shape)}")
    return t


def _check_pair(image: Tensor, disp: Tensor, where: str) -> None:
    _check_map(image, "image", where)
    _check_map(disp, "disparity", where, channels=1)
    if image.shape[0] != disp.shape[0] or image.shape[-2:] != disp.shape[-2:]:
        raise ValueError(
            f"{where}: image {tuple(image.shape)} and disparity {tuple(disp.shape)} must share B, H, W"
        )
    if image.dtype != disp.dtype or image.device != disp.device:
        raise ValueError(f"{where}: image and disparity must share dtype and device")


def _shift(image: Tensor, dx: Tensor) -> Tensor:
    """``image`` [B, C, H, W] read at ``x + dx`` (``dx`` [B, 1, H, W] px), bilinear, border."""
    flow = torch.cat([dx, torch.zeros_like(dx)], dim=1)  # (B, 1, H, W) -> (B, 2, H, W): (dx, 0)
    return flow_warp(image, flow, padding_mode="border")


def reconstruct_left(right: Tensor, disp_left: Tensor) -> Tensor:
    """The left view rebuilt from the right one: ``right`` read at ``x - d_l W``.

    Args:
        right (Tensor[B, C, H, W]): the right image (or any right-view map, e.g. ``d_r``).
        disp_left (Tensor[B, 1, H, W]): left disparity, fraction of the width.

    Returns:
        Tensor[B, C, H, W].
    """
    _check_pair(right, disp_left, "reconstruct_left")
    return _shift(right, -disp_left * right.shape[-1])


def reconstruct_right(left: Tensor, disp_right: Tensor) -> Tensor:
    """The right view rebuilt from the left one: ``left`` read at ``x + d_r W`` (shapes as
    :func:`reconstruct_left`)."""
    _check_pair(left, disp_right, "reconstruct_right")
    return _shift(left, disp_right * left.shape[-1])


def appearance_loss(estimate: Tensor, image: Tensor, alpha: float = ALPHA) -> Tensor:
    """``alpha * mean(clip((1 - SSIM) / 2, 0, 1)) + (1 - alpha) * mean|image - estimate|``.

    Args:
        estimate, image (Tensor[B, C, H, W]): the reconstructed and the real view, H, W >= 3.
        alpha: the SSIM share (the paper's 0.85).

    Returns:
        scalar Tensor (SSIM mean over the ``(H - 2) x (W - 2)`` valid windows, L1 over all pixels).
    """
    _check_map(estimate, "estimate", "appearance_loss")
    _check_map(image, "image", "appearance_loss")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"appearance_loss: alpha must be in [0, 1], got {alpha}")
    dissimilarity = ((1 - ssim(estimate, image)) / 2).clamp(0, 1)  # (B, C, H - 2, W - 2)
    return alpha * dissimilarity.mean() + (1 - alpha) * (estimate - image).abs().mean()


def smoothness_loss(disp: Tensor, image: Tensor, directions: str = "xy") -> Tensor:
    """Edge-aware smoothness ``mean(|dx d| e^{-mean_c |dx I|}) [+ mean(|dy d| e^{-mean_c |dy I|})]``.

    Args:
        disp (Tensor[B, 1, H, W]): disparity (any unit; the loss scales with it).
        image (Tensor[B, C, H, W]): the view of ``disp``, same H, W.
        directions: ``"xy"`` (the paper) or ``"x"`` (what the reference code's loss uses).

    Returns:
        scalar Tensor; the x term averages over ``H x (W - 1)`` differences, y over ``(H - 1) x W``.
    """
    _check_pair(image, disp, "smoothness_loss")
    if directions not in DIRECTIONS:
        raise ValueError(f"smoothness_loss: directions must be one of {DIRECTIONS}, got {directions!r}")
    dx_d = disp[..., :, :-1] - disp[..., :, 1:]  # (B, 1, H, W - 1)
    dx_i = (image[..., :, :-1] - image[..., :, 1:]).abs().mean(1, keepdim=True)  # (B, 1, H, W - 1)
    loss = (dx_d.abs() * torch.exp(-dx_i)).mean()
    if directions == "xy":
        dy_d = disp[..., :-1, :] - disp[..., 1:, :]  # (B, 1, H - 1, W)
        dy_i = (image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, keepdim=True)
        loss = loss + (dy_d.abs() * torch.exp(-dy_i)).mean()
    return loss


def lr_consistency_loss(disp_left: Tensor, disp_right: Tensor) -> Tensor:
    """``mean|d_l - d_r(x - d_l W)| + mean|d_r - d_l(x + d_r W)|`` (both views' terms).

    Args:
        disp_left, disp_right (Tensor[B, 1, H, W]): fractions of the width.

    Returns:
        scalar Tensor (in fractions of the width).
    """
    _check_map(disp_left, "disp_left", "lr_consistency_loss", channels=1)
    _check_map(disp_right, "disp_right", "lr_consistency_loss", channels=1)
    if disp_left.shape != disp_right.shape:
        raise ValueError(
            f"lr_consistency_loss: disp_left {tuple(disp_left.shape)} and disp_right "
            f"{tuple(disp_right.shape)} must share one shape"
        )
    right_to_left = reconstruct_left(disp_right, disp_left)  # d_r seen from the left view
    left_to_right = reconstruct_right(disp_left, disp_right)
    return (disp_left - right_to_left).abs().mean() + (disp_right - left_to_right).abs().mean()


def scale_pyramid(image: Tensor, sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """``image`` [B, C, H, W] area-resized to each ``(h, w)`` of ``sizes`` (the reference's
    ``resize_area``; a size equal to the input's returns the input)."""
    _check_map(image, "image", "scale_pyramid")
    out = []
    for h, w in sizes:
        if (h, w) == tuple(image.shape[-2:]):
            out.append(image)
        else:
            out.append(F.interpolate(image, size=(h, w), mode="area"))  # (B, C, h, w)
    return out


def monodepth_loss(
    disps: Sequence[Tensor],
    left: Tensor,
    right: Tensor,
    *,
    alpha: float = ALPHA,
    smoothness_weight: float = SMOOTHNESS_WEIGHT,
    lr_weight: float = LR_WEIGHT,
    lr_consistency: bool = True,
    smoothness_directions: str = "xy",
) -> dict[str, Tensor]:
    """The paper's total loss over ``S`` scales, split into its three weighted terms.

    Args:
        disps: ``S`` Tensors ``[B, 2, h_s, w_s]`` finest first; channel 0 the left disparity,
            1 the right, fractions of the width.
        left, right (Tensor[B, C, H, W]): the stereo pair (area-resized to each scale here).
        alpha, smoothness_weight, lr_weight: the paper's 0.85, 0.1 (divided by ``2^s``), 1.
        lr_consistency: False drops the left-right term (the paper's ablation).
        smoothness_directions: ``"xy"`` (the paper) or ``"x"`` (the reference code).

    Returns:
        ``{"loss_appearance", "loss_smoothness", "loss_lr"}`` weighted scalars (no ``loss_lr``
        without ``lr_consistency``); their sum is the paper's ``C``.
    """
    _check_map(left, "left", "monodepth_loss")
    _check_map(right, "right", "monodepth_loss")
    if left.shape != right.shape:
        raise ValueError(f"monodepth_loss: left {tuple(left.shape)} and right {tuple(right.shape)} differ")
    if not disps:
        raise ValueError("monodepth_loss: disps is empty; need at least one scale")
    for s, d in enumerate(disps):
        _check_map(d, f"disps[{s}]", "monodepth_loss", channels=2)
        if d.shape[0] != left.shape[0]:
            raise ValueError(f"monodepth_loss: disps[{s}] has {d.shape[0]} images, the pair {left.shape[0]}")
    sizes = [(int(d.shape[-2]), int(d.shape[-1])) for d in disps]
    lefts, rights = scale_pyramid(left, sizes), scale_pyramid(right, sizes)
    appearance, smoothness, lr = left.new_zeros(()), left.new_zeros(()), left.new_zeros(())
    for s, (d, im_l, im_r) in enumerate(zip(disps, lefts, rights, strict=True)):
        d_l, d_r = d[:, :1], d[:, 1:]  # (B, 2, h, w) -> 2 x (B, 1, h, w)
        appearance = appearance + appearance_loss(reconstruct_left(im_r, d_l), im_l, alpha)
        appearance = appearance + appearance_loss(reconstruct_right(im_l, d_r), im_r, alpha)
        smooth = smoothness_loss(d_l, im_l, smoothness_directions)
        smooth = smooth + smoothness_loss(d_r, im_r, smoothness_directions)
        smoothness = smoothness + smooth / 2**s
        if lr_consistency:
            lr = lr + lr_consistency_loss(d_l, d_r)
    losses = {"loss_appearance": appearance, "loss_smoothness": smoothness_weight * smoothness}
    if lr_consistency:
        losses["loss_lr"] = lr_weight * lr
    return losses


def edge_ramps(width: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> Tensor:
    """The reference's left mask over ``width`` columns (``Tensor[W]``): with ``l`` evenly from 0
    to 1, ``1 - clip(20 (l - 0.05), 0, 1)``: 1 on the leftmost 5 %, a ramp to 0 at 10 %. The right
    mask is its mirror."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"edge_ramps: width must be a positive int, got {width!r}")
    l = torch.linspace(0, 1, width, dtype=dtype, device=device)  # noqa: E741 (the reference's name)
    return 1 - (20 * (l - 0.05)).clamp(0, 1)


def post_process_disparity(disp: Tensor, disp_flipped: Tensor) -> Tensor:
    """Blend a prediction with the one on the mirrored image (the paper's post-processing).

    Args:
        disp (Tensor[B, 1, H, W]): the prediction on the image (any unit).
        disp_flipped (Tensor[B, 1, H, W]): the prediction on the horizontally flipped image, as
            predicted (not flipped back).

    Returns:
        Tensor[B, 1, H, W]: ``r * disp + l * back + (1 - l - r) * (disp + back) / 2`` with
        ``back`` = ``disp_flipped`` mirrored, ``l`` = :func:`edge_ramps`, ``r`` its mirror.
    """
    _check_map(disp, "disp", "post_process_disparity", channels=1)
    _check_map(disp_flipped, "disp_flipped", "post_process_disparity", channels=1)
    if disp.shape != disp_flipped.shape:
        raise ValueError(
            f"post_process_disparity: disp {tuple(disp.shape)} and disp_flipped "
            f"{tuple(disp_flipped.shape)} must share one shape"
        )
    back = disp_flipped.flip(-1)  # mirrored back into the image's frame
    l_mask = edge_ramps(disp.shape[-1], disp.dtype, disp.device)  # (W,), broadcast over B, 1, H
    r_mask = l_mask.flip(0)
    return r_mask * disp + l_mask * back + (1 - l_mask - r_mask) * (disp + back) / 2

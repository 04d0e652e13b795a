"""RAFT's update operator (Teed & Deng, ECCV 2020): motion encoder, ConvGRU, flow head, convex upsampling.

Shape shorthand: B pairs, h x w the 1/8-resolution grid, K = L (2r + 1)^2 correlation features
(L pyramid levels, lookup radius r), D hidden state channels, X context channels.

One refinement step (:class:`UpdateBlock`): the motion encoder turns the correlation features
``[B, K, h, w]`` and the current flow ``[B, 2, h, w]`` into motion features (the flow appended
as is), the recurrent block updates the hidden state from ``[context, motion]`` (a ConvGRU, or
RAFT-large's separable pair 1 x 5 then 5 x 1), and the flow head reads a flow increment
``[B, 2, h, w]`` from the hidden state. :class:`MaskPredictor` (RAFT-large) predicts the
``9 * 8 * 8`` convex-combination weights of :func:`upsample_flow`. Module names are
torchvision's so its weights map one to one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.raft_blocks import conv_norm_relu

FACTOR = 8  # RAFT's flow grid is 1/8 of the image


class MotionEncoder(nn.Module):
    """``(flow [B, 2, h, w], corr [B, K, h, w]) -> [B, out_channels, h, w]`` (the last 2 channels: flow).

    Args:
        in_channels_corr: K.
        corr_layers: one or two widths for the correlation branch (1 x 1, then 3 x 3).
        flow_layers: two widths for the flow branch (7 x 7, 3 x 3).
        out_channels: output width, flow included.
    """

    def __init__(
        self,
        *,
        in_channels_corr: int,
        corr_layers: Sequence[int] = (256, 192),
        flow_layers: Sequence[int] = (128, 64),
        out_channels: int = 128,
    ) -> None:
        super().__init__()
        if len(flow_layers) != 2 or len(corr_layers) not in (1, 2):
            raise ValueError(
                f"MotionEncoder: flow_layers needs 2 widths and corr_layers 1 or 2, got "
                f"{tuple(flow_layers)} and {tuple(corr_layers)}"
            )
        self.convcorr1 = conv_norm_relu(in_channels_corr, corr_layers[0], 1)
        self.convcorr2: nn.Module = (
            conv_norm_relu(corr_layers[0], corr_layers[1], 3) if len(corr_layers) == 2 else nn.Identity()
        )
        self.convflow1 = conv_norm_relu(2, flow_layers[0], 7)
        self.convflow2 = conv_norm_relu(flow_layers[0], flow_layers[1], 3)
        self.conv = conv_norm_relu(corr_layers[-1] + flow_layers[-1], out_channels - 2, 3)
        self.out_channels = out_channels

    def forward(self, flow: Tensor, corr: Tensor) -> Tensor:
        c = self.convcorr2(self.convcorr1(corr))  # (B, K, h, w) -> (B, Cc, h, w)
        f = self.convflow2(self.convflow1(flow))  # (B, 2, h, w) -> (B, Cf, h, w)
        motion = self.conv(torch.cat([c, f], dim=1))  # (B, Cc + Cf, h, w) -> (B, out - 2, h, w)
        return torch.cat([motion, flow], dim=1)  # (B, out, h, w)


class ConvGRU(nn.Module):
    """A convolutional GRU cell: ``h' = (1 - z) h + z tanh(conv_q([r h, x]))``, z, r sigmoid gates."""

    def __init__(
        self,
        *,
        input_size: int,
        hidden_size: int,
        kernel_size: int | tuple[int, int],
        padding: int | tuple[int, int],
    ) -> None:
        super().__init__()
        channels = hidden_size + input_size
        self.convz = nn.Conv2d(channels, hidden_size, kernel_size, padding=padding)
        self.convr = nn.Conv2d(channels, hidden_size, kernel_size, padding=padding)
        self.convq = nn.Conv2d(channels, hidden_size, kernel_size, padding=padding)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        hx = torch.cat([h, x], dim=1)  # (B, D + X', h, w)
        z = torch.sigmoid(self.convz(hx))  # (B, D, h, w)
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
        return h + z * (q - h)  # = (1 - z) h + z q, one op fewer


class RecurrentBlock(nn.Module):
    """One ConvGRU, or two in a row (RAFT-large: 1 x 5 then 5 x 1, the "separable" GRU)."""

    def __init__(
        self,
        *,
        input_size: int,
        hidden_size: int,
        kernel_size: Sequence[int | tuple[int, int]] = ((1, 5), (5, 1)),
        padding: Sequence[int | tuple[int, int]] = ((0, 2), (2, 0)),
    ) -> None:
        super().__init__()
        if len(kernel_size) != len(padding) or len(kernel_size) not in (1, 2):
            raise ValueError(
                f"RecurrentBlock: one or two kernels with one padding each, got {kernel_size} / {padding}"
            )
        self.convgru1 = ConvGRU(
            input_size=input_size, hidden_size=hidden_size, kernel_size=kernel_size[0], padding=padding[0]
        )
        self.convgru2 = (
            ConvGRU(
                input_size=input_size, hidden_size=hidden_size, kernel_size=kernel_size[1], padding=padding[1]
            )
            if len(kernel_size) == 2
            else None
        )
        self.hidden_size = hidden_size

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        h = self.convgru1(h, x)  # (B, D, h, w)
        return h if self.convgru2 is None else self.convgru2(h, x)


class FlowHead(nn.Module):
    """``[B, D, h, w] -> [B, 2, h, w]``: 3 x 3 conv, ReLU, 3 x 3 conv (the flow increment)."""

    def __init__(self, *, in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden_size, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_size, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.relu(self.conv1(x)))  # (B, 2, h, w)


class UpdateBlock(nn.Module):
    """One refinement step: ``(hidden, context, corr, flow) -> (hidden', delta_flow)``."""

    def __init__(
        self, *, motion_encoder: MotionEncoder, recurrent_block: RecurrentBlock, flow_head: FlowHead
    ) -> None:
        super().__init__()
        self.motion_encoder = motion_encoder
        self.recurrent_block = recurrent_block
        self.flow_head = flow_head
        self.hidden_state_size = recurrent_block.hidden_size

    def forward(self, hidden: Tensor, context: Tensor, corr: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        motion = self.motion_encoder(flow, corr)  # (B, M, h, w)
        hidden = self.recurrent_block(hidden, torch.cat([context, motion], dim=1))  # (B, D, h, w)
        return hidden, self.flow_head(hidden)


class MaskPredictor(nn.Module):
    """``[B, D, h, w] -> [B, 9 * 8 * 8, h, w]`` convex-upsampling logits, scaled by ``multiplier``
    (0.25 in the paper's code: it keeps the softmax soft at initialisation)."""

    def __init__(self, *, in_channels: int, hidden_size: int = 256, multiplier: float = 0.25) -> None:
        super().__init__()
        self.convrelu = conv_norm_relu(in_channels, hidden_size, 3)
        self.conv = nn.Conv2d(hidden_size, 9 * FACTOR * FACTOR, 1)
        self.multiplier = multiplier

    def forward(self, x: Tensor) -> Tensor:
        return self.multiplier * self.conv(self.convrelu(x))  # (B, 576, h, w)


def upsample_flow(flow: Tensor, mask: Tensor | None = None, factor: int = FACTOR) -> Tensor:
    """Flow ``[B, 2, h, w]`` (grid pixels) -> ``[B, 2, factor h, factor w]`` (image pixels).

    Without ``mask``: bilinear (``align_corners=True``) of ``factor * flow``. With ``mask``
    ``[B, 9 * factor^2, h, w]`` (channel ``k * factor^2 + i * factor + j``: neighbour k of the
    3 x 3 window, sub-pixel row i, column j): each fine pixel is the softmax-over-k convex
    combination of the 3 x 3 coarse neighbours of its cell (zero outside the grid).
    """
    B, C, h, w = flow.shape
    if mask is None:
        return factor * F.interpolate(
            flow, size=(factor * h, factor * w), mode="bilinear", align_corners=True
        )
    weights = torch.softmax(mask.view(B, 1, 9, factor, factor, h, w), dim=2)  # (B, 1, 9, f, f, h, w)
    windows = F.unfold(factor * flow, kernel_size=3, padding=1)  # (B, C * 9, h * w)
    windows = windows.view(B, C, 9, 1, 1, h, w)
    up = (weights * windows).sum(dim=2)  # (B, C, f, f, h, w)
    # (B, C, f_i, f_j, h, w) -> (B, C, h, f_i, w, f_j) -> (B, C, h * f, w * f)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(B, C, h * factor, w * factor)


def sequence_loss(
    flows: Sequence[Tensor], gt: Tensor, valid: Tensor, gamma: float = 0.8, max_flow: float = 400.0
) -> Tensor:
    """RAFT's loss: ``sum_i gamma^(T - 1 - i) mean(valid * |flows[i] - gt|)`` over the T updates.

    Args:
        flows: T Tensors ``[B, 2, H, W]``, first update first.
        gt (Tensor[B, 2, H, W]): true flow, px.
        valid (Tensor[B, H, W]): bool; pixels with ``|gt| >= max_flow`` or a non-finite ``gt``
            are dropped too. The mean runs over every element (the paper's code), so a batch
            with few valid pixels weighs less.
    """
    finite = torch.isfinite(gt).all(dim=1)  # (B, H, W)
    keep = valid & finite & (torch.where(finite[:, None], gt, 0).norm(dim=1) < max_flow)
    target = torch.where(keep[:, None], gt, 0)  # (B, 2, H, W), no NaN left to leak through 0 * NaN
    weight = keep[:, None].to(target.dtype)
    total = target.new_zeros(())
    T = len(flows)
    for i, flow in enumerate(flows):
        total = total + gamma ** (T - 1 - i) * (weight * (flow - target).abs()).mean()
    return total

"""PWC-Net (Sun, Yang, Liu, Kautz, CVPR 2018): Pyramid, Warping and Cost volume for optical flow.

Shape shorthand: B pairs, H x W input pixels, Hp x Wp padded to a multiple of ``2^L`` (L the
pyramid's levels), level l has stride ``s_l = 2^l`` and ``h_l x w_l = Hp / s_l x Wp / s_l``,
C_l its feature channels, d the search range, D = (2d + 1)^2 cost-volume channels.

Architecture (the paper's Fig. 3 and section 3, with its widths as :class:`PWCNetConfig`'s
defaults): a shared feature pyramid, per level three 3 x 3 convolutions (the first of stride 2)
with leaky ReLU 0.1, channels 16, 32, 64, 96, 128, 196 at levels 1 .. 6. From the top level
down to ``output_level`` (2): the flow of the level above is upsampled by a 4 x 4 stride-2
transposed convolution (and the estimator's features by another, to 2 channels); the second
frame's features are warped towards the first by that flow (:func:`~structpred.ops.warp.flow_warp`,
bilinear, zeros outside); a local cost volume (:func:`~structpred.ops.correlation.local_correlation`,
search range d = 4 feature pixels, mean channel product) + leaky ReLU; a flow estimator (the
DenseNet variant: five 3 x 3 convolutions 128, 128, 96, 64, 32, each output concatenated to its
input, then a 3 x 3 conv to 2 channels) on ``[cost volume, first frame's features, upsampled
flow, upsampled features]`` (the top level: the cost volume alone). At the output level a
context network (seven 3 x 3 convolutions, dilations 1, 2, 4, 8, 16, 1 and 128, 128, 128, 96,
64, 32 channels, then 2) on the estimator's features and flow adds a residual to the flow. The
result (stride 4) is upsampled bilinearly to Hp x Wp and cropped to H x W.

Convention: every level's flow is in units of ``flow_scale`` (0.05) x *full-resolution* pixels,
as the paper trains it (ground truth x 0.05, not divided by the stride); warping at level l
moves by ``flow / (flow_scale * s_l)`` feature pixels. Predictions are in pixels.

Not in the paper: each frame is standardised (minus its mean per channel, over its own standard
deviation) before the pyramid, so a global gain or offset between the frames — real pairs have
them (exposure, white balance) — does not reach the cost volume; the paper's data has few.
Inputs of any size: the pair is padded on the bottom / right by edge replication to a multiple
of ``2^L`` (64 at the paper's 6 levels) and the flow is cropped back; the loss sees the padding
as invalid.

Loss (:func:`~structpred.heads.flow_loss.multiscale_epe`): the paper's weights
0.32, 0.08, 0.02, 0.01, 0.005 (levels 6 .. 2) on every level's prediction, valid pixels only, in
the mean-per-level form documented there (``loss_epe``, pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..heads.flow_loss import PWC_SCALE, PWC_WEIGHTS, multiscale_epe
from ..layers.views import batch_views
from ..ops.correlation import local_correlation
from ..ops.warp import flow_warp
from .contract import check_request, flow_targets
from .registry import register_model
from .segmenter import config_from

COSTS = ("dot", "cosine")


@dataclass
class PWCNetConfig:
    """PWC-Net's sizes (the paper's by default)."""

    pyramid_channels: tuple[int, ...] = (16, 32, 64, 96, 128, 196)  # levels 1 .. L
    estimator_channels: tuple[int, ...] = (128, 128, 96, 64, 32)  # the dense block of each level
    context_channels: tuple[int, ...] = (128, 128, 128, 96, 64, 32)
    context_dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 1)
    max_displacement: int = 4  # d, feature pixels at every level
    cost: str = "dot"  # "dot": the paper's mean channel product; "cosine": of unit feature vectors
    output_level: int = 2  # the finest level with a flow estimate (stride 4)
    flow_scale: float = PWC_SCALE
    loss_weights: tuple[float, ...] = PWC_WEIGHTS  # coarsest first; the last (levels) are used

    def __post_init__(self) -> None:
        levels = len(self.pyramid_channels)
        if levels < 2 or any(not isinstance(c, int) or c < 1 for c in self.pyramid_channels):
            raise ValueError(f"pyramid_channels must be >= 2 positive ints, got {self.pyramid_channels!r}")
        if not isinstance(self.output_level, int) or not 1 <= self.output_level <= levels:
            raise ValueError(f"output_level must be in [1, {levels}], got {self.output_level!r}")
        if not self.estimator_channels or any(c < 1 for c in self.estimator_channels):
            raise ValueError(f"estimator_channels must be positive ints, got {self.estimator_channels!r}")
        if len(self.context_channels) != len(self.context_dilations):
            raise ValueError(
                f"context_channels {self.context_channels} and context_dilations "
                f"{self.context_dilations} must have one length"
            )
        if self.cost not in COSTS:
            raise ValueError(f"cost must be one of {COSTS}, got {self.cost!r}")
        if not isinstance(self.max_displacement, int) or self.max_displacement < 1:
            raise ValueError(f"max_displacement must be an int >= 1, got {self.max_displacement!r}")
        if not self.flow_scale > 0:
            raise ValueError(f"flow_scale must be > 0, got {self.flow_scale}")
        if len(self.loss_weights) < levels - self.output_level + 1:
            raise ValueError(
                f"loss_weights {self.loss_weights} has fewer than the "
                f"{levels - self.output_level + 1} estimated levels"
            )


def _conv(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3 x 3 conv + leaky ReLU 0.1 (the paper's unit), 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation),
        nn.LeakyReLU(0.1, inplace=True),
    )


class FeaturePyramid(nn.Module):
    """``[N, 3, Hp, Wp] -> L maps [N, C_l, h_l, w_l]`` (levels 1 .. L): three convs per level."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        ins = [3, *channels[:-1]]
        self.levels = nn.ModuleList(
            nn.Sequential(_conv(c_in, c, stride=2), _conv(c, c), _conv(c, c))
            for c_in, c in zip(ins, channels, strict=True)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for level in self.levels:
            x = level(x)  # (N, C_{l-1}, h_{l-1}, w_{l-1}) -> (N, C_l, h_{l-1} / 2, w_{l-1} / 2)
            out.append(x)
        return out


class FlowEstimator(nn.Module):
    """The dense flow estimator of one level: ``[B, C_in, h, w] -> (flow [B, 2, h, w], features)``.

    Each convolution's output is concatenated in front of its input (DenseNet), so the features
    have ``C_in + sum(widths)`` channels.
    """

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        convs, c = [], in_channels
        for w in widths:
            convs.append(_conv(c, w))
            c += w
        self.convs = nn.ModuleList(convs)
        self.out_channels = c
        self.predict = nn.Conv2d(c, 2, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        for conv in self.convs:
            x = torch.cat([conv(x), x], dim=1)  # (B, c, h, w) -> (B, c + w_i, h, w)
        return self.predict(x), x


class ContextNetwork(nn.Module):
    """Dilated convolutions on ``[features, flow]``: a flow residual ``[B, 2, h, w]``."""

    def __init__(self, in_channels: int, widths: Sequence[int], dilations: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for w, dil in zip(widths, dilations, strict=True):
            layers.append(_conv(c, w, dilation=dil))
            c = w
        layers.append(nn.Conv2d(c, 2, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def cost_volume(f1: Tensor, f2: Tensor, d: int, cost: str) -> Tensor:
    """Leaky-ReLU'd local cost volume ``[B, (2d + 1)^2, h, w]``: the mean channel product (the
    paper's) or, for ``"cosine"``, the cosine of the two feature vectors (in [-1, 1] from the
    first step, where the paper's products of small random features are ~1e-3)."""
    if cost == "cosine":
        C = f1.shape[1]
        return F.leaky_relu(local_correlation(F.normalize(f1, dim=1), F.normalize(f2, dim=1), d) * C, 0.1)
    return F.leaky_relu(local_correlation(f1, f2, d), 0.1)


def _standardise(x: Tensor) -> Tensor:
    """Each image minus its per-channel mean, over its standard deviation: ``[N, 3, H, W]``."""
    mean = x.mean(dim=(2, 3), keepdim=True)  # (N, 3, 1, 1)
    std = x.std(dim=(1, 2, 3), keepdim=True) if x[0].numel() > 1 else torch.ones_like(x[:, :1, :1, :1])
    return (x - mean) / (std + 1e-3)


class PWCNet(nn.Module):
    """PWC-Net for the ``optical_flow`` task (module doc).

    ``forward(pairs, targets=None, *, predict=True) -> (predictions, losses)``: pairs a list of
    ``Tensor[2, 3, H, W]`` in [0, 1] or a ``Tensor[B, 2, 3, H, W]`` (any H, W >= 1); targets B dicts
    with ``flow`` float ``[2, H, W]`` (px) and optionally ``valid`` bool ``[H, W]``. Predictions
    ``{"flow": [B, 2, H, W]}`` in pixels; losses ``{"loss_epe"}`` given targets, in either mode.
    :meth:`pyramid_flows` gives every level's flow (what the loss sees).
    """

    class_dependent_tensors: tuple[str, ...] = ()  # no classes: every tensor loads as it is

    def __init__(self, config: PWCNetConfig | None = None) -> None:
        super().__init__()
        c = config or PWCNetConfig()
        self.config = c
        self.num_levels = len(c.pyramid_channels)
        self.pyramid = FeaturePyramid(c.pyramid_channels)
        corr = (2 * c.max_displacement + 1) ** 2
        # Estimated levels, coarsest first: L, L - 1, ..., output_level.
        self.levels = list(range(self.num_levels, c.output_level - 1, -1))
        estimators, up_flows, up_feats = [], [], []
        prev_feat = 0
        for i, lvl in enumerate(self.levels):
            c_in = corr if i == 0 else corr + c.pyramid_channels[lvl - 1] + 2 + 2
            est = FlowEstimator(c_in, c.estimator_channels)
            estimators.append(est)
            if i > 0:  # this level's upsamplers read the level above
                up_flows.append(nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1))
                up_feats.append(nn.ConvTranspose2d(prev_feat, 2, 4, stride=2, padding=1))
            prev_feat = est.out_channels
        self.estimators = nn.ModuleList(estimators)
        self.up_flows = nn.ModuleList(up_flows)
        self.up_feats = nn.ModuleList(up_feats)
        self.context = ContextNetwork(prev_feat + 2, c.context_channels, c.context_dilations)

    @property
    def multiple(self) -> int:
        """Padded sides are multiples of this: the top level's stride ``2^L``."""
        return int(2**self.num_levels)

    @property
    def strides(self) -> list[int]:
        """Stride of each estimated level, coarsest first."""
        return [int(2**lvl) for lvl in self.levels]

    def pyramid_flows(self, x: Tensor) -> list[Tensor]:
        """Every estimated level's flow for padded pairs ``[B, 2, 3, Hp, Wp]``, coarsest first:
        ``[B, 2, h_l, w_l]`` in ``flow_scale`` x full-resolution pixels."""
        B, V, _, Hp, Wp = x.shape
        frames = x.transpose(0, 1).reshape(V * B, 3, Hp, Wp)  # (B, 2, 3, .) -> (2B, 3, Hp, Wp): frame0s first
        feats = self.pyramid(_standardise(frames))  # L x (2B, C_l, h_l, w_l)
        d, scale, cost = self.config.max_displacement, self.config.flow_scale, self.config.cost
        flows: list[Tensor] = []
        flow = feat = x.new_zeros(())
        for i, lvl in enumerate(self.levels):
            f1, f2 = feats[lvl - 1][:B], feats[lvl - 1][B:]  # (B, C_l, h_l, w_l) each
            if i == 0:
                inputs = cost_volume(f1, f2, d, cost)  # (B, D, h, w)
            else:
                up_flow = self.up_flows[i - 1](flow)  # (B, 2, h / 2, w / 2) -> (B, 2, h, w)
                up_feat = self.up_feats[i - 1](feat)  # (B, C, h / 2, w / 2) -> (B, 2, h, w)
                warped = flow_warp(f2, up_flow / (scale * 2**lvl))  # f2 read at p + flow(p)
                volume = cost_volume(f1, warped, d, cost)  # (B, D, h, w)
                inputs = torch.cat([volume, f1, up_flow, up_feat], dim=1)  # (B, D + C_l + 4, h, w)
            flow, feat = self.estimators[i](inputs)  # (B, 2, h, w), (B, C_est, h, w)
            if lvl == self.config.output_level:
                flow = flow + self.context(torch.cat([feat, flow], dim=1))
            flows.append(flow)
        return flows

    def forward(
        self,
        pairs: Sequence[Tensor] | Tensor,
        targets: Sequence[dict[str, Tensor]] | None = None,
        *,
        predict: bool = True,
    ) -> tuple[dict[str, Tensor] | None, dict[str, Tensor]]:
        check_request(targets is not None, predict, "PWCNet")
        x = batch_views(pairs, 2, "PWCNet")  # (B, 2, 3, H, W)
        B, _, _, H, W = x.shape
        if not torch.compiler.is_exporting() and not bool(torch.isfinite(x).all()):  # eager-only value check
            raise ValueError("PWCNet: the pairs hold NaN or inf")
        m = self.multiple
        pad_h, pad_w = -H % m, -W % m
        gt = self._targets(targets, B, H, W, pad_h, pad_w, x) if targets is not None else None
        # (B, 2, 3, H, W) -> (2B, 3, H, W) -> edge-replicated to (2B, 3, Hp, Wp) -> (B, 2, 3, Hp, Wp)
        padded = F.pad(x.reshape(B * 2, 3, H, W), (0, pad_w, 0, pad_h), mode="replicate")
        flows = self.pyramid_flows(padded.reshape(B, 2, 3, H + pad_h, W + pad_w))
        losses: dict[str, Tensor] = {}
        if gt is not None:
            weights = self.config.loss_weights
            losses["loss_epe"] = multiscale_epe(
                flows, gt[0], gt[1], self.strides, weights, self.config.flow_scale
            )
        if not predict:
            return None, losses
        full = F.interpolate(
            flows[-1], scale_factor=float(self.strides[-1]), mode="bilinear", align_corners=False
        )
        return {"flow": full[:, :, :H, :W] / self.config.flow_scale}, losses  # (B, 2, H, W) px

    @staticmethod
    def _targets(
        targets: Sequence[dict[str, Tensor]], B: int, H: int, W: int, pad_h: int, pad_w: int, like: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Checked targets padded (as invalid) to Hp x Wp: flow ``[B, 2, Hp, Wp]``, valid ``[B, Hp, Wp]``."""
        flow, valid = flow_targets(targets, B, H, W, "PWCNet")  # (B, 2, H, W), (B, H, W)
        flow = F.pad(flow.to(like), (0, pad_w, 0, pad_h))  # (B, 2, H, W) -> (B, 2, Hp, Wp)
        valid = F.pad(valid.to(like.device), (0, pad_w, 0, pad_h), value=False)  # (B, Hp, Wp)
        return flow, valid


@register_model(task="optical_flow")
def pwcnet(**config: Any) -> PWCNet:
    """PWC-Net (Sun et al. 2018) at the paper's widths: 6-level pyramid 16 .. 196, search range 4,
    dense estimators, context network; any :class:`PWCNetConfig` field may be overridden."""
    return PWCNet(config_from(PWCNetConfig, config))


@register_model(task="optical_flow")
def pwcnet_narrow(**config: Any) -> PWCNet:
    """PWC-Net for CPU training: 5-level pyramid 16-32-48-64-96, estimators 64-48-32-32-16, context
    48-48-32-24-16-16, search range 4, cosine cost volume (trains faster from scratch; ``cost="dot"``
    is the paper's); the paper's loss. Any :class:`PWCNetConfig` field may be overridden."""
    settings: dict[str, Any] = {
        "cost": "cosine",
        "pyramid_channels": (16, 32, 48, 64, 96),
        "estimator_channels": (64, 48, 32, 32, 16),
        "context_channels": (48, 48, 32, 24, 16, 16),
        "context_dilations": (1, 2, 4, 8, 16, 1),
    }
    return PWCNet(config_from(PWCNetConfig, {**settings, **config}))

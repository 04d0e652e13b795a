"""A narrow GC-Net / PSMNet for rectified stereo: cost volume, 3-D aggregation, soft argmin.

GC-Net (Kendall et al., ICCV 2017) and PSMNet (Chang & Chen, CVPR 2018) in a CPU-sized form.

Shape shorthand: B pairs, H x W input pixels, Hp x Wp padded to a multiple of 4, h x w = Hp / 4 x
Wp / 4 the feature grid, C feature channels, A aggregation channels, D = max_disp / 4 cost planes.

Architecture:

1. A shared (Siamese) feature extractor, 1/4 resolution: a 5 x 5 stride-2 conv, two residual
   blocks, a 3 x 3 stride-2 conv, two residual blocks (dilations 1, 2), a 3 x 3 conv to C. Each
   view is standardised first (minus its per-channel mean, over its std) so a gain between the
   cameras does not reach the cost volume.
2. A disparity cost volume over D = ``max_disp / 4`` planes of the 1/4 grid
   (:mod:`structpred.ops.stereo_volume`): ``"concat"`` (GC-Net/PSMNet, ``[B, 2C, D, h, w]``,
   the default) or ``"correlation"`` (``[B, 1, D, h, w]``, DispNetC's comparison fed to the same
   3-D network).
3. 3-D aggregation: a 3 x 3 x 3 conv to A, then one hourglass (two stride-2 3-D convs to 2A and
   back by trilinear upsampling + a conv, with skip additions) and a 3-D conv to one cost per plane.
4. Soft argmin over the D planes (plane k = 4k px), bilinear upsampling of the disparity to the
   full grid, then an optional refinement (StereoNet, Khamis et al. 2018): dilated 3 x 3 convs on
   ``[disparity / max_disp, left image]`` predict a residual; the prediction is clamped at >= 0
   (the loss sees the unclamped sum, so its gradient never stops at the clamp).

Why concatenation + 3-D convolutions (docs/stereo.md has the measurements): at 256 x 512 the 3-D
hourglass costs a few GFLOP at C = A = 16 — comparable to the 2-D parts — and it aggregates
along the disparity axis with shared weights, so what it learns about matching on one disparity
range carries to others; a correlation volume + 2-D aggregation treats the D planes as unrelated
channels. ``volume="correlation"`` is a cheaper input to the same 3-D network.

``max_disp`` (full-resolution pixels, a multiple of 4; 64 by default = 16 planes) bounds the
disparities the network can output: ``4 (D - 1)`` px. Pixels with a larger ground truth are
left out of the loss (PSMNet's mask).

Loss: smooth-L1 (Huber, beta 1 px) on valid pixels, full resolution: ``loss_disparity`` on the
refined output and ``loss_disparity_coarse`` (weight ``coarse_weight``, 0.5) on the upsampled
soft-argmin output. A pixel whose target disparity is not finite is not valid.

Inputs of any size >= 1 x 1: padded on the bottom / right by edge replication to a multiple of 4,
the disparity cropped back. Unrectified pairs are the user's responsibility: the network searches
along rows only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.conv import Conv3d
from ..layers.views import batch_views
from ..ops.stereo_volume import concat_volume, correlation_volume, soft_argmin
from .contract import check_request
from .registry import register_model
from .segmenter import config_from

VOLUMES = ("concat", "correlation")
STRIDE = 4  # the feature grid's stride


@dataclass
class StereoNetConfig:
    """Sizes of :class:`StereoNet` (the narrow model's by default)."""

    max_disp: int = 64  # full-resolution px, a multiple of 4: D = max_disp / 4 cost planes
    feature_channels: int = 16  # C, the 1/4 features
    stem_channels: int = 16  # the 1/2 resolution blocks
    aggregation_channels: int = 16  # A, the 3-D convolutions
    volume: str = "concat"
    refine_channels: int = 16  # 0: no refinement
    refine_dilations: tuple[int, ...] = (1, 2, 4, 1)
    coarse_weight: float = 0.5  # weight of the unrefined output's loss
    groups: int = 4  # GroupNorm groups (the same in train and eval mode, small batches)

    def __post_init__(self) -> None:
        md = self.max_disp
        if isinstance(md, bool) or not isinstance(md, int) or md < STRIDE or md % STRIDE:
            raise ValueError(f"max_disp must be a positive multiple of {STRIDE} (px), got {md!r}")
        for name in ("feature_channels", "stem_channels", "aggregation_channels"):
            c = getattr(self, name)
            if isinstance(c, bool) or not isinstance(c, int) or c < 1 or c % self.groups:
                raise ValueError(f"{name} must be a positive multiple of groups={self.groups}, got {c!r}")
        if self.volume not in VOLUMES:
            raise ValueError(f"volume must be one of {VOLUMES}, got {self.volume!r}")
        if not isinstance(self.refine_channels, int) or self.refine_channels < 0:
            raise ValueError(f"refine_channels must be an int >= 0, got {self.refine_channels!r}")
        if self.refine_channels and not self.refine_dilations:
            raise ValueError("refine_dilations must not be empty when refine_channels > 0")
        if not self.coarse_weight >= 0:
            raise ValueError(f"coarse_weight must be >= 0, got {self.coarse_weight!r}")


def _norm2d(c: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, c), c)


class ResBlock(nn.Module):
    """Two 3 x 3 convs (GroupNorm, ReLU) with an identity skip: ``[N, C, h, w] -> [N, C, h, w]``."""

    def __init__(self, c: int, groups: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm1 = _norm2d(c, groups)
        self.conv2 = nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm2 = _norm2d(c, groups)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        return F.relu(x + self.norm2(self.conv2(y)))


class FeatureExtractor(nn.Module):
    """``[N, 3, Hp, Wp] -> [N, C, Hp / 4, Wp / 4]``, shared by both views."""

    def __init__(self, stem: int, out: int, groups: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, stem, 5, stride=2, padding=2, bias=False),
            _norm2d(stem, groups),
            nn.ReLU(inplace=True),
            ResBlock(stem, groups),
            ResBlock(stem, groups),
            nn.Conv2d(stem, 2 * stem, 3, stride=2, padding=1, bias=False),
            _norm2d(2 * stem, groups),
            nn.ReLU(inplace=True),
            ResBlock(2 * stem, groups),
            ResBlock(2 * stem, groups, dilation=2),
            nn.Conv2d(2 * stem, out, 3, padding=1),  # no norm, no ReLU: the features compared
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _conv3d(c_in: int, c_out: int, groups: int, stride: int = 1) -> nn.Sequential:
    """3 x 3 x 3 conv + GroupNorm + ReLU."""
    return nn.Sequential(
        Conv3d(c_in, c_out, 3, stride=stride, padding=1),  # bias: the ONNX export of a bias-free Conv3d fails
        nn.GroupNorm(min(groups, c_out), c_out),
        nn.ReLU(inplace=True),
    )


class Aggregation(nn.Module):
    """``[B, V, D, h, w]`` volume -> ``[B, D, h, w]`` costs: a 3-D conv and one hourglass."""

    def __init__(self, c_in: int, a: int, groups: int) -> None:
        super().__init__()
        self.entry = _conv3d(c_in, a, groups)
        self.down1 = nn.Sequential(_conv3d(a, 2 * a, groups, stride=2), _conv3d(2 * a, 2 * a, groups))
        self.down2 = nn.Sequential(_conv3d(2 * a, 2 * a, groups, stride=2), _conv3d(2 * a, 2 * a, groups))
        self.up2 = _conv3d(2 * a, 2 * a, groups)
        self.up1 = _conv3d(2 * a, a, groups)
        self.cost = Conv3d(a, 1, 3, padding=1)

    def forward(self, volume: Tensor) -> Tensor:
        x0 = self.entry(volume)  # (B, A, D, h, w)
        x1 = self.down1(x0)  # (B, 2A, D/2, h/2, w/2), sides rounded up
        x2 = self.down2(x1)  # (B, 2A, D/4, h/4, w/4)
        up = F.interpolate(x2, size=x1.shape[2:], mode="trilinear", align_corners=False)
        x1 = x1 + self.up2(up)  # (B, 2A, D/2, h/2, w/2)
        up = F.interpolate(x1, size=x0.shape[2:], mode="trilinear", align_corners=False)
        x0 = x0 + self.up1(up)  # (B, A, D, h, w)
        return self.cost(x0)[:, 0]  # (B, 1, D, h, w) -> (B, D, h, w)


class Refinement(nn.Module):
    """Dilated 3 x 3 convs on ``[disparity / max_disp, left image]``: a residual ``[B, 1, Hp, Wp]`` px."""

    def __init__(self, c: int, dilations: Sequence[int], groups: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(4, c, 3, padding=1)]
        for dil in dilations:
            layers += [nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(c, c, 3, padding=dil, dilation=dil)]
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        last = nn.Conv2d(c, 1, 3, padding=1)
        nn.init.zeros_(last.weight)  # the refinement starts as the identity
        nn.init.zeros_(last.bias)  # type: ignore[arg-type]
        self.net = nn.Sequential(*layers, last)

    def forward(self, disparity: Tensor, image: Tensor, max_disp: int) -> Tensor:
        x = torch.cat([disparity / max_disp, image], dim=1)  # (B, 1 + 3, Hp, Wp)
        return self.net(x) * max_disp


def _standardise(x: Tensor) -> Tensor:
    """Each view minus its per-channel mean, over its std (all channels): ``[N, 3, H, W]``."""
    mean = x.mean(dim=(2, 3), keepdim=True)  # (N, 3, 1, 1)
    centred = x - mean
    std = centred.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()  # (N, 1, 1, 1)
    return centred / (std + 1e-3)


def disparity_targets(targets: object, B: int, H: int, W: int, where: str) -> tuple[Tensor, Tensor]:
    """The stereo task's targets, checked and stacked: ``(disparity [B, 1, H, W], valid bool[B, H, W])``.

    Each of the ``B`` dicts needs ``disparity`` float ``[1, H, W]`` (px) and may carry ``valid``
    bool ``[H, W]``; a pixel with a non-finite or negative disparity is not valid.
    """
    if not isinstance(targets, (list, tuple)) or len(targets) != B:
        n = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise ValueError(f"{where}: {n} targets for {B} pairs")
    disps, valids = [], []
    for i, t in enumerate(targets):
        d = t.get("disparity") if isinstance(t, dict) else None
        if not isinstance(d, Tensor) or tuple(d.shape) != (1, H, W) or not d.is_floating_point():
            got = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
            raise ValueError(
                f"{where}: targets[{i}]['disparity'] must be a float Tensor[1, {H}, {W}], got {got}"
            )
        valid = t.get("valid")
        if valid is None:
            valid = torch.ones(H, W, dtype=torch.bool, device=d.device)
        if not isinstance(valid, Tensor) or tuple(valid.shape) != (H, W):
            got = tuple(valid.shape) if isinstance(valid, Tensor) else type(valid).__name__
            raise ValueError(f"{where}: targets[{i}]['valid'] must be a bool Tensor[{H}, {W}], got {got}")
        ok = torch.isfinite(d[0]) & (d[0] >= 0)
        disps.append(torch.where(ok, d[0], torch.zeros_like(d[0]))[None])  # NaN must not reach the loss
        valids.append(valid.bool().to(d.device) & ok)
    return torch.stack(disps), torch.stack(valids)  # (B, 1, H, W), (B, H, W)


def masked_smooth_l1(pred: Tensor, gt: Tensor, valid: Tensor) -> Tensor:
    """Mean smooth-L1 (beta 1 px) of ``pred - gt`` ``[B, 1, H, W]`` on ``valid`` ``[B, H, W]``; 0 if none."""
    per_pixel = F.smooth_l1_loss(pred[:, 0], gt[:, 0], reduction="none", beta=1.0)  # (B, H, W)
    weight = valid.to(per_pixel.dtype)
    return (per_pixel * weight).sum() / weight.sum().clamp(min=1.0)


class StereoNet(nn.Module):
    """GC-Net/PSMNet-lite for the ``stereo_disparity`` task (module doc).

    ``forward(pairs, targets=None, *, predict=True) -> (predictions, losses)``: pairs a list of
    ``Tensor[2, 3, H, W]`` (left, right) in [0, 1] or a ``Tensor[B, 2, 3, H, W]``; targets B dicts
    with ``disparity`` float ``[1, H, W]`` px and optionally ``valid`` bool ``[H, W]``. Predictions
    ``{"disparity": [B, 1, H, W]}`` px of the left view; losses ``{"loss_disparity",
    "loss_disparity_coarse"}`` given targets, in either mode.
    """

    class_dependent_tensors: tuple[str, ...] = ()  # no classes

    def __init__(
        self,
        config: StereoNetConfig | None = None,
        features: nn.Module | None = None,
        aggregation: nn.Module | None = None,
        refinement: nn.Module | None = None,
    ) -> None:
        super().__init__()
        c = config or StereoNetConfig()
        self.config = c
        self.features = features or FeatureExtractor(c.stem_channels, c.feature_channels, c.groups)
        volume_channels = 2 * c.feature_channels if c.volume == "concat" else 1
        self.aggregation = aggregation or Aggregation(volume_channels, c.aggregation_channels, c.groups)
        if refinement is None and c.refine_channels:
            refinement = Refinement(c.refine_channels, c.refine_dilations, c.groups)
        self.refinement = refinement

    @property
    def planes(self) -> int:
        """D, the cost planes of the 1/4 grid."""
        return self.config.max_disp // STRIDE

    def disparities(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(coarse, refined) disparity ``[B, 1, Hp, Wp]`` px for padded pairs ``[B, 2, 3, Hp, Wp]``
        (the refined one not yet clamped at 0)."""
        B, _, _, Hp, Wp = x.shape
        views = _standardise(x.transpose(0, 1).reshape(2 * B, 3, Hp, Wp))  # (2B, 3, Hp, Wp): lefts first
        feats = self.features(views)  # (2B, C, h, w)
        left, right = feats[:B], feats[B:]
        if self.config.volume == "concat":
            volume = concat_volume(left, right, self.planes)  # (B, 2C, D, h, w)
        else:
            volume = correlation_volume(left, right, self.planes)[:, None]  # (B, 1, D, h, w)
        cost = self.aggregation(volume)  # (B, D, h, w)
        coarse = soft_argmin(cost, dim=1) * STRIDE  # (B, 1, h, w) planes -> full-resolution px
        coarse = F.interpolate(coarse, size=(Hp, Wp), mode="bilinear", align_corners=False)
        if self.refinement is None:
            return coarse, coarse
        # Not clamped here: a ReLU would stop the loss's gradient wherever the sum dips below 0
        # (a large early step can push every pixel there for good); forward clamps the prediction.
        refined = coarse + self.refinement(coarse, views[:B], self.config.max_disp)
        return coarse, refined

    def forward(
        self,
        pairs: Sequence[Tensor] | Tensor,
        targets: Sequence[dict[str, Tensor]] | None = None,
        *,
        predict: bool = True,
    ) -> tuple[dict[str, Tensor] | None, dict[str, Tensor]]:
        check_request(targets is not None, predict, "StereoNet")
        x = batch_views(pairs, 2, "StereoNet")  # (B, 2, 3, H, W)
        B, _, _, H, W = x.shape
        if not torch.compiler.is_exporting() and not bool(torch.isfinite(x).all()):  # eager-only check
            raise ValueError("StereoNet: the pairs hold NaN or inf")
        gt = disparity_targets(targets, B, H, W, "StereoNet") if targets is not None else None
        pad_h, pad_w = -H % STRIDE, -W % STRIDE
        # (B, 2, 3, H, W) -> (2B, 3, H, W) -> edge-replicated (2B, 3, Hp, Wp) -> (B, 2, 3, Hp, Wp)
        padded = F.pad(x.reshape(B * 2, 3, H, W), (0, pad_w, 0, pad_h), mode="replicate")
        coarse, refined = self.disparities(padded.reshape(B, 2, 3, H + pad_h, W + pad_w))
        coarse, refined = coarse[:, :, :H, :W], refined[:, :, :H, :W]  # (B, 1, H, W)
        losses: dict[str, Tensor] = {}
        if gt is not None:
            disparity, valid = gt[0].to(refined), gt[1].to(refined.device)
            valid = valid & (disparity[:, 0] < self.config.max_disp)  # beyond the volume: not learnable
            losses["loss_disparity"] = masked_smooth_l1(refined, disparity, valid)
            if self.refinement is not None:
                losses["loss_disparity_coarse"] = self.config.coarse_weight * masked_smooth_l1(
                    coarse, disparity, valid
                )
        if not predict:
            return None, losses
        return {"disparity": refined.clamp(min=0.0)}, losses  # disparity >= 0


@register_model(task="stereo_disparity")
def stereo_net_narrow(**config: Any) -> StereoNet:
    """GC-Net/PSMNet-lite for CPU: 1/4 features C = 16, concatenation volume over 64 px (16 planes),
    3-D aggregation A = 16 with one hourglass, soft argmin, refinement 16 wide; any
    :class:`StereoNetConfig` field may be overridden."""
    return StereoNet(config_from(StereoNetConfig, config))


@register_model(task="stereo_disparity")
def stereo_net(**config: Any) -> StereoNet:
    """The wider variant: C = 32, stem 32, A = 32, refinement 32, max_disp 192 (48 planes, the
    papers' range at full resolution); any :class:`StereoNetConfig` field may be overridden."""
    settings: dict[str, Any] = {
        "max_disp": 192,
        "feature_channels": 32,
        "stem_channels": 32,
        "aggregation_channels": 32,
        "refine_channels": 32,
    }
    return StereoNet(config_from(StereoNetConfig, {**settings, **config}))

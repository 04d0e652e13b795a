"""Monodepth (Godard, Mac Aodha, Brostow, CVPR 2017): monocular depth with left-right consistency.

Shape shorthand: B pairs (or single images), V views per item (2 for training, 1 at inference),
H x W input pixels, S = 4 output scales (strides 8, 4, 2, 1), h_s x w_s the size at scale s.

Architecture: an encoder (any registered backbone: ``forward_features`` maps at strides up to
``s_max``) and a decoder that climbs back to full resolution one factor of 2 at a time: each
level upsamples (nearest) and convolves ("upconv"), concatenates the encoder map of that stride
when there is one, and convolves again ("iconv"); ELU activations as the paper. The last four
levels (strides 8, 4, 2, 1) each predict **two** disparities, ``max_disparity * sigmoid`` (0.3 in
the paper) as fractions of the width: channel 0 the left view's, channel 1 the right view's,
both from the left image alone; the coarser one, upsampled, feeds the next level.

Training (self-supervised, no labels): with the right view given, the losses of
:mod:`structpred.heads.monodepth_loss` (appearance, edge-aware smoothness, left-right
consistency; ``lr_consistency=False`` drops the last). The right view is used only by the loss.

Convention: ``model(images, targets)`` takes ``Tensor[V, 3, H, W]`` items in [0, 1] (a list, or
one ``[B, V, 3, H, W]`` tensor), V = 2 (left, right) or V = 1 (left only). Losses are computed
when ``targets`` are given (B dicts; no key is required, e.g. ``[{}] * B``: the right view is the
supervision; evaluation labels in them are not read) **and** the right view is there; else
``{}`` (the contract: no targets, no losses). Predictions ``{"disparity": [B, 1, H, W]}`` are the
**left** disparity in **pixels of the input width** (fraction x W): left x matches right x - d.
Depth follows from the calibration: ``focal * baseline / (d + doffs)``. ``post_process`` (the
paper's flip-and-blend) also runs the mirrored left images in the same batch (training
included: the mirrored copies then share the batch statistics but get no loss) and blends
(:func:`~structpred.heads.monodepth_loss.post_process_disparity`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones.registry import check_backbone, get_backbone
from ..heads.monodepth_loss import ALPHA, LR_WEIGHT, SMOOTHNESS_WEIGHT, monodepth_loss, post_process_disparity
from ..layers.views import batch_views
from .contract import check_request
from .registry import register_model
from .segmenter import config_from

NUM_SCALES = 4


@dataclass
class MonoDepthConfig:
    """Monodepth settings; defaults are the paper's (ResNet-50 encoder, trained from scratch)."""

    backbone: str = "resnet50"
    backbone_args: dict[str, Any] = field(default_factory=dict)
    decoder_widths: tuple[int, ...] = (256, 128, 64, 32, 16)  # strides s_max / 2 ... 1
    max_disparity: float = 0.3  # fraction of the width
    alpha: float = ALPHA
    smoothness_weight: float = SMOOTHNESS_WEIGHT
    lr_weight: float = LR_WEIGHT
    lr_consistency: bool = True
    smoothness_directions: str = "xy"
    post_process: bool = False
    min_size: int = 32  # the coarsest disparity (stride 8) needs >= 3 x 3 for SSIM: 24 px; 32 for margin


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    """3 x 3 conv + ELU (the reference's ``conv``)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ELU(inplace=True))


class DisparityDecoder(nn.Module):
    """Upconv / skip / iconv levels from stride ``s_max`` to 1; 2-channel disparities at the last 4.

    Args:
        in_channels: the encoder maps' channels by name, finest first (the backbone's ``out_channels``).
        strides: their strides (powers of 2; the coarsest ``s_max >= 16``).
        widths: one channel count per decoder level, strides ``s_max / 2, ..., 2, 1``.
        max_disparity: the sigmoid's scale (fraction of the width).
    """

    def __init__(
        self,
        in_channels: dict[str, int],
        strides: dict[str, int],
        widths: Sequence[int],
        max_disparity: float = 0.3,
    ) -> None:
        super().__init__()
        s_max = max(strides.values())
        if any(s & (s - 1) for s in strides.values()) or s_max < 2**NUM_SCALES:
            raise ValueError(f"DisparityDecoder: strides must be powers of 2 reaching >= 16, got {strides}")
        level_strides = [s_max >> k for k in range(1, s_max.bit_length())]  # s_max / 2, ..., 1
        if len(widths) != len(level_strides) or any(w < 1 for w in widths):
            raise ValueError(
                f"DisparityDecoder: widths needs {len(level_strides)} positive channel counts (strides "
                f"{level_strides}), got {tuple(widths)}"
            )
        if max_disparity <= 0:
            raise ValueError(f"DisparityDecoder: max_disparity must be > 0, got {max_disparity}")
        self.max_disparity = max_disparity
        self.top = max(strides, key=lambda k: strides[k])  # the coarsest map's name
        by_stride = {s: name for name, s in strides.items()}
        self.level_strides = level_strides
        self.skips = [by_stride.get(s) for s in level_strides]  # encoder map per level, or None
        self.upconvs, self.iconvs, self.heads = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        first_disp = len(level_strides) - NUM_SCALES
        c_prev = in_channels[self.top]
        for k, (width, skip) in enumerate(zip(widths, self.skips, strict=True)):
            self.upconvs.append(_conv(c_prev, width))
            c_cat = width + (in_channels[skip] if skip is not None else 0) + (2 if k > first_disp else 0)
            self.iconvs.append(_conv(c_cat, width))
            if k >= first_disp:
                self.heads.append(nn.Conv2d(width, 2, 3, padding=1))
            c_prev = width
        self.first_disp = first_disp

    def forward(self, features: dict[str, Tensor], size: tuple[int, int]) -> list[Tensor]:
        """Encoder maps + input ``(H, W)`` -> 4 disparities ``[B, 2, h_s, w_s]`` finest first
        (fractions of the width; a level without a skip has side ``ceil(H / stride)``)."""
        H, W = size
        x = features[self.top]
        disp: Tensor | None = None
        out: list[Tensor] = []
        for k, stride in enumerate(self.level_strides):
            skip = self.skips[k]
            if skip is not None:
                target = (int(features[skip].shape[-2]), int(features[skip].shape[-1]))
            else:
                target = (-(-H // stride), -(-W // stride))
            x = self.upconvs[k](F.interpolate(x, size=target, mode="nearest"))  # (B, width, h, w)
            parts = [x] if skip is None else [x, features[skip]]
            if disp is not None:
                parts.append(F.interpolate(disp, size=target, mode="nearest"))  # (B, 2, h, w)
            x = self.iconvs[k](torch.cat(parts, dim=1))
            if k >= self.first_disp:
                disp = self.max_disparity * torch.sigmoid(self.heads[k - self.first_disp](x))  # (B, 2, h, w)
                out.append(disp)
        return out[::-1]  # finest first


class MonoDepth(nn.Module):
    """Godard et al.'s model under the ``monocular_depth`` contract (module doc).

    Args:
        config: a :class:`MonoDepthConfig` (None: the paper's).
        encoder: a backbone (``forward_features``, ``out_channels``, ``strides``); None builds
            ``config.backbone`` with ``config.backbone_args``.
        decoder: None builds a :class:`DisparityDecoder` over the encoder's maps.
    """

    class_dependent_tensors: tuple[str, ...] = ()

    def __init__(
        self,
        config: MonoDepthConfig | None = None,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        c = config or MonoDepthConfig()
        if c.smoothness_directions not in ("xy", "x"):
            raise ValueError(
                f"MonoDepth: smoothness_directions must be 'xy' or 'x', got {c.smoothness_directions!r}"
            )
        if not isinstance(c.min_size, int) or c.min_size < 24:
            raise ValueError(f"MonoDepth: min_size must be an int >= 24, got {c.min_size!r}")
        self.config = c
        self.encoder = encoder if encoder is not None else get_backbone(c.backbone, **c.backbone_args)
        check_backbone(self.encoder, "MonoDepth")
        self.decoder = decoder or DisparityDecoder(
            self.encoder.out_channels,  # type: ignore[arg-type]
            self.encoder.strides,  # type: ignore[arg-type]
            c.decoder_widths,
            c.max_disparity,
        )
        self.post_process = c.post_process

    def disparities(self, left: Tensor) -> list[Tensor]:
        """The 4 scales' ``[B, 2, h_s, w_s]`` left / right disparities (fractions of the width,
        finest first) of ``left`` images ``[B, 3, H, W]`` in [0, 1]."""
        if not isinstance(left, Tensor) or left.dim() != 4 or left.shape[1] != 3:
            got = tuple(left.shape) if isinstance(left, Tensor) else type(left).__name__
            raise ValueError(f"MonoDepth.disparities: left must be a Tensor[B, 3, H, W], got {got}")
        H, W = int(left.shape[-2]), int(left.shape[-1])
        return self.decoder(self.encoder.forward_features(left), (H, W))  # type: ignore[operator]

    def forward(
        self,
        images: Sequence[Tensor] | Tensor,
        targets: Sequence[dict[str, Tensor]] | None = None,
        *,
        predict: bool = True,
    ) -> tuple[dict[str, Tensor] | None, dict[str, Tensor]]:
        """``images`` (items ``[V, 3, H, W]``, V = 2 pairs or 1 left view) ->
        ``({"disparity": [B, 1, H, W] px}, losses)``; losses need targets and the right view."""
        x = batch_views(images, None, "MonoDepth")  # (B, V, 3, H, W)
        B, V, _, H, W = x.shape
        if V not in (1, 2):
            raise ValueError(f"MonoDepth: items must hold 1 view (left) or 2 (left, right), got {V}")
        if H < self.config.min_size or W < self.config.min_size:
            raise ValueError(
                f"MonoDepth: images must be at least {self.config.min_size} px a side, got {H} x {W}"
            )
        if targets is not None and (not isinstance(targets, (list, tuple)) or len(targets) != B):
            n = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
            raise ValueError(f"MonoDepth: {n} targets for {B} items")
        check_request(targets is not None, predict, "MonoDepth")
        if not torch.compiler.is_exporting() and not bool(torch.isfinite(x).all()):
            raise ValueError("MonoDepth: the images contain NaN or infinite values")
        left = x[:, 0]  # (B, 3, H, W)
        net_in = torch.cat([left, left.flip(-1)]) if self.post_process else left  # (B or 2B, 3, H, W)
        disps = self.disparities(net_in)  # S x (B or 2B, 2, h_s, w_s)
        direct = [d[:B] for d in disps] if self.post_process else disps
        losses: dict[str, Tensor] = {}
        if V == 2 and targets is not None:
            c = self.config
            losses = monodepth_loss(
                direct,
                left,
                x[:, 1],
                alpha=c.alpha,
                smoothness_weight=c.smoothness_weight,
                lr_weight=c.lr_weight,
                lr_consistency=c.lr_consistency,
                smoothness_directions=c.smoothness_directions,
            )
        if not predict:
            return None, losses
        disp_left = direct[0][:, :1]  # (B, 1, H, W), fraction of the width
        if self.post_process:
            disp_left = post_process_disparity(disp_left, disps[0][B:, :1])
        return {"disparity": disp_left * W}, losses


# ----------------------------------------------------------------------------- builders


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups: batch-size independent, so train and eval agree."""
    return nn.GroupNorm(min(8, channels), channels)


@register_model(task="monocular_depth")
def monodepth(**config: Any) -> MonoDepth:
    """Monodepth at the paper's width: ResNet-50 encoder (batch norm, from scratch), decoder
    256 / 128 / 64 / 32 / 16, 4 disparity scales; any :class:`MonoDepthConfig` field may be set."""
    c = config_from(MonoDepthConfig, config)
    if "backbone" not in config and "backbone_args" not in config:
        c.backbone_args = {"norm_layer": nn.BatchNorm2d}
    return MonoDepth(c)


@register_model(task="monocular_depth")
def monodepth_narrow(**config: Any) -> MonoDepth:
    """Monodepth on the narrow backbone (widths 16-128, GroupNorm), decoder 64 / 32 / 16 / 16 / 8:
    trains from scratch on a CPU in minutes at 128 x 256."""
    defaults: dict[str, Any] = {
        "backbone": "narrow",
        "backbone_args": {"widths": (16, 32, 64, 128), "norm_layer": _group_norm},
        "decoder_widths": (64, 32, 16, 16, 8),
    }
    return MonoDepth(config_from(MonoDepthConfig, {**defaults, **config}))

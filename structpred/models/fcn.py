"""FCN-32s / 16s / 8s: Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic
Segmentation" (CVPR 2015).

VGG-16 made fully convolutional: its fc6 becomes a 7x7 conv (4096), fc7 a 1x1 conv (4096), each
followed by ReLU and dropout, and ``score_fr`` (1x1 conv to K) scores every stride-32 cell.
"Upconvolution" (a transposed conv initialised to bilinear interpolation) brings the scores back
to the input's resolution:

    FCN-32s: score_fr --32x--> crop
    FCN-16s: score_fr --2x--> (+ score_pool4) --16x--> crop
    FCN-8s:  score_fr --2x--> (+ score_pool4) --2x--> (+ score_pool3) --8x--> crop

The skip scorers ``score_pool4`` / ``score_pool3`` start at zero, so a skip net starts as the
coarser one; the 2x upsamplers learn, the final one stays bilinear (the paper's setting).

Shape shorthand: B images, K classes, H x W input, F = fc width, hs x ws a stride-s map.

Convention:
    * conv1_1 pads by ``pad`` = 100 and the pools round up (Caffe), so any input survives fc6's
      valid 7x7 conv; every map's placement on the input is tracked as a
      :class:`structpred.heads.fcn_head.Grid` computed from the layers themselves, and the crops
      (the paper's fixed offsets: 19 for 32s; 5 and 27 for 16s; 5, 9 and 31 for 8s) follow from
      it, so the output is aligned with the input, pixel for pixel, for any input size and any
      ``pad`` / ``fc6_padding``. :meth:`FCN.crop_offsets` reports them.
    * Differences from the paper: ``batch_norm`` (off by default; the paper had none) and
      ``width_div`` / ``fc_channels`` / ``pad`` / ``fc6_padding`` exist for the small CPU variants
      (``fcn*_narrow``); the paper's staged training (32s -> 16s -> 8s) and its fixed learning
      rates are a training recipe, not part of the model.
    * Net surgery: :meth:`FCN.load_torchvision_vgg16` fills the trunk and fc6 / fc7 from a
      torchvision ``vgg16`` state dict (the Linear fc weights reshaped to convs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..backbones.vgg import VGG16, vgg16
from ..heads.fcn_head import BilinearUpsample, Grid, align, crop_to_input, grid_after
from .registry import register_model
from .segmenter import SegmenterConfig, SemanticSegmenter, config_from

STRIDES = (32, 16, 8)


class FCN(nn.Module):
    """Normalised ``[B, 3, H, W]`` -> ``{"out": [B, K, H, W]}`` logits; see the module doc.

    Args:
        num_classes: K, background included.
        stride: 32, 16 or 8 (FCN-32s / 16s / 8s).
        backbone: a :class:`VGG16`; ``None`` builds the paper's (``conv1_padding=100``, Caffe's
            round-up pooling). Its taps ``pool3`` / ``pool4`` / ``pool5`` are used.
        fc_channels: F, the width of fc6 / fc7 (4096).
        fc6_kernel, fc6_padding: fc6 as a conv (VGG's 7x7 on pool5, unpadded).
        dropout: after fc6 and fc7 (0.5).
        batch_norm: BN after fc6 / fc7 (not in the paper; pair it with a BN backbone).
        learn_final_upsample: train the last upsampler too (the paper keeps it bilinear).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        stride: int = 32,
        backbone: VGG16 | None = None,
        fc_channels: int = 4096,
        fc6_kernel: int = 7,
        fc6_padding: int = 0,
        dropout: float = 0.5,
        batch_norm: bool = False,
        learn_final_upsample: bool = False,
    ) -> None:
        super().__init__()
        if stride not in STRIDES:
            raise ValueError(f"FCN: stride must be one of {STRIDES} (FCN-32s/16s/8s), got {stride}")
        if num_classes < 1 or fc_channels < 1 or fc6_kernel < 1 or fc6_padding < 0:
            raise ValueError(
                f"FCN: bad sizes num_classes={num_classes}, fc_channels={fc_channels}, "
                f"fc6_kernel={fc6_kernel}, fc6_padding={fc6_padding}"
            )
        self.stride = stride
        self.backbone = backbone if backbone is not None else vgg16(conv1_padding=100, ceil_mode=True)
        c = self.backbone.out_channels
        K = num_classes
        self.fc6 = nn.Conv2d(c["pool5"], fc_channels, fc6_kernel, padding=fc6_padding)
        self.bn6 = nn.BatchNorm2d(fc_channels) if batch_norm else nn.Identity()
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.bn7 = nn.BatchNorm2d(fc_channels) if batch_norm else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.score_fr = nn.Conv2d(fc_channels, K, 1)
        for fc in (self.fc6, self.fc7):
            nn.init.kaiming_normal_(fc.weight, mode="fan_out", nonlinearity="relu")
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)
        # The skip scorers and their 2x upsamplers, coarse to fine ("upscore2", "upscore_pool4").
        self.score_pool4 = nn.Conv2d(c["pool4"], K, 1) if stride <= 16 else None
        self.upscore2 = BilinearUpsample(K, 2) if stride <= 16 else None
        self.score_pool3 = nn.Conv2d(c["pool3"], K, 1) if stride <= 8 else None
        self.upscore_pool4 = BilinearUpsample(K, 2) if stride <= 8 else None
        self.upscore = BilinearUpsample(K, stride, learnable=learn_final_upsample)
        for score in (self.score_fr, self.score_pool4, self.score_pool3):
            if score is not None:  # the paper zero-initialises every scoring layer
                nn.init.zeros_(score.weight)
                if score.bias is not None:
                    nn.init.zeros_(score.bias)
        self._tap_grids = self._trunk_grids()

    def _trunk_grids(self) -> dict[str, Grid]:
        """Grid of each tap (and of ``score_fr``), from the trunk's layers."""
        features = self.backbone.features
        grids = {name: grid_after(features[: i + 1]) for name, i in self.backbone.tap_indices.items()}
        grids["score_fr"] = grid_after([self.fc6, self.fc7], grids["pool5"])
        return grids

    def _skips(self) -> list[tuple[str, nn.Module, BilinearUpsample]]:
        """``(tap, scorer, upsampler)`` fused in order, coarse to fine."""
        out: list[tuple[str, nn.Module, BilinearUpsample]] = []
        if self.score_pool4 is not None and self.upscore2 is not None:
            out.append(("pool4", self.score_pool4, self.upscore2))
        if self.score_pool3 is not None and self.upscore_pool4 is not None:
            out.append(("pool3", self.score_pool3, self.upscore_pool4))
        return out

    def crop_offsets(self) -> dict[str, int]:
        """The paper's crop offsets: cells cut from the start of each skip score map (negative:
        cut from the upsampled map instead), and pixels cut from the start of the final
        upsampled map (``"final"``). They do not depend on the input size."""
        out: dict[str, int] = {}
        grid = self._tap_grids["score_fr"]
        for tap, _, up in self._skips():
            g_up = grid_after([up], grid)
            cells = (g_up.offset - self._tap_grids[tap].offset) / g_up.stride
            out[tap] = int(round(cells))
            grid = Grid(g_up.stride, max(g_up.offset, self._tap_grids[tap].offset))
        out["final"] = int(round(-grid_after([self.upscore], grid).offset))
        return out

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """x: normalised ``[B, 3, H, W]`` -> ``{"out": [B, K, H, W]}``."""
        H, W = x.shape[-2:]
        feats = self.backbone.forward_features(x)
        h5, w5 = feats["pool5"].shape[-2:]
        reach = self.fc6.kernel_size[0] - 2 * int(self.fc6.padding[0])  # padding is an int pair here
        if min(h5, w5) < reach:
            raise ValueError(
                f"FCN: a {H}x{W} input gives a {h5}x{w5} pool5, smaller than fc6's {reach}x{reach} "
                "valid window; pad more (conv1_1 padding, fc6_padding) or use larger images"
            )
        h = self.dropout(self.relu(self.bn6(self.fc6(feats["pool5"]))))  # (B, F, h32, w32)
        h = self.dropout(self.relu(self.bn7(self.fc7(h))))
        score, grid = self.score_fr(h), self._tap_grids["score_fr"]  # (B, K, h32, w32)
        for tap, scorer, up in self._skips():
            up_score = up(score)  # (B, K, 2 * h + 2, 2 * w + 2)
            up_score, skip, grid = align(
                up_score, grid_after([up], grid), scorer(feats[tap]), self._tap_grids[tap]
            )
            score = up_score + skip  # (B, K, h16, w16), then (B, K, h8, w8)
        out = self.upscore(score)  # (B, K, s * (h - 1) + 2s, ...)
        return {"out": crop_to_input(out, grid_after([self.upscore], grid), (H, W))}

    def load_torchvision_vgg16(self, state_dict: Mapping[str, Tensor]) -> None:
        """Net surgery: ``features.*`` into the trunk, ``classifier.0`` / ``classifier.3`` (Linear
        25088 -> 4096 -> 4096) reshaped into fc6 (``[4096, 512, 7, 7]``) / fc7 (``[4096, 4096, 1, 1]``)."""
        own = self.backbone.features.state_dict()
        trunk = {k[len("features.") :]: v for k, v in state_dict.items() if k.startswith("features.")}
        if set(trunk) != set(own):
            raise ValueError(
                f"state dict features do not match the trunk: {sorted(set(own) ^ set(trunk))[:6]}"
            )
        fc: dict[nn.Conv2d, tuple[Tensor, Tensor]] = {}
        for src, conv in (("classifier.0", self.fc6), ("classifier.3", self.fc7)):
            w, b = state_dict.get(f"{src}.weight"), state_dict.get(f"{src}.bias")
            bias = conv.bias
            assert bias is not None
            if w is None or b is None or w.numel() != conv.weight.numel() or b.shape != bias.shape:
                raise ValueError(
                    f"{src}: no tensor of {conv.weight.numel()} weights for {tuple(conv.weight.shape)}"
                )
            fc[conv] = (w.reshape(conv.weight.shape), b)  # (F, C * k * k) -> (F, C, k, k)
        for k, v in trunk.items():
            if v.shape != own[k].shape:
                raise ValueError(
                    f"features.{k}: shape {tuple(v.shape)}, the trunk needs {tuple(own[k].shape)}"
                )
        with torch.no_grad():
            self.backbone.features.load_state_dict(trunk)
            for conv, (w, b) in fc.items():
                conv.weight.copy_(w)
                if conv.bias is not None:  # always: fc6 / fc7 have biases
                    conv.bias.copy_(b)


@dataclasses.dataclass
class FCNConfig(SegmenterConfig):
    """The knobs of :func:`build_fcn`; defaults are the paper's (VGG-16, PASCAL VOC's 21 classes)."""

    stride: int = 32
    width_div: int = 1  # divides VGG's widths 64 .. 512
    fc_channels: int = 4096
    fc6_kernel: int = 7
    fc6_padding: int = 0
    pad: int = 100  # conv1_1's zero padding
    dropout: float = 0.5
    batch_norm: bool = False  # the paper had none
    learn_final_upsample: bool = False


def build_fcn(config: FCNConfig) -> SemanticSegmenter:
    """A :class:`SemanticSegmenter` around :class:`FCN` on a VGG-16 trunk, both from ``config``."""
    c = config
    backbone = vgg16(width_div=c.width_div, batch_norm=c.batch_norm, conv1_padding=c.pad, ceil_mode=True)
    net = FCN(
        c.num_classes,
        stride=c.stride,
        backbone=backbone,
        fc_channels=c.fc_channels,
        fc6_kernel=c.fc6_kernel,
        fc6_padding=c.fc6_padding,
        dropout=c.dropout,
        batch_norm=c.batch_norm,
        learn_final_upsample=c.learn_final_upsample,
    )
    return SemanticSegmenter(net, c)


# CPU variants: VGG-16's topology at 1/8 width (8 .. 64 channels) with batch norm, fc 256, a
# conv1_1 padded by 1 and a padded fc6, so 128 x 128 images cost ~0.1 GFLOP each.
_NARROW: dict[str, Any] = {
    "width_div": 8, "fc_channels": 256, "pad": 1, "fc6_padding": 3, "dropout": 0.1, "batch_norm": True,
}  # fmt: skip


def _build(
    stride: int, defaults: dict[str, Any], num_classes: int, target_key: str, config: dict[str, Any]
) -> SemanticSegmenter:
    if "stride" in config:
        raise ValueError(f"the fcn{stride}s builders fix stride={stride}; pick fcn32s_* / fcn16s_* / fcn8s_*")
    settings = {**defaults, **config, "num_classes": num_classes, "target_key": target_key, "stride": stride}
    return build_fcn(config_from(FCNConfig, settings))


@register_model(task="semantic_segmentation")
def fcn32s_vgg16(num_classes: int = 21, target_key: str = "semantic", **config: Any) -> SemanticSegmenter:
    """FCN-32s on VGG-16 (the paper's layout); ``num_classes`` counts background."""
    return _build(32, {}, num_classes, target_key, config)


@register_model(task="semantic_segmentation")
def fcn16s_vgg16(num_classes: int = 21, target_key: str = "semantic", **config: Any) -> SemanticSegmenter:
    """FCN-16s on VGG-16: + the pool4 skip."""
    return _build(16, {}, num_classes, target_key, config)


@register_model(task="semantic_segmentation")
def fcn8s_vgg16(num_classes: int = 21, target_key: str = "semantic", **config: Any) -> SemanticSegmenter:
    """FCN-8s on VGG-16: + the pool4 and pool3 skips."""
    return _build(8, {}, num_classes, target_key, config)


@register_model(task="semantic_segmentation")
def fcn32s_narrow(num_classes: int = 7, target_key: str = "semantic", **config: Any) -> SemanticSegmenter:
    """FCN-32s, 1/8-width VGG-16 with BN, for CPU training (shapes world: 7 classes incl. background)."""
    return _build(32, _NARROW, num_classes, target_key, config)


@register_model(task="semantic_segmentation")
def fcn16s_narrow(num_classes: int = 7, target_key: str = "semantic", **config: Any) -> SemanticSegmenter:
    """FCN-16s, the narrow trunk of :func:`fcn32s_narrow`."""
    return _build(16, _NARROW, num_classes, target_key, config)


@register_model(task="semantic_segmentation")
def fcn8s_narrow(num_classes: int = 7, target_key: str = "semantic", **config: Any) -> SemanticSegmenter:
    """FCN-8s, the narrow trunk of :func:`fcn32s_narrow`."""
    return _build(8, _NARROW, num_classes, target_key, config)

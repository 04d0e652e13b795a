"""U-Net (Ronneberger, Fischer, Brox, MICCAI 2015): a contracting and an expanding path with skips.

Shape shorthand: B images, C channels, K classes (background included), H x W input pixels,
D depth (number of 2 x 2 poolings), s a tile's input side, o its output side.

Architecture (the paper's Fig. 1 for ``base_channels=64, depth=4``): a contracting path of D
levels, each two 3 x 3 convolutions + ReLU then a 2 x 2 max-pool, channels ``base * 2^i`` at
level ``i``; a bottom level of two convolutions (``base * 2^D`` channels); an expanding path of
D levels, each a 2 x 2 stride-2 up-convolution halving the channels, concatenation with the
contracting path's map of that level (centre-cropped to the same size), two 3 x 3 convolutions
+ ReLU; a final 1 x 1 convolution to K classes. Optional dropout after the bottom level (the
paper has "drop-out layers at the end of the contracting path" without a rate; default off).

Convention (``padding="valid"``, the paper's): the convolutions are unpadded, so each takes 2 px
off a side; every level's two convolutions take 4. A 2 x 2 pool needs an even side. With ``b``
the bottom's side after its convolutions::

    o = 2^D * b - 4 * (2^D - 1)        s = 2^D * (b + 4) + 4 * (2^D - 1)

so the margin ``s - o = 12 * 2^D - 8`` is the same for every tile (184 px for D = 4: 92 on each
side) and valid sides step by ``2^D``: D = 4, b = 28 gives the paper's 572 -> 388. Between a
skip map and the up-sampled map it joins the size difference is even (for D = 4 from the
bottom: 64 - 56, 136 - 104, 280 - 200, 568 - 392), so the centre crop is exact.

Overlap-tile (the paper's Fig. 2), which keeps the segmenter contract "output size == input
size": for an H x W input :meth:`UNet.forward` takes the smallest valid output ``o_h >= H``,
``o_w >= W``, mirrors (reflects) the image by ``margin / 2`` on the top / left and
``margin / 2 + o - H`` (``+ o - W``) on the bottom / right, runs the bare network
(:meth:`UNet.tile`) and crops the output tile, which lies exactly over the input, to H x W.
One tile covers the whole image (the paper tiles large images; our crops fit in one).

``padding="same"``: padded convolutions keep sizes; the input is mirrored on the bottom / right
to a multiple of ``2^D`` and the output cropped back. Nothing is cropped at the skips.

Initialisation (the paper's): weights ``N(0, sqrt(2 / N))`` with N the incoming nodes of a
unit: ``k * k * C_in`` for a k x k convolution, ``C_in`` for the 2 x 2 stride-2 up-convolution
(each output pixel sees one tap per input channel); biases 0.

Batch norm (``batch_norm=True``) is not in the paper (2015); it adds BN after every 3 x 3
convolution (before the ReLU; the convolution then has no bias). From-scratch training with
small batches on a CPU converges much faster with it, hence ``unet_narrow`` uses it.

Loss (:mod:`structpred.ops.weight_map`): the training labels get the paper's separation
borders (touching instances' contact pixels become background, ``separation_border``), then
the weighted cross-entropy with ``w(x) = w_c(x) + w0 * exp(-(d1 + d2)^2 / (2 sigma^2))``
(``class_balance``; the border term on background, from ``target["masks"]``,
``boundary_weight``), averaged over non-ignored pixels: ``loss_seg = sum_x w(x) CE(x) / #valid``
(``w_c`` averages 1, so the scale matches plain cross-entropy). A map precomputed under
``config.weight_key`` (float[H, W]) in a target is used as is. Instances: connected components
of the predicted foreground (:meth:`UNetSegmenter.predict_instances`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.components import instances_from_semantic
from ..ops.mirror import center_crop, mirror_pad
from ..ops.weight_map import SIGMA, W0, separation_borders, unet_weight_map
from .registry import register_model
from .segmenter import SegmenterConfig, SemanticSegmenter, config_from

PADDINGS = ("valid", "same")


# ----------------------------------------------------------------------------- size helpers


def valid_output_size(size: int, depth: int) -> int:
    """Output side of the unpadded U-Net (module doc) for an input side ``size``.

    ``ValueError`` if a pool would meet an odd side or a side would vanish.
    """
    s = size
    for level in range(depth):
        s -= 4  # (s) -> (s - 4): two valid 3 x 3 convs
        if s <= 0 or s % 2:
            hint = valid_input_size(max(1, size - 12 * 2**depth + 8), depth)
            raise ValueError(
                f"input side {size} is not valid for an unpadded U-Net of depth {depth} "
                f"(side {s} before pool {level + 1}); the next valid side is {hint}"
            )
        s //= 2  # 2 x 2 max-pool
    s -= 4  # the bottom's two convs
    for _ in range(depth):
        if s <= 0:
            break
        s = 2 * s - 4  # 2 x 2 up-conv, then two convs
    if s <= 0:
        raise ValueError(
            f"input side {size} is too small for an unpadded U-Net of depth {depth}; "
            f"the smallest is {valid_input_size(1, depth)}"
        )
    return s


def valid_input_size(min_output: int, depth: int) -> int:
    """Smallest valid input side of the unpadded U-Net whose output side is ``>= min_output``."""
    f = 2**depth
    b = max(1, math.ceil((min_output + 4 * (f - 1)) / f))  # bottom side: o = f * b - 4 * (f - 1)
    return f * (b + 4) + 4 * (f - 1)


def valid_margin(depth: int) -> int:
    """Input side minus output side of the unpadded U-Net: ``12 * 2^depth - 8`` (184 for depth 4)."""
    return 12 * 2**depth - 8


# ----------------------------------------------------------------------------- blocks


class DoubleConv(nn.Sequential):
    """Two (3 x 3 conv [+ BN] + ReLU): ``[B, C_in, s, s] -> [B, C_out, s', s']`` (s' = s - 4 valid)."""

    def __init__(self, in_channels: int, out_channels: int, padding: int, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=padding, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def init_unet_(module: nn.Module) -> None:
    """The paper's init in place: ``N(0, sqrt(2 / incoming nodes))`` weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.ConvTranspose2d):  # weight (C_in, C_out, 2, 2), stride 2: one tap per C_in
            nn.init.normal_(m.weight, std=math.sqrt(2.0 / m.in_channels))
        elif isinstance(m, nn.Conv2d):  # weight (C_out, C_in, k, k)
            nn.init.normal_(
                m.weight, std=math.sqrt(2.0 / (m.in_channels * m.kernel_size[0] * m.kernel_size[1]))
            )
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class UNet(nn.Module):
    """The U-Net: normalised ``[B, C_in, H, W] -> {"out": [B, K, H, W]}`` for any H x W.

    :meth:`tile` is the bare network (valid: ``s -> o``, e.g. 572 -> 388); :meth:`forward`
    mirrors, tiles and crops as the module doc says.

    Args:
        num_classes: K output channels.
        in_channels: image channels.
        base_channels: channels of the first level (paper 64), doubled per level.
        depth: number of 2 x 2 poolings (paper 4).
        padding: ``"valid"`` (paper) or ``"same"``.
        batch_norm: BN after each 3 x 3 convolution (not in the paper).
        dropout: dropout probability after the bottom level (0: none).
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        base_channels: int = 64,
        depth: int = 4,
        padding: str = "valid",
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an int >= 1, got {depth!r}")
        if not isinstance(base_channels, int) or base_channels < 1 or num_classes < 1 or in_channels < 1:
            raise ValueError(
                f"channels must be positive ints, got base_channels={base_channels!r}, "
                f"num_classes={num_classes!r}, in_channels={in_channels!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.depth, self.padding = depth, padding
        pad = 1 if padding == "same" else 0
        widths = [base_channels * 2**i for i in range(depth + 1)]  # level i's channels
        self.down = nn.ModuleList(
            DoubleConv(in_channels if i == 0 else widths[i - 1], widths[i], pad, batch_norm)
            for i in range(depth)
        )
        self.bottom = DoubleConv(widths[depth - 1], widths[depth], pad, batch_norm)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Expanding path, deepest first: up-conv halves the channels, the concat doubles them back.
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.up_blocks = nn.ModuleList(
            DoubleConv(2 * widths[i], widths[i], pad, batch_norm) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        init_unet_(self)

    def tile(self, x: Tensor) -> Tensor:
        """The bare network: ``[B, C_in, s_h, s_w] -> [B, K, o_h, o_w]`` logits.

        Valid: ``o = valid_output_size(s)`` (``ValueError`` for an invalid side); same: ``o = s``,
        a multiple of ``2^depth``.
        """
        self._check_tile(x)
        skips = []
        for block in self.down:
            x = block(x)  # (B, C_in, s, s) -> (B, C_i, s - 4, s - 4)  [valid; same keeps s]
            skips.append(x)
            x = F.max_pool2d(x, 2)  # (B, C_i, s', s') -> (B, C_i, s' / 2, s' / 2)
        x = self.dropout(self.bottom(x))  # (B, C_D, b, b)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips), strict=True):
            x = up(x)  # (B, C_{i+1}, e, e) -> (B, C_i, 2e, 2e)
            x = torch.cat([center_crop(skip, x.shape[-2:]), x], dim=1)  # (B, 2 C_i, 2e, 2e)
            x = block(x)  # (B, 2 C_i, 2e, 2e) -> (B, C_i, 2e - 4, 2e - 4)  [valid]
        return self.head(x)  # (B, C_0, o, o) -> (B, K, o, o)

    def _check_tile(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"UNet input must be [B, C, H, W], got {tuple(x.shape)}")
        for side in x.shape[-2:]:
            if self.padding == "valid":
                valid_output_size(side, self.depth)  # raises for an invalid side
            elif side % 2**self.depth:
                raise ValueError(
                    f"UNet(padding='same', depth={self.depth}) needs sides divisible by "
                    f"{2**self.depth}, got {tuple(x.shape[-2:])}"
                )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``[B, C_in, H, W] -> {"out": [B, K, H, W]}``: mirror, :meth:`tile`, crop (module doc)."""
        H, W = x.shape[-2:]
        if self.padding == "valid":
            half = valid_margin(self.depth) // 2
            out_h, out_w = (
                valid_input_size(H, self.depth) - 2 * half,
                valid_input_size(W, self.depth) - 2 * half,
            )
            # (B, C, H, W) -> (B, C, out_h + margin, out_w + margin): the tile's output lies over the input
            x = mirror_pad(x, half, half + out_h - H, half, half + out_w - W)
        else:
            f = 2**self.depth
            x = mirror_pad(x, 0, -H % f, 0, -W % f)  # (B, C, H, W) -> (B, C, ceil(H/f) f, ceil(W/f) f)
        out = self.tile(x)  # (B, K, >= H, >= W)
        return {"out": out[..., :H, :W]}  # (B, K, H, W)


# ----------------------------------------------------------------------------- model


@dataclass
class UNetConfig(SegmenterConfig):
    """U-Net settings; defaults are the paper's (``target_key`` etc. from :class:`SegmenterConfig`)."""

    num_classes: int = 2
    base_channels: int = 64
    depth: int = 4
    padding: str = "valid"
    batch_norm: bool = False
    dropout: float = 0.0
    class_balance: bool = True  # w_c in the loss weight map
    class_weights: tuple[float, ...] | None = None  # fixed w_c per class (None: per label map)
    boundary_weight: bool = True  # the w0 exp(-(d1 + d2)^2 / 2 sigma^2) term, from target["masks"]
    separation_border: bool = True  # touching instances' contact pixels -> background (training labels)
    w0: float = W0
    sigma: float = SIGMA
    background: int = 0  # the class whose pixels get the border term; not an instance
    masks_key: str = "masks"
    weight_key: str = "weight_map"  # a precomputed float[H, W] map in a target, used if present


class UNetSegmenter(SemanticSegmenter):
    """U-Net under the segmenter contract, with the paper's weighted loss (module doc).

    Args:
        config: a :class:`UNetConfig` (None: the paper's).
        net: the network (None: the :class:`UNet` the config describes).
    """

    def __init__(self, config: UNetConfig | None = None, net: nn.Module | None = None) -> None:
        c = config or UNetConfig()
        if not c.sigma > 0:
            raise ValueError(f"sigma must be positive, got {c.sigma}")
        if c.class_weights is not None and len(c.class_weights) != c.num_classes:
            raise ValueError(f"class_weights has {len(c.class_weights)} entries for {c.num_classes} classes")
        if not 0 <= c.background < c.num_classes:
            raise ValueError(f"background={c.background} is not a class of 0..{c.num_classes - 1}")
        if net is None:
            net = UNet(c.num_classes, 3, c.base_channels, c.depth, c.padding, c.batch_norm, c.dropout)
        super().__init__(net, c)
        self.config: UNetConfig = c

    def _masks(self, i: int, target: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
        """``target``'s instance masks uint8[N, H, W], checked (they are needed)."""
        key = self.config.masks_key
        if key not in target:
            raise ValueError(
                f"targets[{i}] has no {key!r} (uint8[N, H, W] instance masks), needed by "
                "boundary_weight / separation_border; set those to False or add the masks"
            )
        masks = target[key]
        if not isinstance(masks, Tensor) or masks.dim() != 3 or tuple(masks.shape[-2:]) != size:
            desc = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
            raise ValueError(f"targets[{i}][{key!r}] must be [N, {size[0]}, {size[1]}] masks, got {desc}")
        return masks

    def training_labels(self, labels: Tensor, targets: Sequence[dict[str, Tensor]]) -> Tensor:
        """``labels int64[B, H, W]`` with separation borders (module doc) if the config asks."""
        c = self.config
        if not c.separation_border:
            return labels
        size = (labels.shape[1], labels.shape[2])
        cut = [
            separation_borders(labels[i], self._masks(i, t, size), c.background)
            for i, t in enumerate(targets)
        ]
        return torch.stack(cut)  # (B, H, W)

    def weight_maps(self, labels: Tensor, targets: Sequence[dict[str, Tensor]]) -> Tensor:
        """The loss weight map of every target: float32[B, H, W] (module doc)."""
        c = self.config
        B, H, W = labels.shape
        class_weights = None if c.class_weights is None else torch.tensor(c.class_weights)
        maps = []
        for i, t in enumerate(targets):
            if c.weight_key in t:  # precomputed
                w = t[c.weight_key]
                if not isinstance(w, Tensor) or not w.is_floating_point() or tuple(w.shape) != (H, W):
                    desc = f"{w.dtype} {tuple(w.shape)}" if isinstance(w, Tensor) else type(w).__name__
                    raise ValueError(
                        f"targets[{i}][{c.weight_key!r}] must be a float Tensor[{H}, {W}], got {desc}"
                    )
                maps.append(w.to(labels.device, torch.float32))
                continue
            masks = (
                self._masks(i, t, (H, W)) if c.boundary_weight else torch.zeros(0, H, W, dtype=torch.uint8)
            )
            w0 = c.w0 if c.boundary_weight else 0.0
            args = (c.num_classes, w0, c.sigma, c.class_balance, c.background, c.ignore_index, class_weights)
            maps.append(unet_weight_map(labels[i], masks, *args))
        return torch.stack(maps)  # (B, H, W)

    def loss(
        self, outputs: dict[str, Tensor], labels: Tensor, targets: Sequence[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """``loss_seg``: weighted cross-entropy ``sum w * CE / #valid`` (plain CE without weights)."""
        c = self.config
        labels = self.training_labels(labels, targets)
        if not (c.class_balance or c.boundary_weight) and not any(c.weight_key in t for t in targets):
            return super().loss(outputs, labels, targets)
        logits = outputs["out"]  # (B, K, H, W)
        weights = self.weight_maps(labels, targets).to(logits.dtype)  # (B, H, W)
        ce = F.cross_entropy(logits, labels, ignore_index=c.ignore_index, reduction="none")  # (B, H, W)
        valid = (labels != c.ignore_index).sum().clamp(min=1)
        return {"loss_seg": (weights * ce).sum() / valid}

    @torch.no_grad()
    def predict_instances(
        self, images: Sequence[Tensor] | Tensor, foreground: Sequence[int] = (1,), min_pixels: int = 1
    ) -> list[Tensor]:
        """Per image, uint8[P, H, W] instance masks: connected components of the predicted
        ``foreground`` classes (4-connected; components below ``min_pixels`` dropped)."""
        was_training = self.training
        self.eval()
        preds, _ = self(images)
        self.train(was_training)
        assert preds is not None
        labels = preds["label_map"]  # (B, H, W)
        return [instances_from_semantic(m, foreground, min_pixels) for m in labels]


# ----------------------------------------------------------------------------- builders


@register_model(task="semantic_segmentation")
def unet(num_classes: int = 2, target_key: str = "semantic", **config: Any) -> UNetSegmenter:
    """The paper's U-Net: valid convolutions, 64 base channels, depth 4, weighted loss (w0 = 10,
    sigma = 5, separation borders), no batch norm; ``num_classes`` counts background. Any
    :class:`UNetConfig` field may be overridden."""
    return UNetSegmenter(
        config_from(UNetConfig, {"num_classes": num_classes, "target_key": target_key, **config})
    )


@register_model(task="semantic_segmentation")
def unet_narrow(num_classes: int = 2, target_key: str = "semantic", **config: Any) -> UNetSegmenter:
    """The same U-Net for CPU training: 16 base channels, depth 4, ``same`` padding, batch norm;
    the paper's weighted loss unless overridden (``boundary_weight=False``...)."""
    settings: dict[str, Any] = {"base_channels": 16, "padding": "same", "batch_norm": True}
    overrides = {"num_classes": num_classes, "target_key": target_key, **config}
    return UNetSegmenter(config_from(UNetConfig, {**settings, **overrides}))

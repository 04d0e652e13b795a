"""VGG-16 (Simonyan & Zisserman 2015), configuration D, as Fast R-CNN and FCN use it.

``VGG16.features`` is an ``nn.Sequential`` with torchvision's indices (``features.0`` conv1_1 ..
``features.28`` conv5_3; ReLUs and max-pools in between, ``features.30`` = pool5), so
``load_state_dict(tv_vgg16.state_dict(), strict=False)`` fills it (``classifier.*`` unexpected).
With ``batch_norm=True`` the indices are ``vgg16_bn``'s (conv, BN, ReLU per layer). FCN's small
CPU variants use ``width_div`` (all widths divided) and ``conv1_padding`` / ``ceil_mode``.

``VGG16Head`` holds fc6 / fc7. Key mapping from torchvision's ``vgg16().classifier``:

    classifier.0.{weight,bias}  ->  fc6.{weight,bias}   (Linear 512*7*7 = 25088 -> 4096)
    classifier.3.{weight,bias}  ->  fc7.{weight,bias}   (Linear 4096 -> 4096)
    classifier.6                ->  (not kept: the 1000-way ImageNet layer)

``VGG16Head.load_torchvision_state_dict`` applies it.

Shape shorthand: B images, H x W input, N RoIs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ._common import check_images
from .registry import register_backbone

# Channels per conv, "M" = 2x2 max-pool with stride 2.
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip
# Full-width stride and channels of each named map (channels are divided by ``width_div``).
_STRIDES: dict[str, int] = {"pool3": 8, "pool4": 16, "c5": 16, "pool5": 32}
_CHANNELS: dict[str, int] = {"pool3": 256, "pool4": 512, "c5": 512, "pool5": 512}


class VGG16(nn.Module):
    """The 13 conv layers of VGG-16, with named taps.

    Args:
        trainable_from: index in ``features`` from which parameters train; Fast R-CNN freezes
            conv1_x and conv2_x, i.e. ``trainable_from=10`` (conv3_1). 0 trains everything.
        width_div: divides every width (64 .. 512 -> 64 / d .. 512 / d), for small CPU variants;
            1 (the default) is the paper's network and loads torchvision's ``vgg16`` weights.
        batch_norm: conv -> BN -> ReLU (torchvision's ``vgg16_bn`` layout) instead of conv -> ReLU.
            The paper had no batch norm; it helps from-scratch training.
        conv1_padding: zero padding of conv1_1 (1; FCN pads by 100, see ``models.fcn``).
        ceil_mode: round pooled sizes up, as Caffe does (FCN's reference nets); torchvision floors.
    """

    def __init__(
        self,
        *,
        trainable_from: int = 0,
        width_div: int = 1,
        batch_norm: bool = False,
        conv1_padding: int = 1,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        if width_div < 1 or 64 % width_div:
            raise ValueError(f"width_div must divide 64 (1, 2, 4, ..., 64), got {width_div}")
        if conv1_padding < 0:
            raise ValueError(f"conv1_padding must be >= 0, got {conv1_padding}")
        layers: list[nn.Module] = []
        pools: list[int] = []  # index in ``features`` of each max-pool
        c_in = 3
        for v in VGG16_CONFIG:
            if v == "M":
                pools.append(len(layers))
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode))
            else:
                assert isinstance(v, int)
                pad = conv1_padding if not layers else 1
                c_out = v // width_div
                layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=pad))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(c_out))
                layers.append(nn.ReLU(inplace=True))
                c_in = c_out
        self.features = nn.Sequential(*layers)
        if not 0 <= trainable_from <= len(self.features):
            raise ValueError(f"trainable_from must be in [0, {len(self.features)}], got {trainable_from}")
        # Output index in ``features`` of each named map (16, 23, 29, 30 without batch norm).
        self.tap_indices: dict[str, int] = {
            "pool3": pools[2], "pool4": pools[3], "c5": pools[4] - 1, "pool5": pools[4],
        }  # fmt: skip
        self.out_channels: dict[str, int] = {k: c // width_div for k, c in _CHANNELS.items()}
        self.strides: dict[str, int] = dict(_STRIDES)
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for i, m in enumerate(self.features):
            for p in m.parameters():
                p.requires_grad_(i >= trainable_from)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """x: ``[B, 3, H, W]`` -> ``pool3 [B, 256, H/8, W/8]``, ``pool4 [B, 512, H/16, W/16]``,
        ``c5`` (conv5_3 after ReLU, no pool5) ``[B, 512, H/16, W/16]``, ``pool5 [B, 512, H/32, W/32]``.

        The pools floor odd sizes (``ceil_mode=False``, torchvision) or round them up (Caffe);
        with ``conv1_padding != 1`` every map is ``2 * (conv1_padding - 1)`` pixels larger first.
        """
        check_images(x, 3, "VGG16.forward_features")
        names = {i: name for name, i in self.tap_indices.items()}
        out: dict[str, Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in names:
                out[names[i]] = x
        return {k: out[k] for k in ("pool3", "pool4", "c5", "pool5")}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Same as ``forward_features``."""
        return self.forward_features(x)


class VGG16Head(nn.Module):
    """fc6 -> ReLU -> dropout -> fc7 -> ReLU -> dropout, on pooled ``[N, 512, 7, 7]`` regions.

    Args:
        in_features: flattened input size (``512 * 7 * 7`` for 7x7 RoI pooling).
        hidden: fc6 / fc7 width.
        dropout: drop probability after each layer (0.5 in the paper).
    """

    def __init__(self, in_features: int = 512 * 7 * 7, hidden: int = 4096, dropout: float = 0.5) -> None:
        super().__init__()
        self.in_features = in_features
        self.fc6 = nn.Linear(in_features, hidden)
        self.fc7 = nn.Linear(hidden, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.out_features = hidden
        for fc in (self.fc6, self.fc7):
            nn.init.normal_(fc.weight, 0.0, 0.01)
            nn.init.zeros_(fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[N, 512, 7, 7]`` or ``[N, 25088]`` -> ``[N, 4096]``."""
        x = x.flatten(1)  # (N, 512, 7, 7) -> (N, 25088)
        if x.shape[1] != self.in_features:
            raise ValueError(f"VGG16Head expects {self.in_features} features per RoI, got {x.shape[1]}")
        x = self.dropout(self.relu(self.fc6(x)))  # (N, 4096)
        return self.dropout(self.relu(self.fc7(x)))  # (N, 4096)

    @staticmethod
    def torchvision_key_map() -> dict[str, str]:
        """torchvision ``vgg16`` key -> ours (see the module doc)."""
        return {f"classifier.{i}.{t}": f"fc{n}.{t}" for i, n in ((0, 6), (3, 7)) for t in ("weight", "bias")}

    def load_torchvision_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Copy fc6 / fc7 from a torchvision ``vgg16`` state dict (full model or ``classifier.*``)."""
        key_map = self.torchvision_key_map()
        missing = [k for k in key_map if k not in state_dict]
        if missing:
            raise ValueError(f"state dict lacks {missing}")
        own = self.state_dict()
        for src, dst in key_map.items():
            if tuple(state_dict[src].shape) != tuple(own[dst].shape):
                raise ValueError(
                    f"{src} has shape {tuple(state_dict[src].shape)}, {dst} needs {tuple(own[dst].shape)}"
                )
        with torch.no_grad():
            self.load_state_dict({dst: state_dict[src] for src, dst in key_map.items()})


@register_backbone("vgg16")
def vgg16(
    *,
    trainable_from: int = 0,
    width_div: int = 1,
    batch_norm: bool = False,
    conv1_padding: int = 1,
    ceil_mode: bool = False,
    output_stride: int = 32,
) -> VGG16:
    """VGG-16 conv trunk; ``out_channels = {pool3: 256, pool4: 512, c5: 512, pool5: 512}`` / ``width_div``
    (``output_stride`` must be 32: VGG-16 has no dilated variant here)."""
    if output_stride != 32:
        raise ValueError(f"vgg16: output_stride must be 32, got {output_stride!r}")
    return VGG16(
        trainable_from=trainable_from,
        width_div=width_div,
        batch_norm=batch_norm,
        conv1_padding=conv1_padding,
        ceil_mode=ceil_mode,
    )

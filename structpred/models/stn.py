"""Spatial Transformer Network classifier (Jaderberg et al., NeurIPS 2015) for distorted digits.

A :class:`~structpred.layers.stn.SpatialTransformer` in front of the small CNN classifier of
:mod:`structpred.models.classifier`: the localisation net predicts ``theta`` from the image, the
image is resampled through it (rectified) and the CNN classifies the rectified image. Trained
end to end on the classification loss alone. ``cnn_digits`` is the same classifier without
the transformer, a little wider so both have about the same number of parameters; the pair
is the comparison of ``experiments/stn_digits.py``.

Shape shorthand: B images, K classes, S input side (images are resized to S x S), P transform
parameters.

The classifier normalises images (``(x - mean) / std``) before its features; the transformer
is the first feature stage and warps ``x - bg``, ``bg = (0 - mean) / std`` the normalised black,
then adds ``bg`` back. As warping is linear, that equals warping the raw [0, 1] image with
zero (black) padding and normalising afterwards: outside the input the output is black, the
digits' background, not the grey a normalised 0 would be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..layers.stn import TRANSFORMS, SpatialTransformer
from .classifier import ClassifierConfig, SmallClassifier
from .registry import register_model


@dataclass
class STNClassifierConfig(ClassifierConfig):
    transform: str | None = "affine"  # None: no spatial transformer (the plain CNN)
    align_corners: bool = False
    loc_grad_scale: float = 1.0  # gradient (SGD: learning-rate) factor of the localisation net


class Rectifier(nn.Module):
    """A spatial transformer acting on normalised images as if on raw ones (module doc).

    ``forward(x [B, C, S, S]) -> warped [B, C, S, S]``; the last ``theta [B, 2, 3]`` is kept in
    ``self.theta`` (for pictures and diagnostics; not part of the graph's outputs).
    """

    def __init__(self, stn: SpatialTransformer, background: Tensor) -> None:
        super().__init__()
        self.stn = stn
        self.background: Tensor
        self.register_buffer("background", background.reshape(1, -1, 1, 1), persistent=False)
        self.theta: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        warped, theta = self.stn(x - self.background)  # (B, C, S, S), (B, 2, 3)
        self.theta = theta.detach()
        return warped + self.background


class STNClassifier(SmallClassifier):
    """:class:`SmallClassifier` whose features start with a :class:`Rectifier` (or not).

    Same contract: ``forward(images, targets=None) -> (predictions, losses)`` with per image
    ``{"class_logits": [K], "scores", "labels"}`` and ``{"loss_cls"}`` given ``{"labels": class}``
    targets. ``rectify(images)`` gives the rectified images in [0, 1] and their ``theta``.

    Args:
        config: sizes, normalisation and the transformer's settings.
        stn: the spatial transformer (None: the default one for ``config.transform``; ignored
            when ``config.transform`` is None).
    """

    def __init__(
        self, config: STNClassifierConfig | None = None, stn: SpatialTransformer | None = None
    ) -> None:
        c = config or STNClassifierConfig()
        if c.transform is not None and c.transform not in TRANSFORMS:
            raise ValueError(f"transform must be None or one of {tuple(TRANSFORMS)}, got {c.transform!r}")
        super().__init__(c)  # the plain CNN: its default conv features, pooling, dropout, linear head
        self.config: STNClassifierConfig = c
        if c.transform is not None:
            stn = stn or SpatialTransformer(
                None,
                in_channels=3,
                transform=c.transform,
                align_corners=c.align_corners,
                loc_grad_scale=c.loc_grad_scale,
            )
            background = -torch.tensor(c.mean) / torch.tensor(c.std)  # (3,): normalised black
            convs = list(self.features.children())  # the three conv blocks
            self.features = nn.Sequential(Rectifier(stn, background), *convs)

    @property
    def rectifier(self) -> Rectifier | None:
        """The transformer stage (first of ``features``), None for the plain CNN."""
        first = self.features[0] if isinstance(self.features, nn.Sequential) else None
        return first if isinstance(first, Rectifier) else None

    @torch.no_grad()
    def rectify(self, images: Sequence[Tensor] | Tensor) -> tuple[Tensor, Tensor]:
        """Images as the CNN sees them, back in [0, 1]: ``([B, 3, S, S], theta [B, 2, 3])``.

        Without a transformer they are the resized inputs and ``theta`` the identity.
        """
        x = self._batch(images)  # (B, 3, S, S), normalised
        rectifier = self.rectifier
        if rectifier is None:
            theta = torch.eye(2, 3, device=x.device).expand(x.shape[0], 2, 3)
        else:
            x = rectifier(x)
            assert rectifier.theta is not None
            theta = rectifier.theta
        return (x * self.std + self.mean).clamp(0.0, 1.0), theta


@register_model(task="classification")
def stn_digits(
    num_classes: int = 10,
    width: int = 32,
    input_size: int = 32,
    dropout: float = 0.1,
    transform: str = "affine",
    loc_grad_scale: float = 1.0,
    align_corners: bool = False,
) -> STNClassifier:
    """Spatial transformer (``transform``: affine, similarity, translation_scale) + the small CNN."""
    return STNClassifier(
        STNClassifierConfig(
            num_classes,
            width,
            input_size,
            dropout,
            transform=transform,
            align_corners=align_corners,
            loc_grad_scale=loc_grad_scale,
        )
    )


@register_model(task="classification")
def cnn_digits(
    num_classes: int = 10, width: int = 33, input_size: int = 32, dropout: float = 0.1
) -> STNClassifier:
    """The same CNN without the transformer; width 33 matches ``stn_digits``'s parameters (~0.4%)."""
    return STNClassifier(STNClassifierConfig(num_classes, width, input_size, dropout, transform=None))

"""Swin Transformer image classifiers (Liu et al. 2021): :class:`~.image_classifier.ImageClassifier`
over a :class:`~structpred.backbones.swin.SwinTransformer` (final-normed last stage averaged over
positions -> dropout -> ``head``).

State dict: ``backbone.{patch_embed, layers, norm}.*`` (timm 1.0's ``SwinTransformer`` names under
``backbone.``) and ``head.*`` (timm's ``head.fc``, torchvision's ``head``), so timm's and
torchvision's weights come in through :func:`~structpred.models.weights.from_timm` /
``from_torchvision`` / ``load_weights``.

Builders: ``swin_{tiny,small,base}_patch4_window7_224`` (timm's names and sizes; ImageNet mean /
std as timm's configuration for them; drop path 0.1, timm's default; ``window_size`` 7, another for
files of another window, e.g. 12 for ``swin_base_patch4_window12_384``) and ``swin_narrow``, a
~0.26 M-parameter Swin for 32 px inputs on this CPU (C 16, depths (2, 2, 2, 1), window 4, patch 4:
maps 8, 4, 2, 1; see :func:`~structpred.backbones.swin.swin_narrow`).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..backbones.swin import SwinTransformer, swin_config
from .image_classifier import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier, ImageClassifierConfig
from .registry import register_model

__all__ = [
    "swin_base_patch4_window7_224",
    "swin_classifier",
    "swin_narrow",
    "swin_small_patch4_window7_224",
    "swin_tiny_patch4_window7_224",
]


def swin_classifier(
    backbone: SwinTransformer,
    num_classes: int,
    input_size: int = 224,
    dropout: float = 0.0,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> ImageClassifier:
    """An :class:`ImageClassifier` over ``backbone`` (images resized to ``input_size`` squared)."""
    return ImageClassifier(backbone, ImageClassifierConfig(num_classes, input_size, dropout, mean, std))


def _build(
    size: str,
    num_classes: int,
    input_size: int,
    dropout: float,
    drop_path_rate: float,
    depths: Sequence[int] | None,
    window_size: int | None = None,
) -> ImageClassifier:
    config = swin_config(size, depths=depths, drop_path_rate=drop_path_rate, window_size=window_size)
    backbone = SwinTransformer(config)
    return swin_classifier(backbone, num_classes, input_size, dropout)


@register_model(task="classification", peer_weights=("timm", "torchvision"))
def swin_tiny_patch4_window7_224(
    num_classes: int = 1000,
    input_size: int = 224,
    dropout: float = 0.0,
    drop_path_rate: float = 0.1,
    depths: Sequence[int] = (2, 2, 6, 2),
    window_size: int = 7,
) -> ImageClassifier:
    """Swin-T: C 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window 7 (timm's
    ``swin_tiny_patch4_window7_224``, torchvision's ``swin_t``)."""
    return _build("tiny", num_classes, input_size, dropout, drop_path_rate, depths, window_size)


@register_model(task="classification", peer_weights=("timm", "torchvision"))
def swin_small_patch4_window7_224(
    num_classes: int = 1000,
    input_size: int = 224,
    dropout: float = 0.0,
    drop_path_rate: float = 0.1,
    depths: Sequence[int] = (2, 2, 18, 2),
    window_size: int = 7,
) -> ImageClassifier:
    """Swin-S: C 96, depths (2, 2, 18, 2), heads (3, 6, 12, 24), window 7 (timm's
    ``swin_small_patch4_window7_224``, torchvision's ``swin_s``)."""
    return _build("small", num_classes, input_size, dropout, drop_path_rate, depths, window_size)


@register_model(task="classification", peer_weights=("timm", "torchvision"))
def swin_base_patch4_window7_224(
    num_classes: int = 1000,
    input_size: int = 224,
    dropout: float = 0.0,
    drop_path_rate: float = 0.1,
    depths: Sequence[int] = (2, 2, 18, 2),
    window_size: int = 7,
) -> ImageClassifier:
    """Swin-B: C 128, depths (2, 2, 18, 2), heads (4, 8, 16, 32), window 7 (timm's
    ``swin_base_patch4_window7_224``, torchvision's ``swin_b``)."""
    return _build("base", num_classes, input_size, dropout, drop_path_rate, depths, window_size)


@register_model(task="classification")
def swin_narrow(
    num_classes: int = 10,
    input_size: int = 32,
    dropout: float = 0.1,
    drop_path_rate: float = 0.0,
    depths: Sequence[int] = (2, 2, 2, 1),
) -> ImageClassifier:
    """Narrow Swin for 32 px digits / object crops (~0.26 M parameters with 10 classes)."""
    return _build("narrow", num_classes, input_size, dropout, drop_path_rate, depths)

"""ViT image classifiers (Dosovitskiy et al. 2021): :class:`~.image_classifier.ImageClassifier` over
a :class:`~structpred.backbones.vit.VisionTransformer` (the normed class token -> dropout -> ``head``).

State dict: ``backbone.{cls_token, pos_embed, patch_embed.*, blocks.*, norm.*}`` and ``head.*``:
timm's ``VisionTransformer`` names under ``backbone.`` (its ``head`` is ``head``), so timm's and
torchvision's weights come in through :func:`~structpred.models.weights.from_timm` /
``from_torchvision`` / ``load_weights``.

Builders: ``vit_{tiny,small,base}_patch16_224`` (timm's names and sizes; normalisation mean / std
0.5 as timm's default configuration for them) and ``vit_narrow``, a ~0.2 M-parameter ViT that
trains on this CPU: patch 4 at 32 px (an 8 x 8 grid of 64 tokens; patch 16 would leave 4 tokens),
width 64, 4 blocks of 4 heads.
"""

from __future__ import annotations

from ..backbones.vit import VisionTransformer, vit
from .image_classifier import ImageClassifier, ImageClassifierConfig
from .registry import register_model

__all__ = [
    "vit_base_patch16_224",
    "vit_classifier",
    "vit_narrow",
    "vit_small_patch16_224",
    "vit_tiny_patch16_224",
]

TIMM_MEAN = (0.5, 0.5, 0.5)  # timm's default normalisation for the vit_*_patch16_224 weights
TIMM_STD = (0.5, 0.5, 0.5)


def vit_classifier(
    backbone: VisionTransformer,
    num_classes: int,
    dropout: float = 0.0,
    mean: tuple[float, float, float] = TIMM_MEAN,
    std: tuple[float, float, float] = TIMM_STD,
) -> ImageClassifier:
    """An :class:`ImageClassifier` over ``backbone`` at its native input size."""
    side = backbone.grid_size[0] * backbone.patch_size
    return ImageClassifier(backbone, ImageClassifierConfig(num_classes, side, dropout, mean, std))


def _build(
    size: str, num_classes: int, input_size: int, dropout: float, drop_path_rate: float, depth: int
) -> ImageClassifier:
    backbone = vit(size, img_size=input_size, depth=depth, drop_path_rate=drop_path_rate)
    return vit_classifier(backbone, num_classes, dropout)


@register_model(task="classification", peer_weights=("timm",))
def vit_tiny_patch16_224(
    num_classes: int = 1000, input_size: int = 224, dropout: float = 0.0, drop_path_rate: float = 0.0,
    depth: int = 12,
) -> ImageClassifier:
    """ViT-Ti/16: width 192, 12 blocks of 3 heads, MLP 768 (timm's ``vit_tiny_patch16_224``)."""
    return _build("tiny", num_classes, input_size, dropout, drop_path_rate, depth)


@register_model(task="classification", peer_weights=("timm",))
def vit_small_patch16_224(
    num_classes: int = 1000, input_size: int = 224, dropout: float = 0.0, drop_path_rate: float = 0.0,
    depth: int = 12,
) -> ImageClassifier:
    """ViT-S/16: width 384, 12 blocks of 6 heads, MLP 1536 (timm's ``vit_small_patch16_224``)."""
    return _build("small", num_classes, input_size, dropout, drop_path_rate, depth)


@register_model(task="classification", peer_weights=("timm", "torchvision"))
def vit_base_patch16_224(
    num_classes: int = 1000, input_size: int = 224, dropout: float = 0.0, drop_path_rate: float = 0.0,
    depth: int = 12,
) -> ImageClassifier:
    """ViT-B/16: width 768, 12 blocks of 12 heads, MLP 3072 (timm's ``vit_base_patch16_224``,
    torchvision's ``vit_b_16``)."""
    return _build("base", num_classes, input_size, dropout, drop_path_rate, depth)


@register_model(task="classification")
def vit_narrow(
    num_classes: int = 10, input_size: int = 32, dropout: float = 0.1, drop_path_rate: float = 0.1,
    depth: int = 4, patch_size: int = 4,
) -> ImageClassifier:
    """A narrow ViT for CPU training (digits, shape crops at 32 px): patch 4, width 64, ``depth``
    blocks of 4 heads, MLP 256; ~0.2 M parameters. Normalised with mean 0.5, std 0.25 as
    ``digits_cnn``."""
    backbone = vit(
        "narrow", img_size=input_size, patch_size=patch_size, depth=depth, drop_path_rate=drop_path_rate
    )
    return vit_classifier(backbone, num_classes, dropout, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

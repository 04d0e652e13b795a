"""torchvision ViT in: our ViT classifier (:mod:`structpred.models.vit`) with the same tensors.

Supported: torchvision's ``VisionTransformer`` (``vit_b_16``; also ``vit_b_32`` / ``vit_l_*`` /
``vit_h_14``: any patch size, width, depth, heads and MLP width), any weights and ``num_classes``,
with its image size, dropout and ImageNet mean / std (torchvision's preset transform), frozen
parameters and train / eval mode. Refused (``ValueError`` naming the attribute): a
``representation_size`` (``heads.pre_logits``), a convolutional stem (``conv_stem_configs``),
non-zero ``dropout`` / ``attention_dropout`` (ours has no token dropout). Nothing here imports
torchvision: the model is recognised by its structure, a saved ``state_dict`` by its tensor names.

torchvision name                                            ->  ours
    class_token                                             ->  backbone.cls_token
    conv_proj.*                                             ->  backbone.patch_embed.proj.*
    encoder.pos_embedding                                   ->  backbone.pos_embed
    encoder.layers.encoder_layer_i.ln_1 / ln_2              ->  backbone.blocks.i.norm1 / norm2
    encoder.layers.encoder_layer_i.self_attention.in_proj_{weight,bias}
                                                            ->  backbone.blocks.i.attn.qkv.{weight,bias}
    encoder.layers.encoder_layer_i.self_attention.out_proj  ->  backbone.blocks.i.attn.proj
    encoder.layers.encoder_layer_i.mlp.0 / mlp.3            ->  backbone.blocks.i.mlp.fc1 / fc2
    encoder.ln, heads.head                                  ->  backbone.norm, head

A file saved at another image size: :func:`adapt_state` resamples ``encoder.pos_embedding`` to our
patch grid at load time as torchvision's ``interpolate_embeddings`` does (bicubic, corners aligned,
the class position kept), logged at INFO.

(``nn.MultiheadAttention`` stacks its q, k, v projections in ``in_proj_weight [3D, D]`` in the
same order as timm's ``qkv``, so the tensors copy unchanged.)
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

from torch import Tensor, nn

from ...backbones.vit import LN_EPS, VisionTransformer
from ..image_classifier import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier, ImageClassifierConfig
from .renamer import Rule, copy_renamed
from .timm_vit import build_from, resampled_positions

logger = logging.getLogger(__name__)

SUPPORTED = "ViT (vit_b_16; vit_b_32, vit_l_16, vit_l_32, vit_h_14)"

_LAYER = r"encoder\.layers\.encoder_layer_(\d+)\."
RULES: tuple[Rule, ...] = (
    (r"class_token", r"backbone.cls_token"),
    (r"conv_proj\.(weight|bias)", r"backbone.patch_embed.proj.\1"),
    (r"encoder\.pos_embedding", r"backbone.pos_embed"),
    (_LAYER + r"ln_1\.(weight|bias)", r"backbone.blocks.\1.norm1.\2"),
    (_LAYER + r"ln_2\.(weight|bias)", r"backbone.blocks.\1.norm2.\2"),
    (_LAYER + r"self_attention\.in_proj_(weight|bias)", r"backbone.blocks.\1.attn.qkv.\2"),
    (_LAYER + r"self_attention\.out_proj\.(weight|bias)", r"backbone.blocks.\1.attn.proj.\2"),
    (_LAYER + r"mlp\.0\.(weight|bias)", r"backbone.blocks.\1.mlp.fc1.\2"),
    (_LAYER + r"mlp\.3\.(weight|bias)", r"backbone.blocks.\1.mlp.fc2.\2"),
    (r"encoder\.ln\.(weight|bias)", r"backbone.norm.\1"),
    (r"heads\.head\.(weight|bias)", r"head.\1"),
)


def recognises(peer_model: nn.Module) -> bool:
    """A torchvision ``VisionTransformer``: ``class_token``, ``conv_proj``, ``heads`` and an
    ``encoder`` with ``pos_embedding`` and ``layers``."""
    encoder = getattr(peer_model, "encoder", None)
    return (
        all(hasattr(peer_model, n) for n in ("class_token", "conv_proj", "heads", "image_size", "patch_size"))
        and hasattr(encoder, "pos_embedding")
        and hasattr(encoder, "layers")
    )


def _refuse(condition: bool, what: str) -> None:
    if condition:
        raise ValueError(f"torchvision ViT with {what} is not supported")


def _settings(tv: Any) -> tuple[dict[str, Any], ImageClassifierConfig]:
    _refuse(not isinstance(tv.conv_proj, nn.Conv2d), "a convolutional stem (conv_stem_configs)")
    _refuse(getattr(tv, "representation_size", None) is not None or hasattr(tv.heads, "pre_logits"),
            "representation_size (heads.pre_logits)")
    _refuse(float(tv.dropout) != 0.0, f"dropout={tv.dropout}")
    _refuse(float(tv.attention_dropout) != 0.0, f"attention_dropout={tv.attention_dropout}")
    layers = list(tv.encoder.layers)
    first = layers[0]
    for i, layer in enumerate(layers):
        for name in ("ln_1", "ln_2"):
            norm = getattr(layer, name)
            bad = not isinstance(norm, nn.LayerNorm) or norm.eps != LN_EPS
            _refuse(bad, f"encoder_layer_{i}.{name} = {norm}")
    _refuse(tv.encoder.ln.eps != LN_EPS, f"encoder.ln eps {tv.encoder.ln.eps}")
    dim, hidden = int(tv.hidden_dim), int(tv.mlp_dim)
    vit = dict(
        img_size=int(tv.image_size),
        patch_size=int(tv.patch_size),
        embed_dim=dim,
        depth=len(layers),
        num_heads=int(first.num_heads),
        mlp_ratio=hidden / dim,
        qkv_bias=True,
        in_channels=int(tv.conv_proj.in_channels),
    )
    config = ImageClassifierConfig(
        num_classes=int(tv.num_classes), input_size=int(tv.image_size), dropout=0.0,
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
    )
    return vit, config


def convert(peer_model: nn.Module) -> ImageClassifier:
    """Our ViT classifier with the torchvision model's weights, settings, frozen parameters and mode.

    Raises:
        ValueError: a variant we do not build (named), or tensors that do not map one to one.
    """
    vit, config = _settings(peer_model)
    if vit["in_channels"] != 3:
        raise ValueError(f"torchvision ViT with {vit['in_channels']} input channels is not supported")
    model = build_from(vit, [0.0] * vit["depth"], config)
    copy_renamed(model, peer_model, RULES)
    model.train(peer_model.training)
    logger.info("converted torchvision ViT (width %d, %d blocks, %d classes)",
                vit["embed_dim"], vit["depth"], config.num_classes)
    return model


# ----------------------------------------------------------------- from a state dict file


def recognises_state(names: Collection[str]) -> bool:
    """A torchvision ViT ``state_dict``: ``class_token``, ``conv_proj.weight`` and
    ``encoder.pos_embedding``."""
    return all(n in names for n in ("class_token", "conv_proj.weight", "encoder.pos_embedding"))


def state_family(names: Collection[str]) -> str:
    """``"torchvision ViT"``."""
    return "torchvision ViT"


def state_rules(model: nn.Module, names: Collection[str]) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    """``(rules, skip)`` to fill our ViT classifier ``model`` from a torchvision ViT state dict.

    Raises:
        ValueError: ``model`` is not our ViT classifier, or the file has a ``pre_logits`` layer.
    """
    if not isinstance(model, ImageClassifier) or not isinstance(model.backbone, VisionTransformer):
        raise ValueError(
            f"torchvision ViT weights need a ViT classifier (e.g. vit_base_patch16_224), "
            f"not {type(model).__name__}"
        )
    if any(n.startswith("heads.pre_logits.") for n in names):
        raise ValueError("the file has heads.pre_logits (representation_size): not supported")
    return RULES, ()


def adapt_state(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The torchvision ViT ``state`` ready for ``model``: ``encoder.pos_embedding`` resampled to its
    patch grid as torchvision's ``interpolate_embeddings`` when the file was saved at another size."""
    return resampled_positions(model, state, "encoder.pos_embedding", "torchvision ViT", align_corners=True)

"""timm ViT in: our ViT classifier (:mod:`structpred.models.vit`) with the same tensors.

Supported: timm's ``VisionTransformer`` as ``vit_tiny_patch16_224`` / ``vit_small_patch16_224`` /
``vit_base_patch16_224`` build it (any weights, any ``num_classes >= 1``, any square input size
and patch size, ``dynamic_img_size`` / ``dynamic_img_pad`` either way), with its widths, depth,
heads, MLP ratio, qkv bias, drop path rates and head dropout, its ``img_size`` as our input size,
the mean / std of ``m.pretrained_cfg`` (when present; ImageNet's otherwise), frozen parameters
and train / eval mode. Variants we do not build are refused
with a ``ValueError`` naming the attribute: no class token, register tokens, ``no_embed_class``,
layer scale, qk-norm, attention / MLP norms, ``global_pool`` other than ``"token"``, a ``fc_norm``,
``pre_norm``, ``num_classes=0``, token / attention / projection dropout. Nothing here imports timm:
the model is recognised by its structure, a saved ``state_dict`` by its tensor names.

A file saved at another input size (e.g. ``vit_base_patch16_224`` weights into a model built with
``input_size=384``): :func:`adapt_state` resamples its ``pos_embed`` to our patch grid at load time
as timm's ``checkpoint_filter_fn`` does (``resample_abs_pos_embed``: bicubic, antialiased, the class
position kept), logged at INFO.

timm name                                   ->  ours
    cls_token, pos_embed                    ->  backbone.cls_token, backbone.pos_embed
    patch_embed.proj.*                      ->  backbone.patch_embed.proj.*
    blocks.i.{norm1,norm2}.*                ->  backbone.blocks.i.{norm1,norm2}.*
    blocks.i.attn.{qkv,proj}.*              ->  backbone.blocks.i.attn.{qkv,proj}.*
    blocks.i.mlp.{fc1,fc2}.*                ->  backbone.blocks.i.mlp.{fc1,fc2}.*
    norm.*, head.*                          ->  backbone.norm.*, head.*
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping
from typing import Any

from torch import Tensor, nn

from ...backbones.vit import LN_EPS, VisionTransformer, resample_pos_embed
from ..image_classifier import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier, ImageClassifierConfig
from .renamer import Rule, copy_renamed

logger = logging.getLogger(__name__)

SUPPORTED = "ViT (vit_tiny_patch16_224, vit_small_patch16_224, vit_base_patch16_224)"

RULES: tuple[Rule, ...] = (
    (r"(cls_token|pos_embed)", r"backbone.\1"),
    (r"patch_embed\.proj\.(weight|bias)", r"backbone.patch_embed.proj.\1"),
    (r"blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)", r"backbone.blocks.\1.\2.\3"),
    (r"blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)", r"backbone.blocks.\1.attn.\2.\3"),
    (r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"backbone.blocks.\1.mlp.\2.\3"),
    (r"norm\.(weight|bias)", r"backbone.norm.\1"),
    (r"head\.(weight|bias)", r"head.\1"),
)

# Tensor names of timm ViT variants we do not build -> what they are (for the error message).
_VARIANT_TENSORS: tuple[tuple[str, str], ...] = (
    ("reg_token", "register tokens (reg_tokens > 0)"),
    ("dist_token", "a distillation token (DeiT distilled)"),
    (".ls1.", "layer scale (init_values)"),
    (".q_norm.", "qk-norm (qk_norm=True)"),
    ("fc_norm.", "fc_norm (global average pooling)"),
    ("norm_pre.", "pre_norm=True"),
    ("attn_pool.", "attention pooling (global_pool='map')"),
    ("patch_embed.norm.", "a norm in the patch embedding"),
    ("head_dist.", "a distillation head"),
)


def _is(module: Any, *names: str) -> bool:
    return type(module).__name__ in names


def recognises(peer_model: nn.Module) -> bool:
    """A timm ``VisionTransformer``-like model: ``cls_token`` and ``pos_embed`` attributes, ``blocks``,
    ``patch_embed.proj``, ``norm``, ``head`` and ``global_pool`` (timm's Swin has none of the first two)."""
    names = ("cls_token", "pos_embed", "blocks", "norm", "head", "global_pool", "fc_norm")
    return all(hasattr(peer_model, n) for n in names) and hasattr(
        getattr(peer_model, "patch_embed", None), "proj"
    )


def _refuse(condition: bool, what: str) -> None:
    if condition:
        raise ValueError(f"timm ViT with {what} is not supported (ours builds the original ViT)")


def _drop_prob(module: Any, where: str) -> float:
    if _is(module, "Identity"):
        return 0.0
    if _is(module, "DropPath") and getattr(module, "scale_by_keep", True):
        return float(module.drop_prob)
    raise ValueError(
        f"timm ViT {where} is {type(module).__name__}: only DropPath (scale_by_keep) is supported"
    )


def _check_dropout(module: Any, where: str) -> None:
    p = float(getattr(module, "p", 0.0)) if _is(module, "Dropout") else None
    _refuse(p is None and not _is(module, "Identity"), f"{where} = {type(module).__name__}")
    _refuse(bool(p), f"{where} dropout {p}")


def _check_block(block: Any, i: int, dim: int) -> tuple[int, int, bool, float]:
    """``(heads, MLP hidden, qkv bias, drop path)`` of timm block ``i``, refusing other variants."""
    where = f"blocks.{i}"
    _refuse(not _is(block, "Block"), f"{where} of type {type(block).__name__}")
    for name in ("ls1", "ls2"):
        _refuse(not _is(getattr(block, name, None), "Identity"), f"layer scale ({where}.{name})")
    attn, mlp = block.attn, block.mlp
    for name in ("q_norm", "k_norm", "norm"):
        module = getattr(attn, name, nn.Identity())
        _refuse(not _is(module, "Identity"), f"{where}.attn.{name} (qk-norm / scale norm)")
    _refuse(not _is(getattr(mlp, "norm", nn.Identity()), "Identity"), f"{where}.mlp.norm (scale_mlp_norm)")
    act: Any = getattr(mlp, "act", None)
    _refuse(not _is(act, "GELU") or act.approximate != "none", f"{where}.mlp.act {act}")
    for name in ("norm1", "norm2"):
        norm = getattr(block, name)
        _refuse(not _is(norm, "LayerNorm") or norm.eps != LN_EPS, f"{where}.{name} = {norm}")
    _refuse(attn.proj.bias is None, f"{where}.attn.proj without bias (proj_bias=False)")
    for name in ("attn_drop", "proj_drop"):
        _check_dropout(getattr(attn, name, nn.Identity()), f"{where}.attn.{name}")
    for name in ("drop1", "drop2"):
        _check_dropout(getattr(mlp, name, nn.Identity()), f"{where}.mlp.{name}")
    p1 = _drop_prob(block.drop_path1, f"{where}.drop_path1")
    _refuse(p1 != _drop_prob(block.drop_path2, f"{where}.drop_path2"), f"{where}: two drop path rates")
    return int(attn.num_heads), int(mlp.fc1.out_features), attn.qkv.bias is not None, p1


def _settings(m: Any) -> dict[str, Any]:
    """Our ViT's settings from the timm model, refusing the variants we do not build."""
    _refuse(m.cls_token is None, "class_token=False")
    _refuse(getattr(m, "reg_token", None) is not None, "register tokens (reg_token)")
    _refuse(bool(getattr(m, "no_embed_class", False)), "no_embed_class=True")
    _refuse(m.pos_embed is None, "pos_embed=None")
    _refuse(m.global_pool != "token", f"global_pool={m.global_pool!r} (only 'token')")
    _refuse(not _is(m.fc_norm, "Identity"), "fc_norm (a norm after pooling)")
    _refuse(not _is(getattr(m, "norm_pre", nn.Identity()), "Identity"), "pre_norm=True (norm_pre)")
    _refuse(getattr(m, "attn_pool", None) is not None, "attn_pool")
    _refuse(not _is(m.head, "Linear"), "num_classes=0 (no classifier head)")
    _refuse(not _is(m.norm, "LayerNorm") or m.norm.eps != LN_EPS, f"norm = {m.norm}")
    _refuse(not _is(getattr(m, "patch_drop", nn.Identity()), "Identity"), "patch_drop_rate > 0 (patch_drop)")
    _check_dropout(getattr(m, "pos_drop", nn.Identity()), "pos_drop")
    pe = m.patch_embed
    _refuse(not _is(getattr(pe, "norm", nn.Identity()), "Identity"), "a norm in patch_embed")
    _refuse(pe.proj.bias is None, "patch_embed.proj without bias")
    kernel, stride = tuple(pe.proj.kernel_size), tuple(pe.proj.stride)
    _refuse(kernel != stride or kernel[0] != kernel[1], f"patch_embed.proj kernel {kernel} stride {stride}")
    img = tuple(pe.img_size) if pe.img_size is not None else None
    _refuse(img is None or img[0] != img[1], f"patch_embed.img_size {img} (only square)")
    dim = int(m.embed_dim)
    blocks = [_check_block(b, i, dim) for i, b in enumerate(m.blocks)]
    _refuse(len({b[:3] for b in blocks}) != 1, "blocks of different widths / heads")
    heads, hidden, qkv_bias, _ = blocks[0]
    # The input size is the one the position table is built for (``img_size``; pretrained_cfg keeps
    # the default 224 when a model is built with another img_size); mean / std are the weights'.
    cfg = getattr(m, "pretrained_cfg", None) or {}
    return dict(
        vit=dict(
            img_size=int(img[0]),  # type: ignore[index]
            patch_size=kernel[0],
            embed_dim=dim,
            depth=len(blocks),
            num_heads=heads,
            mlp_ratio=hidden / dim,
            qkv_bias=qkv_bias,
            in_channels=int(pe.proj.in_channels),
        ),
        drop_path=[b[3] for b in blocks],
        classifier=ImageClassifierConfig(
            num_classes=int(m.head.out_features),
            input_size=int(img[0]),  # type: ignore[index]
            dropout=float(getattr(m.head_drop, "p", 0.0)),
            mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
            std=tuple(cfg.get("std", IMAGENET_STD)),
        ),
    )


def build_from(
    vit_args: dict[str, Any], drop_path: list[float], config: ImageClassifierConfig
) -> ImageClassifier:
    """Our ViT classifier with these settings and per-block drop path rates (shared with the
    torchvision family)."""
    backbone = VisionTransformer(**vit_args)
    for block, p in zip(backbone.blocks, drop_path, strict=True):
        block.drop_path.p = p  # type: ignore[union-attr]
    return ImageClassifier(backbone, config)


def convert(peer_model: nn.Module) -> ImageClassifier:
    """Our ViT classifier with the timm model's weights, settings, frozen parameters and mode.

    Raises:
        ValueError: a variant we do not build (the attribute named), or tensors that do not map
            one to one.
    """
    s = _settings(peer_model)
    if s["vit"]["in_channels"] != 3:
        raise ValueError(f"timm ViT with in_chans={s['vit']['in_channels']} is not supported (only 3)")
    model = build_from(s["vit"], s["drop_path"], s["classifier"])
    copy_renamed(model, peer_model, RULES)
    model.train(peer_model.training)
    logger.info("converted timm ViT (width %d, %d blocks, %d classes)",
                s["vit"]["embed_dim"], s["vit"]["depth"], s["classifier"].num_classes)
    return model


# ----------------------------------------------------------------- from a state dict file


def recognises_state(names: Collection[str]) -> bool:
    """A timm ViT ``state_dict``: ``cls_token``, ``pos_embed``, ``patch_embed.proj.weight`` and
    ``blocks.0.attn.qkv.weight`` (torchvision's ViT says ``class_token`` / ``conv_proj``)."""
    needed = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight")
    return all(n in names for n in needed)


def state_family(names: Collection[str]) -> str:
    """``"timm ViT"``."""
    return "timm ViT"


def _refuse_variant_files(names: Collection[str]) -> None:
    for marker, what in _VARIANT_TENSORS:
        inner = marker.startswith(".")  # inside every block, else a top-level name
        found = sorted(n for n in names if (marker in n if inner else n.startswith(marker)))
        if found:
            raise ValueError(
                f"the file holds {what} ({found[0]}): not supported (ours builds the original ViT)"
            )


def state_rules(model: nn.Module, names: Collection[str]) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    """``(rules, skip)`` to fill our ViT classifier ``model`` from a timm ViT state dict.

    Raises:
        ValueError: ``model`` is not our ViT classifier, or the file holds a variant we do not build.
    """
    if not isinstance(model, ImageClassifier) or not isinstance(model.backbone, VisionTransformer):
        raise ValueError(
            f"timm ViT weights need a ViT classifier (e.g. vit_tiny_patch16_224), not {type(model).__name__}"
        )
    _refuse_variant_files(names)
    if "head.weight" not in names:
        raise ValueError("the file has no classifier head (head.weight): a num_classes=0 timm model")
    return RULES, ()


def _vit_of(model: nn.Module) -> VisionTransformer | None:
    if isinstance(model, VisionTransformer):
        return model
    backbone = getattr(model, "backbone", None) if isinstance(model, ImageClassifier) else None
    return backbone if isinstance(backbone, VisionTransformer) else None


def resampled_positions(
    model: nn.Module, state: Mapping[str, Tensor], name: str, family: str, *, align_corners: bool = False
) -> dict[str, Tensor]:
    """``state`` with its position table ``name`` (``[1, 1 + n * n, D]``) resampled to the patch grid of
    our ViT classifier (or bare ViT) ``model`` when the two grids differ (timm's rule, or torchvision's
    with ``align_corners``); otherwise ``state`` as is (any other shape difference is the renamer's).

    Raises:
        ValueError: the file's table is not a class position plus a square grid.
    """
    out = dict(state)
    vit = _vit_of(model)
    if vit is None:
        return out
    pos, ours = state.get(name), vit.pos_embed
    if pos is None or pos.dim() != 3 or pos.shape[0] != 1 or pos.shape[2] != ours.shape[2]:
        return out
    if pos.shape[1] == ours.shape[1]:
        return out
    side = math.isqrt(pos.shape[1] - 1)
    if side * side != pos.shape[1] - 1:
        raise ValueError(
            f"{name} {tuple(pos.shape)}: {pos.shape[1] - 1} patch positions are not a square grid; cannot "
            f"resample it to our {vit.grid_size[0]} x {vit.grid_size[1]} grid"
        )
    grid = vit.grid_size
    out[name] = resample_pos_embed(pos, (side, side), grid, align_corners=align_corners)
    logger.info(
        "%s: %s resampled from a %d x %d to a %d x %d patch grid (%s)", family, name, side, side, *grid,
        "bicubic, corners aligned, as torchvision" if align_corners else "bicubic, antialiased, as timm",
    )
    return out


def adapt_state(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The timm ViT ``state`` ready for ``model``: ``pos_embed`` resampled to its patch grid when
    the file was saved at another input size (:func:`resampled_positions`)."""
    return resampled_positions(model, state, "pos_embed", "timm ViT")


def load_into_vit(vit: VisionTransformer, state: Mapping[str, Tensor]) -> int:
    """Fill a bare :class:`VisionTransformer` (e.g. the ``vit`` of a detector's ViTDet backbone,
    ``model.backbone.body.vit``, built at 1024 px) from a timm ViT *classifier* state dict: the
    head is left out, ``pos_embed`` resampled to ``vit``'s grid as timm does. Returns the number of
    tensors copied. (``load_weights`` fills whole models only; this is the by-hand route for a
    backbone.)

    Raises:
        ValueError: not a timm ViT state dict, a variant we do not build, or a tensor that does not
            fit (named, with both shapes).
    """
    if not recognises_state(state):
        raise ValueError("not a timm ViT state dict (no cls_token / pos_embed / patch_embed.proj.weight)")
    _refuse_variant_files(list(state))
    adapted = adapt_state(vit, state)
    rules = tuple((pattern, target.removeprefix("backbone.")) for pattern, target in RULES[:-1])
    return len(copy_renamed(vit, adapted, rules, skip=(r"head\.(weight|bias)",)))

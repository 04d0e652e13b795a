"""torchvision Swin Transformer (v1) in: our :func:`~structpred.models.swin.swin_classifier` with the
same tensors.

Supported: torchvision's ``swin_t`` (and ``swin_s`` / ``swin_b``, the same v1 module tree), any
weights and ``num_classes``: patch size, width, depths, heads, window, MLP ratio, drop path rate
and train / eval mode; input 224 and ImageNet mean / std (torchvision keeps them in its weights'
transforms, not in the model). Our model uses torchvision's window rule (``window_rule=
"torchvision"``: pad to window multiples *then* roll, the window never clipped; see
:mod:`structpred.backbones.swin_window`), so the logits match at any input size whose sides are
multiples of the patch (torchvision's stem drops a remainder; ours zero-pads it). Refused with a
``ValueError`` naming the attribute: ``swin_v2_*`` (``logit_scale`` / ``cpb_mlp``), non-square
windows or shifts other than 0 / window // 2, attention or projection dropout, LayerNorm eps
other than 1e-5. The torchvision model is only read; nothing here imports torchvision.

Patch merging: torchvision concatenates the 2x2 neighbours as x0, x1, x2, x3 = (0, 0), (1, 0),
(0, 1), (1, 1) (row, column offsets); timm 1.0's reshape-permute gives the same order (older timm
releases differed), so ``reduction.weight`` and the merging ``norm`` are copied as they are (the
parity test, with random weights, would fail on any column permutation).

torchvision name                                ->  ours
    features.0.0.* (Conv2d), features.0.2.* (LayerNorm)
                                                ->  backbone.patch_embed.{proj,norm}.*
    features.(2k+1).j.{norm1, attn.{qkv, proj, relative_position_bias_table}, norm2}
                                                ->  backbone.layers.k.blocks.j.* (the same)
    features.(2k+1).j.mlp.{0,3}.*               ->  backbone.layers.k.blocks.j.mlp.{fc1,fc2}.*
    features.(2k).{norm,reduction}.* (k >= 1)   ->  backbone.layers.k.downsample.*
    norm.*, head.*                              ->  backbone.norm.*, head.*
    *.attn.relative_position_index              ->  skipped (a persistent buffer there, rebuilt here)
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

from torch import Tensor, nn

from ...backbones.swin import SwinConfig, SwinTransformer
from ..image_classifier import ImageClassifier
from ..swin import swin_classifier
from .renamer import Rule, copy_renamed
from .timm_swin import check_window_tables

logger = logging.getLogger(__name__)

SUPPORTED = "Swin (swin_t, swin_s, swin_b)"

SKIP: tuple[str, ...] = (r".*\.attn\.relative_position_index",)
_STATE_MARKER = "features.1.0.attn.relative_position_bias_table"
_V2_ATTRIBUTES = ("logit_scale", "cpb_mlp")


def rules(num_stages: int) -> tuple[Rule, ...]:
    """The renaming rules of a ``num_stages``-stage torchvision Swin (stages at odd ``features``
    indices, merging at even ones)."""
    out: list[Rule] = [
        (r"features\.0\.0\.(weight|bias)", r"backbone.patch_embed.proj.\1"),
        (r"features\.0\.2\.(weight|bias)", r"backbone.patch_embed.norm.\1"),
    ]
    for k in range(num_stages):
        block, ours = rf"features\.{2 * k + 1}\.(\d+)\.", rf"backbone.layers.{k}.blocks.\1."
        out += [
            (block + r"(norm1|norm2|attn\.qkv|attn\.proj)\.(weight|bias)", ours + r"\2.\3"),
            (block + r"attn\.relative_position_bias_table", ours + "attn.relative_position_bias_table"),
            (block + r"mlp\.0\.(weight|bias)", ours + r"mlp.fc1.\2"),
            (block + r"mlp\.3\.(weight|bias)", ours + r"mlp.fc2.\2"),
        ]
        if k > 0:
            out.append(
                (
                    rf"features\.{2 * k}\.(norm\.weight|norm\.bias|reduction\.weight)",
                    rf"backbone.layers.{k}.downsample.\1",
                )
            )
    out += [(r"norm\.(weight|bias)", r"backbone.norm.\1"), (r"head\.(weight|bias)", r"head.\1")]
    return tuple(out)


def recognises(tv_model: nn.Module) -> bool:
    """A torchvision Swin: ``features`` (a ``[Conv2d, Permute, LayerNorm]`` stem, then stages of
    blocks whose attention has a relative position table or, v2, a ``logit_scale``), ``norm``,
    ``permute``, ``avgpool``, ``head``."""
    m: Any = tv_model
    features = getattr(m, "features", None)
    if not all(hasattr(m, name) for name in ("norm", "permute", "avgpool", "head")):
        return False
    if (
        not isinstance(features, nn.Sequential)
        or len(features) < 2
        or not isinstance(features[0], nn.Sequential)
    ):
        return False
    stage = features[1]
    attn = getattr(stage[0], "attn", None) if isinstance(stage, nn.Sequential) and len(stage) else None
    return attn is not None and any(
        hasattr(attn, name) for name in ("relative_position_bias_table", *_V2_ATTRIBUTES)
    )


def _refuse(condition: bool, message: str) -> None:
    if condition:
        raise ValueError(f"torchvision Swin: {message}; supported: {SUPPORTED} (v1)")


def _config(m: Any) -> SwinConfig:
    """Our :class:`SwinConfig` from the torchvision model's modules (validated block by block)."""
    kinds = [type(x).__name__ for x in m.features[0]]
    _refuse(
        kinds != ["Conv2d", "Permute", "LayerNorm"],
        f"features.0 is {kinds}, not [Conv2d, Permute, LayerNorm]",
    )
    proj = m.features[0][0]
    _refuse(int(proj.in_channels) != 3, f"features.0.0 takes {proj.in_channels} channels, not 3")
    patch = int(proj.kernel_size[0])
    _refuse(
        tuple(proj.kernel_size) != (patch, patch) or tuple(proj.stride) != (patch, patch),
        f"features.0.0: kernel {proj.kernel_size} / stride {proj.stride} are not one square patch",
    )
    norms = [mod for mod in m.modules() if isinstance(mod, nn.LayerNorm)]
    _refuse(any(abs(n.eps - 1e-5) > 1e-12 for n in norms), "a LayerNorm with eps != 1e-5")
    depths, heads, rates, windows = [], [], [], set()
    mlp_ratio, qkv_bias = None, None
    stages = m.features[1::2]
    for k, stage in enumerate(stages):
        if k > 0:
            merge = m.features[2 * k]
            _refuse(
                not hasattr(merge, "reduction"),
                f"features.{2 * k} is {type(merge).__name__}, not a patch merging",
            )
            _refuse(
                type(merge).__name__ != "PatchMerging",
                f"features.{2 * k} is {type(merge).__name__} (v2 merging)",
            )
        for j, block in enumerate(stage):
            where = f"features.{2 * k + 1}.{j}"
            attn = block.attn
            for name in _V2_ATTRIBUTES:
                _refuse(hasattr(attn, name), f"{where}.attn.{name}: swin_v2_* is not supported")
            window = [int(w) for w in attn.window_size]
            _refuse(window[0] != window[1], f"{where}.attn.window_size {window} is not square")
            windows.add(window[0])
            shift = [int(s) for s in attn.shift_size]
            expected = [0, 0] if j % 2 == 0 else [window[0] // 2] * 2
            _refuse(shift != expected, f"{where}.attn.shift_size {shift}, expected {expected}")
            _refuse(
                float(attn.attention_dropout) > 0 or float(attn.dropout) > 0,
                f"{where}.attn: attention / projection dropout is not supported",
            )
            width = int(block.norm1.normalized_shape[0])
            ratio = block.mlp[0].out_features / width
            _refuse(
                mlp_ratio is not None and ratio != mlp_ratio, f"{where}.mlp: MLP ratio differs between blocks"
            )
            mlp_ratio, qkv_bias = ratio, attn.qkv.bias is not None
            rates.append(float(block.stochastic_depth.p))
        depths.append(len(stage))
        heads.append(int(stage[0].attn.num_heads))
    _refuse(len(windows) != 1, f"windows {sorted(windows)} differ between stages")
    return SwinConfig(
        patch_size=patch,
        embed_dim=int(proj.out_channels),
        depths=tuple(depths),
        num_heads=tuple(heads),
        window_size=windows.pop(),
        mlp_ratio=float(mlp_ratio or 4.0),
        qkv_bias=bool(qkv_bias),
        drop_path_rate=rates[-1],
        window_rule="torchvision",
    )


def convert(tv_model: nn.Module) -> ImageClassifier:
    """Our Swin classifier with ``tv_model``'s weights and settings, in its train / eval mode.

    Raises:
        ValueError: a variant named in the module doc as refused, or tensors that do not map one to one.
    """
    m: Any = tv_model
    config = _config(m)
    num_classes = int(m.head.out_features)
    model = swin_classifier(SwinTransformer(config), num_classes, 224)
    copy_renamed(model, tv_model, rules(len(config.depths)), skip=SKIP)
    model.train(tv_model.training)
    logger.info(
        "converted torchvision Swin (C %d, depths %s, %d classes)",
        config.embed_dim,
        config.depths,
        num_classes,
    )
    return model


# ----------------------------------------------------------------- from a state dict file


def recognises_state(names: Collection[str]) -> bool:
    """A torchvision Swin ``state_dict`` (v1, or v2 refused by :func:`state_rules`): the stem
    ``features.0.0.weight`` and a first block's attention ``features.1.0.attn.*``."""
    return "features.0.0.weight" in names and any(name.startswith("features.1.0.attn.") for name in names)


def state_family(names: Collection[str]) -> str:
    """``"torchvision Swin"`` (``v2`` when the attention has a ``logit_scale``)."""
    return "torchvision Swin v2" if any(n.endswith("attn.logit_scale") for n in names) else "torchvision Swin"


def state_rules(model: nn.Module, names: Collection[str]) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    """``(rules, skip)`` to fill our Swin classifier ``model`` from a torchvision Swin state dict.

    The model keeps its own window rule: build it with ``window_rule="torchvision"`` (see
    :func:`~structpred.backbones.swin.swin_config`) for torchvision's numbers at sizes other than 224.

    Raises:
        ValueError: ``model`` is not our Swin classifier, or the file is ``swin_v2_*``.
    """
    if not isinstance(model, ImageClassifier) or not isinstance(model.backbone, SwinTransformer):
        raise ValueError(
            f"torchvision Swin weights need a Swin classifier (swin_*), not {type(model).__name__}"
        )
    v2 = sorted(n for n in names if n.endswith("attn.logit_scale"))
    if v2:
        raise ValueError(f"swin_v2_* weights ({v2[0]}) are not supported: only v1 ({SUPPORTED})")
    return rules(len(model.backbone.config.depths)), SKIP


def adapt_state(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The torchvision Swin ``state`` for ``model``: unchanged, its windows checked (a table of
    another window is a ``ValueError``; :func:`~.timm_swin.check_window_tables`)."""
    rules, skip = state_rules(model, state)
    return check_window_tables(model, state, rules, skip, "torchvision Swin")
